//! Live updates end to end: the real ingest router and the local hub on one real HTTP server,
//! a real WebSocket client (tokio-tungstenite) speaking AppSync Events' protocol, events sent
//! signed through ingest and seen arriving on the session's channel.

use futures::{SinkExt, StreamExt};
use relay_shared::envelope::examples;
use relay_shared::ingest::{Ingest, router};
use relay_shared::live::hub::{self, Hub, HubConfig, HubPublisher};
use relay_shared::live::publish::{LivePublishing, MAX_EVENT_BYTES};
use relay_shared::live::token::{TokenSecrets, unix_now};
use relay_shared::queue::memory::MemoryQueue;
use relay_shared::signature::SecretSet;
use relay_shared::telemetry::Metrics;
use relay_tests::live_page::{self, Socket};
use relay_tests::{INGEST_SECRET, chat_id_key, personal_data, signed_headers};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const LIVE_SECRET: &str = "live-test-secret-0123456789abcdef-0123456789";
const WAIT: Duration = Duration::from_secs(10);

struct Stack {
    base: String,
    hub: Arc<Hub>,
    secrets: TokenSecrets,
    http: reqwest::Client,
}

async fn start(keep_alive: Duration) -> Stack {
    start_with(HubConfig {
        keep_alive,
        ..HubConfig::default()
    })
    .await
}

