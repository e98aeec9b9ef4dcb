//! `make verify-artifacts`: the `bootstrap` files `sam build` produces — the bytes that deploy,
//! arm64 — run through a launcher (`qemu-aarch64 -L /usr/aarch64-linux-gnu` on an x86_64 host)
//! against [`RuntimeApi`], with the Lambda environment and their secrets by ARN from moto, as
//! the template deploys them. Each function runs once per check: ingest stores a signed event
//! in moto's queue and rejects a forged one; the dispatcher delivers an SQS batch to a
//! receiver that verifies every signature; the live authorizer allows a token's own channel
//! and denies an expired token and another session's channel.

use crate::coldstart::lambda_env;
use crate::fixtures::{
    INGEST_SECRET, Record, TYPICAL_BYTES, WEBHOOK_SECRET, apigw_v2_event, envelope, event_id,
    ingest_secrets, records, signed_header_pairs, sqs_event,
};
use crate::runtime_api::{ApiEvent, RuntimeApi};
use relay_shared::live::token::{TokenSecrets, unix_now};
use relay_shared::signature::SecretSet;
use relay_tests::live_page::authorizer_request;
use relay_tests::{Delivery, FifoQueues, MotoServer, VerifyingReceiver};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// The three `bootstrap` files under test.
pub struct Artifacts {
    pub ingest: PathBuf,
    pub dispatcher: PathBuf,
    pub live_auth: PathBuf,
}

/// How long one emulated spawn may take from exec to its answer. Generous: user-mode
/// emulation on a small shared machine; the times are printed, never judged.
const SPAWN_TIMEOUT: Duration = Duration::from_secs(90);

/// The live token secret and the namespace the authorizer gets.
const LIVE_SECRET: &str = "verify-artifacts-live-secret-0123456789abcdef";
const NAMESPACE: &str = "relay";
/// The dispatcher's batch: two records in each of three chats (FIFO groups), so both order
/// within a group and concurrency across groups are exercised.
const BATCH: usize = 6;
const GROUPS: usize = 3;

/// What one spawn answered, and when.
struct Answer {
    init: Duration,
    first_invoke: Duration,
    response: Value,
}

/// Runs a function's `bootstrap` through the launcher.
struct Spawner<'a> {
    api: RuntimeApi,
    launcher: &'a [String],
    logs: &'a Path,
}

/// What a check saw when it passed, and the spawn's answer (for its times).
type Outcome = Result<(String, Answer), String>;

impl Spawner<'_> {
    /// Spawns `binary` for one invocation with `event`; its output goes to `logs/<check>.log`.
    async fn invoke(
        &mut self,
        check: &str,
        binary: &Path,
        env: &[(String, String)],
        event: &Value,
    ) -> Result<Answer, String> {
        let function = format!("verify-{check}");
        let log_path = self.logs.join(format!("{check}.log"));
        let log = std::fs::File::create(&log_path)
            .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
        let see = format!("(its output: {})", log_path.display());
        self.api.arm(
            &function,
            vec![(format!("{check}-request"), event.to_string().into_bytes())],
        );
        let (program, mut command) = self.command(binary);
        command
            .env_clear()
            .envs(lambda_env(&self.api, &function))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .kill_on_drop(true);
        let started = Instant::now();
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        self.await_answer(child, started, &see).await
    }

    /// The program that runs `binary` (the launcher, or `binary` itself), and its command.
    fn command(&self, binary: &Path) -> (PathBuf, Command) {
        let (program, args) = match self.launcher.split_first() {
            Some((program, args)) => (PathBuf::from(program), args.to_vec()),
            None => (binary.to_path_buf(), Vec::new()),
        };
        let mut command = Command::new(&program);
        if !self.launcher.is_empty() {
            command.args(&args).arg(binary);
        }
        (program, command)
    }

    /// Follows the spawned `child` through the Runtime API until it has answered and polled
    /// again; `see` says where its output is.
    async fn await_answer(
        &mut self,
        mut child: Child,
        started: Instant,
        see: &str,
    ) -> Result<Answer, String> {
        let deadline = started + SPAWN_TIMEOUT;
        let mut init = None;
        let mut answered: Option<(Duration, axum::body::Bytes)> = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = tokio::select! {
                event = self.api.next_event(left) => event,
                status = child.wait() => {
                    return Err(format!(
                        "exited ({}) before answering and polling again {see}",
                        status.map_or_else(|e| e.to_string(), |s| s.to_string())
                    ));
                }
            };
            match event {
                None => {
                    let what = match (init, &answered) {
                        (None, _) => "poll for an invocation",
                        (Some(_), None) => "answer",
                        (Some(_), Some(_)) => "poll for the next invocation after answering",
                    };
                    return Err(format!(
                        "no {what} within {} s {see}",
                        SPAWN_TIMEOUT.as_secs()
                    ));
                }
                Some(ApiEvent::Next(at)) if init.is_none() => init = Some(at - started),
                // Polling again after the answer: the runtime loop is healthy, and the poll
                // has been served (held), so it cannot take the next check's event.
                Some(ApiEvent::Next(_)) => {
                    let Some((first_invoke, body)) = answered else {
                        return Err(format!("polled twice without answering {see}"));
                    };
                    let _ = child.kill().await;
                    let response = serde_json::from_slice(&body).map_err(|e| {
                        format!("answered with something that is not JSON ({e}) {see}")
                    })?;
                    return Ok(Answer {
                        init: init.unwrap_or_default(),
                        first_invoke,
                        response,
                    });
                }
                Some(ApiEvent::Response(at, body)) => answered = Some((at - started, body)),
                Some(ApiEvent::Error(_, body) | ApiEvent::InitError(_, body)) => {
                    return Err(format!(
                        "reported an error: {} {see}",
                        String::from_utf8_lossy(&body)
                    ));
                }
            }
        }
    }
}

