//! The in-process adapter of the queue port, with SQS FIFO semantics: message groups (a group
//! is blocked while one of its messages is in flight), a 5-minute deduplication window per
//! group, visibility timeout and `ChangeMessageVisibility` (refused, as SQS refuses it, when it
//! would keep a message invisible for more than 12 hours since its receive), receive counts, a
//! move to the DLQ once a message has been received `max_receive_count` times, and long-poll
//! receives. It refuses what SQS documents it refuses (each rule quoted where it is enforced):
//! ids and bodies SQS would not take, batches over 10 entries or 1 MiB, receives of 0 or more
//! than 10 messages or waits over 20 s, deletes with an expired receipt handle.
//!
//! It backs the local stack and the fast tests. The queue contract suite runs the same
//! behaviour tests against this adapter and against moto's SQS server; where the two differ,
//! this one is wrong. Nothing survives a restart.
//!
//! Time is `tokio::time::Instant`, so tests may pause and advance the clock.

use super::{
    Consumer, MAX_BATCH, MAX_ID_LEN, MAX_MESSAGE_BYTES, MAX_VISIBILITY, NewMessage, Producer,
    QueueError, ReceivedMessage, Visibility, check_receive, is_sqs_id_char,
};
use crate::clock::unix_millis;
use async_trait::async_trait;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// SQS FIFO deduplication window, per message group.
///
/// AWS, `SendMessage`, `MessageDeduplicationId`: "If a message with a particular
/// MessageDeduplicationId is sent successfully, any messages sent with the same
/// MessageDeduplicationId are accepted successfully but aren't delivered during the 5-minute
/// deduplication interval." (SQS Developer Guide, "FIFO queue key terms": "Amazon SQS continues
/// tracking the deduplication ID even after the message has been received and deleted.") The
/// relay's queues set `DeduplicationScope` to `messageGroup` (`CreateQueue`: "Specifies whether
/// message deduplication occurs at the message group or queue level. Valid values are
/// messageGroup and queue."), so the window is kept per (group, deduplication id).
pub const DEDUP_WINDOW: Duration = Duration::from_secs(5 * 60);

/// Where a message goes after too many receives.
#[derive(Clone)]
pub struct DeadLetter {
    pub queue: Arc<MemoryQueue>,
    /// Received this many times without being deleted → moved on the next receive.
    pub max_receive_count: u32,
}

pub struct MemoryQueue {
    name: String,
    visibility_timeout: Duration,
    dead_letter: Option<DeadLetter>,
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Default)]
struct State {
    /// Every stored message, oldest first (FIFO order across all groups).
    messages: VecDeque<Stored>,
    /// (group, dedup id) → end of its deduplication window.
    dedup: HashMap<(String, String), Instant>,
    /// The same keys in the order their windows end, so expiry pops from the front instead of
    /// scanning every stored id on each send.
    dedup_expiry: VecDeque<(Instant, (String, String))>,
    next_seq: u64,
}

struct Stored {
    seq: u64,
    message_id: String,
    body: String,
    group_id: String,
    dedup_id: String,
    sent_timestamp_ms: u64,
    receive_count: u32,
    /// In flight while this is in the future.
    visible_at: Instant,
    /// When the current receive happened: SQS's 12-hour visibility limit counts from here.
    received_at: Instant,
    receipt_handle: Option<String>,
}

impl MemoryQueue {
    /// A queue whose receives hide a message for `visibility_timeout`.
    ///
    /// # Panics
    ///
    /// If `visibility_timeout` is over 12 hours: AWS, `CreateQueue`, `VisibilityTimeout`:
    /// "The visibility timeout for the queue, in seconds. Valid values: An integer from 0 to
    /// 43,200 (12 hours)." A queue SQS would not create is a programming error (`relay local`
    /// limits its flag to this range).
    pub fn new(name: impl Into<String>, visibility_timeout: Duration) -> Self {
        assert!(
            visibility_timeout <= MAX_VISIBILITY,
            "a queue's visibility timeout is 0 to 43200 s (12 h), not {visibility_timeout:?}"
        );
        MemoryQueue {
            name: name.into(),
            visibility_timeout,
            dead_letter: None,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
        }
    }

    pub fn with_dead_letter(mut self, dead_letter: DeadLetter) -> Self {
        self.dead_letter = Some(dead_letter);
        self
    }

