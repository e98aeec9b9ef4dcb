//! Logs and metrics (docs/operations.md, Reading the logs). Logs: JSON lines through `tracing`,
//! keyed by event id — on the success path one summary line per invocation ([`Summary`], the
//! dispatcher's also its EMF document) with per-event detail at DEBUG, and a line per failure;
//! the payload is never logged (QR codes are login credentials, message text is personal data), and neither are secrets or signature headers —
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
    pub const REJECTED: &str = "Rejected";
    pub const DELIVERY_FAILED: &str = "DeliveryFailed";
    /// One value per delivery attempt, failed or not: its `SampleCount` is the attempt count
    /// (the failure-rate alarm's denominator), so no separate `Delivered` count is written.
    pub const DELIVERY_LATENCY: &str = "DeliveryLatency";
    /// One value per delivered event (from SQS's `SentTimestamp`): its `SampleCount` is the
    /// number delivered. Queued events are counted by SQS itself (`NumberOfMessagesSent`).
    pub const END_TO_END_LATENCY: &str = "EndToEndLatency";
    /// An event the dispatcher moved to the DLQ itself (attempts exhausted, or a final status).
    pub const DEAD_LETTERED: &str = "DeadLettered";
    /// A `qr` event older than `QR_TTL_SECONDS`, dropped on purpose.
    pub const EXPIRED: &str = "Expired";
    /// A live push that failed or timed out (the event was stored all the same).
    pub const LIVE_PUBLISH_FAILED: &str = "LivePublishFailed";
    /// An event over AppSync Events' 240 KB limit, pushed live as a `tooLarge` notice.
    pub const LIVE_TOO_LARGE: &str = "LiveTooLarge";
    pub const ALL: [&str; 8] = [
        REJECTED,
        DELIVERY_FAILED,
        DELIVERY_LATENCY,
        END_TO_END_LATENCY,
        DEAD_LETTERED,
        EXPIRED,
        LIVE_PUBLISH_FAILED,
        LIVE_TOO_LARGE,
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
        self.write(&Value::Object(document).to_string());
    }

    fn write(&self, line: &str) {
        match &self.sink {
            MetricsSink::Stdout => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
            }
            MetricsSink::Buffer(buffer) => buffer.lock().unwrap().push(line.to_owned()),
            MetricsSink::Off => {}
        }
    }
}

/// CloudWatch accepts at most 100 values in one metric's array per EMF document.
const EMF_MAX_VALUES: usize = 100;

/// The success path of one request or batch as ONE line, `{"<outcome>":[event ids…],
/// <metrics>, "_aws":{…}}`: the ids it queued or delivered under the outcome's name and, when
/// metrics were recorded, the EMF document of the invocation. Durations keep every value (an
/// EMF value array), so percentiles stay exact; counts are summed. No `level` and no `message`:
/// the outcome key says what happened, and on Lambda a line without a level is INFO ("If the
/// "level" value field is invalid or missing, Lambda will assign the log output the level INFO",
/// Lambda developer guide, Log-level filtering). Per-event detail is logged at DEBUG; every
/// failure keeps its own WARN or ERROR line with the event id. One short line per invocation
/// instead of a log line and EMF lines per event is what keeps the success path's log bytes small.
pub struct Summary {
    metrics: Metrics,
    outcome: &'static str,
    inner: Mutex<SummaryInner>,
}

#[derive(Default)]
struct SummaryInner {
    event_ids: Vec<String>,
    /// In first-recorded order: name, unit, values.
    series: Vec<(&'static str, Unit, Vec<f64>)>,
}

impl Metrics {
    /// A summary line for one invocation, written by [`Summary::emit`]; `outcome` ("queued",
    /// "delivered") is the key naming its events.
    pub fn summary(&self, outcome: &'static str) -> Summary {
        Summary {
            metrics: self.clone(),
            outcome,
            inner: Mutex::new(SummaryInner::default()),
        }
    }
}

impl Summary {
    /// An event this invocation settled on the success path (queued, delivered).
    pub fn event(&self, event_id: &str) {
        self.inner
            .lock()
            .unwrap()
            .event_ids
            .push(event_id.to_owned());
    }

