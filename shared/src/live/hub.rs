//! The local live hub: what AppSync Events serves, in process, for `relay local` and the tests,
//! so a page's code is the same locally and on AWS.
//!
//! Routes: `POST /event` (HTTP publish) and `GET /event/realtime` (the WebSocket). The protocol
//! follows AppSync Events' "Understanding the Event API WebSocket protocol": the client
//! "establishes a WebSocket connection with the AWS real-time endpoint, sends a connection
//! initialization message, and waits for acknowledgment"; it then "registers subscriptions by
//! sending a “subscribe” message with a unique ID and a channel path of interest. AWS AppSync
//! confirms successful subscriptions with acknowledgment messages. ... To maintain the
//! connection, AWS AppSync sends periodic keep-alive messages. When finished, the client
//! unsubscribes by sending “unsubscribe” messages."
//!
//! Messages (client → hub, hub → client):
//! - subprotocols `aws-appsync-event-ws` and `header-<base64url JSON>` carrying
//!   `{"Authorization": "<live token>", "host": …}`; a token that does not verify is refused at
//!   connect: `{"type":"connection_error","errors":[{"errorType":"UnauthorizedException",…}]}`,
//!   then close (an upgrade answered with an HTTP error would make clients retry forever);
//! - `{"type":"connection_init"}` → `{"type":"connection_ack","connectionTimeoutMs":300000}`,
//!   then `{"type":"ka"}` every keep-alive period;
//! - `{"type":"subscribe","id","channel","authorization":{"Authorization": token}}` →
//!   `{"type":"subscribe_success","id"}` or `{"type":"subscribe_error","id","errors":[…]}`
//!   (the token must name the channel's session);
//! - `{"type":"data","id","event":"<JSON text>"}` for each event on the channel;
//! - `{"type":"unsubscribe","id"}` → `{"type":"unsubscribe_success","id"}` (or
//!   `unsubscribe_error`); `publish` → `publish_error` (pages never publish); anything else →
//!   `{"type":"error","errors":[…]}`.
//!
//! Bounded: each connection has a send queue of [`HubConfig::send_queue`] messages; a
//! subscriber that falls that far behind is dropped (closed with 1013), never buffered
//! without end. Subscriptions per connection and incoming message size are capped too.

use crate::live::authorize::allows_channel;
use crate::live::channel::{normalize_channel, session_channel};
use crate::live::publish::{LiveEvent, PublishError, Publisher};
use crate::live::token::{Claims, TokenError, TokenSecrets, unix_now};
use async_trait::async_trait;
use axum::Router;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

/// The WebSocket subprotocol of AppSync Events.
pub const SUBPROTOCOL: &str = "aws-appsync-event-ws";
/// The prefix of the authorization subprotocol.
pub const HEADER_PREFIX: &str = "header-";
/// AppSync HTTP publish: "You can publish up to 5 events in a batch."
pub const MAX_PUBLISH_BATCH: usize = 5;

/// The initial read buffer of a page's connection.
const READ_BUFFER_BYTES: usize = 4 * 1024;

/// Limits and timings of the hub.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// The channel namespace (`/<namespace>/<session segment>`).
    pub namespace: String,
    /// How often `ka` is sent.
    pub keep_alive: Duration,
    /// `connectionTimeoutMs` in `connection_ack`: a client that hears nothing for this long
    /// reconnects.
    pub connection_timeout: Duration,
    /// Messages waiting for one connection before it is dropped as too slow.
    pub send_queue: usize,
    /// Subscriptions one connection may hold.
    pub max_subscriptions: usize,
    /// The largest message a client may send.
    pub max_message_bytes: usize,
    /// How long a send to a client may take before the connection is dropped.
    pub send_timeout: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            namespace: crate::live::channel::DEFAULT_NAMESPACE.to_owned(),
            keep_alive: Duration::from_secs(60),
            connection_timeout: Duration::from_secs(300),
            send_queue: 256,
            max_subscriptions: 100,
            max_message_bytes: 64 * 1024,
            send_timeout: Duration::from_secs(10),
        }
    }
}

/// One connection, as the channel table sees it.
struct Connection {
    id: u64,
    outbox: mpsc::Sender<String>,
    /// Set when the hub drops the connection (too slow).
    kicked: Notify,
}

