//! The publisher port: every event ingest stores is also pushed to its session's live channel.
//!
//! At most once and no replay: a page loads the current state from its app, then listens. The
//! push happens right after the queue confirmed the event (so nothing is pushed that the
//! sender will have to send again), is bounded by [`PUBLISH_TIMEOUT`], is never retried, and
//! never changes ingest's answer: a failure is counted (`LivePublishFailed`) and logged
//! without the payload. A `qr` older than `QR_TTL_SECONDS` by its envelope's `timestamp` is
//! not pushed: the code is dead by then. An event over [`MAX_EVENT_BYTES`] is pushed as a
//! notice, counted (`LiveTooLarge`) and logged by id and size.
//!
//! Order: one session's events of a request are pushed in the request's order, because
//! subscribers apply events as they arrive (`[qr, connected]` reversed would leave a dead QR
//! on a connected session; the example page also drops a status or QR older than the one it
//! shows): up to [`MAX_EVENTS_PER_PUBLISH`] in one publish, the
//! next ones after it, so a batch of ten for one session is two round trips, not ten;
//! different sessions go concurrently.
//!
//! Adapters: the local hub (`live::hub`, in process) and, on AWS, AppSync Events' HTTP
//! publish.

use crate::envelope::{EventType, Routing};
use crate::live::channel::session_of;
use crate::telemetry::{Metrics, metric};
use async_trait::async_trait;
use serde_json::Value;
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::Duration;

/// The longest ingest waits for the live channel, all items of a request together.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_millis(250);

/// AppSync Events concepts: "Events are designed to be lightweight and efficient, with a
/// maximum size of 240 KB per event." Bigger events are pushed as a small notice instead.
pub const MAX_EVENT_BYTES: usize = 240 * 1000;

/// One event for one session's channel. `payload` is the JSON text subscribers receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveEvent {
    pub session: String,
    pub event_id: String,
    pub event_type: EventType,
    pub payload: String,
}

/// Why a push failed. Never carries the payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("the live channel is unavailable: {0}")]
    Unavailable(String),
    #[error("the live channel refused the event: {0}")]
    Refused(String),
    #[error("the live channel did not answer within {0} ms")]
    Timeout(u128),
}

/// AppSync Events, "Publish events via HTTP": "You can publish up to 5 events in a batch."
pub const MAX_EVENTS_PER_PUBLISH: usize = 5;

/// Where live events go.
#[async_trait]
pub trait Publisher: Send + Sync {
    /// Push one event to its session's channel, once. Implementations must not retry.
    async fn publish(&self, event: &LiveEvent) -> Result<(), PublishError>;

    /// Push up to [`MAX_EVENTS_PER_PUBLISH`] events of one session, in their order, once,
    /// appending one result per event to `results` as each is known (so a caller that stops
    /// waiting keeps what finished). By default one after another.
    async fn publish_in_order(
        &self,
        events: &[&LiveEvent],
        results: &mut Vec<Result<(), PublishError>>,
    ) {
        for event in events {
            results.push(self.publish(event).await);
        }
    }
}

/// What ingest holds to publish: the adapter, the QR lifetime, the time budget, the metrics.
#[derive(Clone)]
pub struct LivePublishing {
    publisher: Arc<dyn Publisher>,
    qr_ttl: Duration,
    timeout: Duration,
    metrics: Metrics,
}

impl LivePublishing {
    pub fn new(publisher: Arc<dyn Publisher>, qr_ttl: Duration, metrics: Metrics) -> Self {
        LivePublishing {
            publisher,
            qr_ttl,
            timeout: PUBLISH_TIMEOUT,
            metrics,
        }
    }

    /// A different bound on the wait (tests; a slower adapter).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The live event for a stored envelope, or `None` for an expired `qr`.
    /// `raw` is the envelope's exact text; `received_ms` when ingest received it.
    pub fn prepare(
        &self,
        envelope: &Value,
        raw: &str,
        routing: &Routing,
        received_ms: u64,
    ) -> Option<LiveEvent> {
        if routing.event_type == EventType::Qr {
            let born = envelope
                .get("timestamp")
                .and_then(Value::as_str)
                .and_then(rfc3339_millis);
            if born.is_some_and(|b| received_ms.saturating_sub(b) > self.qr_ttl.as_millis() as u64)
            {
                tracing::info!(
                    event_id = %routing.event_id,
                    event_type = "qr",
                    outcome = "live-expired",
                    "qr event too old to push live"
                );
                return None;
            }
        }
        let (event, oversize) = build_live_event(envelope, raw, routing, received_ms);
        if let Some(size) = oversize {
            self.metrics.count(metric::LIVE_TOO_LARGE, None);
            // Id and size only: the envelope is what was too large, and it may be personal data.
            tracing::info!(
                event_id = %routing.event_id,
                size,
                outcome = "live-too-large",
                "event over the live channel's 240 KB limit pushed as a notice"
            );
        }
        Some(event)
    }

