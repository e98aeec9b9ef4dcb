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
//!   `{"Authorization": "<live token>", "host": …}`; a token that does not verify is refused
//!   in answer to the client's first message, or at the `connection_init` deadline if it sends
//!   none: `{"type":"connection_error","errors":[{"errorType":"UnauthorizedException",…}]}`,
//!   then close 1008 (an upgrade answered with an HTTP error would make clients retry forever);
//! - `{"type":"connection_init"}` → `{"type":"connection_ack","connectionTimeoutMs":300000}`,
//!   then `{"type":"ka"}` every keep-alive period. A connection that sends no
//!   `connection_init` within [`HubConfig::init_timeout`] gets a `connection_error` and is
//!   closed (1008). `connectionTimeoutMs` binds the client, not the hub: "If no "ka" message is
//!   received within connectionTimeoutMs milliseconds, the client should terminate the
//!   connection" (AppSync, "Building a real-time WebSocket client"); a page sends nothing after
//!   subscribing, so the hub never closes a connection for being silent;
//! - `{"type":"subscribe","id","channel","authorization":{"Authorization": token}}` →
//!   `{"type":"subscribe_success","id"}` or `{"type":"subscribe_error","id","errors":[…]}`
//!   (the token must name the channel's session; at most [`MAX_SUBSCRIPTIONS_PER_CHANNEL`] on
//!   one channel per connection);
//! - `{"type":"data","id","event":"<JSON text>"}` for each event on the channel;
//! - `{"type":"unsubscribe","id"}` → `{"type":"unsubscribe_success","id"}` (or
//!   `unsubscribe_error`); `publish` → `publish_error` (pages never publish); anything else →
//!   `{"type":"error","errors":[…]}`.
//!
//! `POST /event` answers a page's token as AppSync does (its `DefaultPublishAuthModes` is
//! `AWS_IAM` only, and the authorizer denies `EVENT_PUBLISH`): the request is checked (a batch
//! of 1 to 5 events, each JSON text of at most [`MAX_EVENT_BYTES`]), then refused with `403`.
//! The local stack's one publisher is ingest, in process ([`HubPublisher`]).
//!
//! Bounded: each connection has a send queue of [`HubConfig::send_queue`] messages and
//! [`HubConfig::send_queue_bytes`] bytes; a subscriber that falls that far behind is dropped
//! (closed with 1013), never buffered without end. Subscriptions per connection and per
//! channel, incoming message size, and the time and size of a publish request's body are
//! capped too.

use crate::live::authorize::allows_channel;
use crate::live::channel::{normalize_channel, session_channel};
use crate::live::publish::{LiveEvent, MAX_EVENT_BYTES, PublishError, Publisher};
use crate::live::token::{Claims, TokenError, TokenSecrets, unix_now};
use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

