//! What the functions write about themselves: JSON logs that never carry QR codes, message
//! text, phone numbers, secrets or signatures, and CloudWatch Embedded Metric Format lines that follow the
//! schema and use the names the template's alarms and dashboard use (`template.rs` checks the
//! template's side).

use axum::http::StatusCode;
use relay_shared::backoff::RetrySchedule;
use relay_shared::deliver::Deliverer;
use relay_shared::dispatch::{DispatchQueues, Dispatcher};
use relay_shared::ingest::{Ingest, router};
use relay_shared::live::publish::{LiveEvent, LivePublishing, PublishError, Publisher};
use relay_shared::poller::Poller;
use relay_shared::queue::memory::MemoryQueue;
use relay_shared::signature::SecretSet;
use relay_shared::telemetry::{Metrics, MetricsSink, json_subscriber, metric, production_filter};
use relay_tests::personal_data::{
    CONTENT, assert_free_of_personal_data, is_hashed_chat_group, message_event, qr_event,
    status_event,
};
use relay_tests::router::post_signed;
use relay_tests::{INGEST_SECRET, VerifyingReceiver, WEBHOOK_SECRET};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A `MakeWriter` that appends to a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// A live channel that refuses everything.
struct LiveDown;

#[async_trait::async_trait]
impl Publisher for LiveDown {
    async fn publish(&self, _event: &LiveEvent) -> Result<(), PublishError> {
        Err(PublishError::Unavailable("the Event API is down".into()))
    }
}

/// Feeds QR, status and message events (accepted and refused) through ingest and the
/// dispatcher, to a receiver that fails once; returns the event ids ingest gave out.
async fn exercise_both_functions(metrics: Metrics) -> Vec<String> {
    let queue = Arc::new(MemoryQueue::new("observed", Duration::from_secs(30)));
    let ids = ingest_every_kind(&queue, &metrics).await;
    // The accepted events, and the batch's accepted item.
    dispatch_all(&queue, metrics, ids.len() + 1).await;
    ids
}

