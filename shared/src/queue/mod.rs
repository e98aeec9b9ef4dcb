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
///
/// AWS, `ReceiveMessage`, `MaxNumberOfMessages`: "The maximum number of messages to return.
/// Amazon SQS never returns more messages than this value (however, fewer messages might be
/// returned). Valid values: 1 to 10. Default: 1." `SendMessageBatch`: "You can use
/// SendMessageBatch to send up to 10 messages to the specified queue". Both adapters refuse a
/// receive of 0 or more than 10 ([`check_receive`]); the in-process one also refuses a batch of
/// more than 10.
pub const MAX_BATCH: usize = 10;
/// The largest message body: SQS's maximum, 1 MiB, set explicitly on the relay's queues. Ingest
/// answers 413 above it; the in-process queue refuses above it, and refuses a batch whose
/// bodies add up to more.
///
/// AWS, `SendMessage`, `MessageBody`: "The minimum size is one character. The maximum size is
/// 1 MiB or 1,048,576 bytes". `SendMessageBatch`: "The maximum allowed individual message size
/// and the maximum total payload size (the sum of the individual lengths of all of the batched
/// messages) are both 1 MiB 1,048,576 bytes."
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// SQS's limit on `MessageGroupId` and `MessageDeduplicationId`: 128 characters.
///
/// AWS, `SendMessage`: "The maximum length of MessageDeduplicationId is 128 characters.
/// MessageDeduplicationId can contain alphanumeric characters (a-z, A-Z, 0-9) and punctuation
/// (``!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~``)." and "The length of MessageGroupId is 128
/// characters. Valid values: alphanumeric characters and punctuation
/// (``!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~``)." That is every printable ASCII character but the
/// space. The in-process queue refuses an id outside these rules (see `memory`).
pub const MAX_ID_LEN: usize = 128;

/// A character SQS takes in a group or deduplication id (see [`MAX_ID_LEN`]): an ASCII letter,
/// digit or punctuation mark.
pub fn is_sqs_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c.is_ascii_punctuation()
}

