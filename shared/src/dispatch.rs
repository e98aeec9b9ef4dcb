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
use crate::telemetry::{Metrics, dimension, metric, unix_millis};
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use futures::future::join_all;
use std::sync::Arc;
use std::time::Duration;

/// Random numbers in [0, 1) for jitter; injectable so tests are exact.
pub type JitterSource = Arc<dyn Fn() -> f64 + Send + Sync>;

pub struct Dispatcher {
    deliverer: Deliverer,
    queue: Arc<dyn Queue>,
    schedule: RetrySchedule,
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
    event_id: String,
    event_type: &'static str,
    attempt: u32,
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
                    let end_to_end = unix_millis().saturating_sub(sent);
                    self.metrics
                        .millis(metric::END_TO_END_LATENCY, end_to_end as f64);
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

#[cfg(test)]
mod tests {
    //! The FIFO release rule and the backoff a failure schedules, pinned against a queue that
    //! records what the dispatcher asks of it and a loopback receiver with scripted answers.
    use super::*;
    use crate::queue::{NewMessage, QueueError, ReceivedMessage};
    use crate::signature::SecretSet;
    use async_trait::async_trait;
    use axum::http::StatusCode;
    use std::collections::HashMap;
    use std::sync::Mutex;

    #[derive(Default)]
    struct RecordingQueue {
        visibility: Mutex<Vec<(String, Duration)>>,
    }

    #[async_trait]
    impl Queue for RecordingQueue {
        async fn send(&self, _: NewMessage) -> Result<(), QueueError> {
            unreachable!("the dispatcher never sends")
        }
        async fn send_batch(
            &self,
            _: Vec<NewMessage>,
        ) -> Result<Vec<Result<(), QueueError>>, QueueError> {
            unreachable!("the dispatcher never sends")
        }
        async fn receive(&self, _: usize, _: Duration) -> Result<Vec<ReceivedMessage>, QueueError> {
            unreachable!("the dispatcher never receives")
        }
        async fn delete(&self, _: &str) -> Result<(), QueueError> {
            unreachable!("the event source mapping deletes, not the dispatcher")
        }
        async fn change_visibility(
            &self,
            receipt: &str,
            timeout: Duration,
        ) -> Result<(), QueueError> {
            self.visibility
                .lock()
                .unwrap()
                .push((receipt.to_owned(), timeout));
            Ok(())
        }
    }

    /// A receiver answering by the message's `id`: 204 unless `script` names another status.
    async fn receiver(script: HashMap<&'static str, (u16, Option<&'static str>)>) -> reqwest::Url {
        let app = axum::Router::new().fallback(move |body: String| {
            let script = script.clone();
            async move {
                let id: serde_json::Value = serde_json::from_str(&body).unwrap();
                let (status, retry_after) = script
                    .get(id["id"].as_str().unwrap())
                    .copied()
                    .unwrap_or((204, None));
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
        url
    }

    fn record(id: &str, group: &str, attempt: u32) -> SqsMessage {
        let mut record = SqsMessage::default();
        record.message_id = Some(format!("mid-{id}"));
        record.receipt_handle = Some(format!("rh-{id}"));
        record.body = Some(format!(
            r#"{{"event":"status","data":{{"connected":true}},"timestamp":"2025-12-21T18:22:44Z","id":"{id}"}}"#
        ));
        record.attributes = HashMap::from([
            (attr::GROUP_ID.to_owned(), group.to_owned()),
            (attr::RECEIVE_COUNT.to_owned(), attempt.to_string()),
        ]);
        record
    }

    async fn dispatch(
        script: HashMap<&'static str, (u16, Option<&'static str>)>,
        records: Vec<SqsMessage>,
    ) -> (Vec<String>, Vec<(String, Duration)>) {
        let queue = Arc::new(RecordingQueue::default());
        let secrets = Arc::new(SecretSet::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap());
        let deliverer =
            Deliverer::new(receiver(script).await, secrets, Duration::from_secs(5)).unwrap();
        let schedule = RetrySchedule::parse("10,20,30").unwrap();
        let dispatcher = Dispatcher::new(deliverer, queue.clone(), schedule, Metrics::off())
            .with_jitter(Arc::new(|| 0.5));
        let mut event = SqsEvent::default();
        event.records = records;
        let response = dispatcher.handle_batch(event).await;
        let failed = response
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier)
            .collect();
        let visibility = queue.visibility.lock().unwrap().clone();
        (failed, visibility)
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
        let (failed, mut visibility) = dispatch(script, records).await;
        assert_eq!(
            failed,
            ["mid-a1", "mid-a2", "mid-a3"],
            "b1 delivered; a2 and a3 held behind a1"
        );
        visibility.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(
            visibility,
            [
                ("rh-a1".into(), S(20)),
                ("rh-a2".into(), S(0)),
                ("rh-a3".into(), S(0))
            ],
            "a1 waits the schedule's step for attempt 2; the held ones are visible at once"
        );
    }

    #[tokio::test]
    async fn retry_after_and_the_last_attempt_set_the_visibility() {
        let script = HashMap::from([
            ("r", (503, Some("120"))),
            ("t", (429, None)),
            ("last", (500, None)),
        ]);
        let records = vec![
            record("r", "g1", 1),
            record("t", "g2", 1),
            record("last", "g3", 4),
        ];
        let (failed, mut visibility) = dispatch(script, records).await;
        assert_eq!(failed.len(), 3);
        visibility.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(
            visibility,
            [
                ("rh-last".into(), S(0)), // attempt 4 of 4: released so SQS moves it to the DLQ
                ("rh-r".into(), S(120)),  // Retry-After beats the 10 s step
                ("rh-t".into(), S(60)),   // 429: at least the overload floor
            ]
        );
    }
}