/// Prints one line per check and counts the failures.
struct Report {
    /// "native" or "emulated".
    how: &'static str,
    failed: usize,
}

impl Report {
    fn line(&mut self, name: &str, outcome: Outcome) {
        match outcome {
            Ok((what, answer)) => println!(
                "ok    {name:<18} {what} ({} init {} ms, first invoke {} ms)",
                self.how,
                answer.init.as_millis(),
                answer.first_invoke.as_millis()
            ),
            Err(e) => {
                self.failed += 1;
                println!("FAIL  {name:<18} {e}");
            }
        }
    }
}

/// Each function's Lambda environment, with its secrets by ARN from moto.
struct Environments {
    ingest: Vec<(String, String)>,
    dispatcher: Vec<(String, String)>,
    live_auth: Vec<(String, String)>,
}

impl Environments {
    async fn create(
        moto: &MotoServer,
        queues: &FifoQueues,
        receiver: &VerifyingReceiver,
    ) -> Environments {
        let ingest = aws_env(
            moto,
            &[
                ("QUEUE_URL", queues.queue_url.clone()),
                (
                    "INGEST_SECRETS_ARN",
                    moto.create_secret("verify/ingest", INGEST_SECRET).await,
                ),
                (
                    "CHAT_ID_KEY_ARN",
                    moto.create_secret("verify/chat-id-key", &"k".repeat(64))
                        .await,
                ),
            ],
        );
        let dispatcher = aws_env(
            moto,
            &[
                ("QUEUE_URL", queues.queue_url.clone()),
                ("DEAD_LETTER_QUEUE_URL", queues.dlq_url.clone()),
                // Read only around a failed attempt; none fails here, so moto needs no table.
                ("ATTEMPTS_TABLE", "verify-attempts".to_owned()),
                ("WEBHOOK_URL", receiver.url.clone()),
                (
                    "WEBHOOK_SECRETS_ARN",
                    moto.create_secret("verify/webhook", WEBHOOK_SECRET).await,
                ),
            ],
        );
        let live_auth = aws_env(
            moto,
            &[
                ("LIVE_NAMESPACE", NAMESPACE.to_owned()),
                (
                    "LIVE_TOKEN_SECRETS_ARN",
                    moto.create_secret("verify/live-token", LIVE_SECRET).await,
                ),
            ],
        );
        Environments {
            ingest,
            dispatcher,
            live_auth,
        }
    }
}

/// The AWS endpoints pointing at moto, then `extra`.
fn aws_env(moto: &MotoServer, extra: &[(&str, String)]) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL_SQS", moto.endpoint.clone()),
        ("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto.endpoint.clone()),
        ("AWS_ENDPOINT_URL_DYNAMODB", moto.endpoint.clone()),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| (k.to_string(), v.clone()))
    .collect()
}