    /// Pushes each session's events one after another in the given order, sessions
    /// concurrently, all within the budget; counts and logs failures.
    pub async fn publish_all(&self, events: Vec<LiveEvent>) {
        if events.is_empty() {
            return;
        }
        // Sessions in order of first appearance, each with its events in the given order. At
        // most ten events (a batch): a linear search is cheaper than a map.
        let mut sessions: Vec<Chain<'_>> = Vec::new();
        for event in &events {
            match sessions
                .iter_mut()
                .find(|s| s.events[0].session == event.session)
            {
                Some(chain) => chain.events.push(event),
                None => sessions.push(Chain {
                    events: vec![event],
                    results: Vec::new(),
                }),
            }
        }
        let publisher = &self.publisher;
        let chains = sessions.iter_mut().map(|chain| async move {
            for chunk in chain.events.chunks(MAX_EVENTS_PER_PUBLISH) {
                publisher.publish_in_order(chunk, &mut chain.results).await;
            }
        });
        // Over budget, the chains are dropped where they stand: what finished keeps its
        // result, the rest (in flight or not started) counts as timed out.
        let _ = tokio::time::timeout(self.timeout, futures::future::join_all(chains)).await;
        let timeout = PublishError::Timeout(self.timeout.as_millis());
        for chain in &sessions {
            for (index, event) in chain.events.iter().enumerate() {
                match chain.results.get(index) {
                    Some(Ok(())) => {}
                    Some(Err(error)) => self.failed(event, error),
                    None => self.failed(event, &timeout),
                }
            }
        }
    }

    fn failed(&self, event: &LiveEvent, error: &PublishError) {
        self.metrics.count(metric::LIVE_PUBLISH_FAILED, None);
        // Ids and the error only: the payload may be a QR code or a message text.
        tracing::warn!(
            event_id = %event.event_id,
            event_type = event.event_type.as_str(),
            error = %error,
            outcome = "live-failed",
            "live publish failed"
        );
    }
}

/// One session's events of a `publish_all` call, and the results of those pushed so far.
struct Chain<'a> {
    events: Vec<&'a LiveEvent>,
    results: Vec<Result<(), PublishError>>,
}

/// The payload subscribers receive: `{"id", "type", "session", "receivedAt", "envelope"}`,
/// the envelope byte for byte as accepted; or, over [`MAX_EVENT_BYTES`], the same without
/// `envelope` and with `"tooLarge": true` and a notice to fetch it from the app.
pub fn live_event(envelope: &Value, raw: &str, routing: &Routing, received_ms: u64) -> LiveEvent {
    build_live_event(envelope, raw, routing, received_ms).0
}

/// [`live_event`], and the full payload's size in bytes when it was over [`MAX_EVENT_BYTES`].
fn build_live_event(
    envelope: &Value,
    raw: &str,
    routing: &Routing,
    received_ms: u64,
) -> (LiveEvent, Option<usize>) {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Payload<'a> {
        id: &'a str,
        #[serde(rename = "type")]
        event_type: &'a str,
        session: &'a str,
        received_at: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        envelope: Option<&'a RawValue>,
        #[serde(skip_serializing_if = "Option::is_none")]
        too_large: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        notice: Option<&'a str>,
    }
    let session = session_of(envelope);
    let raw_value: Option<&RawValue> = serde_json::from_str(raw).ok();
    let mut payload = Payload {
        id: &routing.event_id,
        event_type: routing.event_type.as_str(),
        session,
        received_at: rfc3339(received_ms),
        envelope: raw_value,
        too_large: None,
        notice: None,
    };
    let mut text = serde_json::to_string(&payload).unwrap_or_default();
    let oversize = (text.len() > MAX_EVENT_BYTES).then_some(text.len());
    // `raw` not parsing is not an oversize (ingest only passes text it parsed): a notice all
    // the same, not counted.
    if oversize.is_some() || raw_value.is_none() {
        payload.envelope = None;
        payload.too_large = Some(true);
        payload.notice = Some("the event is too large to push live: fetch it from the app");
        text = serde_json::to_string(&payload).unwrap_or_default();
    }
    let event = LiveEvent {
        session: session.to_owned(),
        event_id: routing.event_id.clone(),
        event_type: routing.event_type,
        payload: text,
    };
    (event, oversize)
}

