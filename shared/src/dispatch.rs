//! A batch of queue messages in, the failed ones out. This is the dispatcher Lambda's whole
//! handler, and the local poller calls the very same function.
//!
//! Rules, per group (`MessageGroupId`, batch order kept inside each group; groups run
//! concurrently, a group's messages one after another):
//! - A delivered message is reported done (the caller deletes it).
//! - A failed attempt is counted in the attempts ledger; the message waits out the schedule's
//!   next step (its visibility timeout, capped at what SQS's 12 h limit leaves since this
//!   receive) and the rest of its group in the batch is reported failed unsent and made
//!   visible again at once: FIFO keeps the group blocked behind its invisible head, so they
//!   follow it in order without waiting out the queue's own visibility timeout.
//! - A message whose attempts are exhausted, or whose receiver answered a dead-letter status,
//!   is copied to the DLQ (same body and group) and reported done, so the caller deletes it
//!   and its group goes on with the next message in the same batch.
//! - A `qr` event older than the QR lifetime is reported done without being sent (`Expired`).
//! - Near the invocation's deadline no attempt starts: a message that could not finish in time
//!   is reported failed unsent, with the rest of its group, and made visible again at once.
//!   Lambda discards the whole response of an invocation that times out, so every message of
//!   the batch, delivered ones included, would come back after the queue's visibility timeout
//!   and be delivered twice.
//!
//! Attempts are counted, not inferred from `ApproximateReceiveCount`: messages held behind a
//! failing head are received again and again without an attempt, so receive counts would send
//! whole chats to the DLQ behind one poison message.

use crate::attempts::{AttemptLedger, MemoryLedger};
use crate::backoff::{FailureSignal, RetryPolicy};
use crate::clock::unix_millis;
use crate::deliver::{Deliverer, Failure, Outcome};
use crate::envelope::{EventType, probe};
use crate::queue::{MAX_VISIBILITY, NewMessage, Producer, QueueError, Visibility, attr};
use crate::telemetry::{Metrics, Summary, Unit, dimension, metric};
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use futures::future::join_all;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Random numbers in [0, 1) for jitter; injectable so tests are exact.
pub type JitterSource = Arc<dyn Fn() -> f64 + Send + Sync>;

/// What the dispatcher cannot know exactly: how long before the handler started the batch was
/// received (Lambda's poller receives, then invokes). The queue's visibility timeout (360 s in
/// the template) bounds that gap, since a message not settled by then is visible again; this
/// margin covers it with room to spare. See [`MAX_VISIBILITY`] for the rule it protects.
pub const RECEIVE_MARGIN: Duration = Duration::from_secs(10 * 60);

/// SQS deletes a message this long after it was sent, whatever it is doing: the template's
/// `MessageRetentionPeriod` (14 days, SQS's maximum).
pub const QUEUE_RETENTION: Duration = Duration::from_secs(14 * 24 * 3600);

/// A message this old goes to the DLQ instead of waiting any longer (behind a failing head, or
/// for its own next attempt): a day before SQS would delete it. Out of order beats lost.
pub const AGING_LIMIT: Duration = Duration::from_secs(13 * 24 * 3600);

/// How many times a refused visibility change is asked again, each time for half as long.
const VISIBILITY_TRIES: u32 = 4;

/// Time kept free before the invocation's deadline, besides one attempt's timeout, for the AWS
/// calls around that attempt, each bounded at 4 s by the SDK clients' operation timeout: the
/// ledger's read before it; after a failure the ledger's write and a visibility change, or the
/// DLQ copy and the ledger's delete; then the release of the rest of its group (at once). 16 s
/// of calls, and room for the answer to Lambda.
pub const SETTLE_RESERVE: Duration = Duration::from_secs(20);

/// What an aging message's move to the DLQ needs before the deadline: one send.
const DEAD_LETTER_RESERVE: Duration = Duration::from_secs(8);

/// Whether `needed` still fits before `deadline` (no deadline: always).
fn time_left(deadline: Option<Instant>, needed: Duration) -> bool {
    deadline.is_none_or(|deadline| Instant::now() + needed <= deadline)
}

/// Lambda's deadline for the invocation (`Lambda-Runtime-Deadline-Ms`, unix milliseconds) as
/// an `Instant` on this process's clock.
pub fn deadline_from_unix_ms(deadline_ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(deadline_ms.saturating_sub(unix_millis()))
}

/// The queue the batch came from and the DLQ the dispatcher moves exhausted messages to.
pub struct DispatchQueues {
    /// Only its visibility is the dispatcher's business (the caller receives and deletes).
    pub source: Arc<dyn Visibility>,
    pub dead_letter: Arc<dyn Producer>,
}

pub struct Dispatcher {
    deliverer: Deliverer,
    queue: Arc<dyn Visibility>,
    dead_letter: Arc<dyn Producer>,
    attempts: Arc<dyn AttemptLedger>,
    policy: RetryPolicy,
    metrics: Metrics,
    jitter: JitterSource,
}

