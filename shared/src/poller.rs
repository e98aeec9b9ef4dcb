//! The event source mapping, outside Lambda: receive up to 10 messages, hand them to the
//! dispatcher as the `SqsEvent` Lambda would build, delete what was delivered, and leave the
//! reported failures to the queue (their visibility was already set by the dispatcher).
//!
//! Works over any queue adapter: the in-process queue in the local stack, moto or real SQS.

use crate::dispatch::Dispatcher;
use crate::queue::{Consumer, MAX_BATCH, QueueError, ReceivedMessage};
use aws_lambda_events::sqs::SqsEvent;
use futures::future::join_all;
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The ARN put on local records (the dispatcher does not read it).
pub const LOCAL_EVENT_SOURCE_ARN: &str = "arn:aws:sqs:local:000000000000:chat-relay.fifo";

pub struct Poller {
    queue: Arc<dyn Consumer>,
    dispatcher: Arc<Dispatcher>,
    wait: Duration,
}

/// What one receive → dispatch → delete round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PollReport {
    pub received: usize,
    pub delivered: usize,
    pub failed: usize,
}

impl Poller {
    /// `wait` is the long-poll wait of each receive (SQS allows up to 20 s).
    pub fn new(queue: Arc<dyn Consumer>, dispatcher: Arc<Dispatcher>, wait: Duration) -> Self {
        Poller {
            queue,
            dispatcher,
            wait,
        }
    }

    /// One round.
    pub async fn poll_once(&self) -> Result<PollReport, QueueError> {
        let messages = self.queue.receive(MAX_BATCH, self.wait).await?;
        Ok(self.dispatch(messages).await)
    }

    /// Dispatches received messages and deletes the delivered ones.
    async fn dispatch(&self, messages: Vec<ReceivedMessage>) -> PollReport {
        if messages.is_empty() {
            return PollReport::default();
        }
        let receipts: Vec<(String, String)> = messages
            .iter()
            .map(|m| (m.message_id.clone(), m.receipt_handle.clone()))
            .collect();
        let mut event = SqsEvent::default();
        event.records = messages
            .into_iter()
            .map(|m| m.into_lambda_record(LOCAL_EVENT_SOURCE_ARN))
            .collect();
        let response = self.dispatcher.handle_batch(event).await;
        let failed: HashSet<String> = response
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier)
            .collect();
        let deletes = receipts
            .iter()
            .filter(|(id, _)| !failed.contains(id))
            .map(|(_, receipt)| self.queue.delete(receipt));
        for result in join_all(deletes).await {
            if let Err(e) = result {
                // Delivered but not deleted: it will be delivered again (same webhook-id).
                tracing::warn!(error = %e, "could not delete a delivered message");
            }
        }
        PollReport {
            received: receipts.len(),
            delivered: receipts.len() - failed.len(),
            failed: failed.len(),
        }
    }

    /// Polls with `workers` concurrent loops until `shutdown` completes; a round already
    /// under way finishes (its deliveries and deletes) before this returns.
    pub async fn run(self: Arc<Self>, workers: usize, shutdown: impl Future<Output = ()>) {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let loops: Vec<_> = (0..workers.max(1))
            .map(|_| {
                let poller = Arc::clone(&self);
                let mut stop = stop_rx.clone();
                tokio::spawn(async move {
                    while !*stop.borrow() {
                        // Only the wait for messages is cut short by shutdown; a batch in hand
                        // is always dispatched and its delivered messages deleted.
                        let received = tokio::select! {
                            biased;
                            _ = stop.changed() => break,
                            received = poller.queue.receive(MAX_BATCH, poller.wait) => received,
                        };
                        match received {
                            Ok(messages) => {
                                poller.dispatch(messages).await;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "receive failed; retrying in 1 s");
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        }
                    }
                })
            })
            .collect();
        shutdown.await;
        let _ = stop_tx.send(true);
        join_all(loops).await;
    }
}