/// Ingest's part: accepted events of every type, refusals (schema, signature, a batch item),
/// and two events that settle without a delivery (a stale QR, one the app refuses).
async fn ingest_every_kind(queue: &Arc<MemoryQueue>, metrics: &Metrics) -> Vec<String> {
    // Every live push fails, so its metric and log line (ids only) are observed too.
    let live = LivePublishing::new(Arc::new(LiveDown), Duration::from_secs(60), metrics.clone());
    let app = router(Arc::new(
        Ingest::new(
            SecretSet::parse(INGEST_SECRET).unwrap(),
            relay_tests::chat_id_key(),
            queue.clone(),
            metrics.clone(),
        )
        .with_live(live),
    ));
    let mut ids = Vec::new();
    let accepted = [
        qr_event(),
        status_event(),
        message_event("incoming"),
        message_event("outgoing"),
        // Over AppSync's 240 KB: pushed live as a notice, counted as LiveTooLarge.
        message_event("incoming")
            .replace("3EB0-incoming", "3EB0-large")
            .replace(CONTENT, &CONTENT.repeat(240_000 / CONTENT.len() + 1)),
    ];
    for body in &accepted {
        let (status, reply) = post_signed(&app, "/events", INGEST_SECRET, "req", body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
        ids.push(reply["id"].as_str().unwrap().to_owned());
    }
    // Refusals whose bodies hold the same secrets: a schema error and a bad signature.
    let (status, _) = post_signed(
        &app,
        "/events",
        INGEST_SECRET,
        "req",
        &message_event("sideways"),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = post_signed(&app, "/events", WEBHOOK_SECRET, "req", &qr_event()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A batch: one item refused, with a phone number where an id should be.
    let batch = format!(
        "[{},{}]",
        message_event("incoming").replace("3EB0-incoming", "3EB0-batch"),
        status_event().replace(r#""connected":true"#, r#""connected":"5511987654321""#)
    );
    let (status, _) = post_signed(&app, "/events/batch", INGEST_SECRET, "req", &batch).await;
    assert_eq!(status, StatusCode::MULTI_STATUS);
    // Settled without a delivery: a stale QR (expired) and an event the app refuses (422,
    // straight to the DLQ).
    let stale_qr = qr_event().replace(
        r#""timestamp":"20"#,
        r#""timestamp":"2020-01-01T00:00:00Z","was":"20"#,
    );
    let refused = status_event().replace(
        r#""connected":true"#,
        r#""connected":true,"reason":"refuse-me""#,
    );
    for body in [&stale_qr, &refused] {
        let (status, reply) = post_signed(&app, "/events", INGEST_SECRET, "req", body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    }
    ids
}

/// The dispatcher's part: delivers everything queued to a receiver that fails the first
/// request and refuses (422) the event marked `refuse-me`; `delivered` events must get a 200.
async fn dispatch_all(queue: &Arc<MemoryQueue>, metrics: Metrics, delivered: usize) {
    let failures = Arc::new(AtomicUsize::new(0));
    let receiver =
        VerifyingReceiver::start(Arc::new(move |delivery: &relay_tests::Delivery, _| {
            if delivery.body.windows(9).any(|w| w == b"refuse-me") {
                (StatusCode::UNPROCESSABLE_ENTITY, Vec::new())
            } else if failures.fetch_add(1, Ordering::SeqCst) == 0 {
                (StatusCode::INTERNAL_SERVER_ERROR, Vec::new())
            } else {
                (StatusCode::OK, Vec::new())
            }
        }))
        .await;
    let deliverer = Deliverer::new(
        receiver.url.parse().unwrap(),
        Arc::new(SecretSet::parse(WEBHOOK_SECRET).unwrap()),
        Duration::from_secs(5),
    )
    .unwrap();
    let schedule = RetrySchedule::from_delays(vec![Duration::ZERO; 3]);
    let dlq = Arc::new(MemoryQueue::new("observed-dlq", Duration::from_secs(30)));
    let queues = DispatchQueues {
        source: queue.clone(),
        dead_letter: dlq.clone(),
    };
    let dispatcher = Arc::new(Dispatcher::new(deliverer, queues, schedule, metrics));
    let poller = Poller::new(queue.clone(), dispatcher, Duration::from_millis(100));
    for _ in 0..20 {
        if queue.is_empty() {
            break;
        }
        poller.poll_once().await.unwrap();
    }
    assert!(queue.is_empty(), "every event delivered");
    assert_eq!(
        dlq.len(),
        1,
        "the refused event, and only it, is in the DLQ"
    );
    assert_eq!(
        receiver
            .deliveries()
            .iter()
            .filter(|d| d.answered == 200)
            .count(),
        delivered
    );
}

// One test captures both logs and metrics: tracing caches per-callsite interest globally, so a
// second test emitting the same events on another thread could hide them from this capture.
#[tokio::test]
async fn logs_and_metrics_never_carry_qr_codes_message_text_phone_numbers_secrets_or_signatures() {
    // Everything at TRACE, dependencies included: the worst case a LogLevel could produce.
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = json_subscriber("trace".parse().unwrap(), move || writer.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    let metrics_lines = Arc::new(Mutex::new(Vec::new()));
    let metrics = Metrics::new(
        "ChatRelay/test-stack",
        MetricsSink::Buffer(Arc::clone(&metrics_lines)),
    );
    let ids = exercise_both_functions(metrics).await;

    let logs = captured.text();
    let lines: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not a JSON line: {l}")))
        .collect();
    assert!(
        lines.len() >= 8,
        "requests and attempts were logged: {logs}"
    );
    check_ingest_and_delivery_correlate(&lines, &ids);
    let metrics_lines_now = metrics_lines.lock().unwrap().clone();
    check_summary_lines(&metrics_lines_now, &ids);
    check_per_event_lines(&lines);
    check_failures_are_logged(&lines);
    check_chat_is_hashed(&lines);
    assert_free_of_personal_data(&logs, "logs");
    let metrics_lines = metrics_lines.lock().unwrap().clone();
    assert_free_of_personal_data(&metrics_lines.join("\n"), "metrics");
    check_emf(&metrics_lines);
}

/// Each event id is on a `queued` line (ingest) and a `delivered` line (dispatcher).
fn check_ingest_and_delivery_correlate(lines: &[Value], ids: &[String]) {
    for id in ids {
        let about: Vec<&Value> = lines
            .iter()
            .filter(|l| l["event_id"] == id.as_str())
            .collect();
        let outcomes: BTreeSet<&str> = about.iter().filter_map(|l| l["outcome"].as_str()).collect();
        assert!(
            outcomes.contains("queued") && outcomes.contains("delivered"),
            "{id} correlates ingest and delivery: {about:?}"
        );
    }
}

/// The success path: one summary line per request (ingest) and per batch (dispatcher),
/// `{"queued":[ids]}` and `{"delivered":[ids], <latencies>, "_aws":…}`, naming every event it
/// queued or delivered; no level key, so Lambda files them as INFO. The per-event lines are
/// DEBUG (this capture is at TRACE).
fn check_summary_lines(metrics_lines: &[String], ids: &[String]) {
    let summaries: Vec<Value> = metrics_lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["queued"].is_array() || l["delivered"].is_array())
        .collect();
    for id in ids {
        for outcome in ["queued", "delivered"] {
            assert!(
                summaries.iter().any(|s| s[outcome]
                    .as_array()
                    .is_some_and(|named| named.iter().any(|e| e == id.as_str()))),
                "{id} is named by a `{outcome}` summary line: {summaries:?}"
            );
        }
    }
    for summary in &summaries {
        assert!(
            summary.get("level").is_none(),
            "a summary line has no level (Lambda: INFO): {summary}"
        );
        if summary["queued"].is_array() {
            assert!(
                summary.get("_aws").is_none(),
                "ingest's summary is a plain line (SQS counts what it queued): {summary}"
            );
        }
    }
}

/// Per-event success lines are DEBUG, and a delivery line carries its fields.
fn check_per_event_lines(lines: &[Value]) {
    for line in lines {
        if line["outcome"] == "queued" || line["outcome"] == "delivered" {
            assert_eq!(
                line["level"], "DEBUG",
                "per-event success lines are DEBUG: {line}"
            );
        }
    }
    let delivered = lines.iter().find(|l| l["outcome"] == "delivered").unwrap();
    for field in [
        "event_id",
        "event_type",
        "group",
        "attempt",
        "status",
        "duration_ms",
        "level",
    ] {
        assert!(
            !delivered[field].is_null(),
            "a delivery line has {field}: {delivered}"
        );
    }
}

/// The failed attempt, the refusal and the failed live push are each logged.
fn check_failures_are_logged(lines: &[Value]) {
    assert!(
        lines
            .iter()
            .any(|l| l["outcome"] == "retry" && l["status"] == 500),
        "the failed attempt is logged"
    );
    assert!(
        lines.iter().any(|l| l["reason"] == "schema_violation"),
        "the refusal is logged"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["outcome"] == "live-failed" && l["event_type"] == "qr"),
        "a failed live push is logged by id and type (the payload check covers its text)"
    );
}

/// A chat is named by its hashed group only, at ingest and at delivery.
fn check_chat_is_hashed(lines: &[Value]) {
    let chat_groups: BTreeSet<&str> = lines
        .iter()
        .filter(|l| l["event_type"] == "message")
        .filter_map(|l| l["group"].as_str())
        .collect();
    assert_eq!(chat_groups.len(), 1, "one chat, one group: {chat_groups:?}");
    assert!(
        chat_groups.iter().all(|g| is_hashed_chat_group(g)),
        "{chat_groups:?}"
    );
}

#[test]
fn the_production_filter_keeps_dependencies_quiet() {
    use tracing::Level;
    let filter = production_filter("TRACE");
    for ours in [
        "relay_shared",
        "relay_shared::dispatch",
        "ingest",
        "dispatcher",
        "live_auth",
    ] {
        assert!(
            filter.would_enable(ours, &Level::TRACE),
            "{ours} at the chosen level"
        );
    }
    for dependency in [
        "hyper_util::client",
        "aws_smithy_runtime",
        "reqwest::connect",
    ] {
        assert!(
            !filter.would_enable(dependency, &Level::INFO),
            "{dependency} stays at warn"
        );
        assert!(filter.would_enable(dependency, &Level::WARN));
    }
    assert!(
        !production_filter("VERBOSE").would_enable("relay_shared", &Level::DEBUG),
        "unknown level: info"
    );
}

/// EMF schema: `_aws.Timestamp`, one directive with the namespace, dimension sets naming string
/// members of the root, metrics with allowed units and numeric values at the root. A line
/// without `_aws` must be ingest's plain summary line.
fn check_emf(lines: &[String]) {
    let allowed_units = ["Count", "Milliseconds"];
    let mut names = BTreeSet::new();
    let mut dimensions_seen = BTreeSet::new();
    for line in lines {
        let doc: Value = serde_json::from_str(line).expect("each line is one JSON object");
        if doc["_aws"].is_null() {
            // Ingest's summary: its event ids only, no metric.
            assert!(
                doc["queued"].is_array() && doc.as_object().unwrap().len() == 1,
                "a line without EMF is ingest's summary: {line}"
            );
            continue;
        }
        let meta = &doc["_aws"];
        assert!(
            meta["Timestamp"]
                .as_u64()
                .is_some_and(|t| t > 1_600_000_000_000),
            "{line}"
        );
        let directives = meta["CloudWatchMetrics"]
            .as_array()
            .expect("CloudWatchMetrics array");
        assert_eq!(directives.len(), 1);
        let directive = &directives[0];
        assert_eq!(directive["Namespace"], "ChatRelay/test-stack");
        for set in directive["Dimensions"]
            .as_array()
            .expect("Dimensions array")
        {
            for key in set.as_array().expect("a dimension set is an array") {
                let key = key.as_str().expect("dimension names are strings");
                assert!(
                    doc[key].is_string(),
                    "dimension {key} has a string value at the root: {line}"
                );
                dimensions_seen.insert(key.to_owned());
            }
        }
        for metric in directive["Metrics"].as_array().expect("Metrics array") {
            let name = metric["Name"].as_str().expect("metric Name");
            assert!(
                allowed_units.contains(&metric["Unit"].as_str().unwrap()),
                "{line}"
            );
            // A number, or an EMF value array (a summary line's durations).
            let numeric = doc[name].is_number()
                || doc[name].as_array().is_some_and(|a| {
                    !a.is_empty() && a.len() <= 100 && a.iter().all(Value::is_number)
                });
            assert!(
                numeric,
                "metric {name} has a numeric value at the root: {line}"
            );
            names.insert(name.to_owned());
        }
    }
    let expected: BTreeSet<String> = metric::ALL.into_iter().map(String::from).collect();
    assert_eq!(
        names, expected,
        "every metric the template uses is emitted, and no other"
    );
    assert_eq!(
        dimensions_seen,
        BTreeSet::from(["Reason".to_owned(), "StatusClass".to_owned()])
    );
}
