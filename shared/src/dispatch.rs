//! A batch of queue messages in, the failed ones out (SPEC §5). This is the dispatcher
//! Lambda's whole handler, and the local poller calls the very same function.
//!
//! Rules: records are grouped by `MessageGroupId`, keeping the batch's order inside each
//! group. Groups are delivered concurrently; a group's messages one after another. After the
//! first failure in a group, that message waits out its backoff (its visibility timeout is
//! set to the next step of the schedule) and the rest of the group is reported failed without
//! being sent, and made visible again at once: FIFO keeps the group blocked behind its
//! invisible head, so they follow it in order instead of waiting out the queue's full
//! visibility timeout. Only failures are listed in the response (`ReportBatchItemFailures`);
//! everything else is deleted by the caller.

use crate::backoff::RetrySchedule;
use crate::deliver::{Deliverer, Outcome};
use crate::envelope::probe;
use crate::queue::{Queue, attr};
use crate::telemetry::{Metrics, dimension, metric};
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use futures::future::join_all;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Random numbers in [0, 1) for jitter; injectable so tests are exact.
pub type JitterSource = Arc<dyn Fn() -> f64 + Send + Sync>;

pub struct Dispatcher {
    deliverer: Deliverer,
    queue: Arc<dyn Queue>,
    schedule: RetrySchedule,
    metrics: Metrics,
    jitter: JitterSource,
}

/// One record, with what the dispatcher reads from its attributes.
struct Job {
    message_id: String,
    receipt_handle: String,
    body: Option<String>,
    group: String,
    event_id: String,
    event_type: &'static str,
    attempt: u32,
    sent_timestamp_ms: Option<u64>,
}

impl Job {
    fn from_record(record: SqsMessage) -> Self {
        let attribute = |name: &str| record.attributes.get(name).cloned();
        let message_id = record.message_id.clone().unwrap_or_default();
        let body = record.body.clone();
        let (event_type, event_id) = probe(body.as_deref().unwrap_or_default().as_bytes());
        Job {
            group: attribute(attr::GROUP_ID).unwrap_or_else(|| message_id.clone()),
            event_id,
            event_type: event_type.map_or("unknown", |t| t.as_str()),
            attempt: attribute(attr::RECEIVE_COUNT)
                .and_then(|n| n.parse().ok())
                .unwrap_or(1),
            sent_timestamp_ms: attribute(attr::SENT_TIMESTAMP).and_then(|t| t.parse().ok()),
            receipt_handle: record.receipt_handle.unwrap_or_default(),
            message_id,
            body,
        }
    }
}

impl Dispatcher {
    pub fn new(
        deliverer: Deliverer,
        queue: Arc<dyn Queue>,
        schedule: RetrySchedule,
        metrics: Metrics,
    ) -> Self {
        Dispatcher {
            deliverer,
            queue,
            schedule,
            metrics,
            jitter: Arc::new(fastrand::f64),
        }
    }

    pub fn with_jitter(mut self, jitter: JitterSource) -> Self {
        self.jitter = jitter;
        self
    }

    pub fn deliverer(&self) -> &Deliverer {
        &self.deliverer
    }

    pub fn schedule(&self) -> &RetrySchedule {
        &self.schedule
    }

    /// The handler: delivers a batch and returns the messages that must stay in the queue.
    pub async fn handle_batch(&self, event: SqsEvent) -> SqsBatchResponse {
        let groups = group_in_order(event.records.into_iter().map(Job::from_record));
        let failed = join_all(groups.into_iter().map(|jobs| self.deliver_group(jobs))).await;
        let mut response = SqsBatchResponse::default();
        response.set_failures(failed.into_iter().flatten());
        response
    }

    /// Delivers one group in order; returns the ids of the messages that failed or were held.
    async fn deliver_group(&self, jobs: Vec<Job>) -> Vec<String> {
        let mut jobs = jobs.into_iter();
        let mut failed = Vec::new();
        for job in jobs.by_ref() {
            if !self.deliver(&job).await {
                failed.push(job.message_id);
                break;
            }
        }
        for held in jobs {
            tracing::info!(
                event_id = %held.event_id,
                event_type = held.event_type,
                group = %held.group,
                attempt = held.attempt,
                outcome = "held",
                "not sent: an earlier message of its group failed"
            );
            self.set_visibility(&held, Duration::ZERO).await;
            failed.push(held.message_id);
        }
        failed
    }

    /// One attempt for one message; on failure, schedules the next. True if delivered.
    async fn deliver(&self, job: &Job) -> bool {
        let Some(body) = job.body.clone() else {
            tracing::error!(message_id = %job.message_id, group = %job.group, "queue message has no body");
            self.after_failure(job, None).await;
            return false;
        };
        let (outcome, took) = self.deliverer.attempt(&job.event_id, body).await;
        let duration_ms = took.as_secs_f64() * 1000.0;
        self.metrics.millis(metric::DELIVERY_LATENCY, duration_ms);
        match outcome {
            Outcome::Delivered { status } => {
                tracing::info!(
                    event_id = %job.event_id,
                    event_type = job.event_type,
                    group = %job.group,
                    attempt = job.attempt,
                    status,
                    duration_ms = duration_ms.round() as u64,
                    outcome = "delivered",
                    "delivered"
                );
                self.metrics.count(metric::DELIVERED, None);
                if let Some(sent) = job.sent_timestamp_ms {
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64);
                    self.metrics
                        .millis(metric::END_TO_END_LATENCY, now.saturating_sub(sent) as f64);
                }
                true
            }
            Outcome::Failed(failure) => {
                self.metrics.count(
                    metric::DELIVERY_FAILED,
                    Some((dimension::STATUS_CLASS, failure.class())),
                );
                let next = self.after_failure(job, Some(&failure)).await;
                tracing::warn!(
                    event_id = %job.event_id,
                    event_type = job.event_type,
                    group = %job.group,
                    attempt = job.attempt,
                    status = failure.status(),
                    failure = failure.class(),
                    duration_ms = duration_ms.round() as u64,
                    retry_in_s = next.map(|d| d.as_secs()),
                    outcome = if next.is_some() { "retry" } else { "dead-letter" },
                    "delivery failed: {failure}"
                );
                false
            }
        }
    }

    /// Sets the failed message's visibility to its backoff; after the last attempt, to zero so
    /// the queue moves it to the DLQ on its next receive. Returns the backoff, if any.
    async fn after_failure(
        &self,
        job: &Job,
        failure: Option<&crate::deliver::Failure>,
    ) -> Option<Duration> {
        let signal = failure.map_or(crate::backoff::FailureSignal::Plain, |f| f.signal());
        let retry_after = failure.and_then(|f| f.retry_after);
        let next = self
            .schedule
            .delay_after(job.attempt, signal, retry_after, (self.jitter)());
        self.set_visibility(job, next.unwrap_or(Duration::ZERO))
            .await;
        next
    }

    async fn set_visibility(&self, job: &Job, timeout: Duration) {
        if let Err(e) = self
            .queue
            .change_visibility(&job.receipt_handle, timeout)
            .await
        {
            // The message stays safe in the queue; it just comes back after the queue's own
            // visibility timeout instead of the planned one.
            tracing::warn!(event_id = %job.event_id, group = %job.group, error = %e, "could not change visibility");
        }
    }
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