/// One record, with what the dispatcher reads from its attributes and body. Parsing never
/// fails: a record with missing or garbled fields still becomes a job (and is then retried or
/// dead-lettered), so a hostile or broken record cannot stop a batch.
#[derive(Debug)]
pub struct Job {
    message_id: String,
    receipt_handle: String,
    body: Option<String>,
    group: String,
    dedup_id: Option<String>,
    event_id: String,
    event_type: Option<EventType>,
    receive_count: u32,
    sent_timestamp_ms: Option<u64>,
}

impl Job {
    pub fn from_record(record: SqsMessage) -> Self {
        let attribute = |name: &str| record.attributes.get(name).cloned();
        let message_id = record.message_id.clone().unwrap_or_default();
        let body = record.body.clone();
        let (event_type, event_id) = probe(body.as_deref().unwrap_or_default().as_bytes());
        Job {
            group: attribute(attr::GROUP_ID).unwrap_or_else(|| message_id.clone()),
            dedup_id: attribute(attr::DEDUP_ID),
            event_id,
            event_type,
            receive_count: attribute(attr::RECEIVE_COUNT)
                .and_then(|n| n.parse().ok())
                .unwrap_or(1),
            // 0 is no time SQS stamps: a record without one must not look 56 years old.
            sent_timestamp_ms: attribute(attr::SENT_TIMESTAMP)
                .and_then(|t| t.parse().ok())
                .filter(|&ms| ms > 0),
            receipt_handle: record.receipt_handle.unwrap_or_default(),
            message_id,
            body,
        }
    }

    fn type_name(&self) -> &'static str {
        self.event_type.map_or("unknown", EventType::as_str)
    }

    /// The DLQ copy's deduplication id: the original one plus this message's send time, so a
    /// message redriven and dead-lettered again within SQS's 5-minute window (it was sent
    /// anew) is not mistaken for the first copy and dropped. A repeat of the same copy within
    /// the window is dropped; a dispatcher that crashed between copy and delete gets the
    /// message back only after the 360 s visibility timeout, past the window, and copies it
    /// again (the DLQ then holds the event twice, under one `webhook-id`).
    fn dead_letter_dedup_id(&self) -> String {
        let base = self.dedup_id.as_deref().unwrap_or(&self.message_id);
        let suffix = format!(".d{}", self.sent_timestamp_ms.unwrap_or_default());
        format!("{}{suffix}", crate::queue::id_prefix(base, suffix.len()))
    }
}

/// What became of one message.
enum Settled {
    /// Delivered, dead-lettered or expired: delete it, go on with its group.
    Done,
    /// Waits for a retry: report it failed, hold the rest of its group.
    Retry,
}

/// Why a message goes to the DLQ.
#[derive(Clone, Copy)]
enum DeadLetterReason {
    Exhausted,
    Status(u16),
    /// About to outlive the queue's retention.
    Aging,
}

impl DeadLetterReason {
    fn label(self) -> &'static str {
        match self {
            DeadLetterReason::Exhausted => "exhausted",
            DeadLetterReason::Status(_) => "status",
            DeadLetterReason::Aging => "aging",
        }
    }
}

impl Dispatcher {
    /// Counts attempts in memory until [`Dispatcher::with_attempts`] gives a shared ledger
    /// (one dispatcher process: the local stack, tests).
    pub fn new(
        deliverer: Deliverer,
        queues: DispatchQueues,
        policy: impl Into<RetryPolicy>,
        metrics: Metrics,
    ) -> Self {
        Dispatcher {
            deliverer,
            queue: queues.source,
            dead_letter: queues.dead_letter,
            attempts: Arc::new(MemoryLedger::new()),
            policy: policy.into(),
            metrics,
            jitter: Arc::new(fastrand::f64),
        }
    }

    pub fn with_attempts(mut self, ledger: Arc<dyn AttemptLedger>) -> Self {
        self.attempts = ledger;
        self
    }

    pub fn with_jitter(mut self, jitter: JitterSource) -> Self {
        self.jitter = jitter;
        self
    }

    /// The handler without a deadline (the local stack's poller, tests).
    pub async fn handle_batch(&self, event: SqsEvent) -> SqsBatchResponse {
        self.handle_batch_until(event, None).await
    }

    /// The handler: delivers a batch and returns the messages that must stay in the queue. No
    /// attempt starts unless it can end, and its failure be settled, before `deadline`.
    pub async fn handle_batch_until(
        &self,
        event: SqsEvent,
        deadline: Option<Instant>,
    ) -> SqsBatchResponse {
        let started = Instant::now();
        let groups = group_in_order(event.records.into_iter().map(Job::from_record));
        let summary = self.metrics.summary("delivered");
        let failed = join_all(
            groups
                .into_iter()
                .map(|jobs| self.deliver_group(jobs, started, deadline, &summary)),
        )
        .await;
        summary.emit();
        let mut response = SqsBatchResponse::default();
        response.set_failures(failed.into_iter().flatten());
        response
    }