fn rfc3339_millis(text: &str) -> Option<u64> {
    let at =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()
}

fn rfc3339(millis: u64) -> String {
    let nanos = i128::from(millis) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::MetricsSink;
    use std::sync::Mutex;

    struct Recorder(Mutex<Vec<LiveEvent>>, Option<PublishError>, Duration);

    #[async_trait]
    impl Publisher for Recorder {
        async fn publish(&self, event: &LiveEvent) -> Result<(), PublishError> {
            tokio::time::sleep(self.2).await;
            self.0.lock().unwrap().push(event.clone());
            self.1.clone().map_or(Ok(()), Err)
        }
    }

    fn routing(event_type: EventType) -> Routing {
        Routing {
            event_type,
            event_id: "evt_1".into(),
            group_id: "default:status".into(),
        }
    }

    const NOW_MS: u64 = 1_766_341_200_000; // 2025-12-21T18:20:00Z

    fn live(recorder: Arc<Recorder>, buffer: Arc<Mutex<Vec<String>>>) -> LivePublishing {
        LivePublishing::new(
            recorder,
            Duration::from_secs(60),
            Metrics::new("test", MetricsSink::Buffer(buffer)),
        )
    }

    #[test]
    fn the_payload_carries_the_envelope_as_accepted_plus_id_and_receive_time() {
        let raw = r#"{"event":"status","data":{"connected":true},"timestamp":"2025-12-21T18:20:00Z","session":"sales"}"#;
        let value: Value = serde_json::from_str(raw).unwrap();
        let event = live_event(&value, raw, &routing(EventType::Status), NOW_MS + 5);
        assert_eq!(event.session, "sales");
        let payload: Value = serde_json::from_str(&event.payload).unwrap();
        assert_eq!(payload["id"], "evt_1");
        assert_eq!(payload["type"], "status");
        assert_eq!(payload["session"], "sales");
        assert_eq!(payload["receivedAt"], "2025-12-21T18:20:00.005Z");
        assert_eq!(payload["envelope"], value);
        assert!(event.payload.contains(raw), "byte for byte");
    }

    /// A `MakeWriter` that appends log lines to a shared buffer.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn message(content: &str) -> String {
        format!(
            r#"{{"event":"message","data":{{"message":{{"content":"{content}"}}}},"timestamp":"2025-12-21T18:20:00Z"}}"#
        )
    }

    #[test]
    fn an_event_over_240_kb_becomes_a_notice() {
        let buffer: Arc<Mutex<Vec<String>>> = Arc::default();
        let recorder = Arc::new(Recorder(Mutex::new(vec![]), None, Duration::ZERO));
        let live = live(recorder, buffer.clone());
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber =
            crate::telemetry::json_subscriber("info".parse().unwrap(), move || writer.clone());

        let small = message("hello");
        let big = message(&"x".repeat(MAX_EVENT_BYTES));
        let prepare = |raw: &str| {
            let value: Value = serde_json::from_str(raw).unwrap();
            live.prepare(&value, raw, &routing(EventType::Message), NOW_MS)
                .unwrap()
        };
        let (small_event, big_event) = tracing::subscriber::with_default(subscriber, || {
            let small_event = prepare(&small);
            assert!(
                buffer.lock().unwrap().is_empty(),
                "a small event is no notice"
            );
            (small_event, prepare(&big))
        });
        assert!(small_event.payload.contains(&small));

        let payload: Value = serde_json::from_str(&big_event.payload).unwrap();
        assert!(big_event.payload.len() < 1000);
        assert_eq!(payload["tooLarge"], true);
        assert_eq!(payload["id"], "evt_1");
        assert!(payload.get("envelope").is_none());
        // The same event through the free function: the notice is the same, uncounted.
        let value: Value = serde_json::from_str(&big).unwrap();
        assert_eq!(
            live_event(&value, &big, &routing(EventType::Message), NOW_MS),
            big_event
        );

        let metrics = buffer.lock().unwrap();
        assert_eq!(metrics.len(), 1, "{metrics:?}");
        let emf: Value = serde_json::from_str(&metrics[0]).unwrap();
        assert_eq!(emf[metric::LIVE_TOO_LARGE], 1.0);

        let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = logs
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 1, "{logs}");
        assert_eq!(lines[0]["event_id"], "evt_1");
        assert_eq!(lines[0]["outcome"], "live-too-large");
        // The size of the payload that would have been pushed: the envelope and its wrapper.
        let size = lines[0]["size"].as_u64().unwrap() as usize;
        assert!(size > big.len() && size < big.len() + 200, "{size}");
        assert!(!logs.contains("xxxxxxxx"), "no content in the log");
    }

    /// Records when each push started and ended; each event's push takes its own delay.
    #[derive(Default)]
    struct Timed {
        delays: Vec<(&'static str, Duration)>,
        log: Mutex<Vec<(String, &'static str, Duration)>>,
        start: Mutex<Option<tokio::time::Instant>>,
    }

    impl Timed {
        fn new(delays: Vec<(&'static str, Duration)>) -> Self {
            Timed {
                delays,
                start: Mutex::new(Some(tokio::time::Instant::now())),
                ..Timed::default()
            }
        }

        fn note(&self, id: &str, what: &'static str) {
            let since = self.start.lock().unwrap().unwrap().elapsed();
            self.log.lock().unwrap().push((id.to_owned(), what, since));
        }

        fn at(&self, id: &str, what: &str) -> Option<Duration> {
            let log = self.log.lock().unwrap();
            log.iter()
                .find(|(i, w, _)| i == id && *w == what)
                .map(|(_, _, at)| *at)
        }

        fn ended(&self) -> Vec<String> {
            let log = self.log.lock().unwrap();
            log.iter()
                .filter(|(_, w, _)| *w == "end")
                .map(|(id, _, _)| id.clone())
                .collect()
        }
    }

    #[async_trait]
    impl Publisher for Timed {
        async fn publish(&self, event: &LiveEvent) -> Result<(), PublishError> {
            self.note(&event.event_id, "start");
            let delay = self.delays.iter().find(|(id, _)| *id == event.event_id);
            tokio::time::sleep(delay.map_or(Duration::ZERO, |(_, d)| *d)).await;
            self.note(&event.event_id, "end");
            Ok(())
        }
    }

    fn event_of(session: &str, id: &str) -> LiveEvent {
        LiveEvent {
            session: session.into(),
            event_id: id.into(),
            event_type: EventType::Status,
            payload: "{}".into(),
        }
    }

    fn publishing(publisher: Arc<Timed>, buffer: Arc<Mutex<Vec<String>>>) -> LivePublishing {
        LivePublishing::new(
            publisher,
            Duration::from_secs(60),
            Metrics::new("test", MetricsSink::Buffer(buffer)),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_sessions_events_go_in_order_sessions_concurrently() {
        let ms = Duration::from_millis;
        // The session's first push is the slowest: pushed concurrently, the second would land
        // first and the page would keep a dead QR on a connected session.
        let timed = Arc::new(Timed::new(vec![
            ("qr", ms(100)),
            ("connected", ms(10)),
            ("other", ms(50)),
        ]));
        let buffer: Arc<Mutex<Vec<String>>> = Arc::default();
        publishing(timed.clone(), buffer.clone())
            .publish_all(vec![
                event_of("sales", "qr"),
                event_of("support", "other"),
                event_of("sales", "connected"),
            ])
            .await;

        assert_eq!(timed.ended(), ["other", "qr", "connected"]);
        assert_eq!(
            timed.at("connected", "start"),
            Some(ms(100)),
            "the second push starts when the first has ended"
        );
        assert_eq!(
            timed.at("other", "start"),
            Some(ms(0)),
            "another session does not wait"
        );
        assert_eq!(timed.at("connected", "end"), Some(ms(110)));
        assert!(buffer.lock().unwrap().is_empty(), "nothing failed");
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_bounds_a_sessions_chain_and_counts_only_what_did_not_finish() {
        let ms = Duration::from_millis;
        let timed = Arc::new(Timed::new(vec![
            ("first", ms(200)),
            ("second", ms(100)),
            ("alone", ms(10)),
        ]));
        let buffer: Arc<Mutex<Vec<String>>> = Arc::default();
        let started = tokio::time::Instant::now();
        publishing(timed.clone(), buffer.clone())
            .publish_all(vec![
                event_of("sales", "first"),
                event_of("sales", "second"),
                event_of("support", "alone"),
            ])
            .await;

        assert_eq!(
            started.elapsed(),
            PUBLISH_TIMEOUT,
            "the budget, all together"
        );
        assert_eq!(timed.ended(), ["alone", "first"]);
        assert_eq!(timed.at("second", "start"), Some(ms(200)));
        let metrics = buffer.lock().unwrap();
        assert_eq!(metrics.len(), 1, "only the unfinished push: {metrics:?}");
        assert!(metrics[0].contains(metric::LIVE_PUBLISH_FAILED));
    }

    #[tokio::test]
    async fn an_expired_qr_is_not_pushed_a_fresh_one_is() {
        let recorder = Arc::new(Recorder(Mutex::new(vec![]), None, Duration::ZERO));
        let live = live(recorder.clone(), Arc::default());
        let qr = |stamp: &str| {
            format!(
                r#"{{"event":"qr","data":{{"qr":"x","available":true}},"timestamp":"{stamp}"}}"#
            )
        };
        let old = qr("2025-12-21T18:18:59Z"); // 61 s before NOW_MS
        let fresh = qr("2025-12-21T18:19:30Z");
        let prepared: Vec<LiveEvent> = [old, fresh]
            .iter()
            .filter_map(|raw| {
                let value: Value = serde_json::from_str(raw).unwrap();
                live.prepare(&value, raw, &routing(EventType::Qr), NOW_MS)
            })
            .collect();
        assert_eq!(prepared.len(), 1);
        live.publish_all(prepared).await;
        let pushed = recorder.0.lock().unwrap();
        assert_eq!(pushed.len(), 1);
        assert!(pushed[0].payload.contains("18:19:30Z"));
    }

    #[tokio::test]
    async fn failures_and_timeouts_are_counted_never_raised() {
        let buffer: Arc<Mutex<Vec<String>>> = Arc::default();
        let failing = Arc::new(Recorder(
            Mutex::new(vec![]),
            Some(PublishError::Unavailable("down".into())),
            Duration::ZERO,
        ));
        let raw =
            r#"{"event":"status","data":{"connected":true},"timestamp":"2025-12-21T18:20:00Z"}"#;
        let value: Value = serde_json::from_str(raw).unwrap();
        let event = live_event(&value, raw, &routing(EventType::Status), NOW_MS);
        live(failing, buffer.clone())
            .publish_all(vec![event.clone(), event.clone()])
            .await;
        assert_eq!(buffer.lock().unwrap().len(), 2);
        assert!(buffer.lock().unwrap()[0].contains(metric::LIVE_PUBLISH_FAILED));

        let slow = Arc::new(Recorder(
            Mutex::new(vec![]),
            None,
            Duration::from_secs(3600),
        ));
        let buffer: Arc<Mutex<Vec<String>>> = Arc::default();
        tokio::time::pause();
        live(slow, buffer.clone())
            .with_timeout(Duration::from_millis(50))
            .publish_all(vec![event])
            .await;
        assert_eq!(buffer.lock().unwrap().len(), 1, "the timeout is counted");
    }

    /// Records each publish it is asked for: the event ids in one request.
    #[derive(Default)]
    struct Requests(Mutex<Vec<Vec<String>>>);

    #[async_trait]
    impl Publisher for Requests {
        async fn publish(&self, event: &LiveEvent) -> Result<(), PublishError> {
            self.0.lock().unwrap().push(vec![event.event_id.clone()]);
            Ok(())
        }

        async fn publish_in_order(
            &self,
            events: &[&LiveEvent],
            results: &mut Vec<Result<(), PublishError>>,
        ) {
            let ids = events.iter().map(|e| e.event_id.clone()).collect();
            self.0.lock().unwrap().push(ids);
            results.extend(events.iter().map(|_| Ok(())));
        }
    }

    #[tokio::test]
    async fn a_sessions_batch_goes_five_events_to_a_request_in_order() {
        let requests = Arc::new(Requests::default());
        let buffer: Arc<Mutex<Vec<String>>> = Arc::default();
        let publishing = LivePublishing::new(
            requests.clone(),
            Duration::from_secs(60),
            Metrics::new("test", MetricsSink::Buffer(buffer.clone())),
        );
        let mut events: Vec<LiveEvent> = (0..7)
            .map(|i| event_of("sales", &format!("s{i}")))
            .collect();
        events.insert(3, event_of("support", "x"));
        publishing.publish_all(events).await;
        let mut sent = requests.0.lock().unwrap().clone();
        sent.sort();
        assert_eq!(
            sent,
            [
                vec!["s0", "s1", "s2", "s3", "s4"],
                vec!["s5", "s6"],
                vec!["x"]
            ],
            "AppSync's five per publish, in the batch's order; the other session apart"
        );
        assert!(buffer.lock().unwrap().is_empty(), "nothing failed");
    }
}
