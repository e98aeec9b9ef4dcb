//! The cost model behind `make cost`: dollars per million events, line by line, from three
//! inputs — the template's settings ([`template`]), the figures `make bench` measured (log bytes
//! and warm invocation times per case, `bench-results/results.json`, else the committed sample
//! `cost/measured.json`), and one dated file of published us-east-1 prices
//! (`cost/prices-us-east-1.yaml`). Every assumption the figures rest on is a named constant
//! here and is printed with the table.

pub mod template;

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use template::{Settings, access_log_line};

/// Bytes of one event: the typical `message` envelope the bench measures with.
pub const EVENT_BYTES: u64 = 300;
/// "Each 64 KB chunk of a payload is billed as 1 request" (SQS pricing).
pub const SQS_CHUNK: u64 = 64 * 1024;
/// HTTP API requests are metered "in 512 KB increments" (API Gateway pricing).
pub const HTTP_API_CHUNK: u64 = 512 * 1024;
/// EventBridge bills "each 64 KB chunk of a payload" as one event.
pub const EVENTBRIDGE_CHUNK: u64 = 64 * 1024;
/// CloudWatch Logs counts 26 bytes of metadata per log event (the PutLogEvents batch size
/// rule); counted here per line as if billed, to stay on the safe side.
pub const LOG_EVENT_OVERHEAD: u64 = 26;
/// Cold starts per invocation (assumed): each one fetches the secrets from Secrets Manager.
pub const COLD_START_RATE: f64 = 0.001;
/// Secrets fetched per cold start: ingest `INGEST_SECRETS_ARN` and `CHAT_ID_KEY_ARN`, the
/// dispatcher `WEBHOOK_SECRETS_ARN`. Ingest's two come in one `BatchGetSecretValue`; they are
/// counted as two calls, the upper bound, since the prices file has no separate batch price.
pub const INGEST_SECRETS: f64 = 2.0;
pub const DISPATCHER_SECRETS: f64 = 1.0;
/// Lambda gives a function one vCPU at 1,769 MB and CPU in proportion below it: the bench's
/// warm times (a full x86 core) are stretched by 1769 / memory when the memory is smaller.
pub const FULL_VCPU_MB: f64 = 1769.0;
/// Assumed wait for SQS `SendMessage(Batch)` from Lambda, and for the AppSync publish when the
/// live channel is on (it runs after the queue confirmed the event): the bench's moto and
/// loopback waits stand in for neither.
pub const SQS_SEND_MS: f64 = 10.0;
pub const LIVE_PUBLISH_MS: f64 = 15.0;
/// Bytes out per delivery: the body, the Standard Webhooks headers and HTTP/TLS framing.
pub const DELIVERY_BYTES_OUT: f64 = 1024.0;
/// Pages subscribed to a session's live channel when an event arrives (AppSync: one publish
/// operation plus one per message delivered).
pub const LIVE_SUBSCRIBERS: f64 = 1.0;

/// One price: `usd` per `per` units.
#[derive(Debug, Clone, Deserialize)]
pub struct Price {
    pub usd: f64,
    pub per: f64,
    pub unit: String,
    pub source: String,
    #[serde(default)]
    pub unconfirmed: bool,
}

/// The dated prices file.
#[derive(Debug, Clone, Deserialize)]
pub struct Prices {
    pub as_of: String,
    pub region: String,
    pub prices: BTreeMap<String, Price>,
}

impl Prices {
    pub fn parse(text: &str) -> Result<Prices, String> {
        serde_norway::from_str(text).map_err(|e| format!("prices: {e}"))
    }

    /// Dollars per one unit.
    pub fn each(&self, name: &str) -> Result<f64, String> {
        let p = self
            .prices
            .get(name)
            .ok_or_else(|| format!("the prices file has no {name}"))?;
        Ok(p.usd / p.per)
    }
}

/// One measured case: a warm invocation of one function with `events` events.
#[derive(Debug, Clone, Deserialize)]
pub struct Case {
    pub events: u64,
    pub bytes_per_invocation: f64,
    pub lines_per_invocation: f64,
    #[serde(default)]
    pub emf_bytes_per_invocation: f64,
    pub warm_ms_median: f64,
}

/// What `make bench` measured (its `logbytes` section), and where it was read from.
#[derive(Debug, Clone, Deserialize)]
pub struct Measured {
    pub cases: BTreeMap<String, Case>,
    #[serde(skip)]
    pub source: String,
}

