//! What the benchmarks send: `message` envelopes of an exact size (padding goes inside
//! `data.message.content`), Standard Webhooks headers signed now, and the exact events the
//! Lambda Runtime API hands the binaries — an API Gateway HTTP API v2 request for ingest and
//! an SQS FIFO batch for the dispatcher, with every field Lambda sends — and the AppSync Events
//! authorization request for the live authorizer.

use axum::body::Body;
use axum::http::{HeaderValue, Request};
use relay_shared::clock::{unix_millis, unix_seconds};
use relay_shared::envelope::examples;
use relay_shared::signature::SecretSet;
use serde_json::{Value, json};

pub use relay_tests::{INGEST_SECRET, WEBHOOK_SECRET};

/// The size of a typical chat `message` event (docs/contract.md's example with a short text).
pub const TYPICAL_BYTES: usize = 300;

/// Distinct chats the load spreads over: one FIFO group per chat, as real traffic has.
pub const CHATS: usize = 1000;

/// Text that needs no JSON escaping, cycled to pad `content`.
const FILLER: &[u8] = b"Oi, tudo bem? Chego amanha de manha com os documentos. ";

/// A `message` envelope (docs/contract.md's example) of exactly `size` bytes, or the smallest
/// possible when `size` is below it. `id` becomes the event id, the FIFO deduplication id and
/// the `webhook-id` of the delivery; `chat` picks the peer, hence the FIFO group.
pub fn envelope(id: &str, chat: usize, size: usize) -> String {
    envelope_in_session(None, id, chat, size)
}

/// [`envelope`] in `session` (the envelope's `session` field; `None`: the default session).
pub fn envelope_in_session(session: Option<&str>, id: &str, chat: usize, size: usize) -> String {
    let peer = peer(chat);
    let with = |content: &str| {
        let envelope = examples::incoming("3EB0C767D097B7C7C030", &peer, content).with_id(id);
        match session {
            Some(session) => envelope.with_session(session),
            None => envelope,
        }
        .to_json()
    };
    // FILLER needs no JSON escaping: each byte of content is one byte of body.
    let pad = size.saturating_sub(with("").len());
    let content: String = FILLER
        .iter()
        .cycle()
        .take(pad)
        .map(|&b| b as char)
        .collect();
    with(&content)
}

/// The WhatsApp id of chat number `chat`.
fn peer(chat: usize) -> String {
    format!("5511{chat:09}@c.us")
}

/// The key naming chats in group ids (`CHAT_ID_KEY`) in every benchmark.
pub fn chat_id_key() -> relay_shared::envelope::ChatIdKey {
    relay_shared::envelope::ChatIdKey::new("bench-chat-id-key-0123456789abcdef")
        .expect("a valid chat id key")
}

/// The FIFO group ingest derives for [`envelope`]`(_, chat, _)`.
pub fn group_of(chat: usize) -> String {
    chat_id_key().chat_group("default", &peer(chat))
}

/// Event ids of fixed width, so envelopes of one size stay exactly that size.
pub fn event_id(prefix: &str, index: usize) -> String {
    format!("{prefix}-{index:07}")
}

/// The index back from an [`event_id`] (the receiver keys arrivals by it).
pub fn index_of(event_id: &str) -> Option<usize> {
    event_id.rsplit_once('-')?.1.parse().ok()
}

/// `Content-Type` and the three Standard Webhooks headers, signed with `secrets` now.
pub fn signed_header_pairs(
    secrets: &SecretSet,
    id: &str,
    body: &str,
) -> Vec<(&'static str, String)> {
    let mut headers = vec![("content-type", "application/json".to_owned())];
    headers.extend(secrets.headers(id, unix_seconds(), body));
    headers
}

