//! The in-process adapter of the queue port, with SQS FIFO semantics: message groups (a group
//! is blocked while one of its messages is in flight), a 5-minute deduplication window per
//! group, visibility timeout and `ChangeMessageVisibility` (refused, as SQS refuses it, when it
//! would keep a message invisible for more than 12 hours since its receive), receive counts, a
//! move to the DLQ once a message has been received `max_receive_count` times, and long-poll
//! receives.
//!
//! It backs the local stack and the fast tests. The queue contract suite runs the same
//! behaviour tests against this adapter and against moto's SQS server; where the two differ,
//! this one is wrong. Nothing survives a restart.
//!
//! Time is `tokio::time::Instant`, so tests may pause and advance the clock.

use super::{
    Consumer, MAX_BATCH, MAX_MESSAGE_BYTES, MAX_VISIBILITY, NewMessage, Producer, QueueError,
    ReceivedMessage, Visibility,
};
use crate::clock::unix_millis;
use async_trait::async_trait;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// SQS FIFO deduplication window.
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
    pub fn new(name: impl Into<String>, visibility_timeout: Duration) -> Self {
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
        if message.body.len() > MAX_MESSAGE_BYTES {
            return Err(QueueError::MessageRefused(format!(
                "message body is {} bytes, over the {MAX_MESSAGE_BYTES}-byte limit",
                message.body.len()
            )));
        }
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
        // or visible again: this is what keeps a chat in order.
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
                sent_timestamp_ms: message.sent_timestamp_ms,
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
        "{count} entries in one batch: the maximum is {MAX_BATCH}"
    ))
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
        if max > MAX_BATCH {
            return Err(too_many(max));
        }
        let deadline = Instant::now() + wait;
        loop {
            // Register interest before looking, so a send between the look and the wait
            // still wakes this receive.
            let changed = self.changed.notified();
            let taken = self.take_visible(max.max(1));
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

    async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError> {
        let mut state = self.state.lock().unwrap();
        // Like SQS, a receipt handle that no longer matches a stored message is not an error.
        if let Some(index) = state
            .messages
            .iter()
            .position(|m| m.receipt_handle.as_deref() == Some(receipt_handle))
        {
            state.messages.remove(index);
        }
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
        // SQS takes whole seconds (0 to 43,200); the in-process queue also takes the
        // sub-second waits of compressed test schedules, under the same ceiling.
        self.with_in_flight(receipt_handle, |state, index| {
            let message = &mut state.messages[index];
            let total = now.saturating_duration_since(message.received_at) + timeout;
            if timeout > MAX_VISIBILITY || total > MAX_VISIBILITY {
                // See MAX_VISIBILITY: SQS refuses, it does not trim.
                return Err(QueueError::Refused(format!(
                    "InvalidParameterValue: visibility timeout {} s would keep the message invisible {} s after its receive, over the 43200 s (12 h) maximum",
                    timeout.as_secs(),
                    total.as_secs()
                )));
            }
            message.visible_at = now + timeout;
            Ok(())
        })??;
        self.changed.notify_one();
        Ok(())
    }
}
