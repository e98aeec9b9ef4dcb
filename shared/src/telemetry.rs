//! Logs and metrics (docs/operations.md, Reading the logs). Logs: one JSON line per request or
//! attempt through `tracing`, keyed by event id; the payload is never logged (QR codes are login
//! credentials, message text is personal data), and neither are secrets or signature headers —
//! callers log ids, types, groups, status codes and durations only. Metrics: CloudWatch Embedded
//! Metric Format lines on stdout, which Lambda's log pipeline turns into metrics with no SDK call.

use crate::clock::unix_millis;
use serde_json::{Map, Value, json};
use std::io::Write;
use std::sync::{Arc, Mutex};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;

/// Metric names: the template's alarms and dashboard use exactly these.
pub mod metric {
    pub const INGESTED: &str = "Ingested";
    pub const REJECTED: &str = "Rejected";
    pub const DELIVERED: &str = "Delivered";
    pub const DELIVERY_FAILED: &str = "DeliveryFailed";
    pub const DELIVERY_LATENCY: &str = "DeliveryLatency";
    pub const END_TO_END_LATENCY: &str = "EndToEndLatency";
    /// An event the dispatcher moved to the DLQ itself (attempts exhausted, or a final status).
    pub const DEAD_LETTERED: &str = "DeadLettered";
    /// A `qr` event older than `QR_TTL_SECONDS`, dropped on purpose.
    pub const EXPIRED: &str = "Expired";
    /// A live push that failed or timed out (the event was stored all the same).
    pub const LIVE_PUBLISH_FAILED: &str = "LivePublishFailed";
    pub const ALL: [&str; 9] = [
        INGESTED,
        REJECTED,
        DELIVERED,
        DELIVERY_FAILED,
        DELIVERY_LATENCY,
        END_TO_END_LATENCY,
        DEAD_LETTERED,
        EXPIRED,
        LIVE_PUBLISH_FAILED,
    ];
}

/// Dimension names used on some metrics, besides the dimensionless series.
pub mod dimension {
    pub const REASON: &str = "Reason";
    pub const STATUS_CLASS: &str = "StatusClass";
}

/// An error and each of its causes, one line: "dispatch failure: io error: …: Connection
/// refused", for log fields and one-line messages (never an SDK's multi-line `Debug` dump).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Default namespace when `METRICS_NAMESPACE` is not set.
pub const DEFAULT_NAMESPACE: &str = "ChatRelay";

/// JSON logs for Lambda (CloudWatch filters on the `level` field). The level comes from
/// `AWS_LAMBDA_LOG_LEVEL` (set by Lambda's logging config), else `info`, and applies to the
/// relay's own code only; see [`production_filter`]. `RUST_LOG`, when set to `target=level`
/// directives, replaces it all.
pub fn init_json_logs() {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|directives| directives.parse::<Targets>().ok())
        .unwrap_or_else(|| {
            production_filter(
                &std::env::var("AWS_LAMBDA_LOG_LEVEL").unwrap_or_else(|_| "info".to_owned()),
            )
        });
    let _ = tracing::subscriber::set_global_default(json_subscriber(filter, std::io::stdout));
}

/// `level` for the relay's crates, `warn` for every dependency: the SDK and HTTP stacks log
/// requests in detail at debug and trace, and those requests carry payloads and signatures.
/// An unknown level falls back to `info`. (`Targets` rather than `EnvFilter`: the same
/// `target=level` directives without a regex engine in every binary.)
pub fn production_filter(level: &str) -> Targets {
    let level: LevelFilter = level.parse().unwrap_or(LevelFilter::INFO);
    Targets::new().with_default(LevelFilter::WARN).with_targets(
        ["relay_shared", "ingest", "dispatcher", "live_auth"].map(|target| (target, level)),
    )
}

/// The Lambdas' log format, writing to `writer`: one flat JSON object per event, no timestamp
/// (Lambda stamps every line itself). Tests capture it to check what reaches the logs.
pub fn json_subscriber<W>(filter: Targets, writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let format = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .without_time()
        .with_writer(writer);
    tracing_subscriber::registry().with(format).with(filter)
}

/// Where EMF lines go: stdout on Lambda; a buffer in tests; nowhere in the local stack.
#[derive(Clone)]
pub enum MetricsSink {
    Stdout,
    Buffer(Arc<Mutex<Vec<String>>>),
    Off,
}

/// Emits metrics in CloudWatch Embedded Metric Format, one JSON line per data point.
#[derive(Clone)]
pub struct Metrics {
    namespace: String,
    sink: MetricsSink,
}

/// Units used here (a subset of CloudWatch's).
#[derive(Debug, Clone, Copy)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

impl Metrics {
    pub fn new(namespace: impl Into<String>, sink: MetricsSink) -> Self {
        Metrics {
            namespace: namespace.into(),
            sink,
        }
    }

    pub fn off() -> Self {
        Metrics::new(DEFAULT_NAMESPACE, MetricsSink::Off)
    }

    /// A count of 1.
    pub fn count(&self, name: &str, dimension: Option<(&str, &str)>) {
        self.put(name, 1.0, Unit::Count, dimension);
    }

    pub fn millis(&self, name: &str, value: f64) {
        self.put(name, value, Unit::Milliseconds, None);
    }

    /// One EMF document. The metric is always published without dimensions (what alarms
    /// use) and, when a dimension is given, also split by it (what dashboards drill into).
    pub fn put(&self, name: &str, value: f64, unit: Unit, dimension: Option<(&str, &str)>) {
        if matches!(self.sink, MetricsSink::Off) {
            return;
        }
        let mut dimension_sets = vec![json!([])];
        let mut document = Map::new();
        if let Some((key, dim_value)) = dimension {
            dimension_sets.push(json!([key]));
            document.insert(key.to_owned(), Value::from(dim_value));
        }
        document.insert(name.to_owned(), json!(value));
        let timestamp = unix_millis();
        document.insert(
            "_aws".to_owned(),
            json!({
                "Timestamp": timestamp,
                "CloudWatchMetrics": [{
                    "Namespace": self.namespace,
                    "Dimensions": dimension_sets,
                    "Metrics": [{"Name": name, "Unit": unit.as_str()}],
                }],
            }),
        );
        let line = Value::Object(document).to_string();
        match &self.sink {
            MetricsSink::Stdout => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
            }
            MetricsSink::Buffer(buffer) => buffer.lock().unwrap().push(line),
            MetricsSink::Off => {}
        }
    }
}