impl Measured {
    /// The `logbytes` object of a `results.json`, or a file holding only that object.
    pub fn parse(text: &str, source: &str) -> Result<Measured, String> {
        let value: Value = serde_json::from_str(text).map_err(|e| format!("{source}: {e}"))?;
        let inner = value.get("logbytes").unwrap_or(&value).clone();
        let mut measured: Measured =
            serde_json::from_value(inner).map_err(|e| format!("{source}: {e}"))?;
        measured.source = source.to_owned();
        Ok(measured)
    }

    /// `results` when it has a `logbytes` section, else `sample`.
    pub fn load(results: &Path, sample: &Path) -> Result<Measured, String> {
        if let Ok(text) = std::fs::read_to_string(results)
            && let Ok(m) = Measured::parse(&text, &results.display().to_string())
        {
            return Ok(m);
        }
        let text = std::fs::read_to_string(sample)
            .map_err(|e| format!("cannot read {}: {e}", sample.display()))?;
        Measured::parse(
            &text,
            &format!(
                "{} (committed sample; run `make bench` for this machine's)",
                sample.display()
            ),
        )
    }

    fn case(&self, name: &str) -> Result<&Case, String> {
        self.cases
            .get(name)
            .ok_or_else(|| format!("{}: no measured case {name}", self.source))
    }
}

/// Events per ingest request, and how long the receiver takes to answer.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub events_per_request: u64,
    pub receiver_ms: f64,
}

impl Scenario {
    pub fn label(&self) -> String {
        format!(
            "{}/req, {} ms",
            self.events_per_request, self.receiver_ms as u64
        )
    }
}

/// The scenarios of the table: one event per request and ten per batch request, receivers
/// answering in 50, 200 and 1,000 ms.
pub const SCENARIOS: [Scenario; 6] = [
    Scenario {
        events_per_request: 1,
        receiver_ms: 50.0,
    },
    Scenario {
        events_per_request: 1,
        receiver_ms: 200.0,
    },
    Scenario {
        events_per_request: 1,
        receiver_ms: 1000.0,
    },
    Scenario {
        events_per_request: 10,
        receiver_ms: 50.0,
    },
    Scenario {
        events_per_request: 10,
        receiver_ms: 200.0,
    },
    Scenario {
        events_per_request: 10,
        receiver_ms: 1000.0,
    },
];

/// One line of the bill, in dollars per million events.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub name: &'static str,
    /// A line the relay's own code or settings decide (not the fixed cost of the design).
    pub ours: bool,
    pub usd: f64,
}

const MILLION: f64 = 1_000_000.0;

fn chunks(bytes: u64, chunk: u64) -> f64 {
    bytes.div_ceil(chunk).max(1) as f64
}

/// The relay's cost per million events in one scenario.
pub fn relay(s: &Settings, m: &Measured, p: &Prices, sc: Scenario) -> Result<Vec<Line>, String> {
    let v = Volume::of(s, sc);
    let ingest = m.case(if v.n == 1 { "ingest_1" } else { "ingest_10" })?;
    let dispatcher = m.case(if v.b == 1 {
        "dispatcher_1"
    } else {
        "dispatcher_10"
    })?;
    let sqs = p.each("sqs_fifo_request")?;
    let mut lines = vec![Line {
        name: "HTTP API requests",
        ours: false,
        usd: v.requests * chunks(v.n * EVENT_BYTES, HTTP_API_CHUNK) * p.each("http_api_request")?,
    }];
    lines.extend(lambda_lines(s, p, &v, ingest, dispatcher, sc.receiver_ms)?);
    lines.extend(sqs_lines(&v, sqs));
    lines.push(Line {
        name: "Secrets Manager calls (cold starts)",
        ours: false,
        usd: (v.requests * INGEST_SECRETS + v.batches * DISPATCHER_SECRETS)
            * COLD_START_RATE
            * p.each("secrets_manager_call")?,
    });
    lines.extend(log_lines(s, p, &v, ingest, dispatcher)?);
    lines.push(Line {
        name: "Data transfer out (deliveries)",
        ours: false,
        usd: gb(DELIVERY_BYTES_OUT) * p.each("data_transfer_out_gb")?,
    });
    if s.live_enabled {
        lines.push(Line {
            name: LIVE_LINE,
            ours: false,
            usd: MILLION * (1.0 + LIVE_SUBSCRIBERS) * p.each("appsync_events_operation")?,
        });
    }
    Ok(lines)
}