/// Runs every check, printing one line each; the number that failed.
pub async fn verify(artifacts: &Artifacts, launcher: &[String], logs: &Path) -> usize {
    let moto = MotoServer::start().await;
    let queues = moto.create_fifo_with_dlq("verify-artifacts", 100, 30).await;
    let receiver = VerifyingReceiver::start_ok().await;
    let env = Environments::create(&moto, &queues, &receiver).await;
    let mut spawner = Spawner {
        api: RuntimeApi::start().await,
        launcher,
        logs,
    };
    let mut report = Report {
        how: if launcher.is_empty() {
            "native"
        } else {
            "emulated"
        },
        failed: 0,
    };

    let ingest = &artifacts.ingest;
    let outcome = ingest_signed(&mut spawner, ingest, &env.ingest, &queues).await;
    report.line("ingest signed", outcome);
    let outcome = ingest_forged(&mut spawner, ingest, &env.ingest, &queues).await;
    report.line("ingest forged", outcome);
    let outcome = dispatcher_batch(
        &mut spawner,
        &artifacts.dispatcher,
        &env.dispatcher,
        &receiver,
    )
    .await;
    report.line("dispatcher", outcome);
    for case in live_auth_cases() {
        let outcome = live_auth(&mut spawner, &artifacts.live_auth, &env.live_auth, &case).await;
        report.line(case.name, outcome);
    }
    report.failed
}

/// A signed event: ingest answers 202 and the event is in moto's queue.
async fn ingest_signed(
    spawner: &mut Spawner<'_>,
    ingest: &Path,
    env: &[(String, String)],
    queues: &FifoQueues,
) -> Outcome {
    let answer = ingest_post(spawner, "ingest-signed", ingest, env, &ingest_secrets()).await?;
    expect_status(&answer, 202)?;
    let depth = queues.depth(&queues.queue_url).await;
    if depth != 1 {
        return Err(format!(
            "answered 202 but moto's queue holds {depth} messages, not 1"
        ));
    }
    Ok((
        "signed POST /events → 202, the event is in moto's queue".to_owned(),
        answer,
    ))
}

/// An event signed with another secret: ingest answers 401 and stores nothing (the queue
/// still holds only the signed check's event).
async fn ingest_forged(
    spawner: &mut Spawner<'_>,
    ingest: &Path,
    env: &[(String, String)],
    queues: &FifoQueues,
) -> Outcome {
    let wrong = SecretSet::parse(WEBHOOK_SECRET).expect("a valid secret");
    let answer = ingest_post(spawner, "ingest-forged", ingest, env, &wrong).await?;
    expect_status(&answer, 401)?;
    let depth = queues.depth(&queues.queue_url).await;
    if depth != 1 {
        return Err(format!(
            "answered 401 but moto's queue holds {depth} messages, not 1"
        ));
    }
    Ok((
        "POST /events signed with another secret → 401, nothing stored".to_owned(),
        answer,
    ))
}

/// An SQS batch: the dispatcher reports no failures and the receiver verified every
/// delivery, in order within each chat.
async fn dispatcher_batch(
    spawner: &mut Spawner<'_>,
    dispatcher: &Path,
    env: &[(String, String)],
    receiver: &VerifyingReceiver,
) -> Outcome {
    let sent = records("verify", BATCH, GROUPS, TYPICAL_BYTES);
    let event = sqs_event("verify", &sent);
    let answer = spawner
        .invoke("dispatcher", dispatcher, env, &event)
        .await?;
    match answer.response["batchItemFailures"].as_array() {
        Some(failures) if failures.is_empty() => {}
        _ => {
            return Err(format!(
                "batchItemFailures is not empty: {}",
                answer.response
            ));
        }
    }
    check_deliveries(&sent, &receiver.deliveries())?;
    Ok((
        format!(
            "{BATCH}-record SQS batch over {GROUPS} chats → no batchItemFailures, {BATCH} deliveries verified with the webhook secret, in order per chat"
        ),
        answer,
    ))
}