    /// Messages stored (visible or in flight).
    pub fn len(&self) -> usize {
        self.state.lock().unwrap().messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages received and neither deleted nor visible again.
    pub fn in_flight(&self) -> usize {
        let now = Instant::now();
        let state = self.state.lock().unwrap();
        state.messages.iter().filter(|m| m.visible_at > now).count()
    }

    fn store(&self, message: NewMessage) -> Result<(), QueueError> {
        check_message(&message)?;
        let now = Instant::now();
        let mut state = self.state.lock().unwrap();
        while let Some((until, _)) = state.dedup_expiry.front() {
            if *until > now {
                break;
            }
            let (_, key) = state.dedup_expiry.pop_front().expect("front exists");
            state.dedup.remove(&key);
        }
        let key = (message.group_id.clone(), message.dedup_id.clone());
        if state.dedup.contains_key(&key) {
            return Ok(()); // SQS accepts a duplicate within the window and drops it.
        }
        state.dedup.insert(key.clone(), now + DEDUP_WINDOW);
        state.dedup_expiry.push_back((now + DEDUP_WINDOW, key));
        let seq = state.next_seq;
        state.next_seq += 1;
        state.messages.push_back(Stored {
            seq,
            message_id: format!("{}-{seq:012}", self.name),
            body: message.body,
            group_id: message.group_id,
            dedup_id: message.dedup_id,
            sent_timestamp_ms: unix_millis(),
            receive_count: 0,
            visible_at: now,
            received_at: now,
            receipt_handle: None,
        });
        Ok(())
    }

    /// One non-blocking receive pass, FIFO rules applied.
    fn take_visible(&self, max: usize) -> Vec<ReceivedMessage> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap();
        // A group with a message in flight hands out nothing until that message is deleted
        // or visible again: this is what keeps a chat in order. AWS (Knowledge Center,
        // `sqs-fifo-messages-not-returned`): "You must delete the messages in the current
        // message group ID before you can receive more messages within the same message group
        // ID." and "Inflight messages block delivery of available messages within the same
        // message group." A receive takes as many of an unblocked group as it may: "SQS returns
        // as many messages with the same message group ID as possible."
        let blocked: HashSet<String> = state
            .messages
            .iter()
            .filter(|m| m.visible_at > now)
            .map(|m| m.group_id.clone())
            .collect();
        let mut taken = Vec::new();
        let mut dead = Vec::new();
        for (index, message) in state.messages.iter_mut().enumerate() {
            if taken.len() >= max {
                break;
            }
            if blocked.contains(&message.group_id) {
                continue;
            }
            // AWS, `SetQueueAttributes`, `RedrivePolicy`: "maxReceiveCount – The number of
            // times a message is delivered to the source queue before being moved to the
            // dead-letter queue. [...] When the ReceiveCount for a message exceeds the
            // maxReceiveCount for a queue, Amazon SQS moves the message to the
            // dead-letter-queue." So a message received `max_receive_count` times is moved by
            // the receive that would have been one more, instead of being handed out.
            if let Some(dl) = &self.dead_letter
                && message.receive_count >= dl.max_receive_count
            {
                dead.push(index);
                continue;
            }
            message.receive_count += 1;
            message.visible_at = now + self.visibility_timeout;
            message.received_at = now;
            let receipt = format!(
                "{}#{}#{}",
                message.message_id, message.receive_count, message.seq
            );
            message.receipt_handle = Some(receipt.clone());
            taken.push(ReceivedMessage {
                message_id: message.message_id.clone(),
                receipt_handle: receipt,
                body: message.body.clone(),
                group_id: message.group_id.clone(),
                dedup_id: Some(message.dedup_id.clone()),
                receive_count: message.receive_count,
                sent_timestamp_ms: Some(message.sent_timestamp_ms),
            });
        }
        let moved: Vec<Stored> = dead
            .into_iter()
            .rev()
            .filter_map(|index| state.messages.remove(index))
            .collect();
        drop(state);
        if let Some(dl) = &self.dead_letter
            && !moved.is_empty()
        {
            let mut target = dl.queue.state.lock().unwrap();
            for mut message in moved.into_iter().rev() {
                message.receipt_handle = None;
                message.visible_at = now;
                message.seq = target.next_seq;
                target.next_seq += 1;
                target.messages.push_back(message);
            }
            drop(target);
            dl.queue.changed.notify_one();
        }
        taken
    }

    /// When the next in-flight message becomes visible, if any: a long poll wakes then.
    fn next_visibility(&self) -> Option<Instant> {
        let now = Instant::now();
        let state = self.state.lock().unwrap();
        state
            .messages
            .iter()
            .map(|m| m.visible_at)
            .filter(|at| *at > now)
            .min()
    }