    /// Delivers one group in order; returns the ids of the messages that failed or were held.
    async fn deliver_group(
        &self,
        jobs: Vec<Job>,
        started: Instant,
        deadline: Option<Instant>,
        summary: &Summary,
    ) -> Vec<String> {
        let mut jobs = jobs.into_iter();
        let mut failed = Vec::new();
        let mut out_of_time = None;
        for job in jobs.by_ref() {
            if !time_left(deadline, self.deliverer.timeout() + SETTLE_RESERVE) {
                out_of_time = Some(job);
                break;
            }
            if let Settled::Retry = self.settle(&job, started, summary).await {
                failed.push(job.message_id);
                break;
            }
        }
        let ran_out = out_of_time.is_some();
        let why_held = if ran_out {
            "not sent: too little of the invocation's time is left"
        } else {
            "not sent: an earlier message of its group failed"
        };
        let mut released = Vec::new();
        for held in out_of_time.into_iter().chain(jobs) {
            // An aging message is dead-lettered rather than held longer, one after another (the
            // DLQ keeps their order), while there is time; if the batch ran out of time before
            // reaching it, it is released instead and gets its attempt next time.
            let time_to_move = !ran_out && time_left(deadline, DEAD_LETTER_RESERVE);
            if let (true, true, Some(body)) = (time_to_move, self.aging(&held), held.body.clone()) {
                let reason = DeadLetterReason::Aging;
                match self
                    .move_to_dead_letter(&held, body, 0, reason, started)
                    .await
                {
                    Settled::Done => {}
                    Settled::Retry => failed.push(held.message_id),
                }
                continue;
            }
            tracing::info!(
                event_id = %held.event_id,
                event_type = held.type_name(),
                group = %held.group,
                outcome = "held",
                "{why_held}"
            );
            released.push(held);
        }
        // All at once: they are independent, and near the deadline there is no time for nine
        // round trips one after another.
        join_all(
            released
                .iter()
                .map(|held| self.set_visibility(held, Duration::ZERO, started)),
        )
        .await;
        failed.extend(released.into_iter().map(|held| held.message_id));
        failed
    }

    /// Expiry, then one attempt, then what its outcome calls for.
    async fn settle(&self, job: &Job, started: Instant, summary: &Summary) -> Settled {
        if self.expired(job) {
            tracing::info!(
                event_id = %job.event_id,
                event_type = job.type_name(),
                group = %job.group,
                outcome = "expired",
                "not delivered: the QR code is older than the QR lifetime"
            );
            self.metrics.count(metric::EXPIRED, None);
            return Settled::Done;
        }
        let Some(body) = job.body.clone() else {
            // SQS never stores an empty message; only a broken record gets here. It stays in
            // the queue: the redrive policy's maxReceiveCount moves it to the DLQ.
            tracing::error!(message_id = %job.message_id, group = %job.group, "queue message has no body");
            return Settled::Retry;
        };
        let earlier = self.earlier_failures(job).await;
        let attempt = earlier.saturating_add(1);
        let (outcome, took) = self.deliverer.attempt(&job.event_id, body.clone()).await;
        let duration_ms = took.as_secs_f64() * 1000.0;
        summary.put(metric::DELIVERY_LATENCY, duration_ms, Unit::Milliseconds);
        match outcome {
            Outcome::Delivered { status } => {
                self.delivered(job, attempt, status, duration_ms, summary)
                    .await;
                Settled::Done
            }
            Outcome::Failed(failure) => {
                self.failed(job, body, earlier, failure, duration_ms, started)
                    .await
            }
        }
    }

    /// Records a delivery in the invocation's summary, and forgets the earlier failures it ends.
    async fn delivered(
        &self,
        job: &Job,
        attempt: u32,
        status: u16,
        duration_ms: f64,
        summary: &Summary,
    ) {
        let earlier = attempt - 1;
        // At DEBUG: the invocation's summary line names every delivered event.
        tracing::debug!(
            event_id = %job.event_id,
            event_type = job.type_name(),
            group = %job.group,
            attempt,
            status,
            duration_ms = duration_ms.round() as u64,
            outcome = "delivered",
            "delivered"
        );
        // Counted by EndToEndLatency's SampleCount.
        summary.event(&job.event_id);
        if let Some(sent) = job.sent_timestamp_ms {
            let end_to_end = unix_millis().saturating_sub(sent);
            summary.put(
                metric::END_TO_END_LATENCY,
                end_to_end as f64,
                Unit::Milliseconds,
            );
        }
        if earlier > 0 {
            self.forget(job).await;
        }
    }