/// Every record in `sent` arrived once, verified, intact, and in order within its chat.
fn check_deliveries(sent: &[Record], deliveries: &[Delivery]) -> Result<(), String> {
    let unverified = deliveries.iter().filter(|d| !d.verified).count();
    let ids: BTreeSet<&str> = deliveries.iter().map(|d| d.webhook_id.as_str()).collect();
    let wanted: BTreeSet<&str> = sent.iter().map(|r| r.dedup_id.as_str()).collect();
    let bodies_match = sent
        .iter()
        .all(|r| deliveries.iter().any(|d| d.body == r.body.as_bytes()));
    // FIFO within a chat: record i and record i + GROUPS share a group.
    let arrival = |i: usize| {
        deliveries
            .iter()
            .position(|d| d.webhook_id == sent[i].dedup_id)
    };
    let in_order = (0..BATCH - GROUPS).all(|i| arrival(i) < arrival(i + GROUPS));
    if deliveries.len() != BATCH || unverified > 0 || ids != wanted || !bodies_match || !in_order {
        return Err(format!(
            "{} deliveries for {BATCH} records, {unverified} failed signature verification, ids {:?}, bodies intact: {bodies_match}, in order within each chat: {in_order}",
            deliveries.len(),
            ids
        ));
    }
    Ok(())
}

/// One authorizer check: a token, the session whose channel it subscribes to, the verdict.
struct LiveAuthCase {
    name: &'static str,
    token: String,
    session: &'static str,
    allow: bool,
    what: &'static str,
}

/// The authorizer's checks: its own channel allowed; expired, and another session's, denied.
fn live_auth_cases() -> [LiveAuthCase; 3] {
    let secrets = TokenSecrets::parse(LIVE_SECRET).expect("a valid live secret");
    let mint = |session: &str, issued: u64, ttl: u64| {
        secrets
            .mint(
                "verify",
                &[session.to_owned()],
                Duration::from_secs(ttl),
                issued,
            )
            .expect("a token")
    };
    let now = unix_now();
    [
        LiveAuthCase {
            name: "live-auth allow",
            token: mint("s1", now, 300),
            session: "s1",
            allow: true,
            what: "a token for session s1 subscribing to /relay/s1 → allowed",
        },
        LiveAuthCase {
            name: "live-auth expired",
            token: mint("s1", now - 3600, 60),
            session: "s1",
            allow: false,
            what: "an expired token for s1 subscribing to /relay/s1 → denied",
        },
        LiveAuthCase {
            name: "live-auth other",
            token: mint("s1", now, 300),
            session: "s2",
            allow: false,
            what: "a token for s1 subscribing to /relay/s2 → denied",
        },
    ]
}

/// The authorizer answers `case`'s verdict with no TTL override.
async fn live_auth(
    spawner: &mut Spawner<'_>,
    live_auth: &Path,
    env: &[(String, String)],
    case: &LiveAuthCase,
) -> Outcome {
    let channel = format!("/{NAMESPACE}/{}", case.session);
    let event = authorizer_request(&case.token, "EVENT_SUBSCRIBE", Some(&channel));
    let answer = spawner
        .invoke(&case.name.replace(' ', "-"), live_auth, env, &event)
        .await?;
    let allow = case.allow;
    if answer.response != json!({"isAuthorized": allow, "ttlOverride": 0}) {
        return Err(format!(
            "expected isAuthorized {allow}, got {}",
            answer.response
        ));
    }
    Ok((case.what.to_owned(), answer))
}

/// One `POST /events` through ingest, signed with `secrets`.
async fn ingest_post(
    spawner: &mut Spawner<'_>,
    check: &str,
    binary: &Path,
    env: &[(String, String)],
    secrets: &SecretSet,
) -> Result<Answer, String> {
    let id = event_id(check, 0);
    let body = envelope(&id, 0, TYPICAL_BYTES);
    let event = apigw_v2_event(check, &signed_header_pairs(secrets, &id, &body), &body);
    spawner.invoke(check, binary, env, &event).await
}

/// The API Gateway v2 response's `statusCode` is `status`.
fn expect_status(answer: &Answer, status: u64) -> Result<(), String> {
    match answer.response["statusCode"].as_u64() {
        Some(s) if s == status => Ok(()),
        _ => Err(format!(
            "expected statusCode {status}, got {}",
            answer.response
        )),
    }
}