/// `POST /events` as the router receives it.
pub fn ingest_request(headers: &[(&'static str, String)], body: String) -> Request<Body> {
    let mut request = Request::post("/events")
        .body(Body::from(body))
        .expect("a valid request");
    for (name, value) in headers {
        request
            .headers_mut()
            .insert(*name, HeaderValue::from_str(value).expect("ASCII header"));
    }
    request
}

/// An API Gateway HTTP API (payload v2.0) event for `POST /events`, as Lambda delivers it.
pub fn apigw_v2_event(request_id: &str, headers: &[(&'static str, String)], body: &str) -> Value {
    let mut all = json!({
        "accept": "application/json, text/plain, */*",
        "content-length": body.len().to_string(),
        "host": "abc123def4.execute-api.us-east-1.amazonaws.com",
        "user-agent": "axios/1.7.9",
        "x-amzn-trace-id": "Root=1-6766f5d4-1b2c3d4e5f60718293a4b5c6",
        "x-forwarded-for": "203.0.113.7",
        "x-forwarded-port": "443",
        "x-forwarded-proto": "https",
    });
    for (name, value) in headers {
        all[*name] = json!(value);
    }
    let now = unix_millis();
    json!({
        "version": "2.0",
        "routeKey": "POST /events",
        "rawPath": "/events",
        "rawQueryString": "",
        "headers": all,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123def4",
            "domainName": "abc123def4.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc123def4",
            "http": {
                "method": "POST",
                "path": "/events",
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "axios/1.7.9"
            },
            "requestId": request_id,
            "routeKey": "POST /events",
            "stage": "$default",
            "time": "21/Dec/2025:18:02:52 +0000",
            "timeEpoch": now
        },
        "body": body,
        "isBase64Encoded": false
    })
}

/// One SQS FIFO record as the event source mapping builds it.
pub struct Record {
    pub body: String,
    pub group: String,
    pub dedup_id: String,
}

/// An SQS event (`Records`) for the dispatcher, first receive of every message.
pub fn sqs_event(tag: &str, records: &[Record]) -> Value {
    let now = unix_millis().to_string();
    let records: Vec<Value> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            json!({
                "messageId": format!("0e7f1c2a-{tag}-{i:04}-8d3b-5f6a7b8c9d0e"),
                "receiptHandle": format!("AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a{tag}{i:04}Ypa+zQ=="),
                "body": r.body,
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": now,
                    "SequenceNumber": format!("18849496460467696{i:04}"),
                    "MessageGroupId": r.group,
                    "SenderId": "AROAIWPX5BD2BHG722MW4:ingest",
                    "MessageDeduplicationId": r.dedup_id,
                    "ApproximateFirstReceiveTimestamp": now
                },
                "messageAttributes": {},
                "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:chat-relay.fifo",
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    json!({ "Records": records })
}

/// `count` typical events for the dispatcher: in `groups` distinct chats, round robin.
pub fn records(prefix: &str, count: usize, groups: usize, size: usize) -> Vec<Record> {
    (0..count)
        .map(|i| {
            let id = event_id(prefix, i);
            Record {
                body: envelope(&id, i % groups, size),
                group: group_of(i % groups),
                dedup_id: id,
            }
        })
        .collect()
}

/// The typed event, for calling `Dispatcher::handle_batch` in-process.
pub fn typed_sqs_event(tag: &str, records: &[Record]) -> aws_lambda_events::sqs::SqsEvent {
    serde_json::from_value(sqs_event(tag, records)).expect("the SQS event deserializes")
}

/// The secret live tokens are signed with (`LIVE_TOKEN_SECRETS`) in the benchmarks.
pub const LIVE_TOKEN_SECRET: &str = "bench-live-token-secret-0123456789abcdef";

/// AppSync Events' request to a Lambda authorizer for a page connecting with a live token for
/// the `default` session, minted now.
pub fn live_connect_event(request_id: &str) -> Value {
    let token = relay_shared::live::token::TokenSecrets::parse(LIVE_TOKEN_SECRET)
        .expect("bench live token secret")
        .mint(
            "bench",
            &["default".to_owned()],
            std::time::Duration::from_secs(300),
            relay_shared::live::token::unix_now(),
        )
        .expect("a live token");
    json!({
        "authorizationToken": token,
        "requestContext": {
            "apiId": "aaaaaa123123123example123",
            "accountId": "111122223333",
            "requestId": request_id,
            "operation": "EVENT_CONNECT",
            "channelNamespaceName": null,
            "channel": null,
        },
        "requestHeaders": {},
    })
}

/// The ingest secret set, parsed once.
pub fn ingest_secrets() -> SecretSet {
    SecretSet::parse(INGEST_SECRET).expect("bench ingest secret")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_have_the_exact_size_and_validate() {
        for size in [TYPICAL_BYTES, 1024, 65_536, 1_048_575] {
            let body = envelope(&event_id("t", 3), 3, size);
            assert_eq!(body.len(), size);
            let value: Value = serde_json::from_str(&body).unwrap();
            let routing =
                relay_shared::envelope::validate(&value, body.as_bytes(), &chat_id_key()).unwrap();
            assert_eq!(routing.group_id, group_of(3));
            assert_eq!(routing.event_id, "t-0000003");
        }
        assert_eq!(index_of("ld-1-0000042"), Some(42));
    }
}
