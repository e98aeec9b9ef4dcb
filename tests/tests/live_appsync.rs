//! The AWS adapter of the live channel, end to end without AWS: the real ingest router publishes
//! through `AppSyncPublisher` to a local HTTP server that plays AppSync Events' `POST /event`
//! and checks each request's SigV4 signature against known test credentials — it recomputes
//! the signature from what it received (aws-sigv4, its own expected region and service) and
//! answers 403 with AppSync's error shape when anything differs.

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use relay_shared::envelope::examples;
use relay_shared::ingest::{Ingest, router};
use relay_shared::live::appsync::AppSyncPublisher;
use relay_shared::live::channel::session_channel;
use relay_shared::live::publish::LivePublishing;
use relay_shared::queue::memory::MemoryQueue;
use relay_shared::signature::SecretSet;
use relay_shared::telemetry::{Metrics, MetricsSink, metric};
use relay_tests::router::post_signed;
use relay_tests::{INGEST_SECRET, chat_id_key};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

const ACCESS_KEY: &str = "AKIDLIVETEST";
const SECRET_KEY: &str = "live-test-secret-access-key-0123456789ab";
const SESSION_TOKEN: &str = "live-test-session-token";
const REGION: &str = "eu-west-1";

/// What the fake Event API received.
#[derive(Debug, Clone)]
struct Received {
    body: Value,
    /// `Ok` when the signature verified, else why not.
    verified: Result<(), String>,
}

#[derive(Clone, Default)]
struct EventApi {
    received: Arc<Mutex<Vec<Received>>>,
}

