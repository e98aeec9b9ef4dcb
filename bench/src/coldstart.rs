//! Cold start as Lambda does it: each release binary is spawned with the Lambda environment
//! and `AWS_LAMBDA_RUNTIME_API` pointing at [`RuntimeApi`], and given two events in a row.
//! Init is exec → its first `GET …/next`; first invoke is that `next` → its first response (the
//! invocation's own duration, what Lambda bills); warm invoke is the second `next` → the second
//! response, in the same process. Peak RSS is `VmHWM` from `/proc/<pid>/status`, read when the
//! function polls `next` a third time (idle, just before the bench ends it). Subjects are
//! spawned round-robin, so a burst of load from elsewhere on the machine hits all of them alike.

use crate::fixtures::{
    self, INGEST_SECRET, LIVE_TOKEN_SECRET, TYPICAL_BYTES, WEBHOOK_SECRET, apigw_v2_event,
    envelope, event_id, ingest_secrets, live_connect_event, records, signed_header_pairs,
    sqs_event,
};
use crate::instant_aws::InstantAws;
use crate::plan::{Bins, Plan};
use crate::receiver::TimingReceiver;
use crate::report::{Report, Verdict, mib_kb, ms, ratio};
use crate::runtime_api::{ApiEvent, RuntimeApi};
use crate::stats::{Summary, median_u64};
use relay_shared::queue::{NewMessage, Producer};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Checks a function's response to event `n`.
pub type Check<'a> = Box<dyn Fn(&[u8], usize) -> Result<(), String> + 'a>;

/// Events each spawn gets: the first invoke, then a warm one.
pub const EVENTS_PER_SPAWN: usize = 2;

/// Aim: init ≤ this × hello-world's.
pub const INIT_AIM: f64 = 1.5;

/// Aim: first invoke ≤ this × the same function's warm invoke.
pub const FIRST_INVOKE_AIM: f64 = 2.0;

/// One binary under test.
pub struct Subject<'a> {
    pub name: &'static str,
    pub binary: PathBuf,
    pub env: Vec<(String, String)>,
    /// The invocation payload of event `n` (spawn `i` gets events `2i` and `2i + 1`).
    pub event: Box<dyn Fn(usize) -> Vec<u8> + 'a>,
    /// Checks the function's response to event `n`.
    pub check: Check<'a>,
}

/// One spawn's figures.
#[derive(Debug, Clone, Copy)]
pub struct Spawn {
    /// exec → first `next`.
    pub init: Duration,
    /// First `next` → first response.
    pub first_invoke: Duration,
    /// Second `next` → second response.
    pub warm_invoke: Duration,
    pub vm_hwm_kb: u64,
}

/// Every spawn of one subject.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: &'static str,
    pub spawns: Vec<Spawn>,
}

impl Series {
    fn summary(&self, figure: impl Fn(&Spawn) -> Duration) -> Summary {
        Summary::of(&self.spawns.iter().map(figure).collect::<Vec<_>>())
    }

    pub fn init(&self) -> Summary {
        self.summary(|s| s.init)
    }

    pub fn first_invoke(&self) -> Summary {
        self.summary(|s| s.first_invoke)
    }

    pub fn warm_invoke(&self) -> Summary {
        self.summary(|s| s.warm_invoke)
    }

    /// exec → first response: what the caller of a cold start waits for.
    pub fn cold_total(&self) -> Summary {
        self.summary(|s| s.init + s.first_invoke)
    }

    pub fn vm_hwm_kb(&self) -> u64 {
        median_u64(&self.spawns.iter().map(|s| s.vm_hwm_kb).collect::<Vec<_>>())
    }

    pub fn to_json(&self) -> Value {
        json!({
            "spawns": self.spawns.len(),
            "init": self.init().to_json_ms(),
            "first_invoke": self.first_invoke().to_json_ms(),
            "warm_invoke": self.warm_invoke().to_json_ms(),
            "exec_to_first_response": self.cold_total().to_json_ms(),
            "vm_hwm_kb_median": self.vm_hwm_kb(),
        })
    }
}