/// 1 to `max_len` bytes, every one an [`is_sqs_id_char`]: what SQS takes as an id (or a part
/// of one, such as the session in a group id).
pub fn is_sqs_id(value: &str, max_len: usize) -> bool {
    !value.is_empty() && value.len() <= max_len && value.chars().all(is_sqs_id_char)
}
/// SQS's longest long-poll wait.
///
/// AWS (SQS Developer Guide, "Setting-up long polling"): "When the wait time for the
/// ReceiveMessage API action is greater than 0, long polling is in effect. The maximum long
/// polling wait time is 20 seconds." Both adapters refuse a longer wait ([`check_receive`])
/// instead of trimming it, as SQS does (`InvalidParameterValue`).
pub const MAX_WAIT: Duration = Duration::from_secs(20);
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
    /// FIFO `MessageDeduplicationId`: the event id; a repeat in the same group within 5 minutes
    /// is dropped (the queues' `DeduplicationScope` is `messageGroup`).
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
    /// When the queue accepted the message, unix milliseconds; `None` when the queue did not say
    /// (an SQS-protocol server that leaves out `SentTimestamp`). Never guessed: 0 would date the
    /// message to 1970.
    pub sent_timestamp_ms: Option<u64>,
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
    /// poller and the tests hand the dispatcher exactly what it gets on AWS. An unknown sent
    /// time is left out of the attributes, not written as 0.
    pub fn into_lambda_record(self, event_source_arn: &str) -> SqsMessage {
        let mut attributes = HashMap::from([
            (
                attr::RECEIVE_COUNT.to_owned(),
                self.receive_count.to_string(),
            ),
            (attr::GROUP_ID.to_owned(), self.group_id),
        ]);
        if let Some(sent) = self.sent_timestamp_ms {
            attributes.insert(attr::SENT_TIMESTAMP.to_owned(), sent.to_string());
        }
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

/// SQS's rules for a receive's parameters, checked by both adapters before anything else: 1
/// to [`MAX_BATCH`] messages, a wait of at most [`MAX_WAIT`]. Refused as SQS refuses them
/// (`InvalidParameterValue`), never trimmed: a caller asking for more is a programming error.
pub(crate) fn check_receive(max: usize, wait: Duration) -> Result<(), QueueError> {
    if !(1..=MAX_BATCH).contains(&max) {
        return Err(QueueError::Refused(format!(
            "InvalidParameterValue: MaxNumberOfMessages {max} is not between 1 and {MAX_BATCH}"
        )));
    }
    if wait > MAX_WAIT {
        return Err(QueueError::Refused(format!(
            "InvalidParameterValue: WaitTimeSeconds {:.3} s is over the {} s maximum",
            wait.as_secs_f64(),
            MAX_WAIT.as_secs()
        )));
    }
    Ok(())
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
    /// Receives up to `max` messages (1 to [`MAX_BATCH`]), waiting up to `wait` (at most
    /// [`MAX_WAIT`]) for the first one (long polling). Other values are refused.
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
/// SQS-protocol endpoint (moto has no move task) and on the in-process queue. Returns how many
/// were moved.
///
/// Each copy gets a fresh deduplication id, since the original one would be dropped inside
/// SQS's 5-minute window; the `webhook-id` does not change, because the dispatcher derives it
/// from the body. A message is deleted from `source` only after `target` stored it; if storing
/// fails, what was received is made visible again and the error returned.
///
/// A delete that fails leaves a message stored in `target` and still in flight in `source`: it
/// comes back there after the visibility timeout, and a later run would send it again (the
/// receiver drops the copy by its `webhook-id`). The run finishes the batch in hand, then stops
/// with an error counting those messages, so the caller never reads a clean "moved n" while
/// `source` still holds some of them. Each failure is logged with its message id (never a body).
pub async fn move_messages(source: &dyn Queue, target: &dyn Producer) -> Result<usize, QueueError> {
    let mut moved = 0;
    loop {
        let batch = source.receive(MAX_BATCH, Duration::from_secs(1)).await?;
        if batch.is_empty() {
            return Ok(moved);
        }
        let mut not_deleted = 0;
        let mut delete_error = None;
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
                release(source, std::iter::once(message).chain(pending)).await;
                return Err(match delete_error {
                    None => e,
                    Some(_) => e.map_detail(|m| {
                        format!("{m}; before that, {}", left_in_source(moved, not_deleted))
                    }),
                });
            }
            moved += 1;
            if let Err(e) = source.delete(&message.receipt_handle).await {
                tracing::warn!(
                    message_id = %message.message_id,
                    error = %e,
                    "redrive: message stored in the target but not deleted from the source; a later run would send it again"
                );
                not_deleted += 1;
                delete_error = Some(e);
            }
        }
        if let Some(e) = delete_error {
            return Err(e.map_detail(|m| format!("{} ({m})", left_in_source(moved, not_deleted))));
        }
    }
}

/// What a redrive that could not delete everything it moved says about it.
fn left_in_source(moved: usize, not_deleted: usize) -> String {
    format!(
        "{moved} message(s) moved, but {not_deleted} of them could not be deleted from the source: they are in both queues, come back in the source after its visibility timeout, and a later run would send them again"
    )
}

/// Makes received messages visible again at once; a failure is logged and they come back after
/// the visibility timeout instead.
async fn release<'a>(source: &dyn Queue, messages: impl Iterator<Item = &'a ReceivedMessage>) {
    for message in messages {
        if let Err(e) = source
            .change_visibility(&message.receipt_handle, Duration::ZERO)
            .await
        {
            tracing::warn!(
                message_id = %message.message_id,
                error = %e,
                "redrive: could not release an unsent message; it comes back after the visibility timeout"
            );
        }
    }
}

