//! The queue port: what ingest, the dispatcher and the local poller need from a FIFO queue,
//! and nothing AWS-specific. Two adapters implement it: [`sqs::SqsQueue`] (AWS SQS, or any
//! SQS-protocol server such as moto) and [`memory::MemoryQueue`] (in-process, SQS FIFO
//! semantics, for the local stack and tests).

pub mod memory;
pub mod sqs;

use async_trait::async_trait;
use aws_lambda_events::sqs::SqsMessage;
use std::collections::HashMap;
use std::time::Duration;

/// The queues' `maxReceiveCount`: only a safety net. The dispatcher counts real attempts and
/// moves exhausted messages to the DLQ itself. Receives run far ahead of attempts for messages
/// held behind a failing head of their group: the batch that hands out a head hands out up to
/// nine of its group behind it, and each of them is counted a receive per attempt of that
/// head. A message can so collect `MAX_BATCH × (MAX_WAITS + 1)` = 210 receives legitimately
/// (nine heads before it tried 21 times each, then its own 21), and this stays above that
/// with room for batches a dispatcher timeout cut short. What it catches is a message whose
/// every batch crashes the dispatcher, which holds its chat for 300 × the 6-minute visibility
/// timeout (30 h) before SQS moves it. SQS allows 1 to 1,000 (`RedrivePolicy`, "The value of
/// maxReceiveCount is 1 to 1,000").
pub const SAFETY_NET_RECEIVES: u32 = 300;

// SQS's limits, which the relay's code depends on: defined here, beside the port, once.

/// SQS returns at most 10 messages per receive, and takes at most 10 per batch send.
pub const MAX_BATCH: usize = 10;
/// The largest message body: SQS's maximum, 1 MiB, set explicitly on the relay's queues. Ingest
/// answers 413 above it; the in-process queue refuses above it.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// SQS's limit on `MessageGroupId` and `MessageDeduplicationId`: 128 characters.
pub const MAX_ID_LEN: usize = 128;
/// SQS's largest visibility timeout: 12 hours, counted from when the message was received.
///
/// AWS, `ChangeMessageVisibility`: "You can continue to call ChangeMessageVisibility to extend
/// the visibility timeout to the maximum allowed time. If you try to extend the visibility
/// timeout beyond the maximum, your request is rejected." and "If you attempt to set the
/// VisibilityTimeout to an amount more than the maximum time left, Amazon SQS returns an
/// error. It will not automatically recalculate and increase the timeout to the maximum time
/// remaining." So a change asks for at most `MAX_VISIBILITY - (time since the receive)`; both
/// adapters refuse more (the in-process one exactly as SQS does).
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 60 * 60);

/// A message to enqueue: the raw body plus the FIFO routing ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub body: String,
    /// FIFO `MessageGroupId`: messages of one group are delivered in order.
    pub group_id: String,
    /// FIFO `MessageDeduplicationId`: the event id; a repeat within 5 minutes is dropped.
    pub dedup_id: String,
}

/// A message handed out by `receive`, invisible to other consumers until its visibility
/// timeout passes or it is deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    pub group_id: String,
    pub dedup_id: Option<String>,
    /// How many times the message has been received, this time included (1 on the first).
    pub receive_count: u32,
    /// When the queue accepted the message, unix milliseconds.
    pub sent_timestamp_ms: u64,
}

/// Names of the SQS system attributes the dispatcher reads (as Lambda passes them).
pub mod attr {
    pub const RECEIVE_COUNT: &str = "ApproximateReceiveCount";
    pub const GROUP_ID: &str = "MessageGroupId";
    pub const DEDUP_ID: &str = "MessageDeduplicationId";
    pub const SENT_TIMESTAMP: &str = "SentTimestamp";
}

impl ReceivedMessage {
    /// The record Lambda's event source mapping would build for this message, so the local
    /// poller and the tests hand the dispatcher exactly what it gets on AWS.
    pub fn into_lambda_record(self, event_source_arn: &str) -> SqsMessage {
        let mut attributes = HashMap::from([
            (
                attr::RECEIVE_COUNT.to_owned(),
                self.receive_count.to_string(),
            ),
            (attr::GROUP_ID.to_owned(), self.group_id),
            (
                attr::SENT_TIMESTAMP.to_owned(),
                self.sent_timestamp_ms.to_string(),
            ),
        ]);
        if let Some(dedup) = self.dedup_id {
            attributes.insert(attr::DEDUP_ID.to_owned(), dedup);
        }
        let mut record = SqsMessage::default();
        record.message_id = Some(self.message_id);
        record.receipt_handle = Some(self.receipt_handle);
        record.body = Some(self.body);
        record.attributes = attributes;
        record.event_source = Some("aws:sqs".to_owned());
        record.event_source_arn = Some(event_source_arn.to_owned());
        record
    }
}

/// Why the queue did not do what was asked. `Display` says what to check.
///
/// The split decides what a sender is told: only [`QueueError::Unavailable`] is worth retrying
/// as it is; the other two are deterministic and retrying the same request cannot fix them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The queue could not be reached, timed out, throttled or answered with a server error:
    /// try again later.
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    /// The queue refused this message's content (characters SQS cannot store, over its size
    /// limit): the same message will be refused again.
    #[error("queue refused the message: {0}")]
    MessageRefused(String),
    /// The queue refused the request itself (no such queue, access denied, bad parameter,
    /// stale receipt handle): a configuration or programming error, not an outage.
    #[error("queue refused the request: {0}")]
    Refused(String),
}