impl EventApi {
    async fn start() -> (EventApi, String) {
        let api = EventApi::default();
        let app = axum::Router::new()
            .route("/event", post(publish))
            .with_state(api.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/event", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (api, url)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

async fn publish(
    State(api): State<EventApi>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, axum::Json<Value>) {
    let verified = verify_sigv4(&headers, &body);
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    api.received.lock().unwrap().push(Received {
        body: parsed,
        verified: verified.clone(),
    });
    match verified {
        Ok(()) => (
            StatusCode::OK,
            axum::Json(
                json!({"successful": [{"identifier": "6b0d7f0c-test", "index": 0}], "failed": []}),
            ),
        ),
        Err(why) => (
            StatusCode::FORBIDDEN,
            axum::Json(json!({"errors": [{"errorType": "UnauthorizedException", "message": why}]})),
        ),
    }
}

/// `Authorization: AWS4-HMAC-SHA256 Credential=<key>/<date>/<region>/<service>/aws4_request,
/// SignedHeaders=<a;b>, Signature=<hex>` → its three parts.
fn parse_authorization(value: &str) -> Option<(String, String, String)> {
    let rest = value.strip_prefix("AWS4-HMAC-SHA256 ")?;
    let mut credential = None;
    let mut signed = None;
    let mut signature = None;
    for part in rest.split(", ") {
        let (key, value) = part.split_once('=')?;
        match key {
            "Credential" => credential = Some(value.to_owned()),
            "SignedHeaders" => signed = Some(value.to_owned()),
            "Signature" => signature = Some(value.to_owned()),
            _ => return None,
        }
    }
    Some((credential?, signed?, signature?))
}

/// Recomputes the request's signature with the test credentials, for service `appsync` in
/// [`REGION`], over exactly the headers the client says it signed.
fn verify_sigv4(headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or(format!("no {name} header"))
    };
    let (credential, signed_headers, signature) = parse_authorization(header("authorization")?)
        .ok_or("the Authorization header is not SigV4")?;
    let amz_date = header("x-amz-date")?;
    let expected_scope = format!(
        "{ACCESS_KEY}/{}/{REGION}/appsync/aws4_request",
        amz_date.get(..8).unwrap_or_default()
    );
    if credential != expected_scope {
        return Err(format!(
            "credential scope {credential} is not {expected_scope}"
        ));
    }
    if header("x-amz-security-token")? != SESSION_TOKEN {
        return Err("wrong session token".into());
    }
    let names: Vec<&str> = signed_headers.split(';').collect();
    for required in ["content-type", "host", "x-amz-date", "x-amz-security-token"] {
        if !names.contains(&required) {
            return Err(format!("{required} is not signed"));
        }
    }
    let format =
        time::format_description::parse("[year][month][day]T[hour][minute][second]Z").unwrap();
    let at: SystemTime = time::PrimitiveDateTime::parse(amz_date, &format)
        .map_err(|e| format!("x-amz-date: {e}"))?
        .assume_utc()
        .into();
    // The signer adds x-amz-date and the token itself, from the time and the identity.
    let mut to_sign = Vec::new();
    for name in &names {
        if !matches!(*name, "x-amz-date" | "x-amz-security-token") {
            to_sign.push((*name, header(name)?));
        }
    }
    let identity: Identity = Credentials::new(
        ACCESS_KEY,
        SECRET_KEY,
        Some(SESSION_TOKEN.into()),
        None,
        "verifier",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("appsync")
        .time(at)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let url = format!("http://{}/event", header("host")?);
    let request = SignableRequest::new("POST", url, to_sign.into_iter(), SignableBody::Bytes(body))
        .map_err(|e| e.to_string())?;
    let (_, expected) = sign(request, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    if signature == expected {
        Ok(())
    } else {
        Err("the request signature does not match".into())
    }
}

fn credentials(secret_key: &str) -> SharedCredentialsProvider {
    SharedCredentialsProvider::new(Credentials::new(
        ACCESS_KEY,
        secret_key,
        Some(SESSION_TOKEN.into()),
        None,
        "test",
    ))
}

struct Stack {
    app: axum::Router,
    queue: Arc<MemoryQueue>,
    metrics: Arc<Mutex<Vec<String>>>,
}

fn ingest_publishing_to(url: &str, region: &str, secret_key: &str) -> Stack {
    let publisher = AppSyncPublisher::new(
        url.parse().unwrap(),
        "relay",
        region,
        credentials(secret_key),
    )
    .unwrap();
    let buffer: Arc<Mutex<Vec<String>>> = Arc::default();
    let metrics = Metrics::new("ChatRelay/test", MetricsSink::Buffer(Arc::clone(&buffer)));
    let queue = Arc::new(MemoryQueue::new("live-aws", Duration::from_secs(30)));
    let live = LivePublishing::new(
        Arc::new(publisher),
        Duration::from_secs(60),
        metrics.clone(),
    );
    let ingest = Ingest::new(
        SecretSet::parse(INGEST_SECRET).unwrap(),
        chat_id_key(),
        queue.clone(),
        metrics,
    )
    .with_live(live);
    Stack {
        app: router(Arc::new(ingest)),
        queue,
        metrics: buffer,
    }
}

impl Stack {
    async fn send(&self, body: &str) -> (StatusCode, Value) {
        post_signed(&self.app, "/events", INGEST_SECRET, "msg_live", body).await
    }

    fn failures_counted(&self) -> usize {
        self.metrics
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.contains(metric::LIVE_PUBLISH_FAILED))
            .count()
    }
}

fn status_event(session: &str) -> String {
    let mut event = examples::status(true).with_session(session);
    event.timestamp = relay_tests::rfc3339_now().into();
    event.to_json()
}

#[tokio::test]
async fn ingest_publishes_each_stored_event_to_appsync_signed_as_the_role() {
    let (api, url) = EventApi::start().await;
    let stack = ingest_publishing_to(&url, REGION, SECRET_KEY);
    let mut ids = Vec::new();
    // "sales_team" is no legal channel segment: it travels on its mapped channel.
    for session in ["sales_team", "default"] {
        let body = status_event(session);
        let (status, answer) = stack.send(&body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        ids.push((session, answer["id"].as_str().unwrap().to_owned(), body));
    }
    assert_eq!(stack.queue.len(), 2, "both stored");
    let received = api.received();
    assert_eq!(received.len(), 2, "one publish per event");
    for (got, (session, id, body)) in received.iter().zip(&ids) {
        assert_eq!(got.verified, Ok(()), "the signature verifies");
        assert_eq!(
            got.body["channel"],
            session_channel("relay", session),
            "{session}"
        );
        let events = got.body["events"].as_array().unwrap();
        assert_eq!(events.len(), 1);
        let event: Value = serde_json::from_str(events[0].as_str().expect("a JSON string"))
            .expect("the event is stringified JSON");
        assert_eq!(event["id"], id.as_str());
        assert_eq!(event["session"], *session);
        assert_eq!(
            event["envelope"],
            serde_json::from_str::<Value>(body).unwrap()
        );
    }
    assert!(
        received[0].body["channel"]
            .as_str()
            .unwrap()
            .starts_with("/relay/h-"),
        "mapped"
    );
    assert_eq!(stack.failures_counted(), 0);
}

#[tokio::test]
async fn a_refused_or_unreachable_event_api_is_counted_and_never_changes_the_answer() {
    let (api, url) = EventApi::start().await;
    // A wrong secret key and a wrong region: the server's own check refuses both (403).
    for (region, secret) in [(REGION, "not-the-secret-key"), ("us-east-1", SECRET_KEY)] {
        let stack = ingest_publishing_to(&url, region, secret);
        let (status, answer) = stack.send(&status_event("default")).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        assert_eq!(stack.queue.len(), 1, "stored all the same");
        assert_eq!(stack.failures_counted(), 1, "{region}");
    }
    let verdicts: Vec<Result<(), String>> =
        api.received().into_iter().map(|r| r.verified).collect();
    assert_eq!(verdicts.len(), 2);
    assert_eq!(
        verdicts[0],
        Err("the request signature does not match".to_owned())
    );
    let scope = verdicts[1].clone().unwrap_err();
    assert!(
        scope.starts_with("credential scope ")
            && scope.contains("/us-east-1/appsync/aws4_request is not "),
        "{scope}"
    );
    // Nobody listening at all.
    let closed = format!("http://127.0.0.1:{}/event", relay_tests::free_port());
    let stack = ingest_publishing_to(&closed, REGION, SECRET_KEY);
    let (status, _) = stack.send(&status_event("default")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(stack.failures_counted(), 1);
}