/// What a million events take in one scenario: `n` events per ingest request, `b` per
/// dispatcher batch, and how many requests and batches that is.
struct Volume {
    n: u64,
    b: u64,
    requests: f64,
    batches: f64,
}

impl Volume {
    fn of(s: &Settings, sc: Scenario) -> Volume {
        let n = sc.events_per_request;
        // Assumed: the poller finds what one request stored, up to the batch size (low volume:
        // one event per request arrives alone; a batch request's events arrive together).
        let b = n.min(s.batch_size).max(1);
        Volume {
            n,
            b,
            requests: MILLION / n as f64,
            batches: MILLION / b as f64,
        }
    }
}

/// Gigabytes for a million events of `bytes_per_event` each.
fn gb(bytes_per_event: f64) -> f64 {
    bytes_per_event * MILLION / 1e9
}

/// Lambda requests and each function's GB-seconds: the measured warm time stretched to the
/// template's memory, plus the waits the bench does not see.
fn lambda_lines(
    s: &Settings,
    p: &Prices,
    v: &Volume,
    ingest: &Case,
    dispatcher: &Case,
    receiver_ms: f64,
) -> Result<[Line; 3], String> {
    let stretch = |memory: u64| (FULL_VCPU_MB / memory as f64).max(1.0);
    let waits = SQS_SEND_MS + if s.live_enabled { LIVE_PUBLISH_MS } else { 0.0 };
    let ingest_ms = (ingest.warm_ms_median * stretch(s.ingest.memory_mb) + waits).ceil();
    // The batch's events are of distinct chats, delivered concurrently: one receiver wait.
    let dispatch_ms =
        (dispatcher.warm_ms_median * stretch(s.dispatcher.memory_mb) + receiver_ms).ceil();
    let gb_second =
        |f: &template::Function| p.each(&format!("lambda_gb_second_{}", f.architecture));
    Ok([
        Line {
            name: "Lambda requests (ingest + dispatcher)",
            ours: true,
            usd: (v.requests + v.batches) * p.each("lambda_request")?,
        },
        Line {
            name: "Lambda GB-seconds, ingest",
            ours: true,
            usd: v.requests * s.ingest.memory_mb as f64 / 1024.0 * ingest_ms / 1000.0
                * gb_second(&s.ingest)?,
        },
        Line {
            name: "Lambda GB-seconds, dispatcher",
            ours: true,
            usd: v.batches * s.dispatcher.memory_mb as f64 / 1024.0 * dispatch_ms / 1000.0
                * gb_second(&s.dispatcher)?,
        },
    ])
}

/// SQS requests at `sqs` dollars each: ingest's sends, the event source mapping's receives
/// and deletes.
fn sqs_lines(v: &Volume, sqs: f64) -> [Line; 2] {
    [
        Line {
            name: "SQS sends",
            ours: false,
            usd: v.requests * chunks(v.n * EVENT_BYTES, SQS_CHUNK) * sqs,
        },
        Line {
            name: "SQS receives + deletes (event source mapping, per batch)",
            ours: true,
            usd: 2.0 * v.batches * chunks(v.b * EVENT_BYTES, SQS_CHUNK) * sqs,
        },
    ]
}

/// CloudWatch Logs ingestion: the functions' log lines, their EMF lines, the access log.
fn log_lines(
    s: &Settings,
    p: &Prices,
    v: &Volume,
    ingest: &Case,
    dispatcher: &Case,
) -> Result<[Line; 3], String> {
    // Per event: a case's bytes scale with its events (ids), so take bytes per event.
    let per_event = |c: &Case, bytes: f64| bytes / c.events as f64;
    let logs = per_event(
        ingest,
        ingest.bytes_per_invocation - ingest.emf_bytes_per_invocation,
    ) + per_event(
        dispatcher,
        dispatcher.bytes_per_invocation - dispatcher.emf_bytes_per_invocation,
    ) + LOG_EVENT_OVERHEAD as f64
        * (per_event(ingest, ingest.lines_per_invocation)
            + per_event(dispatcher, dispatcher.lines_per_invocation));
    let emf = per_event(ingest, ingest.emf_bytes_per_invocation)
        + per_event(dispatcher, dispatcher.emf_bytes_per_invocation);
    let access = (access_log_line(&s.access_log_format).len() as u64 + LOG_EVENT_OVERHEAD) as f64
        / v.n as f64;
    Ok([
        Line {
            name: "CloudWatch Logs: function log lines",
            ours: true,
            usd: gb(logs) * p.each("logs_ingestion_gb")?,
        },
        Line {
            name: "CloudWatch Logs: EMF metric lines",
            ours: true,
            usd: gb(emf) * p.each("logs_ingestion_gb")?,
        },
        Line {
            name: "CloudWatch Logs: API access log",
            ours: true,
            usd: gb(access) * p.each("logs_ingestion_gb")?,
        },
    ])
}