struct Subscriber {
    connection: Arc<Connection>,
    subscription_id: String,
}

/// The hub: channels → subscribers, and the secrets that decide who may subscribe.
pub struct Hub {
    config: HubConfig,
    secrets: TokenSecrets,
    channels: Mutex<HashMap<String, Vec<Subscriber>>>,
    next_connection: AtomicU64,
    dropped_slow: AtomicU64,
}

impl Hub {
    pub fn new(config: HubConfig, secrets: TokenSecrets) -> Arc<Self> {
        Arc::new(Hub {
            config,
            secrets,
            channels: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(1),
            dropped_slow: AtomicU64::new(0),
        })
    }

    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// Subscriptions currently registered, over all channels.
    pub fn subscriptions(&self) -> usize {
        self.table().values().map(Vec::len).sum()
    }

    /// Connections dropped because they fell behind.
    pub fn dropped_slow(&self) -> u64 {
        self.dropped_slow.load(Ordering::Relaxed)
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Subscriber>>> {
        // A panic elsewhere cannot leave the table half-written: every change is one push
        // or one retain.
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `payload` (JSON text) to every subscriber of `channel`, without waiting: a full
    /// queue drops that subscriber's connection. Returns how many subscriptions got it.
    pub fn publish(&self, channel: &str, payload: &str) -> usize {
        let mut table = self.table();
        let Some(subscribers) = table.get_mut(channel) else {
            return 0;
        };
        let mut delivered = 0;
        subscribers.retain(|s| {
            let message = json!({"type": "data", "id": s.subscription_id, "event": payload});
            match s.connection.outbox.try_send(message.to_string()) {
                Ok(()) => {
                    delivered += 1;
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.dropped_slow.fetch_add(1, Ordering::Relaxed);
                    s.connection.kicked.notify_one();
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        if subscribers.is_empty() {
            table.remove(channel);
        }
        delivered
    }

    /// May `claims` subscribe to `channel` (canonical form)? The same decision as the AppSync
    /// authorizer's ([`allows_channel`]).
    fn allowed(&self, claims: &Claims, channel: &str) -> bool {
        allows_channel(claims, &self.config.namespace, channel)
    }

    fn subscribe(&self, connection: &Arc<Connection>, channel: &str, id: &str) {
        self.table()
            .entry(channel.to_owned())
            .or_default()
            .push(Subscriber {
                connection: Arc::clone(connection),
                subscription_id: id.to_owned(),
            });
    }

    fn unsubscribe(&self, connection: u64, channel: &str, id: &str) {
        let mut table = self.table();
        if let Some(subscribers) = table.get_mut(channel) {
            subscribers.retain(|s| !(s.connection.id == connection && s.subscription_id == id));
            if subscribers.is_empty() {
                table.remove(channel);
            }
        }
    }
}

/// The hub's routes: `POST /event` and `GET /event/realtime`.
pub fn router(hub: Arc<Hub>) -> Router {
    Router::new()
        .route("/event", post(http_publish))
        .route("/event/realtime", get(realtime))
        .with_state(hub)
}

/// The in-process publisher: ingest → hub, no network.
pub struct HubPublisher(pub Arc<Hub>);

#[async_trait]
impl Publisher for HubPublisher {
    async fn publish(&self, event: &LiveEvent) -> Result<(), PublishError> {
        let channel = session_channel(&self.0.config.namespace, &event.session);
        self.0.publish(&channel, &event.payload);
        Ok(())
    }
}

fn errors(error_type: &str, message: impl std::fmt::Display) -> Value {
    json!([{"errorType": error_type, "message": message.to_string()}])
}

const UNAUTHORIZED: &str = "UnauthorizedException";
const BAD_REQUEST: &str = "BadRequestException";

/// The token in an authorization object (`{"Authorization": token, "host": …}`).
fn token_of(authorization: &Value) -> Option<&str> {
    authorization
        .get("Authorization")
        .or_else(|| authorization.get("authorization"))
        .and_then(Value::as_str)
}

/// The `header-…` subprotocol's authorization object, if offered and decodable.
fn header_subprotocol(offered: &[&str]) -> Option<Value> {
    let encoded = offered.iter().find_map(|p| p.strip_prefix(HEADER_PREFIX))?;
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let bytes = engine.decode(encoded).ok()?;
    serde_json::from_slice(&bytes).ok()
}

async fn realtime(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if !offered.contains(&SUBPROTOCOL) {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({
                "errors": errors(BAD_REQUEST, format!("offer the WebSocket subprotocol {SUBPROTOCOL} and a header-<base64url JSON> authorization subprotocol")),
            })),
        )
            .into_response();
    }
    let authorized = match header_subprotocol(&offered) {
        None => Err(TokenError::Missing),
        Some(auth) => match token_of(&auth) {
            None => Err(TokenError::Missing),
            Some(token) => hub.secrets.verify(token, unix_now()),
        },
    };
    let max = hub.config.max_message_bytes;
    // A page sends a handful of small messages per session, so the read buffer starts small
    // (it grows up to `max` when a frame needs it) instead of tungstenite's 128 KiB, which
    // was most of an idle connection's memory.
    ws.protocols([SUBPROTOCOL])
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| serve(hub, socket, authorized))
}

/// One connection's life: handshake, then messages, events and keep-alives until either side
/// closes or the hub drops it.
async fn serve(hub: Arc<Hub>, mut socket: WebSocket, authorized: Result<Claims, TokenError>) {
    let (outbox, mut inbox) = mpsc::channel::<String>(hub.config.send_queue.max(1));
    let connection = Arc::new(Connection {
        id: hub.next_connection.fetch_add(1, Ordering::Relaxed),
        outbox,
        kicked: Notify::new(),
    });
    // subscription id → channel, for unsubscribe and the cleanup at the end.
    let mut subscriptions: HashMap<String, String> = HashMap::new();
    let mut acked = false;
    let mut keep_alive = tokio::time::interval(hub.config.keep_alive);
    keep_alive.tick().await;
    let send_timeout = hub.config.send_timeout;
    let close_reason = loop {
        let outgoing: Option<String> = tokio::select! {
            incoming = socket.recv() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text.as_str().to_owned(),
                    // Not JSON text: answered as a message that does not parse.
                    Some(Ok(Message::Binary(_))) => String::new(),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break None,
                    Some(Ok(_)) => continue, // ping and pong are answered by the library
                };
                if let Err(refusal) = &authorized {
                    // Refused at connect: one connection_error, then close.
                    let message = json!({"type": "connection_error", "errors": errors(UNAUTHORIZED, refusal)});
                    let _ = tokio::time::timeout(send_timeout, socket.send(Message::Text(message.to_string().into()))).await;
                    break Some((1008, "unauthorized"));
                }
                handle(&hub, &connection, &mut subscriptions, &mut acked, &text)
            }
            Some(message) = inbox.recv() => Some(message),
            _ = keep_alive.tick(), if acked => Some(json!({"type": "ka"}).to_string()),
            _ = connection.kicked.notified() => break Some((1013, "too slow: events were dropped; reconnect")),
        };
        if let Some(message) = outgoing {
            match tokio::time::timeout(send_timeout, socket.send(Message::Text(message.into())))
                .await
            {
                Ok(Ok(())) => {}
                _ => break None,
            }
        }
    };
    for (id, channel) in &subscriptions {
        hub.unsubscribe(connection.id, channel, id);
    }
    if let Some((code, reason)) = close_reason {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = tokio::time::timeout(send_timeout, socket.send(Message::Close(Some(frame)))).await;
    }
    tracing::debug!(connection = connection.id, "live connection closed");
}

/// One client message → the answer to send, if any.
fn handle(
    hub: &Hub,
    connection: &Arc<Connection>,
    subscriptions: &mut HashMap<String, String>,
    acked: &mut bool,
    text: &str,
) -> Option<String> {
    let Ok(message) = serde_json::from_str::<Value>(text) else {
        return Some(
            json!({"type": "error", "errors": errors(BAD_REQUEST, "the message is not JSON")})
                .to_string(),
        );
    };
    let id = message.get("id").and_then(Value::as_str);
    let answer = match message.get("type").and_then(Value::as_str) {
        Some("connection_init") => {
            *acked = true;
            json!({"type": "connection_ack", "connectionTimeoutMs": hub.config.connection_timeout.as_millis() as u64})
        }
        Some("subscribe") => {
            let Some(id) = id.filter(|id| !id.is_empty() && id.len() <= 128) else {
                return Some(json!({"type": "subscribe_error", "errors": errors(BAD_REQUEST, "subscribe needs an id of 1 to 128 characters")}).to_string());
            };
            match check_subscription(hub, subscriptions, id, &message) {
                Ok(channel) => {
                    hub.subscribe(connection, &channel, id);
                    subscriptions.insert(id.to_owned(), channel);
                    json!({"type": "subscribe_success", "id": id})
                }
                Err((error_type, why)) => {
                    json!({"type": "subscribe_error", "id": id, "errors": errors(error_type, why)})
                }
            }
        }
        Some("unsubscribe") => match id.and_then(|id| subscriptions.remove_entry(id)) {
            Some((id, channel)) => {
                hub.unsubscribe(connection.id, &channel, &id);
                json!({"type": "unsubscribe_success", "id": id})
            }
            None => {
                json!({"type": "unsubscribe_error", "id": id, "errors": errors(BAD_REQUEST, "no subscription has this id")})
            }
        },
        Some("publish") => {
            json!({"type": "publish_error", "id": id, "errors": errors(UNAUTHORIZED, "pages cannot publish here; the relay publishes every accepted event")})
        }
        _ => {
            json!({"type": "error", "id": id, "errors": errors(BAD_REQUEST, "unknown message type; expected connection_init, subscribe or unsubscribe")})
        }
    };
    Some(answer.to_string())
}

/// The canonical channel a `subscribe` may have, or why not.
fn check_subscription(
    hub: &Hub,
    subscriptions: &HashMap<String, String>,
    id: &str,
    message: &Value,
) -> Result<String, (&'static str, String)> {
    if subscriptions.contains_key(id) {
        return Err((
            BAD_REQUEST,
            "a subscription with this id already exists".into(),
        ));
    }
    if subscriptions.len() >= hub.config.max_subscriptions {
        return Err((
            BAD_REQUEST,
            format!(
                "at most {} subscriptions per connection",
                hub.config.max_subscriptions
            ),
        ));
    }
    let channel = message
        .get("channel")
        .and_then(Value::as_str)
        .and_then(normalize_channel)
        .ok_or((
            BAD_REQUEST,
            "channel must be a path like /namespace/session (alphanumerics and dashes)".to_owned(),
        ))?;
    let token = message
        .get("authorization")
        .and_then(token_of)
        .ok_or((UNAUTHORIZED, TokenError::Missing.to_string()))?;
    let claims = hub
        .secrets
        .verify(token, unix_now())
        .map_err(|e| (UNAUTHORIZED, e.to_string()))?;
    if !hub.allowed(&claims, &channel) {
        return Err((UNAUTHORIZED, TokenError::WrongSession.to_string()));
    }
    Ok(channel)
}

/// `POST /event`: `{"channel": "/ns/seg", "events": ["<JSON text>", …]}` with the token in
/// `Authorization`; answers `{"successful": [{"identifier", "index"}], "failed": []}` as
/// AppSync's HTTP publish does.
async fn http_publish(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let refuse = |status: StatusCode, error_type: &str, message: String| {
        (
            status,
            axum::Json(json!({"errors": errors(error_type, message)})),
        )
            .into_response()
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v))
        .unwrap_or("");
    let claims = match hub.secrets.verify(token, unix_now()) {
        Ok(claims) => claims,
        Err(e) => return refuse(StatusCode::UNAUTHORIZED, UNAUTHORIZED, e.to_string()),
    };
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            BAD_REQUEST,
            "the body is not JSON".into(),
        );
    };
    let Some(channel) = request
        .get("channel")
        .and_then(Value::as_str)
        .and_then(normalize_channel)
    else {
        return refuse(
            StatusCode::BAD_REQUEST,
            BAD_REQUEST,
            "channel must be a path like /namespace/session".into(),
        );
    };
    if !hub.allowed(&claims, &channel) {
        return refuse(
            StatusCode::FORBIDDEN,
            UNAUTHORIZED,
            TokenError::WrongSession.to_string(),
        );
    }
    let events: Vec<&str> = match request.get("events").and_then(Value::as_array) {
        Some(events) if (1..=MAX_PUBLISH_BATCH).contains(&events.len()) => {
            let strings: Option<Vec<&str>> = events.iter().map(Value::as_str).collect();
            match strings {
                Some(s) if s.iter().all(|e| serde_json::from_str::<Value>(e).is_ok()) => s,
                _ => {
                    return refuse(
                        StatusCode::BAD_REQUEST,
                        BAD_REQUEST,
                        "each event must be a string holding JSON".into(),
                    );
                }
            }
        }
        _ => {
            return refuse(
                StatusCode::BAD_REQUEST,
                BAD_REQUEST,
                format!("events must be an array of 1 to {MAX_PUBLISH_BATCH} strings"),
            );
        }
    };
    let successful: Vec<Value> = events
        .iter()
        .enumerate()
        .map(|(index, event)| {
            hub.publish(&channel, event);
            json!({"identifier": format!("{:032x}", fastrand::u128(..)), "index": index})
        })
        .collect();
    axum::Json(json!({"successful": successful, "failed": []})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "hub-test-secret-0123456789abcdef0123456789";

    fn hub(send_queue: usize) -> Arc<Hub> {
        Hub::new(
            HubConfig {
                send_queue,
                ..HubConfig::default()
            },
            TokenSecrets::parse(SECRET).unwrap(),
        )
    }

    fn connection(hub: &Hub, capacity: usize) -> (Arc<Connection>, mpsc::Receiver<String>) {
        let (outbox, inbox) = mpsc::channel(capacity);
        let connection = Arc::new(Connection {
            id: hub.next_connection.fetch_add(1, Ordering::Relaxed),
            outbox,
            kicked: Notify::new(),
        });
        (connection, inbox)
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_dropped_not_buffered() {
        let hub = hub(2);
        let (slow, _never_read) = connection(&hub, 2);
        let (fast, mut read) = connection(&hub, 8);
        hub.subscribe(&slow, "/relay/default", "s1");
        hub.subscribe(&fast, "/relay/default", "f1");
        assert_eq!(hub.publish("/relay/default", r#"{"n":1}"#), 2);
        assert_eq!(hub.publish("/relay/default", r#"{"n":2}"#), 2);
        // The slow one's queue is full: it is dropped and told so; the fast one goes on.
        assert_eq!(hub.publish("/relay/default", r#"{"n":3}"#), 1);
        assert_eq!(hub.dropped_slow(), 1);
        assert_eq!(hub.subscriptions(), 1);
        tokio::time::timeout(Duration::from_secs(5), slow.kicked.notified())
            .await
            .expect("the slow connection is told to close");
        let first: Value = serde_json::from_str(&read.recv().await.unwrap()).unwrap();
        assert_eq!(
            first,
            json!({"type": "data", "id": "f1", "event": r#"{"n":1}"#})
        );
    }

    #[test]
    fn a_token_allows_exactly_its_sessions_channels() {
        let hub = hub(4);
        let claims = Claims {
            sub: "u".into(),
            sessions: vec!["default".into(), "sales team".into()],
            exp: u64::MAX,
            iat: None,
            nbf: None,
        };
        assert!(hub.allowed(&claims, "/relay/default"));
        assert!(hub.allowed(&claims, &session_channel("relay", "sales team")));
        assert!(!hub.allowed(&claims, "/relay/other"));
        assert!(!hub.allowed(&claims, "/other/default"));
        assert!(!hub.allowed(&claims, "/relay/default/x"));
    }

    #[test]
    fn the_header_subprotocol_decodes_with_or_without_padding() {
        let json = r#"{"Authorization":"t.o.k","host":"127.0.0.1:9000"}"#;
        let unpadded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
        let padded = base64::engine::general_purpose::URL_SAFE.encode(json);
        for encoded in [unpadded, padded] {
            let offered = format!("header-{encoded}");
            let auth = header_subprotocol(&[SUBPROTOCOL, &offered]).unwrap();
            assert_eq!(token_of(&auth), Some("t.o.k"));
        }
        assert!(header_subprotocol(&[SUBPROTOCOL]).is_none());
        assert!(header_subprotocol(&["header-!!!"]).is_none());
    }
}