    fn with_in_flight<T>(
        &self,
        receipt_handle: &str,
        act: impl FnOnce(&mut State, usize) -> T,
    ) -> Result<T, QueueError> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap();
        let index = state
            .messages
            .iter()
            .position(|m| m.receipt_handle.as_deref() == Some(receipt_handle))
            .ok_or_else(|| {
                QueueError::Refused(format!("receipt handle {receipt_handle:?} is not valid"))
            })?;
        if state.messages[index].visible_at <= now {
            return Err(QueueError::Refused(format!(
                "message for receipt handle {receipt_handle:?} is not in flight"
            )));
        }
        Ok(act(&mut state, index))
    }
}

fn too_many(count: usize) -> QueueError {
    QueueError::Refused(format!(
        "TooManyEntriesInBatchRequest: {count} entries in one batch: the maximum is {MAX_BATCH}"
    ))
}

/// SQS's rules for what one message carries, checked before anything is stored; a message that
/// breaks one is refused as SQS refuses it (a [`QueueError::MessageRefused`], which is what the
/// SQS adapter makes of SQS's own refusal of a send).
///
/// The body, AWS `SendMessage`, `MessageBody`: "The minimum size is one character. The maximum
/// size is 1 MiB or 1,048,576 bytes" and "A message can include only XML, JSON, and unformatted
/// text. The following Unicode characters are allowed. [...] #x9 | #xA | #xD | #x20 to #xD7FF |
/// #xE000 to #xFFFD | #x10000 to #x10FFFF. If a message contains characters outside the allowed
/// set, Amazon SQS rejects the message and returns an InvalidMessageContents error." (An older
/// version of that page said SQS replaces them with U+FFFD instead; the current one, and the
/// SDK's documentation, say it rejects them.)
///
/// The ids: see [`MAX_ID_LEN`] (1 to 128 alphanumeric and punctuation characters).
fn check_message(message: &NewMessage) -> Result<(), QueueError> {
    let body = &message.body;
    if body.is_empty() {
        return Err(QueueError::MessageRefused(
            "InvalidParameterValue: the message body is empty; SQS takes at least one character"
                .into(),
        ));
    }
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(QueueError::MessageRefused(format!(
            "MessageTooLong: message body is {} bytes, over the {MAX_MESSAGE_BYTES}-byte limit",
            body.len()
        )));
    }
    if let Some((at, c)) = body.char_indices().find(|(_, c)| !sqs_body_char(*c)) {
        return Err(QueueError::MessageRefused(format!(
            "InvalidMessageContents: the body has U+{:04X} at byte {at}, a character SQS does not take",
            u32::from(c)
        )));
    }
    check_id("MessageGroupId", &message.group_id)?;
    check_id("MessageDeduplicationId", &message.dedup_id)
}

/// `#x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF` (a Rust `char`
/// is never a surrogate, #xD800 to #xDFFF).
fn sqs_body_char(c: char) -> bool {
    matches!(
        c,
        '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..
    )
}

/// 1 to [`MAX_ID_LEN`] characters, each an ASCII letter, digit or punctuation mark: exactly
/// the printable ASCII characters but the space ([`is_sqs_id_char`]). The error names the
/// offending character, never the id (a group id carries a chat's hash).
fn check_id(name: &str, id: &str) -> Result<(), QueueError> {
    let len = id.chars().count();
    if !(1..=MAX_ID_LEN).contains(&len) {
        return Err(QueueError::MessageRefused(format!(
            "InvalidParameterValue: {name} is {len} characters; SQS takes 1 to {MAX_ID_LEN}"
        )));
    }
    if let Some(c) = id.chars().find(|&c| !is_sqs_id_char(c)) {
        return Err(QueueError::MessageRefused(format!(
            "InvalidParameterValue: {name} has U+{:04X}; SQS takes only alphanumeric characters and punctuation",
            u32::from(c)
        )));
    }
    Ok(())
}

#[async_trait]
impl Producer for MemoryQueue {
    async fn send(&self, message: NewMessage) -> Result<(), QueueError> {
        self.store(message)?;
        self.changed.notify_one();
        Ok(())
    }

