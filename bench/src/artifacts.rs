//! `make verify-artifacts`: the `bootstrap` files `sam build` produces — the bytes that deploy,
//! arm64 — run through a launcher (`qemu-aarch64 -L /usr/aarch64-linux-gnu` on an x86_64 host)
//! against [`RuntimeApi`], with the Lambda environment and their secrets by ARN from moto, as
//! the template deploys them. Each function runs once per check: ingest stores a signed event
//! in moto's queue and rejects a forged one; the dispatcher delivers an SQS batch to a
//! receiver that verifies every signature; the live authorizer allows a token's own channel
//! and denies an expired token and another session's channel.

use crate::coldstart::lambda_env;
use crate::fixtures::{
    INGEST_SECRET, TYPICAL_BYTES, WEBHOOK_SECRET, apigw_v2_event, envelope, event_id,
    ingest_secrets, records, signed_header_pairs, sqs_event,
};
use crate::runtime_api::{ApiEvent, RuntimeApi};
use relay_shared::live::token::{TokenSecrets, unix_now};
use relay_shared::signature::SecretSet;
use relay_tests::{MotoServer, VerifyingReceiver};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::Command;

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
            &format!("{check}-request"),
            &function,
            event.to_string().into_bytes(),
        );
        let (program, args) = match self.launcher.split_first() {
            Some((program, args)) => (PathBuf::from(program), args.to_vec()),
            None => (binary.to_path_buf(), Vec::new()),
        };
        let mut command = Command::new(&program);
        if !self.launcher.is_empty() {
            command.args(&args).arg(binary);
        }
        command
            .env_clear()
            .envs(lambda_env(&self.api, &function))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .kill_on_drop(true);
        let started = Instant::now();
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
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

/// Runs every check, printing one line each; the number that failed.
pub async fn verify(artifacts: &Artifacts, launcher: &[String], logs: &Path) -> usize {
    let moto = MotoServer::start().await;
    let queues = moto.create_fifo_with_dlq("verify-artifacts", 100, 30).await;
    let receiver = VerifyingReceiver::start_ok().await;
    let aws = |extra: &[(&str, String)]| -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL_SQS", moto.endpoint.clone()),
            ("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto.endpoint.clone()),
            ("AWS_ENDPOINT_URL_DYNAMODB", moto.endpoint.clone()),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
    };
    let ingest_env = aws(&[
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
    ]);
    let dispatcher_env = aws(&[
        ("QUEUE_URL", queues.queue_url.clone()),
        ("DEAD_LETTER_QUEUE_URL", queues.dlq_url.clone()),
        // Read only around a failed attempt; none fails here, so moto needs no table.
        ("ATTEMPTS_TABLE", "verify-attempts".to_owned()),
        ("WEBHOOK_URL", receiver.url.clone()),
        (
            "WEBHOOK_SECRETS_ARN",
            moto.create_secret("verify/webhook", WEBHOOK_SECRET).await,
        ),
    ]);
    let live_env = aws(&[
        ("LIVE_NAMESPACE", NAMESPACE.to_owned()),
        (
            "LIVE_TOKEN_SECRETS_ARN",
            moto.create_secret("verify/live-token", LIVE_SECRET).await,
        ),
    ]);
    let mut spawner = Spawner {
        api: RuntimeApi::start().await,
        launcher,
        logs,
    };
    let how = if launcher.is_empty() {
        "native"
    } else {
        "emulated"
    };
    let mut failed = 0;
    let mut report = |name: &str, outcome: Result<(String, Answer), String>| match outcome {
        Ok((what, answer)) => println!(
            "ok    {name:<18} {what} ({how} init {} ms, first invoke {} ms)",
            answer.init.as_millis(),
            answer.first_invoke.as_millis()
        ),
        Err(e) => {
            failed += 1;
            println!("FAIL  {name:<18} {e}");
        }
    };

    let ingest = &artifacts.ingest;
    let stored = async {
        let answer = ingest_post(
            &mut spawner,
            "ingest-signed",
            ingest,
            &ingest_env,
            &ingest_secrets(),
        )
        .await?;
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
    };
    report("ingest signed", stored.await);
    let forged = async {
        let wrong = SecretSet::parse(WEBHOOK_SECRET).expect("a valid secret");
        let answer =
            ingest_post(&mut spawner, "ingest-forged", ingest, &ingest_env, &wrong).await?;
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
    };
    report("ingest forged", forged.await);

    let batch = async {
        let sent = records("verify", BATCH, GROUPS, TYPICAL_BYTES);
        let event = sqs_event("verify", &sent);
        let answer = spawner
            .invoke("dispatcher", &artifacts.dispatcher, &dispatcher_env, &event)
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
        let deliveries = receiver.deliveries();
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
        if deliveries.len() != BATCH
            || unverified > 0
            || ids != wanted
            || !bodies_match
            || !in_order
        {
            return Err(format!(
                "{} deliveries for {BATCH} records, {unverified} failed signature verification, ids {:?}, bodies intact: {bodies_match}, in order within each chat: {in_order}",
                deliveries.len(),
                ids
            ));
        }
        Ok((
            format!(
                "{BATCH}-record SQS batch over {GROUPS} chats → no batchItemFailures, {BATCH} deliveries verified with the webhook secret, in order per chat"
            ),
            answer,
        ))
    };
    report("dispatcher", batch.await);

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
    let cases = [
        (
            "live-auth allow",
            mint("s1", now, 300),
            "s1",
            true,
            "a token for session s1 subscribing to /relay/s1 → allowed",
        ),
        (
            "live-auth expired",
            mint("s1", now - 3600, 60),
            "s1",
            false,
            "an expired token for s1 subscribing to /relay/s1 → denied",
        ),
        (
            "live-auth other",
            mint("s1", now, 300),
            "s2",
            false,
            "a token for s1 subscribing to /relay/s2 → denied",
        ),
    ];
    for (name, token, session, allow, what) in cases {
        let check = async {
            let event = authorizer_request(&token, &format!("/{NAMESPACE}/{session}"));
            let answer = spawner
                .invoke(
                    &name.replace(' ', "-"),
                    &artifacts.live_auth,
                    &live_env,
                    &event,
                )
                .await?;
            if answer.response != json!({"isAuthorized": allow, "ttlOverride": 0}) {
                return Err(format!(
                    "expected isAuthorized {allow}, got {}",
                    answer.response
                ));
            }
            Ok((what.to_owned(), answer))
        };
        report(name, check.await);
    }
    failed
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

/// An `EVENT_SUBSCRIBE` authorizer request as AppSync Events sends it.
fn authorizer_request(token: &str, channel: &str) -> Value {
    json!({
        "authorizationToken": token,
        "requestContext": {
            "apiId": "aaaaaa123123123example123",
            "accountId": "111122223333",
            "requestId": "f4081827-1111-4444-5555-5cf4695f339f",
            "operation": "EVENT_SUBSCRIBE",
            "channelNamespaceName": NAMESPACE,
            "channel": channel,
        },
        "requestHeaders": {"host": "abc.appsync-api.us-east-1.amazonaws.com"},
    })
}