    /// After a failed attempt: to the dead-letter queue if its status, the schedule or the
    /// message's age says so, else back to the queue for the next attempt.
    async fn failed(
        &self,
        job: &Job,
        body: String,
        earlier: u32,
        failure: Failure,
        duration_ms: f64,
        started: Instant,
    ) -> Settled {
        let attempt = earlier.saturating_add(1);
        self.metrics.count(
            metric::DELIVERY_FAILED,
            Some((dimension::STATUS_CLASS, failure.class())),
        );
        let dead_letter = match failure.status() {
            Some(status) if self.policy.dead_letter_statuses.contains(status) => {
                Some(DeadLetterReason::Status(status))
            }
            _ if attempt >= self.policy.schedule.max_attempts() => {
                Some(DeadLetterReason::Exhausted)
            }
            _ if self.aging(job) => Some(DeadLetterReason::Aging),
            _ => None,
        };
        let log_failure = |outcome: &str, retry_in_s: Option<u64>| {
            tracing::warn!(
                event_id = %job.event_id,
                event_type = job.type_name(),
                group = %job.group,
                attempt,
                status = failure.status(),
                failure = failure.class(),
                duration_ms = duration_ms.round() as u64,
                retry_in_s,
                outcome,
                "delivery failed: {failure}"
            );
        };
        if let Some(reason) = dead_letter {
            log_failure("dead-letter", None);
            return self
                .move_to_dead_letter(job, body, earlier, reason, started)
                .await;
        }
        self.record_failure(job).await;
        let wanted = self.next_wait(attempt, &failure);
        let set = self.set_visibility(job, wanted, started).await;
        log_failure("retry", set.map(|d| d.as_secs()));
        Settled::Retry
    }

    /// Older than [`AGING_LIMIT`] by the queue's own clock (`SentTimestamp`).
    fn aging(&self, job: &Job) -> bool {
        job.sent_timestamp_ms
            .is_some_and(|sent| unix_millis().saturating_sub(sent) > AGING_LIMIT.as_millis() as u64)
    }

    /// A `qr` older than the QR lifetime, by the earlier of its own timestamp and the time the
    /// queue accepted it: the code is useless by then, whoever held it up.
    fn expired(&self, job: &Job) -> bool {
        if job.event_type != Some(EventType::Qr) {
            return false;
        }
        let stamped = job.body.as_deref().and_then(envelope_timestamp_ms);
        let Some(born) = [stamped, job.sent_timestamp_ms].into_iter().flatten().min() else {
            return false;
        };
        unix_millis().saturating_sub(born) > self.policy.qr_ttl.as_millis() as u64
    }

    /// Failed attempts so far. A first receive has none (no lookup); a message received before
    /// asks the ledger, or, if the ledger cannot answer, counts receives as attempts: that can
    /// only make it reach the DLQ sooner, never retry it forever.
    async fn earlier_failures(&self, job: &Job) -> u32 {
        if job.receive_count <= 1 {
            return 0;
        }
        match self.attempts.failed_attempts(&job.message_id).await {
            Ok(count) => count,
            Err(e) => {
                tracing::warn!(event_id = %job.event_id, group = %job.group, error = %e, "counting receives as attempts");
                job.receive_count - 1
            }
        }
    }

    async fn record_failure(&self, job: &Job) {
        if let Err(e) = self.attempts.record_failure(&job.message_id).await {
            tracing::warn!(event_id = %job.event_id, group = %job.group, error = %e, "failed attempt not counted");
        }
    }

    async fn forget(&self, job: &Job) {
        if let Err(e) = self.attempts.forget(&job.message_id).await {
            // Harmless: the entry expires by itself, and redriven copies are new messages.
            tracing::warn!(event_id = %job.event_id, group = %job.group, error = %e, "attempt count not cleared");
        }
    }

    /// The schedule's wait after failed attempt `attempt`, honouring `Retry-After`.
    fn next_wait(&self, attempt: u32, failure: &Failure) -> Duration {
        let signal = failure.signal();
        self.policy
            .schedule
            .delay_after(attempt, signal, failure.retry_after, (self.jitter)())
            .unwrap_or(match signal {
                FailureSignal::Overloaded => crate::backoff::OVERLOAD_FLOOR,
                FailureSignal::Plain => Duration::ZERO,
            })
    }

    /// Copies the message to the DLQ and reports it done, so its group goes on. If the DLQ
    /// does not take it, the message stays in the queue and comes back after a short wait.
    async fn move_to_dead_letter(
        &self,
        job: &Job,
        body: String,
        earlier: u32,
        reason: DeadLetterReason,
        started: Instant,
    ) -> Settled {
        let copy = NewMessage {
            body,
            group_id: job.group.clone(),
            dedup_id: job.dead_letter_dedup_id(),
        };
        match self.dead_letter.send(copy).await {
            Ok(()) => {
                tracing::warn!(
                    event_id = %job.event_id,
                    event_type = job.type_name(),
                    group = %job.group,
                    reason = reason.label(),
                    status = match reason { DeadLetterReason::Status(s) => Some(s), _ => None },
                    outcome = "dead-lettered",
                    "moved to the dead-letter queue; the rest of its group goes on"
                );
                self.metrics.count(
                    metric::DEAD_LETTERED,
                    Some((dimension::REASON, reason.label())),
                );
                if earlier > 0 {
                    self.forget(job).await;
                }
                Settled::Done
            }
            Err(e) => {
                tracing::error!(event_id = %job.event_id, group = %job.group, error = %e, "could not move the message to the dead-letter queue; it stays in the queue");
                self.set_visibility(job, crate::backoff::OVERLOAD_FLOOR, started)
                    .await;
                Settled::Retry
            }
        }
    }