    /// One data point; dimensionless (the dimensioned failure metrics use [`Metrics::put`]).
    pub fn put(&self, name: &'static str, value: f64, unit: Unit) {
        let mut inner = self.inner.lock().unwrap();
        match inner.series.iter_mut().find(|(n, _, _)| *n == name) {
            Some((_, _, values)) => values.push(value),
            None => inner.series.push((name, unit, vec![value])),
        }
    }

    /// Writes the line: EMF when a metric was recorded, else the event ids alone (nothing when
    /// neither, or when the sink is off).
    pub fn emit(self) {
        let inner = self.inner.into_inner().unwrap();
        let nothing = inner.series.is_empty() && inner.event_ids.is_empty();
        if nothing || matches!(self.metrics.sink, MetricsSink::Off) {
            return;
        }
        if inner.series.is_empty() {
            let line = json!({ self.outcome: inner.event_ids });
            self.metrics.write(&line.to_string());
            return;
        }
        let chunks = inner
            .series
            .iter()
            .map(|(_, unit, values)| match unit {
                Unit::Count => 1,
                Unit::Milliseconds => values.len().div_ceil(EMF_MAX_VALUES),
            })
            .max()
            .unwrap_or(1);
        for chunk in 0..chunks {
            let mut document = Map::new();
            if chunk == 0 {
                document.insert(self.outcome.to_owned(), json!(inner.event_ids));
            }
            let mut declared = Vec::new();
            for (name, unit, values) in &inner.series {
                let value = match unit {
                    // Whole numbers: `1` rather than `1.0` on every line.
                    Unit::Count if chunk == 0 => json!(values.iter().sum::<f64>().round() as u64),
                    Unit::Count => continue,
                    Unit::Milliseconds => {
                        let start = chunk * EMF_MAX_VALUES;
                        let part = &values[start.min(values.len())..];
                        let part = &part[..part.len().min(EMF_MAX_VALUES)];
                        match part {
                            [] => continue,
                            [one] => json!(one.round() as u64),
                            many => {
                                json!(many.iter().map(|v| v.round() as u64).collect::<Vec<_>>())
                            }
                        }
                    }
                };
                document.insert((*name).to_owned(), value);
                declared.push(json!({"Name": name, "Unit": unit.as_str()}));
            }
            document.insert(
                "_aws".to_owned(),
                json!({
                    "Timestamp": unix_millis(),
                    "CloudWatchMetrics": [{
                        "Namespace": self.metrics.namespace,
                        "Dimensions": [[]],
                        "Metrics": declared,
                    }],
                }),
            );
            self.metrics.write(&Value::Object(document).to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffered() -> (Metrics, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = MetricsSink::Buffer(Arc::clone(&lines));
        (Metrics::new("ChatRelay/test", sink), lines)
    }

    #[test]
    fn a_summary_without_metrics_is_the_event_ids_alone() {
        let (metrics, lines) = buffered();
        let summary = metrics.summary("queued");
        summary.event("a");
        summary.event("b");
        summary.emit();
        assert_eq!(*lines.lock().unwrap(), [r#"{"queued":["a","b"]}"#]);
    }

    #[test]
    fn a_summary_with_durations_is_one_emf_document_naming_its_events() {
        let (metrics, lines) = buffered();
        let summary = metrics.summary("delivered");
        summary.event("a");
        summary.put(metric::DELIVERY_LATENCY, 12.4, Unit::Milliseconds);
        summary.put(metric::DELIVERY_LATENCY, 7.6, Unit::Milliseconds);
        summary.emit();
        let lines = lines.lock().unwrap();
        assert_eq!(lines.len(), 1);
        let doc: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(doc["delivered"], json!(["a"]));
        assert_eq!(doc["DeliveryLatency"], json!([12, 8]));
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "ChatRelay/test");
        assert_eq!(directive["Dimensions"], json!([[]]));
        assert_eq!(
            directive["Metrics"],
            json!([{"Name": "DeliveryLatency", "Unit": "Milliseconds"}])
        );
        assert!(doc["_aws"]["Timestamp"].as_u64().is_some());
    }

    #[test]
    fn an_empty_summary_writes_nothing() {
        let (metrics, lines) = buffered();
        metrics.summary("queued").emit();
        assert!(lines.lock().unwrap().is_empty());
    }
}