/// The live channel's line: optional for a deployment (pages can do without it), so the
/// table totals the relay without it and with it.
pub const LIVE_LINE: &str = "AppSync Events (live channel: publish + 1 subscriber)";

/// The relay's total per million events without the live channel (no AppSync line, and no
/// wait for the publish in ingest's duration) and, when the template has it, with it.
pub fn totals(
    s: &Settings,
    m: &Measured,
    p: &Prices,
    sc: Scenario,
) -> Result<(f64, Option<f64>), String> {
    let sum = |lines: Vec<Line>| lines.iter().map(|l| l.usd).sum::<f64>();
    let off = Settings {
        live_enabled: false,
        ..s.clone()
    };
    let without = sum(relay(&off, m, p, sc)?);
    let with = if s.live_enabled {
        Some(sum(relay(s, m, p, sc)?))
    } else {
        None
    };
    Ok((without, with))
}

/// EventBridge API destinations for the same events: a custom event published (PutEvents)
/// and an API destination invocation per event, plus the same bytes out.
pub fn eventbridge(p: &Prices) -> Result<f64, String> {
    Ok(MILLION
        * chunks(EVENT_BYTES, EVENTBRIDGE_CHUNK)
        * (p.each("eventbridge_custom_event")?
            + p.each("eventbridge_api_destination_invocation")?)
        + DELIVERY_BYTES_OUT * MILLION / 1e9 * p.each("data_transfer_out_gb")?)
}

/// Log bytes per delivered event, both functions, the success path (no access log).
pub fn log_bytes_per_event(m: &Measured, batched: bool) -> Result<f64, String> {
    let (i, d) = if batched {
        (m.case("ingest_10")?, m.case("dispatcher_10")?)
    } else {
        (m.case("ingest_1")?, m.case("dispatcher_1")?)
    };
    Ok(i.bytes_per_invocation / i.events as f64 + d.bytes_per_invocation / d.events as f64)
}

fn money(usd: f64) -> String {
    if usd >= 10.0 {
        format!("${usd:.1}")
    } else {
        format!("${usd:.3}")
    }
}

/// The whole report: inputs, the cost table, the comparison, capacity, assumptions.
pub fn render(s: &Settings, m: &Measured, p: &Prices) -> Result<String, String> {
    let mut out = String::new();
    write_inputs(&mut out, s, m, p);
    let tables = write_lines(&mut out, s, m, p)?;
    write_totals(&mut out, s, m, p)?;
    write_alternatives(&mut out, p)?;
    let _ = writeln!(out, "\n\n`*` a line the relay's code or settings decide.\n");
    write_where_the_money_goes(&mut out, &tables);
    let _ = writeln!(
        out,
        "\nLog bytes per delivered event, both functions, success path: {:.0} B (1 event/request), {:.0} B (10/batch); access log ~{} B per request (estimated from the template's format).",
        log_bytes_per_event(m, false)?,
        log_bytes_per_event(m, true)?,
        access_log_line(&s.access_log_format).len()
    );
    let _ = writeln!(out, "\n{}", capacity(s, m)?);
    write_assumptions(&mut out, s);
    write_sources(&mut out, p);
    Ok(out)
}

/// The title and the three inputs.
fn write_inputs(out: &mut String, s: &Settings, m: &Measured, p: &Prices) {
    let _ = writeln!(
        out,
        "# Cost per million events ({}, prices as of {})\n",
        p.region, p.as_of
    );
    let _ = writeln!(
        out,
        "Inputs: template.yaml (ingest {} MB {}, dispatcher {} MB {}, BatchSize {}, LogLevel {}, SystemLogLevel {}, live channel {}); measured: {}; prices: cost/prices-{}.yaml.\n",
        s.ingest.memory_mb,
        s.ingest.architecture,
        s.dispatcher.memory_mb,
        s.dispatcher.architecture,
        s.batch_size,
        s.log_level,
        s.system_log_level,
        if s.live_enabled { "on" } else { "off" },
        m.source,
        p.region
    );
}