impl QueueError {
    /// The same kind of error, its detail rewritten.
    fn map_detail(self, rewrite: impl FnOnce(String) -> String) -> QueueError {
        match self {
            QueueError::Unavailable(m) => QueueError::Unavailable(rewrite(m)),
            QueueError::MessageRefused(m) => QueueError::MessageRefused(rewrite(m)),
            QueueError::Refused(m) => QueueError::Refused(rewrite(m)),
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
    use super::memory::MemoryQueue;
    use super::*;
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn received(sent_timestamp_ms: Option<u64>) -> ReceivedMessage {
        ReceivedMessage {
            message_id: "m1".into(),
            receipt_handle: "r1".into(),
            body: "{}".into(),
            group_id: "g".into(),
            dedup_id: Some("d".into()),
            receive_count: 3,
            sent_timestamp_ms,
        }
    }

    #[test]
    fn an_unknown_sent_time_is_left_out_of_the_lambda_record_not_written_as_zero() {
        let record = received(None).into_lambda_record("arn");
        assert!(
            !record.attributes.contains_key(attr::SENT_TIMESTAMP),
            "{:?}",
            record.attributes
        );
        assert_eq!(record.attributes[attr::RECEIVE_COUNT], "3");
        assert_eq!(record.attributes[attr::GROUP_ID], "g");
        assert_eq!(record.attributes[attr::DEDUP_ID], "d");

        let record = received(Some(1_700_000_000_123)).into_lambda_record("arn");
        assert_eq!(record.attributes[attr::SENT_TIMESTAMP], "1700000000123");
    }

    #[test]
    fn receive_parameters_follow_sqs_rules() {
        assert!(check_receive(1, Duration::ZERO).is_ok());
        assert!(check_receive(MAX_BATCH, MAX_WAIT).is_ok());
        for (max, wait) in [
            (0, Duration::ZERO),
            (MAX_BATCH + 1, Duration::ZERO),
            (1, MAX_WAIT + Duration::from_millis(1)),
            (1, Duration::MAX),
        ] {
            let refused = check_receive(max, wait);
            assert!(
                matches!(&refused, Err(QueueError::Refused(m)) if m.starts_with("InvalidParameterValue")),
                "{max} {wait:?}: {refused:?}"
            );
        }
    }

    /// An in-process queue whose first delete fails (as a throttled or timed-out SQS call
    /// would): everything else passes through.
    struct FirstDeleteFails {
        inner: MemoryQueue,
        failed_once: AtomicBool,
    }

    #[async_trait]
    impl Producer for FirstDeleteFails {
        async fn send(&self, message: NewMessage) -> Result<(), QueueError> {
            self.inner.send(message).await
        }
        async fn send_batch(
            &self,
            messages: Vec<NewMessage>,
        ) -> Result<Vec<Result<(), QueueError>>, QueueError> {
            self.inner.send_batch(messages).await
        }
    }

    #[async_trait]
    impl Consumer for FirstDeleteFails {
        async fn receive(
            &self,
            max: usize,
            wait: Duration,
        ) -> Result<Vec<ReceivedMessage>, QueueError> {
            self.inner.receive(max, wait).await
        }
        async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError> {
            if !self.failed_once.swap(true, Ordering::SeqCst) {
                return Err(QueueError::Unavailable("injected: delete timed out".into()));
            }
            self.inner.delete(receipt_handle).await
        }
    }

    #[async_trait]
    impl Visibility for FirstDeleteFails {
        async fn change_visibility(
            &self,
            receipt_handle: &str,
            timeout: Duration,
        ) -> Result<(), QueueError> {
            self.inner.change_visibility(receipt_handle, timeout).await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_redrive_whose_delete_failed_says_how_many_are_left_in_the_source() {
        let visibility = Duration::from_secs(30);
        let source = FirstDeleteFails {
            inner: MemoryQueue::new("dlq", visibility),
            failed_once: AtomicBool::new(false),
        };
        let target = MemoryQueue::new("queue", visibility);
        for (group, id) in [("a", "a1"), ("a", "a2"), ("b", "b1")] {
            source
                .send(NewMessage {
                    body: format!("{{\"id\":\"{id}\"}}"),
                    group_id: group.into(),
                    dedup_id: id.into(),
                })
                .await
                .unwrap();
        }

        let failed = move_messages(&source, &target).await;
        let Err(QueueError::Unavailable(detail)) = &failed else {
            panic!("a failed delete must not read as a clean redrive: {failed:?}");
        };
        assert!(
            detail.contains("3 message(s) moved, but 1 of them")
                && detail.contains("delete timed out"),
            "{detail}"
        );
        assert_eq!(target.len(), 3, "all three were stored in the target");
        assert_eq!(
            source.inner.len(),
            1,
            "the one not deleted is still in the source"
        );
        assert_eq!(source.inner.in_flight(), 1);

        // Exactly the hazard the error warns of: once visible again, a re-run sends it twice.
        tokio::time::advance(visibility).await;
        assert_eq!(move_messages(&source, &target).await, Ok(1));
        assert!(source.inner.is_empty());
        assert_eq!(target.len(), 4);
    }

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
