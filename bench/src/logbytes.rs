//! What the Lambda binaries write to their logs per event on the success path: the release
//! `ingest` and `dispatcher` run under the bench's Runtime API with the Lambda environment and
//! the template's logging settings (`AWS_LAMBDA_LOG_LEVEL` from `LogLevel`), stdout and stderr
//! to a file. One process per case gets one untimed first invocation and then warm ones; the
//! bytes written between two polls of `next` are one invocation's log lines (tracing JSON and
//! EMF). Also the invocation's wall time (poll → response) on this machine, with moto and a
//! loopback receiver. The API Gateway access log line is estimated from the template's format.
//! The cost model (`make cost`) reads these figures from `results.json`.

use crate::cost::template::{Settings, access_log_line};
use crate::fixtures::{
    INGEST_SECRET, TYPICAL_BYTES, WEBHOOK_SECRET, apigw_v2_event, envelope, ingest_secrets,
    records, signed_header_pairs, sqs_event,
};
use crate::plan::Bins;
use crate::receiver::TimingReceiver;
use crate::report::{Report, Verdict};
use crate::runtime_api::{ApiEvent, RuntimeApi};
use crate::stats::median_u64;
use relay_shared::signature::SecretSet;
use relay_tests::{FifoQueues, MotoServer};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Warm invocations measured per case (after one untimed first invocation).
const WARM: usize = 5;

/// A realistic event id: the example sender's `message-` + 32 hex characters.
fn real_id(case: &str, i: usize) -> String {
    format!("message-{:0>32x}", (case.len() as u128) << 64 | i as u128)
}

/// One case's figures, per invocation (median of the warm ones).
#[derive(Debug, Clone)]
pub struct Case {
    pub name: &'static str,
    pub events: usize,
    pub bytes: u64,
    pub lines: u64,
    /// Of `bytes`, those of EMF lines (metrics).
    pub emf_bytes: u64,
    pub warm_ms: f64,
}

impl Case {
    fn to_json(&self) -> Value {
        json!({
            "events": self.events,
            "bytes_per_invocation": self.bytes,
            "lines_per_invocation": self.lines,
            "emf_bytes_per_invocation": self.emf_bytes,
            "bytes_per_event": self.bytes as f64 / self.events as f64,
            "warm_ms_median": self.warm_ms,
        })
    }
}

