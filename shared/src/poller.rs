//! The event source mapping, outside Lambda: receive up to 10 messages, hand them to the
//! dispatcher as the `SqsEvent` Lambda would build, delete what was delivered, and leave the
//! reported failures to the queue (their visibility was already set by the dispatcher). A
//! response Lambda would reject as a whole deletes nothing (see `to_delete`). Given the
//! queue's visibility timeout, a batch gets it as its deadline, as a Lambda invocation gets its
//! timeout: past it the messages are visible again and their receipts stale.
//!
//! Works over any queue adapter: the in-process queue in the local stack, moto or real SQS.

use crate::dispatch::Dispatcher;
use crate::queue::{Consumer, MAX_BATCH, QueueError, ReceivedMessage};
use aws_lambda_events::sqs::SqsEvent;
use futures::future::join_all;
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The ARN put on local records (the dispatcher does not read it).
pub const LOCAL_EVENT_SOURCE_ARN: &str = "arn:aws:sqs:local:000000000000:chat-relay.fifo";

pub struct Poller {
    queue: Arc<dyn Consumer>,
    dispatcher: Arc<Dispatcher>,
    wait: Duration,
    batch_time: Option<Duration>,
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
            batch_time: None,
        }
    }

    /// Each batch must settle within `limit` of its receive (the queue's visibility timeout):
    /// the dispatcher starts no attempt that could end later (`Dispatcher::handle_batch_until`).
    pub fn with_batch_time_limit(mut self, limit: Duration) -> Self {
        self.batch_time = Some(limit);
        self
    }

    /// The deadline of a batch received now.
    fn deadline(&self) -> Option<Instant> {
        self.batch_time.map(|limit| Instant::now() + limit)
    }

    /// One round.
    pub async fn poll_once(&self) -> Result<PollReport, QueueError> {
        let messages = self.queue.receive(MAX_BATCH, self.wait).await?;
        Ok(self.dispatch(messages, self.deadline()).await)
    }

    /// Dispatches received messages and deletes the delivered ones.
    async fn dispatch(
        &self,
        messages: Vec<ReceivedMessage>,
        deadline: Option<Instant>,
    ) -> PollReport {
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
        let response = self.dispatcher.handle_batch_until(event, deadline).await;
        let failures: Vec<String> = response
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier)
            .collect();
        let Some(delivered) = to_delete(&receipts, &failures) else {
            // What Lambda does with such a response: the whole batch failed, nothing is deleted,
            // and every message comes back after its visibility timeout.
            tracing::warn!(
                received = receipts.len(),
                reported = failures.len(),
                "the dispatcher's batchItemFailures has an empty id or one not in the batch: the whole batch counts as failed, as on Lambda"
            );
            return PollReport {
                received: receipts.len(),
                delivered: 0,
                failed: receipts.len(),
            };
        };
        let deletes = delivered.iter().map(|receipt| self.queue.delete(receipt));
        for result in join_all(deletes).await {
            if let Err(e) = result {
                // Delivered but not deleted: it will be delivered again (same webhook-id).
                tracing::warn!(error = %e, "could not delete a delivered message");
            }
        }
        PollReport {
            received: receipts.len(),
            delivered: delivered.len(),
            failed: receipts.len().saturating_sub(delivered.len()),
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
                                let deadline = poller.deadline();
                                poller.dispatch(messages, deadline).await;
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

/// The receipts of the messages a batch response settles, by Lambda's rules for partial batch
/// responses (`receipts` are the batch's `(message id, receipt handle)` pairs, `failures` the
/// response's `itemIdentifier`s); `None` when Lambda would count the whole batch as failed and
/// delete nothing.
///
/// AWS (Lambda Developer Guide, "Handling errors for an SQS event source in Lambda", "Success
/// and failure conditions"): "Lambda treats a batch as a complete failure if your function
/// returns any of the following: An invalid JSON response; An empty string itemIdentifier; A
/// null itemIdentifier; An itemIdentifier with a bad key name; An itemIdentifier value with a
/// message ID that doesn't exist". (Invalid JSON, a null or a misnamed key cannot reach here:
/// the response is a typed `SqsBatchResponse`.)
fn to_delete<'a>(receipts: &'a [(String, String)], failures: &[String]) -> Option<Vec<&'a str>> {
    let in_batch: HashSet<&str> = receipts.iter().map(|(id, _)| id.as_str()).collect();
    if failures
        .iter()
        .any(|id| id.is_empty() || !in_batch.contains(id.as_str()))
    {
        return None;
    }
    let failed: HashSet<&str> = failures.iter().map(String::as_str).collect();
    Some(
        receipts
            .iter()
            .filter(|(id, _)| !failed.contains(id.as_str()))
            .map(|(_, receipt)| receipt.as_str())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> Vec<(String, String)> {
        ["m1", "m2", "m3"]
            .iter()
            .map(|id| (id.to_string(), format!("receipt-{id}")))
            .collect()
    }

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_the_messages_not_reported_failed_are_deleted() {
        let receipts = batch();
        assert_eq!(
            to_delete(&receipts, &ids(&["m2"])),
            Some(vec!["receipt-m1", "receipt-m3"])
        );
        assert_eq!(
            to_delete(&receipts, &[]),
            Some(vec!["receipt-m1", "receipt-m2", "receipt-m3"]),
            "no failures: all delivered"
        );
        assert_eq!(
            to_delete(&receipts, &ids(&["m1", "m1", "m2", "m3"])),
            Some(vec![]),
            "a failure reported twice is one failure"
        );
    }

    #[test]
    fn an_empty_failure_id_fails_the_whole_batch() {
        assert_eq!(to_delete(&batch(), &ids(&["m2", ""])), None);
    }

    #[test]
    fn a_failure_id_not_in_the_batch_fails_the_whole_batch() {
        // More failures than messages: the old count (received - failed) underflowed here.
        assert_eq!(to_delete(&batch(), &ids(&["m1", "m2", "m3", "m4"])), None);
        assert_eq!(to_delete(&batch(), &ids(&["not-in-this-batch"])), None);
    }
}
