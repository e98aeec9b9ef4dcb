//! The real `ingest` binary's init, as Lambda starts it: with `INGEST_SECRETS_ARN` naming a
//! secret moto does not hold (found through the SDK's own `AWS_ENDPOINT_URL_SECRETS_MANAGER`),
//! or set together with `INGEST_SECRETS`, it stops before serving anything, with status 2 and
//! one line naming the variable; with the secret stored, it gets through init to its first poll,
//! having opened its connection to SQS, or, when SQS cannot be reached, with one warning.

use relay_tests::{INGEST_SECRET, MotoServer};
use std::process::Output;
use tokio::process::Command;

const QUEUE: &str = "https://sqs.us-east-1.amazonaws.com/123456789012/chat-relay.fifo";

/// What every run gets: a region, fake credentials, moto as Secrets Manager and SQS, a queue
/// URL (of a queue moto does not hold unless the test creates it).
fn lambda_env(moto: &MotoServer) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto.endpoint.clone()),
        ("AWS_ENDPOINT_URL_SQS", moto.endpoint.clone()),
        ("QUEUE_URL", QUEUE.into()),
    ]
}

async fn run_ingest(moto: &MotoServer, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ingest"));
    command
        .env_clear()
        .envs(lambda_env(moto))
        .envs(env.iter().copied())
        .kill_on_drop(true);
    tokio::time::timeout(std::time::Duration::from_secs(60), command.output())
        .await
        .expect("ingest stops on its own within 60 s")
        .expect("run the ingest binary")
}

fn stderr_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_missing_secret_stops_ingest_at_init_with_one_line() {
    let moto = MotoServer::start().await;
    let missing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:chat-relay/ingest-XyZ123";
    let output = run_ingest(&moto, &[("INGEST_SECRETS_ARN", missing)]).await;
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let lines = stderr_lines(&output);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].starts_with(&format!(
            "configuration error: INGEST_SECRETS_ARN: cannot read the secret {missing}: ResourceNotFoundException"
        )),
        "{lines:#?}"
    );
}

#[tokio::test]
async fn a_secret_set_both_ways_stops_ingest_at_init_without_echoing_it() {
    let moto = MotoServer::start().await;
    let arn = moto.create_secret("chat-relay/ingest", INGEST_SECRET).await;
    let output = run_ingest(
        &moto,
        &[
            ("INGEST_SECRETS_ARN", &arn),
            ("INGEST_SECRETS", INGEST_SECRET),
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let lines = stderr_lines(&output);
    assert_eq!(
        lines,
        [
            "configuration error: INGEST_SECRETS_ARN: both INGEST_SECRETS and INGEST_SECRETS_ARN are set; set only one (INGEST_SECRETS_ARN on AWS, INGEST_SECRETS locally)"
        ]
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains("whsec_") && !lines[0].contains("whsec_"));
}

/// Starts ingest with its secrets in moto and `env` on top, as Lambda does, and returns the
/// first request it sent the Runtime API (a bare listener here: it asks for its first
/// invocation only after configuration and clients are built) and its log lines.
async fn first_poll(moto: &MotoServer, env: &[(&str, &str)]) -> (String, Vec<String>) {
    use tokio::io::AsyncReadExt;
    let arn = moto.create_secret("chat-relay/ingest", INGEST_SECRET).await;
    let key_arn = moto
        .create_secret("chat-relay/chat-id-key", relay_tests::CHAT_ID_KEY)
        .await;
    let runtime_api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = runtime_api.local_addr().unwrap().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ingest"))
        .env_clear()
        .envs(lambda_env(moto))
        .env("AWS_LAMBDA_RUNTIME_API", &address)
        .env("AWS_LAMBDA_FUNCTION_NAME", "ingest")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/ingest")
        .env("INGEST_SECRETS_ARN", &arn)
        .env("CHAT_ID_KEY_ARN", &key_arn)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ingest");
    let accepted =
        tokio::time::timeout(std::time::Duration::from_secs(60), runtime_api.accept()).await;
    let request = match accepted {
        Ok(Ok((mut stream, _))) => {
            let mut buffer = vec![0u8; 4096];
            let read = stream.read(&mut buffer).await.expect("read the request");
            String::from_utf8_lossy(&buffer[..read]).into_owned()
        }
        _ => {
            child.start_kill().ok();
            let output = child.wait_with_output().await.expect("ingest output");
            panic!("ingest never polled the Runtime API: {output:?}");
        }
    };
    child.start_kill().ok();
    let output = child.wait_with_output().await.expect("ingest output");
    let mut lines = stderr_lines(&output);
    lines.extend(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_owned),
    );
    (request, lines)
}

fn warm_up_warnings(lines: &[String]) -> Vec<&String> {
    lines
        .iter()
        .filter(|l| l.contains("warm-up failed"))
        .collect()
}

#[tokio::test]
async fn a_stored_secret_gets_ingest_through_init_to_its_first_poll_with_sqs_warmed_up() {
    let moto = MotoServer::start().await;
    let queues = moto.create_fifo_with_dlq("ingest-init", 5, 30).await;
    let (request, lines) = first_poll(&moto, &[("QUEUE_URL", &queues.queue_url)]).await;
    assert!(
        request.starts_with("GET /2018-06-01/runtime/invocation/next "),
        "{request}"
    );
    assert!(warm_up_warnings(&lines).is_empty(), "{lines:#?}");
}

/// SQS refusing the warm-up (here: no such queue) does not stop ingest: one warning naming
/// SQS and the cause, then its first poll; the first event would connect by itself.
#[tokio::test]
async fn a_failed_sqs_warm_up_is_one_warning_and_init_goes_on() {
    let moto = MotoServer::start().await;
    let (request, lines) = first_poll(&moto, &[]).await;
    assert!(
        request.starts_with("GET /2018-06-01/runtime/invocation/next "),
        "{request}"
    );
    let warnings = warm_up_warnings(&lines);
    assert_eq!(warnings.len(), 1, "{lines:#?}");
    assert!(
        warnings[0].contains(r#""connection":"SQS""#),
        "{warnings:?}"
    );
    assert!(
        warnings[0].contains("NonExistentQueue") || warnings[0].contains("QueueDoesNotExist"),
        "{warnings:?}"
    );
    assert!(!lines.iter().any(|l| l.contains("whsec_")), "{lines:#?}");
}