/// The WebSocket subprotocol of AppSync Events.
pub const SUBPROTOCOL: &str = "aws-appsync-event-ws";
/// The prefix of the authorization subprotocol.
pub const HEADER_PREFIX: &str = "header-";
/// AppSync HTTP publish: "You can publish up to 5 events in a batch."
pub const MAX_PUBLISH_BATCH: usize = 5;
/// Subscriptions to one channel on one connection. A page renewing its token subscribes again
/// before it unsubscribes the old one, on the same socket (Amplify's Events client keeps one),
/// so two overlap for a moment; more would only copy each event again.
pub const MAX_SUBSCRIPTIONS_PER_CHANNEL: usize = 2;
/// The largest `POST /event` body: a full batch of the largest events, each a JSON string
/// whose escaping at most doubles it, and the rest of the request.
pub const MAX_PUBLISH_BODY_BYTES: usize = 2 * MAX_PUBLISH_BATCH * MAX_EVENT_BYTES + 4 * 1024;
/// How long a `POST /event` body may take to arrive.
pub const PUBLISH_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the hub waits for the client's answer to its close frame, so the connection ends
/// with a close handshake rather than a reset that could swallow the last message.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

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
    /// How long a new connection may take to send `connection_init`.
    pub init_timeout: Duration,
    /// Messages waiting for one connection before it is dropped as too slow.
    pub send_queue: usize,
    /// Bytes waiting for one connection before it is dropped as too slow (the count alone
    /// would let 256 events of 240 KB wait).
    pub send_queue_bytes: usize,
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
            // AppSync documents no deadline of its own; its Amplify client gives the handshake
            // 15 s ("ack from AWSRealTime was not received on 15000 ms"), so a client that
            // has not sent connection_init by then has given up anyway.
            init_timeout: Duration::from_secs(15),
            send_queue: 256,
            // Eight of the largest data messages (an event of 240 KB, escaped in `event`).
            send_queue_bytes: 4 * 1024 * 1024,
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
    /// Bytes in `outbox`: added when a message is queued, taken off when it is sent.
    queued_bytes: AtomicUsize,
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
        let max_bytes = self.config.send_queue_bytes;
        subscribers.retain(|s| {
            let message = json!({"type": "data", "id": s.subscription_id, "event": payload});
            let message = message.to_string();
            let size = message.len();
            let queued = &s.connection.queued_bytes;
            let too_slow = || {
                queued.fetch_sub(size, Ordering::Relaxed);
                self.dropped_slow.fetch_add(1, Ordering::Relaxed);
                s.connection.kicked.notify_one();
                false
            };
            if queued.fetch_add(size, Ordering::Relaxed) + size > max_bytes {
                return too_slow();
            }
            match s.connection.outbox.try_send(message) {
                Ok(()) => {
                    delivered += 1;
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => too_slow(),
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    queued.fetch_sub(size, Ordering::Relaxed);
                    false
                }
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
/// closes, the hub drops it, or it does not send `connection_init` in time.
async fn serve(hub: Arc<Hub>, mut socket: WebSocket, authorized: Result<Claims, TokenError>) {
    let send_timeout = hub.config.send_timeout;
    let (outbox, mut inbox) = mpsc::channel::<String>(hub.config.send_queue.max(1));
    let connection = Arc::new(Connection {
        id: hub.next_connection.fetch_add(1, Ordering::Relaxed),
        outbox,
        queued_bytes: AtomicUsize::new(0),
        kicked: Notify::new(),
    });
    // subscription id → channel, for unsubscribe and the cleanup at the end.
    let mut subscriptions: HashMap<String, String> = HashMap::new();
    let mut acked = false;
    let mut keep_alive = tokio::time::interval(hub.config.keep_alive);
    keep_alive.tick().await;
    let init_deadline = tokio::time::sleep(hub.config.init_timeout);
    tokio::pin!(init_deadline);
    let close_reason: Option<(u16, String)> = loop {
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
                    // Refused at connect, told in answer to the client's first message (its
                    // connection_init): Amplify reads a connection_error only once it has sent
                    // that, and a refusal sent earlier reaches it as a bare close. A client
                    // that never speaks is refused at the init deadline below.
                    break Some(refuse(&mut socket, UNAUTHORIZED, &refusal.to_string(), send_timeout).await);
                }
                handle(&hub, &connection, &mut subscriptions, &mut acked, &text)
            }
            Some(message) = inbox.recv() => {
                connection.queued_bytes.fetch_sub(message.len(), Ordering::Relaxed);
                Some(message)
            }
            _ = keep_alive.tick(), if acked => Some(json!({"type": "ka"}).to_string()),
            _ = connection.kicked.notified() => break Some((1013, "too slow: events were dropped; reconnect".into())),
            () = &mut init_deadline, if !acked => {
                let why = format!("no connection_init within {} s of connecting", hub.config.init_timeout.as_secs_f32());
                break Some(match &authorized {
                    Err(refusal) => refuse(&mut socket, UNAUTHORIZED, &refusal.to_string(), send_timeout).await,
                    Ok(_) => refuse(&mut socket, BAD_REQUEST, &why, send_timeout).await,
                });
            }
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
        close(&mut socket, code, reason, send_timeout).await;
    }
    tracing::debug!(connection = connection.id, "live connection closed");
}

/// Sends a `connection_error` of `kind` saying `why`; the close (1008) that follows is the
/// caller's.
async fn refuse(
    socket: &mut WebSocket,
    kind: &str,
    why: &str,
    send_timeout: Duration,
) -> (u16, String) {
    let message = json!({"type": "connection_error", "errors": errors(kind, why)});
    let _ = tokio::time::timeout(send_timeout, send_text(socket, message)).await;
    let reason = if kind == UNAUTHORIZED {
        "unauthorized"
    } else {
        why
    };
    (1008, reason.to_owned())
}

async fn send_text(socket: &mut WebSocket, message: Value) -> Result<(), axum::Error> {
    socket.send(Message::Text(message.to_string().into())).await
}

/// Sends a close frame, then waits (at most [`CLOSE_WAIT`]) for the client's: a socket
/// dropped with the client's last message unread answers it with a reset, which can make the
/// client lose what the hub sent just before.
async fn close(socket: &mut WebSocket, code: u16, reason: String, send_timeout: Duration) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let sent = tokio::time::timeout(send_timeout, socket.send(Message::Close(Some(frame)))).await;
    if matches!(sent, Ok(Ok(()))) {
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while let Some(Ok(_)) = socket.recv().await {}
        })
        .await;
    }
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
    let on_channel = subscriptions.values().filter(|c| **c == channel).count();
    if on_channel >= MAX_SUBSCRIPTIONS_PER_CHANNEL {
        return Err((
            BAD_REQUEST,
            format!(
                "this connection already has {on_channel} subscriptions to {channel}: at most {MAX_SUBSCRIPTIONS_PER_CHANNEL} per channel (one more while a token is renewed); unsubscribe one first"
            ),
        ));
    }
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

