//! Live updates end to end: the real ingest router and the local hub on one real HTTP server,
//! a real WebSocket client (tokio-tungstenite) speaking AppSync Events' protocol, events sent
//! signed through ingest and seen arriving on the session's channel.

use futures::{SinkExt, StreamExt};
use relay_shared::envelope::examples;
use relay_shared::ingest::{Ingest, router};
use relay_shared::live::hub::{self, Hub, HubConfig, HubPublisher};
use relay_shared::live::publish::LivePublishing;
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
    let secrets = TokenSecrets::parse(LIVE_SECRET).unwrap();
    let hub = Hub::new(
        HubConfig {
            keep_alive,
            ..HubConfig::default()
        },
        secrets.clone(),
    );
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
    subscribe(&mut page, "s", "relay/default", &token).await;
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
    let forged = TokenSecrets::parse("another-secret-0123456789abcdef-0123456789")
        .unwrap()
        .mint(
            "page",
            &["default".to_owned()],
            Duration::from_secs(60),
            unix_now(),
        )
        .unwrap();
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
    subscribe(&mut page, "a", "/relay/default", &token).await;
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
async fn http_publish_reaches_subscribers_with_a_token_for_the_channel() {
    let stack = start(Duration::from_secs(60)).await;
    let token = stack.token(&["default"]);
    let mut page = stack.connected(&token).await;
    subscribe(&mut page, "h", "/relay/default", &token).await;
    let publish = |token: String, body: Value| {
        stack
            .http
            .post(format!("http://{}/event", stack.base))
            .header("authorization", token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let response = publish(
        token.clone(),
        json!({"channel": "/relay/default", "events": [r#"{"hello":1}"#]}),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(answer["successful"][0]["index"], 0);
    assert_eq!(answer["failed"], json!([]));
    assert_eq!(next(&mut page).await["event"], r#"{"hello":1}"#);

    let other = stack.token(&["sales"]);
    let refused = publish(
        other,
        json!({"channel": "/relay/default", "events": ["{}"]}),
    )
    .await
    .unwrap();
    assert_eq!(refused.status(), 403);
    let unsigned = publish(
        "nope".into(),
        json!({"channel": "/relay/default", "events": ["{}"]}),
    )
    .await
    .unwrap();
    assert_eq!(unsigned.status(), 401);
    let too_many = publish(
        token,
        json!({"channel": "/relay/default", "events": ["1", "2", "3", "4", "5", "6"]}),
    )
    .await
    .unwrap();
    assert_eq!(too_many.status(), 400);
}