/// The table's header and one row per line of the bill; each scenario's lines.
fn write_lines(
    out: &mut String,
    s: &Settings,
    m: &Measured,
    p: &Prices,
) -> Result<Vec<Vec<Line>>, String> {
    let tables: Vec<Vec<Line>> = SCENARIOS
        .iter()
        .map(|sc| relay(s, m, p, *sc))
        .collect::<Result<_, _>>()?;
    let _ = write!(out, "| line |");
    for sc in SCENARIOS {
        let _ = write!(out, " {} |", sc.label());
    }
    let _ = writeln!(out, "\n|---|{}", "---:|".repeat(SCENARIOS.len()));
    for (i, line) in tables[0].iter().enumerate() {
        let _ = write!(
            out,
            "| {}{} |",
            line.name,
            if line.ours { " *" } else { "" }
        );
        for t in &tables {
            let _ = write!(out, " {} |", money(t[i].usd));
        }
        let _ = writeln!(out);
    }
    Ok(tables)
}

/// The relay's totals: without the live channel, and with it when the template has it.
fn write_totals(out: &mut String, s: &Settings, m: &Measured, p: &Prices) -> Result<(), String> {
    let totals: Vec<(f64, Option<f64>)> = SCENARIOS
        .iter()
        .map(|sc| totals(s, m, p, *sc))
        .collect::<Result<_, _>>()?;
    let _ = write!(out, "| **relay, total (no live channel)** |");
    for (without, _) in &totals {
        let _ = write!(out, " **{}** |", money(*without));
    }
    if s.live_enabled {
        let _ = write!(
            out,
            "\n| **relay, total with live channel (1 page open)** |"
        );
        for (_, with) in &totals {
            let _ = write!(out, " **{}** |", money(with.unwrap_or_default()));
        }
    }
    Ok(())
}

/// The rows to compare with: EventBridge API destinations, and the seed's direct POST.
fn write_alternatives(out: &mut String, p: &Prices) -> Result<(), String> {
    let eb = eventbridge(p)?;
    let _ = write!(out, "\n| EventBridge API destinations |");
    for _ in SCENARIOS {
        let _ = write!(out, " {} |", money(eb));
    }
    let _ = write!(out, "\n| seed's direct POST (no AWS) |");
    for _ in SCENARIOS {
        let _ = write!(out, " $0 |");
    }
    Ok(())
}

/// The three largest lines' shares in two scenarios of `tables`.
fn write_where_the_money_goes(out: &mut String, tables: &[Vec<Line>]) {
    for (label, t) in [
        ("1 event/request, 200 ms", &tables[1]),
        ("10/batch, 200 ms", &tables[4]),
    ] {
        let total: f64 = t.iter().map(|l| l.usd).sum();
        let mut sorted: Vec<&Line> = t.iter().collect();
        sorted.sort_by(|a, b| b.usd.total_cmp(&a.usd));
        let top: Vec<String> = sorted
            .iter()
            .take(3)
            .map(|l| format!("{} {:.0} %", l.name, 100.0 * l.usd / total))
            .collect();
        let _ = writeln!(out, "Where the money goes ({label}): {}.", top.join("; "));
    }
}

/// Every assumption the figures rest on.
fn write_assumptions(out: &mut String, s: &Settings) {
    let _ = writeln!(
        out,
        "Assumptions: free tiers excluded; {EVENT_BYTES}-byte events (one 64 KB SQS chunk, one 512 KB HTTP API unit); the dispatcher's batch holds what one ingest request stored (1, or up to BatchSize) and its events are of distinct chats (delivered concurrently, one receiver wait per batch); the event source mapping receives and deletes once per batch (its empty long-poll receives on an idle queue are a fixed monthly cost, not per event); {:.1} % of invocations are cold starts, each fetching its secrets (ingest {INGEST_SECRETS}, dispatcher {DISPATCHER_SECRETS}); billed duration = the bench's warm time × {FULL_VCPU_MB}/memory + {SQS_SEND_MS} ms for SQS{}; + the receiver's time for the dispatcher; {LOG_EVENT_OVERHEAD} B per log line on top of its bytes; EMF lines are log bytes (custom metrics themselves are billed per metric-month, not per event); {DELIVERY_BYTES_OUT} B out per delivery; AppSync prices marked unconfirmed in the prices file.",
        COLD_START_RATE * 100.0,
        if s.live_enabled {
            format!(" + {LIVE_PUBLISH_MS} ms for the live publish")
        } else {
            String::new()
        }
    );
}