/// `POST /event`: `{"channel": "/ns/seg", "events": ["<JSON text>", …]}` with a token in
/// `Authorization`. Checked as AppSync checks it (token, body, channel, 1 to 5 events, each
/// JSON text of at most [`MAX_EVENT_BYTES`]), then refused: a live token lets a page
/// subscribe, never publish (see the module doc).
async fn http_publish(State(hub): State<Arc<Hub>>, headers: HeaderMap, body: Body) -> Response {
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
    if let Err(e) = hub.secrets.verify(token, unix_now()) {
        return refuse(StatusCode::UNAUTHORIZED, UNAUTHORIZED, e.to_string());
    }
    let read = axum::body::to_bytes(body, MAX_PUBLISH_BODY_BYTES);
    let body = match tokio::time::timeout(PUBLISH_BODY_TIMEOUT, read).await {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                BAD_REQUEST,
                format!("the body is over {MAX_PUBLISH_BODY_BYTES} bytes"),
            );
        }
        Err(_) => {
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                BAD_REQUEST,
                format!(
                    "the body did not arrive within {} s",
                    PUBLISH_BODY_TIMEOUT.as_secs()
                ),
            );
        }
    };
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            BAD_REQUEST,
            "the body is not JSON".into(),
        );
    };
    if request
        .get("channel")
        .and_then(Value::as_str)
        .and_then(normalize_channel)
        .is_none()
    {
        return refuse(
            StatusCode::BAD_REQUEST,
            BAD_REQUEST,
            "channel must be a path like /namespace/session".into(),
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
    if let Some((index, event)) = events
        .iter()
        .enumerate()
        .find(|(_, e)| e.len() > MAX_EVENT_BYTES)
    {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            BAD_REQUEST,
            format!(
                "event {index} is {} bytes: AppSync Events takes at most {MAX_EVENT_BYTES} bytes per event",
                event.len()
            ),
        );
    }
    refuse(
        StatusCode::FORBIDDEN,
        UNAUTHORIZED,
        "a live token lets a page subscribe, never publish: on AWS publishing is IAM-only (the relay's ingest role), and relay local publishes every event ingest accepts itself".into(),
    )
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
            queued_bytes: AtomicUsize::new(0),
            kicked: Notify::new(),
        });
        (connection, inbox)
    }

    #[tokio::test]
    async fn a_subscriber_over_its_byte_budget_is_dropped_though_its_count_is_not_reached() {
        let big = format!(r#"{{"text":"{}"}}"#, "x".repeat(10_000));
        let hub = Hub::new(
            HubConfig {
                send_queue: 256,
                // Room for two messages of `big`, not three.
                send_queue_bytes: 25_000,
                ..HubConfig::default()
            },
            TokenSecrets::parse(SECRET).unwrap(),
        );
        let (slow, _never_read) = connection(&hub, 256);
        let (fast, mut read) = connection(&hub, 256);
        hub.subscribe(&slow, "/relay/default", "s1");
        hub.subscribe(&fast, "/relay/default", "f1");
        assert_eq!(hub.publish("/relay/default", &big), 2);
        // The fast one's loop takes its message off the queue (and off its byte count).
        let taken = read.recv().await.unwrap();
        fast.queued_bytes.fetch_sub(taken.len(), Ordering::Relaxed);
        assert_eq!(hub.publish("/relay/default", &big), 2);
        assert_eq!(
            hub.publish("/relay/default", &big),
            1,
            "the slow one is over"
        );
        assert_eq!(hub.dropped_slow(), 1);
        assert_eq!(hub.subscriptions(), 1);
        assert!(slow.queued_bytes.load(Ordering::Relaxed) <= 25_000);
        tokio::time::timeout(Duration::from_secs(5), slow.kicked.notified())
            .await
            .expect("the slow connection is told to close");
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
            sessions: vec!["default".into(), "sales.team".into()],
            exp: u64::MAX,
            iat: None,
            nbf: None,
        };
        assert!(hub.allowed(&claims, "/relay/default"));
        assert!(hub.allowed(&claims, &session_channel("relay", "sales.team")));
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