    /// Sets a message's visibility to `wanted`, capped at what SQS's 12-hour limit leaves since
    /// this batch was received (see [`MAX_VISIBILITY`], [`RECEIVE_MARGIN`]). A refused change
    /// is asked again for half as long. Returns what was set; `None` leaves the message to the
    /// queue's own visibility timeout (it is safe in the queue either way).
    async fn set_visibility(
        &self,
        job: &Job,
        wanted: Duration,
        started: Instant,
    ) -> Option<Duration> {
        let left = MAX_VISIBILITY.saturating_sub(RECEIVE_MARGIN + started.elapsed());
        let mut timeout = wanted.min(left);
        for _ in 0..VISIBILITY_TRIES {
            match self
                .queue
                .change_visibility(&job.receipt_handle, timeout)
                .await
            {
                Ok(()) => return Some(timeout),
                Err(QueueError::Refused(e)) if timeout >= Duration::from_secs(2) => {
                    tracing::warn!(event_id = %job.event_id, group = %job.group, error = %e, asked_s = timeout.as_secs(), "visibility change refused; asking for half");
                    timeout /= 2;
                }
                Err(e) => {
                    tracing::warn!(event_id = %job.event_id, group = %job.group, error = %e, "could not change visibility; the queue's own timeout applies");
                    return None;
                }
            }
        }
        None
    }
}

/// The envelope's `timestamp` in unix milliseconds, if it has a valid one.
fn envelope_timestamp_ms(body: &str) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Stamp {
        timestamp: String,
    }
    let stamp: Stamp = serde_json::from_str(body).ok()?;
    let at = time::OffsetDateTime::parse(
        &stamp.timestamp,
        &time::format_description::well_known::Rfc3339,
    )
    .ok()?;
    u64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Splits records into groups, keeping first-seen group order and record order within each.