/// The Lambda environment, with the template's memory size and logging settings.
fn lambda_env(api: &RuntimeApi, function: &str, memory: u64, level: &str) -> Vec<(String, String)> {
    [
        ("AWS_LAMBDA_RUNTIME_API", api.address.to_string()),
        ("AWS_LAMBDA_FUNCTION_NAME", function.to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory.to_string()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        ("AWS_LAMBDA_LOG_FORMAT", "JSON".to_owned()),
        ("AWS_LAMBDA_LOG_LEVEL", level.to_owned()),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{function}"),
        ),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
        ("AWS_SESSION_TOKEN", "test".to_owned()),
        // The template's value: the stack name in the namespace is part of every EMF line.
        ("METRICS_NAMESPACE", "ChatRelay/chat-relay".to_owned()),
        ("PATH", "/usr/local/bin:/usr/bin:/bin".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Runs one process for `1 + WARM` invocations of `event(i)`; `check` validates each answer.
#[allow(clippy::too_many_arguments)]
async fn measure(
    name: &'static str,
    events: usize,
    binary: &Path,
    env: Vec<(String, String)>,
    log: PathBuf,
    event: &dyn Fn(usize) -> Vec<u8>,
    check: &dyn Fn(&[u8]) -> Result<(), String>,
) -> Result<Case, String> {
    let mut api = RuntimeApi::start().await;
    let function = format!("bench-{name}");
    api.arm(
        &function,
        (0..=WARM)
            .map(|i| (format!("{name}-{i}"), event(i)))
            .collect(),
    );
    let file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut child = Command::new(binary)
        .env_clear()
        .envs(lambda_env(&api, &function, 0, "INFO"))
        .envs(env)
        .stdin(Stdio::null())
        .stdout(file.try_clone().map_err(|e| e.to_string())?)
        .stderr(file)
        .spawn()
        .map_err(|e| format!("cannot spawn {}: {e}", binary.display()))?;
    let outcome = follow(&mut api, name, &log, check).await;
    let _ = child.kill();
    let _ = child.wait();
    outcome.map(|samples| samples.case(name, events))
}

/// Per warm invocation: log bytes, log lines, EMF bytes, and wall time in µs.
#[derive(Default)]
struct Samples {
    bytes: Vec<u64>,
    lines: Vec<u64>,
    emf: Vec<u64>,
    times: Vec<u64>,
}

impl Samples {
    /// Counts the log written between offsets `before` and `now` as one invocation's.
    fn log_between(&mut self, log: &Path, before: u64, now: u64) -> Result<(), String> {
        self.bytes.push(now - before);
        let text = std::fs::read(log).map_err(|e| e.to_string())?;
        let slice = &text[before as usize..now as usize];
        self.lines
            .push(slice.iter().filter(|&&b| b == b'\n').count() as u64);
        self.emf.push(
            slice
                .split(|&b| b == b'\n')
                .filter(|l| l.windows(6).any(|w| w == b"\"_aws\""))
                .map(|l| l.len() as u64 + 1)
                .sum(),
        );
        Ok(())
    }

    /// The medians.
    fn case(&self, name: &'static str, events: usize) -> Case {
        Case {
            name,
            events,
            bytes: median_u64(&self.bytes),
            lines: median_u64(&self.lines),
            emf_bytes: median_u64(&self.emf),
            warm_ms: median_u64(&self.times) as f64 / 1000.0,
        }
    }
}

/// Follows the process through its invocations, sampling the warm ones: from each poll of
/// `next` to the response (time) and to the next poll (log bytes).
async fn follow(
    api: &mut RuntimeApi,
    name: &str,
    log: &Path,
    check: &dyn Fn(&[u8]) -> Result<(), String>,
) -> Result<Samples, String> {
    let size = || std::fs::metadata(log).map(|m| m.len()).unwrap_or(0);
    let mut samples = Samples::default();
    let mut polled: Option<(Instant, u64)> = None;
    let mut invocations = 0;
    while invocations <= WARM + 1 {
        let event = api
            .next_event(Duration::from_secs(20))
            .await
            .ok_or_else(|| format!("{name}: no answer within 20 s (see {})", log.display()))?;
        match event {
            ApiEvent::Next(at) => {
                let now = size();
                if let Some((_, before)) = polled.filter(|_| invocations > 1) {
                    samples.log_between(log, before, now)?;
                }
                polled = Some((at, now));
                invocations += 1;
            }
            ApiEvent::Response(at, body) => {
                check(&body).map_err(|e| format!("{name}: wrong response: {e}"))?;
                if let Some((start, _)) = polled.filter(|_| invocations > 1) {
                    samples.times.push((at - start).as_micros() as u64);
                }
            }
            ApiEvent::Error(_, body) | ApiEvent::InitError(_, body) => {
                return Err(format!(
                    "{name} reported an error: {}",
                    String::from_utf8_lossy(&body)
                ));
            }
        }
    }
    Ok(samples)
}

/// The four cases: ingest with one event and a batch of ten, the dispatcher with one record
/// and ten (ten chats).
pub async fn measure_all(
    bins: &Bins,
    settings: &Settings,
    logs: &Path,
    epoch: Instant,
) -> Result<Vec<Case>, String> {
    let moto = MotoServer::start().await;
    let queues = moto.create_fifo_with_dlq("bench-logbytes", 5, 30).await;
    let receiver = TimingReceiver::start(epoch, 0, Duration::ZERO).await;
    let (ingest_env, dispatcher_env) = environments(&moto, &queues, &receiver, settings).await;
    let secrets = ingest_secrets();
    let mut cases = Vec::new();
    for (name, count) in [("ingest_1", 1), ("ingest_10", 10)] {
        cases.push(
            measure(
                name,
                count,
                &bins.ingest,
                ingest_env.clone(),
                logs.join(format!("logbytes-{name}.log")),
                &ingest_event(&secrets, name, count),
                &ingest_ok,
            )
            .await?,
        );
    }
    for (name, count) in [("dispatcher_1", 1), ("dispatcher_10", 10)] {
        cases.push(
            measure(
                name,
                count,
                &bins.dispatcher,
                dispatcher_env.clone(),
                logs.join(format!("logbytes-{name}.log")),
                &dispatch_event(name, count),
                &dispatch_ok,
            )
            .await?,
        );
    }
    Ok(cases)
}

/// The ingest and dispatcher environments (beyond [`lambda_env`]): the template's memory and
/// log level, moto's endpoints, and the secrets by ARN.
async fn environments(
    moto: &MotoServer,
    queues: &FifoQueues,
    receiver: &TimingReceiver,
    settings: &Settings,
) -> (Vec<(String, String)>, Vec<(String, String)>) {
    let ingest_arn = moto.create_secret("logbytes/ingest", INGEST_SECRET).await;
    let key_arn = moto.create_secret("logbytes/key", &"k".repeat(64)).await;
    let webhook_arn = moto.create_secret("logbytes/webhook", WEBHOOK_SECRET).await;
    let common = |memory: u64| {
        vec![
            (
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE".to_owned(),
                memory.to_string(),
            ),
            (
                "AWS_LAMBDA_LOG_LEVEL".to_owned(),
                settings.log_level.clone(),
            ),
            ("AWS_ENDPOINT_URL_SQS".to_owned(), moto.endpoint.clone()),
            (
                "AWS_ENDPOINT_URL_SECRETS_MANAGER".to_owned(),
                moto.endpoint.clone(),
            ),
            (
                "AWS_ENDPOINT_URL_DYNAMODB".to_owned(),
                moto.endpoint.clone(),
            ),
            ("QUEUE_URL".to_owned(), queues.queue_url.clone()),
        ]
    };
    let ingest = [
        common(settings.ingest.memory_mb),
        vec![
            ("INGEST_SECRETS_ARN".to_owned(), ingest_arn),
            ("CHAT_ID_KEY_ARN".to_owned(), key_arn),
        ],
    ]
    .concat();
    let dispatcher = [
        common(settings.dispatcher.memory_mb),
        vec![
            ("WEBHOOK_URL".to_owned(), receiver.url.clone()),
            ("WEBHOOK_SECRETS_ARN".to_owned(), webhook_arn),
            ("DEAD_LETTER_QUEUE_URL".to_owned(), queues.dlq_url.clone()),
            ("ATTEMPTS_TABLE".to_owned(), "bench-attempts".to_owned()),
        ],
    ]
    .concat();
    (ingest, dispatcher)
}

/// Invocation `i`'s API Gateway event: `count` signed envelopes, to `/events` when one,
/// else as a JSON array to `/events/batch`.
fn ingest_event<'a>(
    secrets: &'a SecretSet,
    case: &'static str,
    count: usize,
) -> impl Fn(usize) -> Vec<u8> + 'a {
    move |i: usize| {
        let bodies: Vec<String> = (0..count)
            .map(|k| envelope(&real_id(case, i * 100 + k), k, TYPICAL_BYTES))
            .collect();
        let (body, path) = if count == 1 {
            (bodies[0].clone(), "/events")
        } else {
            (format!("[{}]", bodies.join(",")), "/events/batch")
        };
        let id = real_id(case, i * 100 + 99);
        let mut event = apigw_v2_event(
            &format!("{case}-{i}"),
            &signed_header_pairs(secrets, &id, &body),
            &body,
        );
        event["rawPath"] = json!(path);
        event["routeKey"] = json!(format!("POST {path}"));
        event["requestContext"]["routeKey"] = json!(format!("POST {path}"));
        event["requestContext"]["http"]["path"] = json!(path);
        event.to_string().into_bytes()
    }
}

/// Invocation `i`'s SQS event: `count` records in `count` chats, with realistic ids.
fn dispatch_event(case: &'static str, count: usize) -> impl Fn(usize) -> Vec<u8> {
    move |i: usize| {
        let mut batch = records(&format!("{case}{i}"), count, count, TYPICAL_BYTES);
        for (k, record) in batch.iter_mut().enumerate() {
            let id = real_id(case, i * 100 + k);
            record.body = envelope(&id, k, TYPICAL_BYTES);
            record.dedup_id = id;
        }
        sqs_event(&format!("{case}{i}"), &batch)
            .to_string()
            .into_bytes()
    }
}

/// Ingest accepted every event (202, or 207 with none rejected).
fn ingest_ok(body: &[u8]) -> Result<(), String> {
    let response: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    match response["statusCode"].as_u64() {
        Some(202) | Some(207) if !String::from_utf8_lossy(body).contains("rejected") => Ok(()),
        _ => Err(String::from_utf8_lossy(body).into_owned()),
    }
}

/// The dispatcher delivered every record (no `batchItemFailures`).
fn dispatch_ok(body: &[u8]) -> Result<(), String> {
    let response: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    match response["batchItemFailures"].as_array() {
        Some(failures) if failures.is_empty() => Ok(()),
        _ => Err(String::from_utf8_lossy(body).into_owned()),
    }
}

/// The section: the four cases, the access log estimate, and bytes per delivered event.
pub async fn section(
    report: &mut Report,
    bins: &Bins,
    logs: &Path,
    epoch: Instant,
) -> Result<(), String> {
    let settings = Settings::read(&relay_tests::repo_root().join("template.yaml"))?;
    let cases = measure_all(bins, &settings, logs, epoch).await?;
    let access = access_log_line(&settings.access_log_format).len() as u64;
    let by = |name: &str| cases.iter().find(|c| c.name == name).expect("measured");
    let per_event = |ingest: &Case, dispatcher: &Case| {
        ingest.bytes as f64 / ingest.events as f64
            + dispatcher.bytes as f64 / dispatcher.events as f64
    };
    let single = per_event(by("ingest_1"), by("dispatcher_1"));
    let batched = per_event(by("ingest_10"), by("dispatcher_10"));
    for case in &cases {
        report.row(
            "7",
            format!(
                "log bytes per invocation — `{}` ({} event(s), LogLevel {})",
                case.name, case.events, settings.log_level
            ),
            format!(
                "{} B in {} line(s), {} B of them EMF",
                case.bytes, case.lines, case.emf_bytes
            ),
            format!(
                "{:.0} B/event; warm invocation {:.1} ms here",
                case.bytes as f64 / case.events as f64,
                case.warm_ms
            ),
            "",
            Verdict::Info,
        );
    }
    for (what, bytes) in [
        ("one event per request, one per batch", single),
        ("ten per request, ten per batch", batched),
    ] {
        report.row(
            "7",
            format!("log bytes per delivered event, both functions — {what}"),
            format!("{bytes:.0} B"),
            format!("+ access log ~{access} B per request (estimated from the template's format)"),
            "≤ 400 B",
            Verdict::of(bytes <= 400.0),
        );
    }
    report.note("Log bytes: the release `ingest` and `dispatcher` under the bench's Runtime API with the template's LogLevel, stdout and stderr to `bench-results/logs/logbytes-*.log`; the bytes written between two polls of `next` are one warm invocation's log lines (JSON logs and EMF). The access log line is the template's format with typical values, an estimate.");
    let mut json_cases = serde_json::Map::new();
    for case in &cases {
        json_cases.insert(case.name.to_owned(), case.to_json());
    }
    report.json(
        "logbytes",
        json!({
            "log_level": settings.log_level,
            "cases": json_cases,
            "access_log_bytes_per_request": access,
            "access_log_is_estimate": true,
            "success_path_bytes_per_event": {"single": single, "batched": batched},
        }),
    );
    Ok(())
}
