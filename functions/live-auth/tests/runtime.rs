//! The real `live-auth` binary as Lambda runs it: its secret in Secrets Manager (moto), and a
//! local Lambda Runtime API that hands it AppSync Events authorization requests and records
//! its answers — the whole path through `lambda_runtime`'s serde, end to end.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::routing::{get, post};
use relay_shared::live::token::{TokenSecrets, unix_now};
use relay_tests::MotoServer;
use relay_tests::live_page::authorizer_request;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::process::{Child, Command};

const LIVE_SECRET: &str = "live-auth-runtime-secret-0123456789abcdef";

#[derive(Clone, Default)]
struct RuntimeApi {
    pending: Arc<Mutex<VecDeque<(String, Value)>>>,
    answers: Arc<Mutex<Vec<(String, Value)>>>,
}

async fn next(State(api): State<RuntimeApi>) -> (HeaderMap, String) {
    loop {
        let job = api.pending.lock().unwrap().pop_front();
        if let Some((id, body)) = job {
            let mut headers = HeaderMap::new();
            headers.insert(
                "lambda-runtime-aws-request-id",
                HeaderValue::from_str(&id).unwrap(),
            );
            let deadline = (unix_now() + 30) * 1000;
            headers.insert("lambda-runtime-deadline-ms", HeaderValue::from(deadline));
            headers.insert(
                "lambda-runtime-invoked-function-arn",
                HeaderValue::from_static(
                    "arn:aws:lambda:us-east-1:123456789012:function:live-auth",
                ),
            );
            return (headers, body.to_string());
        }
        // Nothing queued: hold the poll, as Lambda does between invocations.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn respond(
    State(api): State<RuntimeApi>,
    Path(id): Path<String>,
    body: String,
) -> &'static str {
    let answer = serde_json::from_str(&body).unwrap_or(Value::String(body));
    api.answers.lock().unwrap().push((id, answer));
    ""
}

#[tokio::test]
async fn the_binary_answers_appsync_through_the_runtime_api() {
    let moto = MotoServer::start().await;
    let arn = moto.create_secret("chat-relay/live", LIVE_SECRET).await;
    let token = TokenSecrets::parse(LIVE_SECRET)
        .unwrap()
        .mint(
            "op",
            &["sales".to_owned()],
            Duration::from_secs(300),
            unix_now(),
        )
        .unwrap();
    let api = RuntimeApi::default();
    let invocations = invocations(&token);
    for (id, body, _) in &invocations {
        api.pending
            .lock()
            .unwrap()
            .push_back((id.to_string(), body.clone()));
    }
    let address = serve(&api).await;

    let mut child = spawn_live_auth(&address, &moto.endpoint, &arn);
    let done = tokio::time::timeout(Duration::from_secs(60), async {
        while api.answers.lock().unwrap().len() < invocations.len() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    child.start_kill().ok();
    let output = child.wait_with_output().await.expect("live-auth output");
    assert!(
        done.is_ok(),
        "not every invocation was answered: {output:?}"
    );
    let answers = api.answers.lock().unwrap().clone();
    for ((id, _, allowed), (answered_id, answer)) in invocations.iter().zip(&answers) {
        assert_eq!(id, answered_id);
        assert_eq!(
            answer,
            &json!({"isAuthorized": allowed, "ttlOverride": 0}),
            "{id}"
        );
    }
    check_decision_log(
        &String::from_utf8_lossy(&output.stdout),
        &token,
        invocations.len(),
    );
}

/// The invocations in order: an id, the request, and whether it is allowed.
fn invocations(token: &str) -> [(&'static str, Value, bool); 5] {
    [
        (
            "connect",
            authorizer_request(token, "EVENT_CONNECT", None),
            true,
        ),
        (
            "own",
            authorizer_request(token, "EVENT_SUBSCRIBE", Some("/relay/sales")),
            true,
        ),
        (
            "other",
            authorizer_request(token, "EVENT_SUBSCRIBE", Some("/relay/default")),
            false,
        ),
        (
            "publish",
            authorizer_request(token, "EVENT_PUBLISH", Some("/relay/sales")),
            false,
        ),
        (
            "forged",
            authorizer_request("a.b.c", "EVENT_CONNECT", None),
            false,
        ),
    ]
}

/// Serves `api` as the Lambda Runtime API on a free local port; its address.
async fn serve(api: &RuntimeApi) -> String {
    let app = axum::Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(respond),
        )
        .with_state(api.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

/// The binary with the Lambda environment, its secret by ARN from moto at `endpoint`.
fn spawn_live_auth(runtime_api: &str, endpoint: &str, arn: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_live-auth"))
        .env_clear()
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_ENDPOINT_URL_SECRETS_MANAGER", endpoint)
        .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
        .env("AWS_LAMBDA_FUNCTION_NAME", "live-auth")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/live-auth")
        .env("LIVE_TOKEN_SECRETS_ARN", arn)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn live-auth")
}

/// One JSON log line per decision, none with the token; the third says why it denied.
fn check_decision_log(stdout: &str, token: &str, count: usize) {
    assert!(!stdout.contains(token), "the token is never logged");
    let decisions: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["outcome"] == "allowed" || l["outcome"] == "denied")
        .collect();
    assert_eq!(decisions.len(), count, "{stdout}");
    assert_eq!(decisions[2]["channel"], "/relay/default");
    assert_eq!(
        decisions[2]["reason"],
        "the token does not allow this session"
    );
}

#[tokio::test]
async fn a_missing_secret_stops_live_auth_at_init_with_one_line() {
    let moto = MotoServer::start().await;
    let missing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:chat-relay/live-XyZ123";
    let output = Command::new(env!("CARGO_BIN_EXE_live-auth"))
        .env_clear()
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_ENDPOINT_URL_SECRETS_MANAGER", &moto.endpoint)
        .env("LIVE_TOKEN_SECRETS_ARN", missing)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("stops on its own")
        .expect("run live-auth");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].starts_with(&format!(
            "configuration error: LIVE_TOKEN_SECRETS_ARN: cannot read the secret {missing}: ResourceNotFoundException"
        )),
        "{lines:#?}"
    );
}