async fn start_with(config: HubConfig) -> Stack {
    let secrets = TokenSecrets::parse(LIVE_SECRET).unwrap();
    let hub = Hub::new(config, secrets.clone());
    let queue = Arc::new(MemoryQueue::new("live", Duration::from_secs(30)));
    let live = LivePublishing::new(
        Arc::new(HubPublisher(Arc::clone(&hub))),
        Duration::from_secs(60),
        Metrics::off(),
    );
    let ingest = Ingest::new(
        SecretSet::parse(INGEST_SECRET).unwrap(),
        chat_id_key(),
        queue,
        Metrics::off(),
    )
    .with_live(live);
    let app = router(Arc::new(ingest)).merge(hub::router(Arc::clone(&hub)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Stack {
        base,
        hub,
        secrets,
        http: reqwest::Client::new(),
    }
}

impl Stack {
    fn token(&self, sessions: &[&str]) -> String {
        let sessions: Vec<String> = sessions.iter().map(|s| s.to_string()).collect();
        self.secrets
            .mint("page", &sessions, Duration::from_secs(600), unix_now())
            .unwrap()
    }

    /// Opens the WebSocket the way AppSync's clients do: both subprotocols.
    async fn connect(&self, token: &str) -> Socket {
        let (socket, response) = live_page::open(&self.base, token).await.unwrap();
        assert_eq!(
            response.headers()["sec-websocket-protocol"],
            "aws-appsync-event-ws"
        );
        socket
    }

    /// Connect, `connection_init`, and check the `connection_ack`.
    async fn connected(&self, token: &str) -> Socket {
        let mut socket = self.connect(token).await;
        send(&mut socket, json!({"type": "connection_init"})).await;
        let ack = next(&mut socket).await;
        assert_eq!(ack["type"], "connection_ack", "{ack}");
        assert_eq!(ack["connectionTimeoutMs"], 300_000);
        socket
    }

    async fn ingest(&self, body: &str) -> (u16, Value) {
        let response = self
            .http
            .post(format!("http://{}/events", self.base))
            .headers(signed_headers(INGEST_SECRET, "msg_1", body))
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (
            status,
            serde_json::from_str(&response.text().await.unwrap()).unwrap(),
        )
    }
}

async fn send(socket: &mut Socket, message: Value) {
    live_page::send(socket, message).await.unwrap();
}

/// The next JSON text message, skipping keep-alives.
async fn next(socket: &mut Socket) -> Value {
    live_page::next(socket, WAIT)
        .await
        .expect("a JSON message within the wait")
}

async fn subscribe(socket: &mut Socket, id: &str, channel: &str, token: &str) -> Value {
    send(
        socket,
        json!({"type": "subscribe", "id": id, "channel": channel, "authorization": {"Authorization": token, "host": "x"}}),
    )
    .await;
    next(socket).await
}

fn status_event(session: &str, connected: bool) -> String {
    let mut event = examples::status(connected).with_session(session);
    event.timestamp = relay_tests::rfc3339_now().into();
    event.to_json()
}

#[tokio::test]
async fn an_event_ingest_accepts_reaches_the_sessions_subscriber() {
    let stack = start(Duration::from_secs(60)).await;
    let token = stack.token(&["sales"]);
    let mut page = stack.connected(&token).await;
    let answer = subscribe(&mut page, "sub-1", "/relay/sales", &token).await;
    assert_eq!(answer, json!({"type": "subscribe_success", "id": "sub-1"}));

    let body = status_event("sales", true);
    let (status, accepted) = stack.ingest(&body).await;
    assert_eq!(status, 202);
    let data = next(&mut page).await;
    assert_eq!(data["type"], "data");
    assert_eq!(data["id"], "sub-1");
    let event: Value = serde_json::from_str(data["event"].as_str().expect("event is JSON text"))
        .expect("event parses");
    assert_eq!(event["id"], accepted["id"]);
    assert_eq!(event["type"], "status");
    assert_eq!(event["session"], "sales");
    assert!(event["receivedAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        event["envelope"],
        serde_json::from_str::<Value>(&body).unwrap()
    );

    // Another session's event does not reach this page; the next one of its own does, in order.
    stack.ingest(&status_event("default", true)).await;
    stack.ingest(&status_event("sales", false)).await;
    let data = next(&mut page).await;
    let event: Value = serde_json::from_str(data["event"].as_str().unwrap()).unwrap();
    assert_eq!(event["session"], "sales");
    assert_eq!(event["envelope"]["data"]["connected"], false);
}

#[tokio::test]
async fn a_qr_reaches_the_page_and_a_stale_one_does_not() {
    let stack = start(Duration::from_secs(60)).await;
    let token = stack.token(&["default"]);
    let mut page = stack.connected(&token).await;
    let answer = subscribe(&mut page, "s", "relay/default", &token).await;
    assert_eq!(answer["type"], "subscribe_success", "{answer}");
    let stale = r#"{"event":"qr","data":{"qr":"old-code","available":true},"timestamp":"2020-01-01T00:00:00Z"}"#;
    assert_eq!(stack.ingest(stale).await.0, 202, "stored all the same");
    assert_eq!(stack.ingest(&personal_data::qr_event()).await.0, 202);
    let data = next(&mut page).await;
    let event: Value = serde_json::from_str(data["event"].as_str().unwrap()).unwrap();
    assert_eq!(
        event["envelope"]["data"]["qr"],
        personal_data::QR_DATA,
        "the fresh one, not the stale one"
    );
}

#[tokio::test]
async fn a_token_for_another_session_gets_subscribe_error() {
    let stack = start(Duration::from_secs(60)).await;
    let token = stack.token(&["default"]);
    let mut page = stack.connected(&token).await;
    let answer = subscribe(&mut page, "s1", "/relay/sales", &token).await;
    assert_eq!(answer["type"], "subscribe_error");
    assert_eq!(answer["id"], "s1");
    assert_eq!(answer["errors"][0]["errorType"], "UnauthorizedException");
    // Wildcards and other namespaces are refused too; the connection stays usable.
    for channel in ["/relay/*", "/other/default"] {
        let answer = subscribe(&mut page, channel, channel, &token).await;
        assert_eq!(answer["type"], "subscribe_error", "{channel}");
    }
    // A token with no right to the channel, presented on subscribe, is refused even on a
    // connection opened with a good one.
    let other = stack.token(&["sales"]);
    let answer = subscribe(&mut page, "s2", "/relay/default", &other).await;
    assert_eq!(answer["type"], "subscribe_error");
    assert_eq!(stack.hub.subscriptions(), 0);
    stack.ingest(&status_event("sales", true)).await;
    let answer = subscribe(&mut page, "s3", "/relay/default", &token).await;
    assert_eq!(
        answer,
        json!({"type": "subscribe_success", "id": "s3"}),
        "nothing from sales arrived in between"
    );
}

/// A well-formed token for session `default`, signed with a secret the hub does not hold.
fn forged_token() -> String {
    TokenSecrets::parse("another-secret-0123456789abcdef-0123456789")
        .unwrap()
        .mint(
            "page",
            &["default".to_owned()],
            Duration::from_secs(60),
            unix_now(),
        )
        .unwrap()
}

#[tokio::test]
async fn an_expired_or_forged_token_is_refused_at_connect() {
    let stack = start(Duration::from_secs(60)).await;
    let expired = stack
        .secrets
        .mint(
            "page",
            &["default".to_owned()],
            Duration::from_secs(60),
            unix_now() - 120,
        )
        .unwrap();
    let forged = forged_token();
    for (token, why) in [(expired, "expired"), (forged, "signature")] {
        let mut socket = stack.connect(&token).await;
        send(&mut socket, json!({"type": "connection_init"})).await;
        let refusal = next(&mut socket).await;
        assert_eq!(refusal["type"], "connection_error", "{refusal}");
        assert_eq!(refusal["errors"][0]["errorType"], "UnauthorizedException");
        assert!(
            refusal["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains(why),
            "{refusal}"
        );
        let closed = tokio::time::timeout(WAIT, socket.next()).await.unwrap();
        assert!(
            matches!(closed, Some(Ok(Message::Close(_))) | None | Some(Err(_))),
            "closed after the refusal: {closed:?}"
        );
    }
}

#[tokio::test]
async fn unsubscribe_stops_the_data() {
    let stack = start(Duration::from_secs(60)).await;
    let token = stack.token(&["default"]);
    let mut page = stack.connected(&token).await;
    let answer = subscribe(&mut page, "a", "/relay/default", &token).await;
    assert_eq!(answer["type"], "subscribe_success", "{answer}");
    send(&mut page, json!({"type": "unsubscribe", "id": "a"})).await;
    assert_eq!(
        next(&mut page).await,
        json!({"type": "unsubscribe_success", "id": "a"})
    );
    assert_eq!(stack.hub.subscriptions(), 0);
    stack.ingest(&status_event("default", true)).await;
    // Unknown ids get unsubscribe_error; the answer also proves no data came before it.
    send(&mut page, json!({"type": "unsubscribe", "id": "a"})).await;
    let answer = next(&mut page).await;
    assert_eq!(answer["type"], "unsubscribe_error", "{answer}");
}

#[tokio::test]
async fn keep_alives_flow_and_bad_messages_get_errors() {
    let stack = start(Duration::from_millis(100)).await;
    let token = stack.token(&["default"]);
    let mut page = stack.connected(&token).await;
    let ka = tokio::time::timeout(WAIT, page.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(ka.into_text().unwrap().as_str(), r#"{"type":"ka"}"#);
    page.send(Message::Text("not json".into())).await.unwrap();
    assert_eq!(next(&mut page).await["type"], "error");
    send(
        &mut page,
        json!({"type": "publish", "id": "p", "channel": "/relay/default", "events": ["{}"]}),
    )
    .await;
    assert_eq!(next(&mut page).await["type"], "publish_error");
    send(
        &mut page,
        json!({"type": "subscribe", "channel": "/relay/default"}),
    )
    .await;
    assert_eq!(next(&mut page).await["type"], "subscribe_error");
}

#[tokio::test]
async fn a_client_without_the_subprotocol_is_refused_with_a_reason() {
    let stack = start(Duration::from_secs(60)).await;
    let request = format!("ws://{}/event/realtime", stack.base)
        .into_client_request()
        .unwrap();
    let error = tokio_tungstenite::connect_async(request).await.unwrap_err();
    match error {
        tokio_tungstenite::tungstenite::Error::Http(response) => {
            assert_eq!(response.status(), 400);
        }
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

#[tokio::test]
async fn http_publish_checks_the_request_then_refuses_a_page_token() {
    let stack = start(Duration::from_secs(60)).await;
    let token = stack.token(&["default"]);
    let mut page = stack.connected(&token).await;
    let answer = subscribe(&mut page, "h", "/relay/default", &token).await;
    assert_eq!(answer["type"], "subscribe_success", "{answer}");
    let publish = |token: &str, body: String| {
        stack
            .http
            .post(format!("http://{}/event", stack.base))
            .header("authorization", token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let answer = |response: reqwest::Response| async move {
        let status = response.status().as_u16();
        let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        (
            status,
            body["errors"][0]["message"].as_str().unwrap().to_owned(),
        )
    };
    let batch = |events: Value| json!({"channel": "/relay/default", "events": events}).to_string();

    // On AWS publishing is IAM-only: a page's token, even for this very channel, is refused.
    let (status, message) = answer(
        publish(&token, batch(json!([r#"{"hello":1}"#])))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 403);
    assert!(message.contains("never publish"), "{message}");
    let (status, _) = answer(publish("nope", batch(json!(["{}"]))).await.unwrap()).await;
    assert_eq!(status, 401);
    let (status, _) = answer(
        publish(&token, batch(json!(["1", "2", "3", "4", "5", "6"])))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    // An event over AppSync's 240 KB is refused with its size named.
    let big = format!(r#"{{"text":"{}"}}"#, "x".repeat(MAX_EVENT_BYTES));
    let (status, message) = answer(publish(&token, batch(json!(["{}", big]))).await.unwrap()).await;
    assert_eq!(status, 413);
    assert!(
        message.contains("event 1 is 240011 bytes") && message.contains("240000"),
        "{message}"
    );
    // Nothing reached the page: the next thing it hears is the answer to its own message.
    send(&mut page, json!({"type": "unsubscribe", "id": "h"})).await;
    assert_eq!(
        next(&mut page).await,
        json!({"type": "unsubscribe_success", "id": "h"})
    );
}

#[tokio::test]
async fn a_bad_token_that_never_speaks_is_refused_at_the_init_deadline() {
    let stack = start_with(HubConfig {
        init_timeout: Duration::from_millis(300),
        ..HubConfig::default()
    })
    .await;
    let forged = forged_token();
    let mut socket = stack.connect(&forged).await;
    // No connection_init: the refusal and the close come at the deadline. (One that speaks is
    // refused in answer, as Amplify expects: an_expired_or_forged_token_is_refused_at_connect.)
    let refusal = next(&mut socket).await;
    assert_eq!(refusal["type"], "connection_error", "{refusal}");
    assert_eq!(refusal["errors"][0]["errorType"], "UnauthorizedException");
    assert_closed(&mut socket, 1008).await;
}

#[tokio::test]
async fn a_connection_without_connection_init_is_closed_after_the_deadline() {
    let stack = start_with(HubConfig {
        init_timeout: Duration::from_millis(300),
        ..HubConfig::default()
    })
    .await;
    let token = stack.token(&["default"]);
    let mut silent = stack.connect(&token).await;
    let refusal = next(&mut silent).await;
    assert_eq!(refusal["type"], "connection_error", "{refusal}");
    assert!(
        refusal["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("no connection_init within 0.3 s"),
        "{refusal}"
    );
    assert_closed(&mut silent, 1008).await;
    // One that sent it in time stays open past the deadline, silent as a page is.
    let mut page = stack.connected(&token).await;
    let answer = subscribe(&mut page, "p", "/relay/default", &token).await;
    assert_eq!(answer["type"], "subscribe_success", "{answer}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    stack.ingest(&status_event("default", true)).await;
    assert_eq!(next(&mut page).await["type"], "data");
}

#[tokio::test]
async fn one_connection_holds_at_most_two_subscriptions_to_a_channel() {
    let stack = start(Duration::from_secs(60)).await;
    let token = stack.token(&["default"]);
    let mut page = stack.connected(&token).await;
    // Two: a page renewing its token overlaps the new subscription with the old one.
    for id in ["old", "new"] {
        let answer = subscribe(&mut page, id, "/relay/default", &token).await;
        assert_eq!(answer, json!({"type": "subscribe_success", "id": id}));
    }
    let third = subscribe(&mut page, "third", "relay/default", &token).await;
    assert_eq!(third["type"], "subscribe_error", "{third}");
    assert_eq!(third["id"], "third");
    let message = third["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("already has 2 subscriptions to /relay/default"),
        "{message}"
    );
    assert_eq!(stack.hub.subscriptions(), 2);
    // Once the old one is gone, there is room again.
    send(&mut page, json!({"type": "unsubscribe", "id": "old"})).await;
    assert_eq!(next(&mut page).await["type"], "unsubscribe_success");
    let again = subscribe(&mut page, "third", "/relay/default", &token).await;
    assert_eq!(again["type"], "subscribe_success", "{again}");
}

/// The next frame is a close with `code` (or the connection is gone), within the wait.
async fn assert_closed(socket: &mut Socket, code: u16) {
    let closed = tokio::time::timeout(WAIT, socket.next())
        .await
        .expect("closed within the wait");
    match closed {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), code),
        None | Some(Err(_)) => {}
        other => panic!("expected a close, got {other:?}"),
    }
}
