//! A page's end of the live channel, spoken as AppSync Events' clients speak it: the
//! WebSocket at `/event/realtime` opened with both subprotocols (`aws-appsync-event-ws` and
//! `header-<base64url of the authorization>`), then `connection_init` and `subscribe`. Used by
//! the live tests and by the live benchmark, so both see what a browser sees.

use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens `ws://{host}/event/realtime` offering both subprotocols, `token` as the
/// authorization; returns the socket and the handshake's answer (which names the protocol).
pub async fn open(host: &str, token: &str) -> Result<(Socket, Response), tungstenite::Error> {
    let auth = json!({"Authorization": token, "host": host});
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(auth.to_string());
    let mut request = format!("ws://{host}/event/realtime").into_client_request()?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(&format!("aws-appsync-event-ws, header-{header}"))
            .expect("base64url is a valid header value"),
    );
    tokio_tungstenite::connect_async(request).await
}

/// Sends one JSON message.
pub async fn send(socket: &mut Socket, message: Value) -> Result<(), tungstenite::Error> {
    socket.send(Message::Text(message.to_string().into())).await
}

/// The next JSON text message within `wait`, skipping keep-alives (`ka`); `None` when the
/// connection closed, failed or stayed silent.
pub async fn next(socket: &mut Socket, wait: Duration) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(wait, socket.next())
            .await
            .ok()??
            .ok()?;
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(text.as_str()).ok()?;
            if value["type"] != "ka" {
                return Some(value);
            }
        }
    }
}

/// Opens, `connection_init`, `subscribe` to `channel`: the socket once `subscribe_success`
/// came back, else what came instead.
pub async fn subscribed(
    host: &str,
    token: &str,
    channel: &str,
    wait: Duration,
) -> Result<Socket, String> {
    let (mut socket, _) = open(host, token).await.map_err(|e| e.to_string())?;
    let step = |what: &str, got: Option<Value>| format!("{what}: got {got:?}");
    send(&mut socket, json!({"type": "connection_init"}))
        .await
        .map_err(|e| e.to_string())?;
    let ack = next(&mut socket, wait).await;
    if ack.as_ref().is_none_or(|a| a["type"] != "connection_ack") {
        return Err(step("expected connection_ack", ack));
    }
    send(
        &mut socket,
        json!({"type": "subscribe", "id": "page", "channel": channel, "authorization": {"Authorization": token, "host": host}}),
    )
    .await
    .map_err(|e| e.to_string())?;
    let answer = next(&mut socket, wait).await;
    if answer
        .as_ref()
        .is_none_or(|a| a["type"] != "subscribe_success")
    {
        return Err(step("expected subscribe_success", answer));
    }
    Ok(socket)
}

/// A Lambda authorizer request as AppSync Events sends it for `operation` (`EVENT_CONNECT`,
/// `EVENT_SUBSCRIBE`, `EVENT_PUBLISH`); `channel` is `/<namespace>/<segment>`, absent for a
/// connect.
pub fn authorizer_request(token: &str, operation: &str, channel: Option<&str>) -> Value {
    let namespace = channel.and_then(|c| c.trim_start_matches('/').split('/').next());
    json!({
        "authorizationToken": token,
        "requestContext": {
            "apiId": "aaaaaa123123123example123",
            "accountId": "111122223333",
            "requestId": "f4081827-1111-4444-5555-5cf4695f339f",
            "operation": operation,
            "channelNamespaceName": namespace,
            "channel": channel,
        },
        "requestHeaders": {"host": "abc.appsync-realtime-api.us-east-1.amazonaws.com"},
    })
}