/// Each price with its source.
fn write_sources(out: &mut String, p: &Prices) {
    let _ = writeln!(out, "\nSources:");
    for (name, price) in &p.prices {
        let _ = writeln!(
            out,
            "- {name}: ${} per {} {} — {}{}",
            price.usd,
            price.per,
            price.unit,
            price.source,
            if price.unconfirmed {
                " (unconfirmed for this region)"
            } else {
                ""
            }
        );
    }
}

/// Published quotas the capacity table uses, each with its page.
pub mod quota {
    /// "10,000 requests per second (RPS) with an additional burst capacity … 5,000 requests",
    /// per account per Region across HTTP, REST and WebSocket APIs.
    pub const API_ACCOUNT_RPS: f64 = 10_000.0;
    pub const API_SOURCE: &str =
        "https://docs.aws.amazon.com/apigateway/latest/developerguide/limits.html";
    /// High-throughput FIFO, per queue, per API action: "The following limits are based on
    /// non-batched API calls: US East (N. Virginia), US West (Oregon), and Europe (Ireland): Up
    /// to 70,000 transactions per second (TPS)" (quotas-messages, High throughput for FIFO
    /// queues); up to ten messages per batched call.
    pub const FIFO_QUEUE_TPS: f64 = 70_000.0;
    /// Each message group is served by one partition: 300 transactions per second per API
    /// action, 3,000 messages per second with batching.
    pub const FIFO_GROUP_TPS: f64 = 300.0;
    pub const SQS_SOURCE: &str = "https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-messages.html";
    /// "For FIFO queues, concurrent invocations are capped at the number of message group IDs
    /// (messageGroupId) or the maximum concurrency setting—whichever is lower"; MaximumConcurrency
    /// is 2 to 1,000.
    pub const ESM_MAX_CONCURRENCY: f64 = 1_000.0;
    pub const ESM_SOURCE: &str =
        "https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-scaling.html";
    /// Default concurrent executions per account per Region.
    pub const LAMBDA_ACCOUNT_CONCURRENCY: f64 = 1_000.0;
    pub const LAMBDA_SOURCE: &str =
        "https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html";
}

/// The receiver's answer time the capacity table assumes.
const CAPACITY_RECEIVER_S: f64 = 0.2;