    async fn send_batch(
        &self,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<Result<(), QueueError>>, QueueError> {
        if messages.len() > MAX_BATCH {
            return Err(too_many(messages.len()));
        }
        // See MAX_MESSAGE_BYTES: the bodies of one batch add up to 1 MiB at most, and SQS
        // refuses the whole request above it (`BatchRequestTooLong`), not the entries one by one.
        let total: usize = messages.iter().map(|m| m.body.len()).sum();
        if total > MAX_MESSAGE_BYTES {
            return Err(QueueError::MessageRefused(format!(
                "BatchRequestTooLong: the batch's bodies add up to {total} bytes, over the {MAX_MESSAGE_BYTES}-byte limit"
            )));
        }
        let results = messages.into_iter().map(|m| self.store(m)).collect();
        self.changed.notify_one();
        Ok(results)
    }
}

#[async_trait]
impl Consumer for MemoryQueue {
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        // SQS's limits (1 to 10 messages, at most 20 s), refused as SQS refuses them. Within
        // them a sub-second wait (the tests' quick polls) is taken as it is, where the SQS
        // adapter sends whole seconds: a deliberate leniency, like sub-second visibility.
        check_receive(max, wait)?;
        let deadline = Instant::now() + wait;
        loop {
            // Register interest before looking, so a send between the look and the wait
            // still wakes this receive.
            let changed = self.changed.notified();
            let taken = self.take_visible(max);
            let now = Instant::now();
            if !taken.is_empty() || now >= deadline {
                return Ok(taken);
            }
            let wake_at = self
                .next_visibility()
                .map_or(deadline, |at| at.min(deadline));
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(wake_at) => {}
            }
        }
    }

    /// Deletes the message `receipt_handle` was handed out with, while it is in flight.
    ///
    /// AWS (Knowledge Center, `sqs-receipt-handle-error`), FIFO queues: "For FIFO queues, a
    /// receipt handle expires after a visibility timeout period. When a receipt handle expires,
    /// the message returns to the queue. When you receive the message again, you get a new
    /// receipt handle. If you try to delete the message outside of the visibility timeout
    /// period, then you see an error similar to the following: An error occurred
    /// (InvalidParameterValue) when calling the DeleteMessage operation: Value 'YOUR RECEIPT
    /// HANDLE' for parameter ReceiptHandle is invalid. Reason: The receipt handle has expired."
    /// So a handle whose visibility ran out, or that a newer receive replaced, is refused and the
    /// message stays. A handle of a message no longer stored (deleted already, moved to the DLQ)
    /// is not an error, as on moto (the contract checks it); one this queue never handed out is
    /// (`ReceiptHandleIsInvalid`).
    async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap();
        // A handle is `{message id}#{receive count}#{seq}` (see `take_visible`).
        let Some(seq) = receipt_handle
            .rsplit_once('#')
            .and_then(|(_, seq)| seq.parse::<u64>().ok())
        else {
            return Err(QueueError::Refused(format!(
                "ReceiptHandleIsInvalid: the input receipt handle {receipt_handle:?} is not a valid receipt handle"
            )));
        };
        let Some(index) = state.messages.iter().position(|m| m.seq == seq) else {
            return Ok(()); // no longer stored
        };
        let message = &state.messages[index];
        if !receipt_handle.starts_with(&format!("{}#", message.message_id)) {
            return Err(QueueError::Refused(format!(
                "ReceiptHandleIsInvalid: the input receipt handle {receipt_handle:?} is not a valid receipt handle"
            )));
        }
        if message.receipt_handle.as_deref() != Some(receipt_handle) || message.visible_at <= now {
            return Err(QueueError::Refused(format!(
                "InvalidParameterValue: Value {receipt_handle:?} for parameter ReceiptHandle is invalid. Reason: The receipt handle has expired."
            )));
        }
        state.messages.remove(index);
        drop(state);
        self.changed.notify_one();
        Ok(())
    }
}

#[async_trait]
impl Visibility for MemoryQueue {
    async fn change_visibility(
        &self,
        receipt_handle: &str,
        timeout: Duration,
    ) -> Result<(), QueueError> {
        let now = Instant::now();
        // AWS, `ChangeMessageVisibility`, `VisibilityTimeout`: "The new value for the message's
        // visibility timeout (in seconds). Values range: 0 to 43200. Maximum: 12 hours." SQS
        // takes whole seconds (the SQS adapter rounds to them); the in-process queue takes the
        // sub-second waits of compressed test schedules as they are. That leniency is
        // deliberate; the 12-hour ceiling is enforced to the nanosecond.
        self.with_in_flight(receipt_handle, |state, index| {
            let message = &mut state.messages[index];
            let since_receive = now.saturating_duration_since(message.received_at);
            // `timeout` is compared before it is added: a `Duration::MAX` must be refused, not
            // overflow (and panic with the queue's lock held).
            if timeout > MAX_VISIBILITY || since_receive + timeout > MAX_VISIBILITY {
                // See MAX_VISIBILITY: SQS refuses, it does not trim.
                return Err(QueueError::Refused(format!(
                    "InvalidParameterValue: visibility timeout {} s, {} s after the receive, would keep the message invisible past the 43200 s (12 h) maximum",
                    timeout.as_secs(),
                    since_receive.as_secs()
                )));
            }
            message.visible_at = now + timeout;
            Ok(())
        })??;
        self.changed.notify_one();
        Ok(())
    }
}