fn group_in_order(jobs: impl Iterator<Item = Job>) -> Vec<Vec<Job>> {
    let mut groups: Vec<Vec<Job>> = Vec::new();
    for job in jobs {
        match groups.iter_mut().find(|g| g[0].group == job.group) {
            Some(group) => group.push(job),
            None => groups.push(vec![job]),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    //! The FIFO release rule, the attempt count, the dead-letter moves and the visibility a
    //! failure sets, pinned against a queue that records what the dispatcher asks of it (and
    //! refuses what SQS would refuse) and a loopback receiver with scripted answers.
    use super::*;
    use crate::backoff::{DeadLetterStatuses, RetrySchedule};
    use crate::envelope::examples;
    use crate::signature::SecretSet;
    use async_trait::async_trait;
    use axum::http::StatusCode;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// Records visibility changes and sends; refuses visibility over `refuse_above`.
    #[derive(Default)]
    struct RecordingQueue {
        visibility: Mutex<Vec<(String, Duration)>>,
        refused: Mutex<Vec<Duration>>,
        sent: Mutex<Vec<NewMessage>>,
        refuse_above: Option<Duration>,
    }

    #[async_trait]
    impl Producer for RecordingQueue {
        async fn send(&self, message: NewMessage) -> Result<(), QueueError> {
            self.sent.lock().unwrap().push(message);
            Ok(())
        }
        async fn send_batch(
            &self,
            _: Vec<NewMessage>,
        ) -> Result<Vec<Result<(), QueueError>>, QueueError> {
            unreachable!("the dispatcher moves one message at a time")
        }
    }

    #[async_trait]
    impl Visibility for RecordingQueue {
        async fn change_visibility(
            &self,
            receipt: &str,
            timeout: Duration,
        ) -> Result<(), QueueError> {
            if self.refuse_above.is_some_and(|limit| timeout > limit) {
                self.refused.lock().unwrap().push(timeout);
                return Err(QueueError::Refused("InvalidParameterValue".into()));
            }
            self.visibility
                .lock()
                .unwrap()
                .push((receipt.to_owned(), timeout));
            Ok(())
        }
    }

    type ScriptMap = HashMap<&'static str, (u16, Option<&'static str>)>;

    /// A receiver answering by the message's `id`: 204 unless `script` names another status.
    /// Returns its URL and the ids it was sent, in order.
    async fn receiver(
        script: ScriptMap,
        answer_after: Duration,
    ) -> (reqwest::Url, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let app = axum::Router::new().fallback(move |body: String| {
            let script = script.clone();
            let log = Arc::clone(&log);
            async move {
                let id: serde_json::Value = serde_json::from_str(&body).unwrap();
                let id = id["id"].as_str().unwrap().to_owned();
                log.lock().unwrap().push(id.clone());
                tokio::time::sleep(answer_after).await;
                let (status, retry_after) = script.get(id.as_str()).copied().unwrap_or((204, None));
                let mut response = axum::response::IntoResponse::into_response(
                    StatusCode::from_u16(status).unwrap(),
                );
                if let Some(value) = retry_after {
                    response
                        .headers_mut()
                        .insert("retry-after", value.parse().unwrap());
                }
                response
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, seen)
    }

    fn record_with(id: &str, group: &str, receives: u32, body: String) -> SqsMessage {
        let mut record = SqsMessage::default();
        record.message_id = Some(format!("mid-{id}"));
        record.receipt_handle = Some(format!("rh-{id}"));
        record.body = Some(body);
        record.attributes = HashMap::from([
            (attr::GROUP_ID.to_owned(), group.to_owned()),
            (attr::DEDUP_ID.to_owned(), id.to_owned()),
            (attr::RECEIVE_COUNT.to_owned(), receives.to_string()),
            (attr::SENT_TIMESTAMP.to_owned(), unix_millis().to_string()),
        ]);
        record
    }

    fn record(id: &str, group: &str, receives: u32) -> SqsMessage {
        record_with(
            id,
            group,
            receives,
            examples::status(true).with_id(id).to_json(),
        )
    }

    /// What one batch did: failed ids, visibility changes (sorted), DLQ copies, ids sent.
    struct Run {
        failed: Vec<String>,
        visibility: Vec<(String, Duration)>,
        refused: Vec<Duration>,
        dead_lettered: Vec<NewMessage>,
        sent: Vec<String>,
    }

    struct Setup {
        script: ScriptMap,
        ledger: Arc<MemoryLedger>,
        refuse_above: Option<Duration>,
        policy: RetryPolicy,
        /// The invocation's deadline, counted from the start of `dispatch`.
        deadline_in: Option<Duration>,
        /// How long the receiver takes to answer each delivery.
        answer_after: Duration,
    }

    impl Setup {
        fn new(script: ScriptMap) -> Self {
            Setup {
                script,
                ledger: Arc::new(MemoryLedger::new()),
                refuse_above: None,
                policy: RetrySchedule::parse("10,20,30").unwrap().into(),
                deadline_in: None,
                answer_after: Duration::ZERO,
            }
        }

        async fn dispatch(self, records: Vec<SqsMessage>) -> Run {
            let queue = Arc::new(RecordingQueue {
                refuse_above: self.refuse_above,
                ..Default::default()
            });
            let dlq = Arc::new(RecordingQueue::default());
            let secrets =
                Arc::new(SecretSet::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap());
            let (url, seen) = receiver(self.script, self.answer_after).await;
            let deliverer = Deliverer::new(url, secrets, Duration::from_secs(5)).unwrap();
            let queues = DispatchQueues {
                source: queue.clone(),
                dead_letter: dlq.clone(),
            };
            let dispatcher = Dispatcher::new(deliverer, queues, self.policy, Metrics::off())
                .with_attempts(self.ledger)
                .with_jitter(Arc::new(|| 0.5));
            let mut event = SqsEvent::default();
            event.records = records;
            let deadline = self.deadline_in.map(|d| Instant::now() + d);
            let response = dispatcher.handle_batch_until(event, deadline).await;
            let mut visibility = queue.visibility.lock().unwrap().clone();
            visibility.sort_by(|x, y| x.0.cmp(&y.0));
            Run {
                failed: response
                    .batch_item_failures
                    .into_iter()
                    .map(|f| f.item_identifier)
                    .collect(),
                visibility,
                refused: queue.refused.lock().unwrap().clone(),
                dead_lettered: dlq.sent.lock().unwrap().clone(),
                sent: seen.lock().unwrap().clone(),
            }
        }
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[tokio::test]
    async fn a_failed_head_waits_its_backoff_and_the_rest_of_its_group_is_released_unsent() {
        let script = HashMap::from([("a1", (500, None))]);
        let records = vec![
            record("a1", "a", 2),
            record("a2", "a", 2),
            record("b1", "b", 1),
            record("a3", "a", 1),
        ];
        let run = Setup::new(script).dispatch(records).await;
        assert_eq!(
            run.failed,
            ["mid-a1", "mid-a2", "mid-a3"],
            "b1 delivered; a2 and a3 held behind a1"
        );
        assert_eq!(run.sent, ["a1", "b1"]);
        assert_eq!(
            run.visibility,
            [
                ("rh-a1".into(), S(10)),
                ("rh-a2".into(), S(0)),
                ("rh-a3".into(), S(0))
            ],
            "a1 was received twice but never attempted: its first failure waits step 1; the held ones are visible at once"
        );
        assert!(run.dead_lettered.is_empty());
    }

    #[tokio::test]
    async fn the_attempt_number_comes_from_the_ledger_not_the_receive_count() {
        let setup = Setup::new(HashMap::from([("x", (500, None))]));
        setup.ledger.record_failure("mid-x").await.unwrap();
        let ledger = Arc::clone(&setup.ledger);
        let run = setup.dispatch(vec![record("x", "g", 9)]).await;
        assert_eq!(
            run.visibility,
            [("rh-x".into(), S(20))],
            "attempt 2 → step 2"
        );
        assert_eq!(ledger.failed_attempts("mid-x").await, Ok(2));
    }

    #[tokio::test]
    async fn retry_after_and_overload_raise_the_wait() {
        let script = HashMap::from([("r", (503, Some("120"))), ("t", (429, None))]);
        let records = vec![record("r", "g1", 1), record("t", "g2", 1)];
        let run = Setup::new(script).dispatch(records).await;
        assert_eq!(run.failed.len(), 2);
        assert_eq!(
            run.visibility,
            [
                ("rh-r".into(), S(120)), // Retry-After beats the 10 s step
                ("rh-t".into(), S(60)),  // 429: at least the overload floor
            ]
        );
    }

    #[tokio::test]
    async fn an_exhausted_head_goes_to_the_dlq_and_its_group_goes_on() {
        let setup = Setup::new(HashMap::from([("last", (500, None))]));
        for _ in 0..3 {
            setup.ledger.record_failure("mid-last").await.unwrap();
        }
        let ledger = Arc::clone(&setup.ledger);
        let records = vec![record("last", "g", 7), record("next", "g", 7)];
        let run = setup.dispatch(records).await;
        assert!(run.failed.is_empty(), "both settled: {:?}", run.failed);
        assert_eq!(
            run.sent,
            ["last", "next"],
            "attempt 4 of 4, then its follower"
        );
        assert_eq!(run.dead_lettered.len(), 1);
        let copy = &run.dead_lettered[0];
        assert_eq!(copy.group_id, "g");
        assert!(copy.dedup_id.starts_with("last.d"), "{}", copy.dedup_id);
        assert!(copy.body.contains(r#""id":"last""#));
        assert_eq!(ledger.failed_attempts("mid-last").await, Ok(0), "forgotten");
    }

    #[tokio::test]
    async fn a_dead_letter_status_moves_the_event_at_once() {
        let mut setup = Setup::new(HashMap::from([
            ("gone", (410, None)),
            ("teapot", (418, None)),
        ]));
        setup.policy.dead_letter_statuses = DeadLetterStatuses::parse("410 418").unwrap();
        let records = vec![
            record("gone", "g", 1),
            record("after", "g", 1),
            record("teapot", "h", 1),
        ];
        let run = setup.dispatch(records).await;
        assert!(run.failed.is_empty());
        assert_eq!(run.dead_lettered.len(), 2);
        assert!(run.sent.contains(&"after".to_owned()));
        assert!(run.visibility.is_empty());
    }

    #[tokio::test]
    async fn visibility_never_exceeds_what_sqs_leaves_and_a_refusal_asks_for_half() {
        // Retry-After: a day. The most the dispatcher may ask for is 12 h minus its margin.
        let setup = Setup::new(HashMap::from([("r", (503, Some("86400")))]));
        let run = setup.dispatch(vec![record("r", "g", 1)]).await;
        let (_, asked) = run.visibility[0];
        assert!(asked <= MAX_VISIBILITY - RECEIVE_MARGIN, "{asked:?}");
        assert!(asked >= MAX_VISIBILITY - RECEIVE_MARGIN - S(5), "{asked:?}");

        // A queue that refuses anything over 5 hours: the dispatcher halves until accepted.
        let mut setup = Setup::new(HashMap::from([("r", (503, Some("86400")))]));
        setup.refuse_above = Some(S(5 * 3600));
        let run = setup.dispatch(vec![record("r", "g", 1)]).await;
        assert_eq!(run.refused.len(), 2, "{:?}", run.refused);
        let (_, set) = run.visibility[0];
        assert!(set <= S(5 * 3600) && set > S(2 * 3600), "{set:?}");
    }

    #[tokio::test]
    async fn a_message_about_to_outlive_the_queue_goes_to_the_dlq_instead() {
        let old = (unix_millis() - AGING_LIMIT.as_millis() as u64 - 60_000).to_string();
        let aged = |mut record: SqsMessage| {
            record
                .attributes
                .insert(attr::SENT_TIMESTAMP.to_owned(), old.clone());
            record
        };
        let script = HashMap::from([("g-head", (500, None)), ("h-head", (500, None))]);
        let records = vec![
            // g: a young head fails; an aged follower leaves for the DLQ, a young one waits.
            record("g-head", "g", 1),
            aged(record("g-aged", "g", 1)),
            record("g-young", "g", 1),
            // h: an aged head fails its attempt: DLQ, and its chat goes on.
            aged(record("h-head", "h", 1)),
            record("h-next", "h", 1),
        ];
        let run = Setup::new(script).dispatch(records).await;
        let mut moved: Vec<&str> = run
            .dead_lettered
            .iter()
            .map(|m| m.dedup_id.split(".d").next().unwrap())
            .collect();
        moved.sort();
        assert_eq!(moved, ["g-aged", "h-head"]);
        let mut sent = run.sent.clone();
        sent.sort();
        assert_eq!(sent, ["g-head", "h-head", "h-next"]);
        assert_eq!(run.failed, ["mid-g-head", "mid-g-young"]);
    }

    #[tokio::test]
    async fn an_aging_message_the_batch_had_no_time_for_gets_its_attempt_next_time() {
        let old = (unix_millis() - AGING_LIMIT.as_millis() as u64 - 60_000).to_string();
        let mut aged = record("old", "a", 1);
        aged.attributes.insert(attr::SENT_TIMESTAMP.to_owned(), old);
        let setup = Setup {
            deadline_in: Some(S(1)),
            ..Setup::new(HashMap::new())
        };
        let run = setup.dispatch(vec![aged]).await;
        assert!(run.sent.is_empty());
        assert!(run.dead_lettered.is_empty(), "not dead-lettered untried");
        assert_eq!(run.failed, ["mid-old"]);
        assert_eq!(run.visibility, [("rh-old".into(), S(0))]);
    }

    #[tokio::test]
    async fn a_stale_qr_is_neither_delivered_nor_dead_lettered() {
        let old = "2020-01-01T00:00:00Z";
        let fresh = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let qr = |id: &str, at: &str| {
            examples::qr("data:image/png;base64,AAAA", at)
                .with_id(id)
                .to_json()
        };
        let mut status_old = examples::status(true).with_id("old-status");
        status_old.timestamp = old.into();
        let status_old = status_old.to_json();
        let records = vec![
            record_with("old-qr", "s", 1, qr("old-qr", old)),
            record_with("new-qr", "s", 1, qr("new-qr", &fresh)),
            record_with("old-status", "t", 1, status_old),
        ];
        let run = Setup::new(HashMap::new()).dispatch(records).await;
        assert!(run.failed.is_empty());
        assert!(run.dead_lettered.is_empty());
        let mut sent = run.sent;
        sent.sort();
        assert_eq!(sent, ["new-qr", "old-status"], "status events never expire");
    }

    #[tokio::test]
    async fn no_attempt_starts_that_could_outrun_the_invocation() {
        // 1 s left: less than one attempt's 5 s timeout plus the settling reserve.
        let setup = Setup {
            deadline_in: Some(S(1)),
            ..Setup::new(HashMap::new())
        };
        let ledger = Arc::clone(&setup.ledger);
        let run = setup
            .dispatch(vec![
                record("a1", "a", 1),
                record("a2", "a", 1),
                record("b1", "b", 1),
            ])
            .await;
        assert!(run.sent.is_empty(), "nothing sent: {:?}", run.sent);
        assert_eq!(run.failed, ["mid-a1", "mid-a2", "mid-b1"]);
        assert_eq!(
            run.visibility,
            [
                ("rh-a1".into(), S(0)),
                ("rh-a2".into(), S(0)),
                ("rh-b1".into(), S(0))
            ],
            "visible again at once, for the next invocation"
        );
        assert_eq!(
            ledger.failed_attempts("mid-a1").await.unwrap(),
            0,
            "no attempt counted"
        );
        assert!(run.dead_lettered.is_empty());
    }

    #[tokio::test]
    async fn an_attempt_that_fits_runs_and_its_group_stops_where_time_runs_short() {
        // Room for the first attempt of each group (timeout 5 s + reserve 20 s, 2 s to spare),
        // not for a second once the first took 3 s.
        let setup = Setup {
            deadline_in: Some(S(5) + SETTLE_RESERVE + S(2)),
            answer_after: S(3),
            ..Setup::new(HashMap::new())
        };
        let records = vec![
            record("a1", "a", 1),
            record("a2", "a", 1),
            record("a3", "a", 1),
            record("b1", "b", 1),
        ];
        let mut run = setup.dispatch(records).await;
        run.sent.sort();
        assert_eq!(
            run.sent,
            ["a1", "b1"],
            "the first of each group, concurrently"
        );
        assert_eq!(run.failed, ["mid-a2", "mid-a3"], "a1 and b1 delivered");
        assert_eq!(
            run.visibility,
            [("rh-a2".into(), S(0)), ("rh-a3".into(), S(0))]
        );
    }

    #[test]
    fn lambdas_deadline_becomes_an_instant_and_a_missing_send_time_is_no_time() {
        let in_a_minute = deadline_from_unix_ms(unix_millis() + 60_000);
        let left = in_a_minute.saturating_duration_since(Instant::now());
        assert!(left > S(50) && left <= S(60), "{left:?}");
        let past = deadline_from_unix_ms(1);
        assert!(past <= Instant::now());

        let mut zero = record("z", "z", 1);
        zero.attributes
            .insert(attr::SENT_TIMESTAMP.to_owned(), "0".to_owned());
        assert_eq!(Job::from_record(zero).sent_timestamp_ms, None);
    }
}