/// A FIFO queue with SQS semantics, in all its roles.
///
/// The port comes in three roles, so each caller names only what it uses: ingest and the
/// dispatcher's dead-letter moves produce ([`Producer`]); the event source mapping (the local
/// poller) consumes and deletes ([`Consumer`]); the dispatcher sets when a failed or held
/// message comes back ([`Visibility`]). An adapter implements all three and is then a [`Queue`].
pub trait Queue: Producer + Consumer + Visibility {}

impl<T: Producer + Consumer + Visibility + ?Sized> Queue for T {}

/// Storing messages.
#[async_trait]
pub trait Producer: Send + Sync + 'static {
    /// Stores one message. `Ok` means the queue has it durably (or already had it: dedup).
    async fn send(&self, message: NewMessage) -> Result<(), QueueError>;

    /// Stores up to [`MAX_BATCH`] messages; one result per message, in order.
    async fn send_batch(
        &self,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<Result<(), QueueError>>, QueueError>;
}

/// Taking messages and removing the settled ones.
#[async_trait]
pub trait Consumer: Send + Sync + 'static {
    /// Receives up to `max` messages, waiting up to `wait` for the first one (long polling).
    async fn receive(&self, max: usize, wait: Duration)
    -> Result<Vec<ReceivedMessage>, QueueError>;

    /// Removes a received message for good (it was delivered or moved).
    async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError>;
}

/// When a received message comes back.
#[async_trait]
pub trait Visibility: Send + Sync + 'static {
    /// Makes a received message visible again after `timeout` (0 = now): the retry backoff.
    async fn change_visibility(
        &self,
        receipt_handle: &str,
        timeout: Duration,
    ) -> Result<(), QueueError>;
}

/// Moves every message of `source` (a DLQ) to `target`, oldest first, keeping each message's
/// body and group: the redrive after a receiver is fixed. On AWS, SQS's own
/// `StartMessageMoveTask` does this server-side; this client-side version works on any
/// SQS-protocol endpoint (moto has no move task) and on the in-process queue.
///
/// Each copy gets a fresh deduplication id, since the original one would be dropped inside
/// SQS's 5-minute window; the `webhook-id` does not change, because the dispatcher derives it
/// from the body. A message is deleted from `source` only after `target` stored it; if storing
/// fails, what was received is made visible again and the error returned.
pub async fn move_messages(source: &dyn Queue, target: &dyn Producer) -> Result<usize, QueueError> {
    let mut moved = 0;
    loop {
        let batch = source
            .receive(MAX_BATCH, std::time::Duration::from_secs(1))
            .await?;
        if batch.is_empty() {
            return Ok(moved);
        }
        let mut pending = batch.iter();
        while let Some(message) = pending.next() {
            let stored = target
                .send(NewMessage {
                    body: message.body.clone(),
                    group_id: message.group_id.clone(),
                    dedup_id: redrive_dedup_id(message),
                })
                .await;
            if let Err(e) = stored {
                for unsent in std::iter::once(message).chain(pending) {
                    let _ = source
                        .change_visibility(&unsent.receipt_handle, std::time::Duration::ZERO)
                        .await;
                }
                return Err(e);
            }
            // Stored twice at worst (delete failed): the receiver drops the duplicate by webhook-id.
            let _ = source.delete(&message.receipt_handle).await;
            moved += 1;
        }
    }
}

fn redrive_dedup_id(message: &ReceivedMessage) -> String {
    // The time plus a process-wide sequence: unique even for two moves in one millisecond.
    static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let sequence = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let base = message.dedup_id.as_deref().unwrap_or(&message.message_id);
    let suffix = format!(".r{}-{sequence}", crate::clock::unix_millis());
    format!("{}{suffix}", id_prefix(base, suffix.len()))
}

/// The longest start of `base` that leaves room for a suffix of `suffix_len` bytes within
/// [`MAX_ID_LEN`], cut on a character boundary (an id read back from a queue is only known to
/// be a string; slicing inside a character would panic).
pub(crate) fn id_prefix(base: &str, suffix_len: usize) -> &str {
    let mut cut = base.len().min(MAX_ID_LEN.saturating_sub(suffix_len));
    while !base.is_char_boundary(cut) {
        cut -= 1;
    }
    &base[..cut]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_prefix_never_cuts_a_character() {
        let long = "é".repeat(100); // 200 bytes, 2 per character
        for suffix_len in 0..20 {
            let prefix = id_prefix(&long, suffix_len);
            assert!(prefix.len() + suffix_len <= MAX_ID_LEN, "{suffix_len}");
            assert!(prefix.len() + suffix_len >= MAX_ID_LEN - 1, "{suffix_len}");
        }
        assert_eq!(id_prefix("short", 10), "short");
        assert_eq!(id_prefix("abc", MAX_ID_LEN + 1), "");
    }
}