/// One capacity row: limit, figure, events/s where it bites, lifted by, source.
type CapacityRow = (String, String, String, String, &'static str);

/// Events per second at which each limit bites, for this template, at a 200 ms receiver.
pub fn capacity(s: &Settings, m: &Measured) -> Result<String, String> {
    let mut rows = Vec::new();
    rows.extend(api_rows(s));
    rows.extend(queue_rows(s));
    rows.extend(delivery_rows(s));
    rows.push(lambda_account_row(s, m)?);
    let mut out = String::from(
        "## Capacity (receiver answering in 200 ms)\n\n| limit | figure | events/s where it bites | lifted by | source |\n|---|---|---|---|---|\n",
    );
    for (limit, figure, bites, lift, source) in rows {
        let _ = writeln!(out, "| {limit} | {figure} | {bites} | {lift} | {source} |");
    }
    Ok(out)
}

/// The front door: the route's throttling, then the account's.
fn api_rows(s: &Settings) -> [CapacityRow; 2] {
    [
        (
            "HTTP API route throttling".into(),
            format!(
                "ThrottlingRateLimit {} req/s, burst {}",
                s.throttling_rate_limit, s.throttling_burst_limit
            ),
            format!(
                "{} (1/req), {} (10/batch)",
                s.throttling_rate_limit,
                s.throttling_rate_limit * 10
            ),
            "`ThrottlingRateLimit`, `ThrottlingBurstLimit`".into(),
            "template.yaml (DefaultRouteSettings)",
        ),
        (
            "API Gateway account throttle".into(),
            format!("{} req/s per account and Region", quota::API_ACCOUNT_RPS),
            format!(
                "{} (1/req), {} (10/batch)",
                quota::API_ACCOUNT_RPS,
                quota::API_ACCOUNT_RPS * 10.0
            ),
            "Service Quotas increase".into(),
            quota::API_SOURCE,
        ),
    ]
}

/// The FIFO queue: per queue, and per message group.
fn queue_rows(s: &Settings) -> [CapacityRow; 2] {
    [
        (
            format!("SQS FIFO per queue ({})", s.fifo_throughput_limit),
            format!(
                "{} TPS per API action, non-batched calls, us-east-1",
                quota::FIFO_QUEUE_TPS
            ),
            format!(
                "{} (1/req), {} (10/batch)",
                quota::FIFO_QUEUE_TPS,
                quota::FIFO_QUEUE_TPS * 10.0
            ),
            "high throughput is on; beyond it, more queues".into(),
            quota::SQS_SOURCE,
        ),
        (
            "SQS FIFO per message group (one chat)".into(),
            format!("{} TPS", quota::FIFO_GROUP_TPS),
            format!("{} per chat (1/req)", quota::FIFO_GROUP_TPS),
            "none (one chat is one ordered group)".into(),
            quota::SQS_SOURCE,
        ),
    ]
}

/// Delivery: one chat in order, and the event source mapping's concurrency.
fn delivery_rows(s: &Settings) -> [CapacityRow; 2] {
    let b = s.batch_size as f64;
    let conc = s.dispatcher_max_concurrency as f64;
    [
        (
            "one chat, delivered in order".into(),
            format!(
                "one delivery at a time, {} ms receiver",
                CAPACITY_RECEIVER_S * 1000.0
            ),
            format!("{:.0} per chat", 1.0 / CAPACITY_RECEIVER_S),
            "a faster receiver".into(),
            "docs/contract.md (ordering)",
        ),
        (
            "event source mapping, `DispatcherMaxConcurrency`".into(),
            format!("{conc} concurrent batches of ≤ {b}"),
            format!(
                "{:.0} (1/batch), {:.0} (full batches, distinct chats)",
                conc / (CAPACITY_RECEIVER_S),
                conc * b / CAPACITY_RECEIVER_S
            ),
            format!(
                "`DispatcherMaxConcurrency` (2–{}; capped by active chats)",
                quota::ESM_MAX_CONCURRENCY
            ),
            quota::ESM_SOURCE,
        ),
    ]
}

/// The account's Lambda concurrency left to ingest once the dispatcher has its share.
fn lambda_account_row(s: &Settings, m: &Measured) -> Result<CapacityRow, String> {
    let ingest_s = (m.case("ingest_1")?.warm_ms_median
        * (FULL_VCPU_MB / s.ingest.memory_mb as f64).max(1.0)
        + SQS_SEND_MS
        + if s.live_enabled { LIVE_PUBLISH_MS } else { 0.0 })
        / 1000.0;
    let conc = s.dispatcher_max_concurrency as f64;
    Ok((
        "Lambda account concurrency".into(),
        format!(
            "{} concurrent executions",
            quota::LAMBDA_ACCOUNT_CONCURRENCY
        ),
        format!(
            "{:.0} (1/req, ingest ~{:.0} ms)",
            (quota::LAMBDA_ACCOUNT_CONCURRENCY - conc) / ingest_s,
            ingest_s * 1000.0
        ),
        "Service Quotas increase".into(),
        quota::LAMBDA_SOURCE,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> (String, Measured, Prices) {
        let root = relay_tests::repo_root();
        let template = std::fs::read_to_string(root.join("template.yaml")).unwrap();
        let measured = Measured::parse(
            &std::fs::read_to_string(root.join("cost/measured.json")).unwrap(),
            "sample",
        )
        .unwrap();
        let prices = Prices::parse(
            &std::fs::read_to_string(root.join("cost/prices-us-east-1.yaml")).unwrap(),
        )
        .unwrap();
        (template, measured, prices)
    }

    fn line(lines: &[Line], name: &str) -> f64 {
        lines.iter().find(|l| l.name == name).unwrap().usd
    }

    #[test]
    fn the_committed_template_and_sample_give_a_full_table() {
        let (template, measured, prices) = inputs();
        let settings = Settings::parse(&template).unwrap();
        assert_eq!(settings.batch_size, 10);
        let text = render(&settings, &measured, &prices).unwrap();
        for scenario in SCENARIOS {
            assert!(text.contains(&scenario.label()), "{text}");
        }
        assert!(text.contains("EventBridge API destinations") && text.contains("Capacity"));
        assert!(text.contains("relay, total (no live channel)"), "{text}");
        assert_eq!(
            settings.live_enabled,
            text.contains("relay, total with live channel (1 page open)"),
            "{text}"
        );
    }

    #[test]
    fn the_totals_leave_out_and_then_add_the_live_channel() {
        let (template, measured, prices) = inputs();
        let mut settings = Settings::parse(&template).unwrap();
        settings.live_enabled = true;
        let scenario = SCENARIOS[0];
        let on = relay(&settings, &measured, &prices, scenario).unwrap();
        let (without, with) = totals(&settings, &measured, &prices, scenario).unwrap();
        let with = with.expect("a total with the live channel");
        assert!((with - on.iter().map(|l| l.usd).sum::<f64>()).abs() < 1e-9);
        // The AppSync line, and ingest's wait for the publish in its GB-seconds.
        assert!(with - without > line(&on, LIVE_LINE));
        settings.live_enabled = false;
        let off = relay(&settings, &measured, &prices, scenario).unwrap();
        assert!(off.iter().all(|l| l.name != LIVE_LINE));
        let (without_off, with_off) = totals(&settings, &measured, &prices, scenario).unwrap();
        assert_eq!(with_off, None);
        assert!((without_off - without).abs() < 1e-9);
        assert!((without_off - off.iter().map(|l| l.usd).sum::<f64>()).abs() < 1e-9);
    }

    #[test]
    fn figures_follow_the_template_memory_and_batch_size() {
        let (template, measured, prices) = inputs();
        let base = Settings::parse(&template).unwrap();
        let scenario = Scenario {
            events_per_request: 10,
            receiver_ms: 200.0,
        };
        let before = relay(&base, &measured, &prices, scenario).unwrap();
        // A modified copy of the template: the dispatcher's memory doubled, batches of 5.
        let memory = template.replacen(
            "MemorySize: 256\n      # 60 s",
            "MemorySize: 512\n      # 60 s",
            1,
        );
        assert_ne!(
            memory, template,
            "the dispatcher's MemorySize line is where expected"
        );
        let bigger = Settings::parse(&memory).unwrap();
        assert_eq!(bigger.dispatcher.memory_mb, 512);
        let after = relay(&bigger, &measured, &prices, scenario).unwrap();
        let name = "Lambda GB-seconds, dispatcher";
        assert!(line(&after, name) > 1.9 * line(&before, name));
        let batch = template.replacen("BatchSize: 10", "BatchSize: 5", 1);
        let smaller = Settings::parse(&batch).unwrap();
        let after = relay(&smaller, &measured, &prices, scenario).unwrap();
        let name = "SQS receives + deletes (event source mapping, per batch)";
        assert!((line(&after, name) - 2.0 * line(&before, name)).abs() < 1e-9);
    }

    #[test]
    fn figures_follow_the_measured_log_bytes_and_durations() {
        let (template, measured, prices) = inputs();
        let settings = Settings::parse(&template).unwrap();
        let scenario = Scenario {
            events_per_request: 1,
            receiver_ms: 50.0,
        };
        let before = relay(&settings, &measured, &prices, scenario).unwrap();
        let mut heavier = measured.clone();
        let case = heavier.cases.get_mut("dispatcher_1").unwrap();
        case.bytes_per_invocation += 1000.0;
        case.emf_bytes_per_invocation += 1000.0;
        case.warm_ms_median += 100.0;
        let after = relay(&settings, &heavier, &prices, scenario).unwrap();
        let emf = "CloudWatch Logs: EMF metric lines";
        // 1,000 more bytes per event: 1 GB per million events at the ingestion price.
        let expected = prices.each("logs_ingestion_gb").unwrap();
        assert!((line(&after, emf) - line(&before, emf) - expected).abs() < 1e-9);
        let gbs = "Lambda GB-seconds, dispatcher";
        assert!(line(&after, gbs) > line(&before, gbs));
        assert!(
            log_bytes_per_event(&heavier, false).unwrap()
                > log_bytes_per_event(&measured, false).unwrap()
        );
    }

    #[test]
    fn a_results_file_is_read_before_the_sample_and_named() {
        let dir = std::env::temp_dir().join(format!("relay-cost-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sample = relay_tests::repo_root().join("cost/measured.json");
        let missing = dir.join("results.json");
        let m = Measured::load(&missing, &sample).unwrap();
        assert!(m.source.contains("committed sample"), "{}", m.source);
        let text = std::fs::read_to_string(&sample).unwrap();
        std::fs::write(&missing, format!("{{\"logbytes\": {text}}}")).unwrap();
        let m = Measured::load(&missing, &sample).unwrap();
        assert_eq!(m.source, missing.display().to_string());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_access_log_estimate_fills_every_variable() {
        let (template, _, _) = inputs();
        let settings = Settings::parse(&template).unwrap();
        let line = access_log_line(&settings.access_log_format);
        assert!(!line.contains("$context"), "{line}");
        serde_json::from_str::<Value>(&line).expect("the access log line is JSON");
    }
}