/// What Lambda's `provided.al2023` runtime sets, minus what the binaries never read.
pub fn lambda_env(api: &RuntimeApi, function: &str) -> Vec<(String, String)> {
    [
        ("AWS_LAMBDA_RUNTIME_API", api.address.to_string()),
        ("AWS_LAMBDA_FUNCTION_NAME", function.to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".to_owned()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            "2025/12/21/[$LATEST]0123456789abcdef0123456789abcdef".to_owned(),
        ),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{function}"),
        ),
        ("AWS_EXECUTION_ENV", "AWS_Lambda_provided.al2023".to_owned()),
        ("_HANDLER", "bootstrap".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
        ("AWS_SESSION_TOKEN", "test".to_owned()),
        ("TZ", ":UTC".to_owned()),
        ("LANG", "en_US.UTF-8".to_owned()),
        ("PATH", "/usr/local/bin:/usr/bin:/bin".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Peak resident set size of a live process, in kB.
fn vm_hwm_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Spawns `subject` once and times it.
async fn spawn_once(
    api: &mut RuntimeApi,
    subject: &Subject<'_>,
    index: usize,
    log: &File,
) -> Result<Spawn, String> {
    let function = format!("bench-{}", subject.name);
    let events = (0..EVENTS_PER_SPAWN)
        .map(|k| {
            let n = index * EVENTS_PER_SPAWN + k;
            (
                format!("{}-{n:05}-request", subject.name),
                (subject.event)(n),
            )
        })
        .collect();
    api.arm(&function, events);
    let mut command = Command::new(&subject.binary);
    command
        .env_clear()
        .envs(lambda_env(api, &function))
        .envs(subject.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log.try_clone().map_err(|e| e.to_string())?);
    let started = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot spawn {}: {e}", subject.binary.display()))?;
    let pid = child.id();
    let outcome = watch(api, subject, index, started, pid).await;
    let _ = child.kill();
    let _ = child.wait();
    outcome
}

async fn watch(
    api: &mut RuntimeApi,
    subject: &Subject<'_>,
    index: usize,
    started: Instant,
    pid: u32,
) -> Result<Spawn, String> {
    let deadline = started + Duration::from_secs(20);
    // When each `next` and each response came.
    let (mut polls, mut responses) = (Vec::new(), Vec::new());
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = api.next_event(left).await.ok_or_else(|| {
            format!(
                "{} spawn #{index}: no {} within 20 s (see logs/coldstart-{}.log)",
                subject.name,
                if polls.len() > responses.len() {
                    "response"
                } else {
                    "poll for an invocation"
                },
                subject.name
            )
        })?;
        match event {
            ApiEvent::Next(at) => {
                if polls.len() > responses.len() {
                    return Err(format!("{} polled twice without answering", subject.name));
                }
                polls.push(at);
                if responses.len() == EVENTS_PER_SPAWN {
                    return Ok(Spawn {
                        init: polls[0] - started,
                        first_invoke: responses[0] - polls[0],
                        warm_invoke: responses[1] - polls[1],
                        vm_hwm_kb: vm_hwm_kb(pid).ok_or("cannot read VmHWM")?,
                    });
                }
            }
            ApiEvent::Response(at, body) => {
                let n = index * EVENTS_PER_SPAWN + responses.len();
                responses.push(at);
                (subject.check)(&body, n).map_err(|e| {
                    format!(
                        "{} spawn #{index}, event {n}: wrong response: {e}",
                        subject.name
                    )
                })?;
            }
            ApiEvent::Error(_, body) | ApiEvent::InitError(_, body) => {
                return Err(format!(
                    "{} spawn #{index} reported an error: {}",
                    subject.name,
                    String::from_utf8_lossy(&body)
                ));
            }
        }
    }
}

/// `rounds` spawns of every subject, round-robin. Each subject's stdout and stderr go to
/// `logs/coldstart-<name><suffix>.log`.
pub async fn run(
    subjects: &[Subject<'_>],
    rounds: usize,
    logs: &std::path::Path,
    suffix: &str,
) -> Result<Vec<Series>, String> {
    let mut api = RuntimeApi::start().await;
    let files: Vec<File> = subjects
        .iter()
        .map(|s| File::create(logs.join(format!("coldstart-{}{suffix}.log", s.name))))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot create a log file: {e}"))?;
    let mut series: Vec<Series> = subjects
        .iter()
        .map(|s| Series {
            name: s.name,
            spawns: Vec::with_capacity(rounds),
        })
        .collect();
    // One untimed spawn each first: the page cache then holds every binary, as it does for a
    // Lambda image that was just pulled.
    for (subject, log) in subjects.iter().zip(&files) {
        spawn_once(&mut api, subject, rounds, log).await?;
    }
    for round in 0..rounds {
        for ((subject, log), out) in subjects.iter().zip(&files).zip(series.iter_mut()) {
            out.spawns
                .push(spawn_once(&mut api, subject, round, log).await?);
        }
    }
    Ok(series)
}

/// The cold-start section of the report: hello-world, ingest, the dispatcher (delivering to a
/// loopback receiver) and the live authorizer, round-robin, three times: with AWS answering at
/// once ([`InstantAws`]: the functions' own cost, which the aims judge), the same with the
/// secrets in the environment, then with moto behind (secrets fetched from its Secrets Manager
/// and events stored in its SQS, for context).
pub async fn section(
    report: &mut Report,
    bins: &Bins,
    plan: &Plan,
    logs: &Path,
    epoch: Instant,
) -> Result<(), String> {
    let receiver = TimingReceiver::start(epoch, 0, Duration::ZERO).await;
    let events = (plan.spawns + 1) * EVENTS_PER_SPAWN;
    let (instant, in_env) = instant_pass(bins, plan, logs, &receiver, events).await?;
    let (moto, moto_send) = moto_pass(bins, plan, logs, &receiver, events).await?;
    if receiver.received() != 3 * 10 * events {
        return Err(format!(
            "the receiver got {} deliveries, expected {}: the dispatcher answered without delivering",
            receiver.received(),
            3 * 10 * events
        ));
    }
    report_times(report, &instant);
    report_in_env(report, &instant, &in_env);
    report_moto(report, &instant, &moto, &moto_send);
    report_rss(report, &instant);
    report.note("Cold start: each function is spawned with the Lambda environment and given two events in a row by the bench's own Runtime API. Init is exec → first `next`; first invoke is that `next` → the first response (the invocation's own duration); warm invoke is the second `next` → the second response, same process. Peak RSS is `VmHWM` from `/proc/<pid>/status`, read when the function polls `next` a third time (idle, just before the bench kills it). Spawns are round-robin (hello, ingest, dispatcher, live-auth) after one untimed spawn each. Secrets are given by ARN, as on AWS: init includes fetching them (ingest two, the others one) over a connection of its own (Secrets Manager is reached as `localhost`, SQS as `127.0.0.1`: different hosts on AWS). The aims are judged with AWS answering at once (the bench's `instant_aws`: the SDK's whole path runs, the service takes no time), so that the figures are the functions' own; the rows marked *secrets in the environment* repeat that run with the secrets' values given directly (no Secrets Manager call), and those marked *moto behind* repeat it against moto, whose Python takes 3–4 ms a call.");
    let mut json = serde_json::Map::new();
    let passes = [
        ("instant_aws", &instant),
        ("instant_aws_secrets_in_environment", &in_env),
        ("moto", &moto),
    ];
    for (pass, series) in passes {
        let figures: serde_json::Map<String, Value> = series
            .iter()
            .map(|s| (s.name.to_owned(), s.to_json()))
            .collect();
        json.insert(pass.to_owned(), Value::Object(figures));
    }
    json.insert("moto_send_message".to_owned(), moto_send.to_json_ms());
    report.json("coldstart", Value::Object(json));
    Ok(())
}

/// The runs with AWS answering at once: secrets by ARN (the figures the aims judge), then the
/// secrets' values in the environment, which shows what the Secrets Manager call costs.
async fn instant_pass(
    bins: &Bins,
    plan: &Plan,
    logs: &Path,
    receiver: &TimingReceiver,
    events: usize,
) -> Result<(Vec<Series>, Vec<Series>), String> {
    let arns = SecretArns::named("arn:aws:secretsmanager:us-east-1:123456789012:secret:bench");
    let aws = InstantAws::start(arns.values()).await;
    let env = aws_env(&aws.endpoint, "http://127.0.0.1:9/123456789012/bench.fifo");
    let by_arn = subjects(bins, plan, SecretVars::by_arn(arns), env.clone(), receiver);
    let by_arn = run(&by_arn, plan.spawns, logs, "").await?;
    let in_env = subjects(bins, plan, SecretVars::in_environment(), env, receiver);
    let in_env = run(&in_env, plan.spawns, logs, "-secrets-in-env").await?;
    if aws.sent() != 2 * events {
        return Err(format!(
            "the instant endpoint took {} messages, expected {}: ingest answered 202 without sending",
            aws.sent(),
            2 * events
        ));
    }
    Ok((by_arn, in_env))
}

/// The run with moto behind: secrets from its Secrets Manager, events stored in its SQS.
async fn moto_pass(
    bins: &Bins,
    plan: &Plan,
    logs: &Path,
    receiver: &TimingReceiver,
    events: usize,
) -> Result<(Vec<Series>, Summary), String> {
    let moto = relay_tests::MotoServer::start().await;
    let queues = moto.create_fifo_with_dlq("bench-coldstart", 5, 30).await;
    // Context for ingest's invokes: what one SendMessage to moto costs once warm.
    let sqs =
        relay_shared::queue::sqs::SqsQueue::new(moto.client().await, queues.queue_url.clone());
    let moto_send = moto_send_cost(&sqs).await?;
    let names = SecretArns::named("bench");
    let arns = SecretArns {
        ingest: moto.create_secret(&names.ingest, INGEST_SECRET).await,
        chat_id_key: moto
            .create_secret(&names.chat_id_key, &"k".repeat(64))
            .await,
        webhook: moto.create_secret(&names.webhook, WEBHOOK_SECRET).await,
        live_token: moto
            .create_secret(&names.live_token, LIVE_TOKEN_SECRET)
            .await,
    };
    let mut env = aws_env(&moto.endpoint, &queues.queue_url);
    env.push(("DEAD_LETTER_QUEUE_URL".to_owned(), queues.dlq_url.clone()));
    let subjects = subjects(bins, plan, SecretVars::by_arn(arns), env, receiver);
    let series = run(&subjects, plan.spawns, logs, "-moto").await?;
    let stored = queues.depth(&queues.queue_url).await;
    if stored != 25 + events {
        return Err(format!(
            "moto holds {stored} messages, expected {}: ingest answered 202 without storing",
            25 + events
        ));
    }
    Ok((series, moto_send))
}

/// The functions' AWS settings for an endpoint. On AWS, Secrets Manager and SQS are different
/// hosts, so the connection that fetched the secrets is no use to SQS: naming the endpoint
/// `localhost` for Secrets Manager (which /etc/hosts maps to the same 127.0.0.1) keeps the two
/// connections apart, and costs the DNS lookup a function makes on AWS.
fn aws_env(endpoint: &str, queue_url: &str) -> Vec<(String, String)> {
    let secrets_endpoint = endpoint.replacen("127.0.0.1", "localhost", 1);
    [
        ("AWS_ENDPOINT_URL_SQS", endpoint.to_owned()),
        ("AWS_ENDPOINT_URL_SECRETS_MANAGER", secrets_endpoint),
        ("QUEUE_URL", queue_url.to_owned()),
        // The dispatcher's: its DLQ, and the attempts table, which it reads only for a message
        // received before or after a failed attempt (neither happens here), so no table exists.
        (
            "DEAD_LETTER_QUEUE_URL",
            queue_url.replace(".fifo", "-dlq.fifo"),
        ),
        ("ATTEMPTS_TABLE", "bench-attempts".to_owned()),
        ("AWS_ENDPOINT_URL_DYNAMODB", endpoint.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// What one SendMessage to moto costs once the client is warm (25 sends, the first 5 untimed).
async fn moto_send_cost(sqs: &relay_shared::queue::sqs::SqsQueue) -> Result<Summary, String> {
    let mut sends = Vec::new();
    for i in 0..25 {
        let id = event_id("moto", i);
        let message = NewMessage {
            body: envelope(&id, i, TYPICAL_BYTES),
            group_id: fixtures::group_of(i),
            dedup_id: id,
        };
        let t = Instant::now();
        sqs.send(message)
            .await
            .map_err(|e| format!("moto SendMessage: {e}"))?;
        if i >= 5 {
            sends.push(t.elapsed());
        }
    }
    Ok(Summary::of(&sends))
}

/// The secrets the functions fetch at init, by ARN.
struct SecretArns {
    ingest: String,
    chat_id_key: String,
    webhook: String,
    live_token: String,
}

impl SecretArns {
    /// `<prefix>/<secret>` for each.
    fn named(prefix: &str) -> SecretArns {
        SecretArns {
            ingest: format!("{prefix}/ingest-secrets"),
            chat_id_key: format!("{prefix}/chat-id-key"),
            webhook: format!("{prefix}/webhook-secrets"),
            live_token: format!("{prefix}/live-token-secrets"),
        }
    }

    /// Each ARN with its secret's value.
    fn values(&self) -> HashMap<String, String> {
        HashMap::from([
            (self.ingest.clone(), INGEST_SECRET.to_owned()),
            (self.chat_id_key.clone(), "k".repeat(64)),
            (self.webhook.clone(), WEBHOOK_SECRET.to_owned()),
            (self.live_token.clone(), LIVE_TOKEN_SECRET.to_owned()),
        ])
    }
}

/// The secret variables each function is given: by ARN, as the template deploys them, or the
/// values themselves, as locally.
struct SecretVars {
    ingest: Vec<(&'static str, String)>,
    webhook: (&'static str, String),
    live_token: (&'static str, String),
}

impl SecretVars {
    fn by_arn(arns: SecretArns) -> SecretVars {
        SecretVars {
            ingest: vec![
                ("INGEST_SECRETS_ARN", arns.ingest),
                ("CHAT_ID_KEY_ARN", arns.chat_id_key),
            ],
            webhook: ("WEBHOOK_SECRETS_ARN", arns.webhook),
            live_token: ("LIVE_TOKEN_SECRETS_ARN", arns.live_token),
        }
    }

    fn in_environment() -> SecretVars {
        SecretVars {
            ingest: vec![
                ("INGEST_SECRETS", INGEST_SECRET.to_owned()),
                ("CHAT_ID_KEY", "k".repeat(64)),
            ],
            webhook: ("WEBHOOK_SECRETS", WEBHOOK_SECRET.to_owned()),
            live_token: ("LIVE_TOKEN_SECRETS", LIVE_TOKEN_SECRET.to_owned()),
        }
    }
}

/// Hello-world, ingest, the dispatcher (delivering to `receiver`) and the live authorizer,
/// each with the events it gets and the check of its answers.
fn subjects<'a>(
    bins: &Bins,
    plan: &Plan,
    secret_vars: SecretVars,
    aws_env: Vec<(String, String)>,
    receiver: &TimingReceiver,
) -> [Subject<'a>; 4] {
    let secrets = ingest_secrets();
    let hello_event = apigw_v2_event("hello", &[], "{}");
    let with = |own: Vec<(&str, String)>| -> Vec<(String, String)> {
        let own = own.into_iter().map(|(k, v)| (k.to_owned(), v));
        aws_env
            .iter()
            .cloned()
            .chain(own)
            .chain(plan.lambda_env.iter().cloned())
            .collect()
    };
    [
        Subject {
            name: "hello",
            binary: bins.hello.clone(),
            env: plan.lambda_env.clone(),
            event: Box::new(move |_| hello_event.to_string().into_bytes()),
            check: Box::new(|body, _| hello_answered(body)),
        },
        Subject {
            name: "ingest",
            binary: bins.ingest.clone(),
            env: with(secret_vars.ingest),
            event: Box::new(move |n| {
                // Signed now, for this event.
                let id = event_id("cold", n);
                let body = envelope(&id, n, TYPICAL_BYTES);
                apigw_v2_event(
                    &format!("req-{n}"),
                    &signed_header_pairs(&secrets, &id, &body),
                    &body,
                )
                .to_string()
                .into_bytes()
            }),
            check: Box::new(|body, _| ingest_queued(body)),
        },
        Subject {
            name: "dispatcher",
            binary: bins.dispatcher.clone(),
            env: with(vec![
                ("WEBHOOK_URL", receiver.url.clone()),
                secret_vars.webhook,
            ]),
            event: Box::new(|n| {
                sqs_event(
                    &format!("c{n:05}"),
                    &records(&format!("cd{n}"), 10, 10, TYPICAL_BYTES),
                )
                .to_string()
                .into_bytes()
            }),
            // Deliveries are counted once the run is over: by the time the bench reads this
            // answer the function may already be delivering the next event.
            check: Box::new(
                |body, _| match expect_json(body)?["batchItemFailures"].as_array() {
                    Some(failures) if failures.is_empty() => Ok(()),
                    _ => Err(String::from_utf8_lossy(body).into_owned()),
                },
            ),
        },
        Subject {
            name: "live-auth",
            binary: bins.live_auth.clone(),
            env: with(vec![secret_vars.live_token]),
            event: Box::new(|n| {
                live_connect_event(&format!("live-{n:05}"))
                    .to_string()
                    .into_bytes()
            }),
            check: Box::new(|body, _| live_allowed(body)),
        },
    ]
}

/// The Lambda response, as JSON.
fn expect_json(body: &[u8]) -> Result<Value, String> {
    serde_json::from_slice::<Value>(body).map_err(|e| format!("not JSON: {e}"))
}

/// Hello-world answered 200.
fn hello_answered(body: &[u8]) -> Result<(), String> {
    match expect_json(body)?["statusCode"].as_u64() {
        Some(200) => Ok(()),
        _ => Err(String::from_utf8_lossy(body).into_owned()),
    }
}

/// Ingest answered 202 `queued`.
fn ingest_queued(body: &[u8]) -> Result<(), String> {
    let response = expect_json(body)?;
    let inner: Value =
        serde_json::from_str(response["body"].as_str().unwrap_or("{}")).unwrap_or_default();
    if response["statusCode"] == 202 && inner["status"] == "queued" {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(body).into_owned())
    }
}

/// The authorizer allowed the connection.
fn live_allowed(body: &[u8]) -> Result<(), String> {
    match expect_json(body)?["isAuthorized"].as_bool() {
        Some(true) => Ok(()),
        _ => Err(String::from_utf8_lossy(body).into_owned()),
    }
}

/// Init rows (each function beside hello-world), then first and warm invoke rows (each
/// function's first invoke beside its own warm one).
fn report_times(report: &mut Report, series: &[Series]) {
    let hello = &series[0];
    let hello_init = hello.init();
    let cell = |s: &Summary| format!("{} (p90 {})", ms(s.median), ms(s.p90));
    report.row(
        "1",
        format!(
            "init, exec → first `next` — hello-world ({} spawns)",
            hello.spawns.len()
        ),
        cell(&hello_init),
        "",
        "",
        Verdict::Info,
    );
    for s in &series[1..] {
        let init = s.init();
        let r = init.median / hello_init.median;
        report.row(
            "1",
            format!("init — `{}` ({} spawns)", s.name, s.spawns.len()),
            cell(&init),
            format!("hello {} → {}", ms(hello_init.median), ratio(r)),
            format!("≤ {INIT_AIM}× hello"),
            Verdict::of(r <= INIT_AIM),
        );
    }
    for s in series {
        let (first, warm) = (s.first_invoke(), s.warm_invoke());
        let r = first.median / warm.median;
        // The aim is for the functions that call out on every invoke; hello-world and the
        // authorizer answer from memory in a fraction of a millisecond, where first-touch costs
        // (page faults, lazy statics) make any ratio.
        let aimed = matches!(s.name, "ingest" | "dispatcher");
        report.row(
            "1",
            format!(
                "first invoke, `next` → response — `{}` ({})",
                s.name,
                subject_what(s.name)
            ),
            cell(&first),
            format!("warm invoke {} → {}", ms(warm.median), ratio(r)),
            if aimed {
                format!("≤ {FIRST_INVOKE_AIM}× warm")
            } else {
                String::new()
            },
            if aimed {
                Verdict::of(r <= FIRST_INVOKE_AIM)
            } else {
                Verdict::Info
            },
        );
    }
    let hello_total = hello.cold_total().median;
    for s in &series[1..] {
        report.row(
            "1",
            format!("exec → first response — `{}`", s.name),
            cell(&s.cold_total()),
            format!(
                "hello {} → {}",
                ms(hello_total),
                ratio(s.cold_total().median / hello_total)
            ),
            "",
            Verdict::Info,
        );
    }
}

/// The rows of the run with the secrets in the environment: each init beside that run's
/// hello-world, and beside the same function's with its secrets by ARN.
fn report_in_env(report: &mut Report, by_arn: &[Series], in_env: &[Series]) {
    let hello_init = in_env[0].init().median;
    for (s, arn) in in_env.iter().zip(by_arn).skip(1) {
        let init = s.init();
        report.row(
            "1",
            format!("init — `{}`, secrets in the environment", s.name),
            format!("{} (p90 {})", ms(init.median), ms(init.p90)),
            format!(
                "hello {} → {}; by ARN {}",
                ms(hello_init),
                ratio(init.median / hello_init),
                ms(arn.init().median)
            ),
            "",
            Verdict::Info,
        );
    }
}

/// The rows of the run with moto behind, for context: each init beside the same function's
/// with AWS answering at once, ingest's invokes, and what a SendMessage to moto costs.
fn report_moto(report: &mut Report, instant: &[Series], moto: &[Series], moto_send: &Summary) {
    let cell = |s: &Summary| format!("{} (p90 {})", ms(s.median), ms(s.p90));
    for (s, at_once) in moto.iter().zip(instant).skip(1) {
        report.row(
            "1",
            format!("init — `{}`, moto behind", s.name),
            cell(&s.init()),
            format!("AWS at once {}", ms(at_once.init().median)),
            "",
            Verdict::Info,
        );
    }
    if let Some(ingest) = moto.iter().find(|s| s.name == "ingest") {
        let (first, warm) = (ingest.first_invoke(), ingest.warm_invoke());
        report.row(
            "1",
            "first invoke — `ingest`, moto behind (SendMessage to moto)",
            cell(&first),
            format!(
                "warm invoke {} → {}",
                ms(warm.median),
                ratio(first.median / warm.median)
            ),
            "",
            Verdict::Info,
        );
    }
    report.row(
        "1",
        "moto SendMessage, warm client (context for ingest's invokes)",
        cell(moto_send),
        "",
        "",
        Verdict::Info,
    );
}

/// What a subject's invokes do, for the table.
fn subject_what(name: &str) -> &'static str {
    match name {
        "ingest" => "API GW v2 event → 202, SendMessage",
        "dispatcher" => "10-record SQS event → 10 deliveries, loopback",
        "live-auth" => "AppSync Events connect with a live token → allowed",
        _ => "constant answer",
    }
}

/// Peak RSS rows: each function beside hello-world.
fn report_rss(report: &mut Report, series: &[Series]) {
    let hello = &series[0];
    let hello_rss = hello.vm_hwm_kb();
    for s in series {
        let rss = s.vm_hwm_kb();
        let baseline = if s.name == "hello" {
            String::new()
        } else {
            format!(
                "hello {} → {}",
                mib_kb(hello_rss),
                ratio(rss as f64 / hello_rss as f64)
            )
        };
        report.row(
            "1",
            format!("peak RSS (VmHWM, median) — `{}`", s.name),
            mib_kb(rss),
            baseline,
            "",
            Verdict::Info,
        );
    }
}
