//! The wire contract (docs/contract.md, The envelope): the envelope chat-whatsapp sends and
//! chatbot-atimo receives, its validation (the JSON path of the first offending field and what was
//! expected), and the ids derived from it: the event id (idempotency / FIFO deduplication) and the
//! FIFO group id (ordering).
//!
//! The relay never re-serialises an envelope: the body is validated here and then stored and
//! delivered byte for byte, so unknown extra fields always reach the receiver. The typed
//! payloads below keep unknown fields too (`extra`), for code that builds or reads envelopes.

use crate::queue::MAX_ID_LEN;
use crate::strict_json::RepeatedKey;
use aws_lc_rs::hmac;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Session name used when the envelope has none (the seed runs one WhatsApp session).
pub const DEFAULT_SESSION: &str = "default";
/// Session names are part of every group id; keep them short enough to leave room for the peer.
pub const MAX_SESSION_LEN: usize = 64;

/// The three event types chat-whatsapp emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    Status,
    Qr,
    Message,
}

impl EventType {
    pub const ALL: [EventType; 3] = [EventType::Status, EventType::Qr, EventType::Message];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Status => "status",
            EventType::Qr => "qr",
            EventType::Message => "message",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A typed envelope, for code that builds or reads events (samples, tests, consumers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    #[serde(flatten)]
    pub payload: Payload,
    pub timestamp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `event` + `data`, by event type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", content = "data", rename_all = "lowercase")]
pub enum Payload {
    Status(StatusData),
    Qr(QrData),
    Message(MessageData),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusData {
    pub connected: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authenticated: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_info: Option<ClientInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qr_available: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientInfo {
    pub wid: String,
    pub pushname: String,
    pub platform: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QrData {
    /// A PNG data URL: a login credential, never logged.
    pub qr: String,
    pub available: bool,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageData {
    pub message: ChatMessage,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub id: String,
    pub from: String,
    pub to: String,
    /// Message text: personal data, never logged.
    pub content: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub direction: Direction,
    pub timestamp: String,
    pub status: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Incoming,
    Outgoing,
}

/// What ingest needs from a valid envelope to store it: the type, the event id and the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    pub event_type: EventType,
    pub event_id: String,
    pub group_id: String,
}

/// The first rule an envelope breaks: where (a dotted JSON path) and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {expected}")]
pub struct SchemaViolation {
    /// Dotted path of the offending field, e.g. `data.message.direction`; `body` for the root.
    pub path: String,
    /// What the field must be, and what was found.
    pub expected: String,
}

impl SchemaViolation {
    fn new(path: impl Into<String>, expected: impl Into<String>) -> Self {
        SchemaViolation {
            path: path.into(),
            expected: expected.into(),
        }
    }

    /// The same violation inside item `index` of a batch: `[2].data.qr`, `[2]` for the item.
    pub fn at_batch_index(self, index: usize) -> Self {
        let path = match self.path.as_str() {
            "body" => format!("[{index}]"),
            inner => format!("[{index}].{inner}"),
        };
        SchemaViolation { path, ..self }
    }
}

impl From<RepeatedKey> for SchemaViolation {
    fn from(repeat: RepeatedKey) -> Self {
        SchemaViolation::new(
            repeat.path,
            "expected each key once per object, found it again (JSON parsers disagree on which copy counts)",
        )
    }
}

/// The key of the hash that stands for a chat's peer in group ids (`CHAT_ID_KEY`).
///
/// The peer of a chat is a phone number (`5511999990000@c.us`), and the group id is logged on
/// every request and attempt, shown by the SQS console and kept in CloudWatch. So the group
/// carries HMAC-SHA256(key, peer) instead: one stable group per chat, which nobody holding
/// the logs can reverse without the key. (A plain SHA-256 would not do: there are few enough
/// phone numbers to hash them all in hours.)
///
/// It is its own key, read only by ingest, and never rotated with the signing secrets: a new
/// key renames every chat's group, and a chat's messages still queued under the old name would
/// no longer be ordered with its new ones. Rotate it only with the queue empty.
pub struct ChatIdKey(hmac::Key);

/// Why a `CHAT_ID_KEY` was refused; never quotes the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatIdKeyError {
    #[error(
        "is {chars} characters long: use a random string of at least {} characters, e.g. the output of `openssl rand -base64 32`",
        ChatIdKey::MIN_CHARS
    )]
    TooShort { chars: usize },
}

impl ChatIdKey {
    /// 32 characters of a random base64 string carry over 190 bits: past any brute force.
    pub const MIN_CHARS: usize = 32;

    /// The key from its configured text (its UTF-8 bytes are the HMAC key).
    pub fn new(text: &str) -> Result<Self, ChatIdKeyError> {
        let chars = text.chars().count();
        if chars < Self::MIN_CHARS {
            return Err(ChatIdKeyError::TooShort { chars });
        }
        Ok(ChatIdKey(hmac::Key::new(
            hmac::HMAC_SHA256,
            text.as_bytes(),
        )))
    }

    /// A fresh random key, for a queue that lives no longer than the process holding it.
    pub fn random() -> Self {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .expect("the system random generator is available");
        ChatIdKey(key)
    }

    /// `{session}:chat:{hash}`, the hash being the first 128 bits of HMAC-SHA256(key, peer) in
    /// hex: 32 characters, within SQS's group-id alphabet, and with a session of at most
    /// [`MAX_SESSION_LEN`] the whole id stays under [`MAX_ID_LEN`].
    pub fn chat_group(&self, session: &str, peer: &str) -> String {
        let tag = hmac::sign(&self.0, peer.as_bytes());
        format!("{session}:chat:{}", hex_prefix(tag.as_ref(), 16))
    }
}

impl fmt::Debug for ChatIdKey {
    // Never print key material, not even in a debug dump.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChatIdKey(..)")
    }
}

/// Validates a parsed envelope (docs/contract.md, The envelope) and derives its routing ids.
///
/// `raw` is the exact body the value was parsed from; it feeds the derived event id.
/// `chat_ids` names chats in group ids (see [`ChatIdKey`]).
pub fn validate(
    value: &Value,
    raw: &[u8],
    chat_ids: &ChatIdKey,
) -> Result<Routing, SchemaViolation> {
    let root = value.as_object().ok_or_else(|| {
        SchemaViolation::new(
            "body",
            expected("a JSON object (the event envelope)", value),
        )
    })?;
    let event_name = required(root, "", "event")?;
    let event_type = event_name
        .as_str()
        .and_then(EventType::parse)
        .ok_or_else(|| {
            SchemaViolation::new(
                "event",
                expected(r#"one of "status", "qr", "message""#, event_name),
            )
        })?;
    let timestamp = required(root, "", "timestamp")?;
    check_rfc3339("timestamp", timestamp)?;
    let session = optional_str(root, "", "session")?.unwrap_or(DEFAULT_SESSION);
    check_sqs_id("session", session, MAX_SESSION_LEN)?;
    let sender_id = optional_str(root, "", "id")?;
    if let Some(id) = sender_id {
        check_sqs_id("id", id, MAX_ID_LEN)?;
    }

    let data = required(root, "", "data")?;
    let data = object("data", data)?;
    let group_id = match event_type {
        EventType::Status => {
            validate_status(data)?;
            status_group(session)
        }
        EventType::Qr => {
            required_bool(data, "data", "available")?;
            required_str(data, "data", "qr")?;
            status_group(session)
        }
        EventType::Message => chat_ids.chat_group(session, validate_message(data)?),
    };
    let event_id = event_id(sender_id, raw);
    Ok(Routing {
        event_type,
        event_id,
        group_id,
    })
}

fn validate_status(data: &Map<String, Value>) -> Result<(), SchemaViolation> {
    required_bool(data, "data", "connected")?;
    optional_bool(data, "data", "authenticated")?;
    optional_str(data, "data", "error")?;
    optional_str(data, "data", "reason")?;
    optional_bool(data, "data", "qrAvailable")?;
    if let Some(info) = data.get("clientInfo").filter(|v| !v.is_null()) {
        let info = object("data.clientInfo", info)?;
        for field in ["wid", "pushname", "platform"] {
            required_str(info, "data.clientInfo", field)?;
        }
    }
    Ok(())
}

/// Validates a `message` payload and returns the peer: the other party of the chat.
fn validate_message(data: &Map<String, Value>) -> Result<&str, SchemaViolation> {
    let message = object("data.message", required(data, "data", "message")?)?;
    const AT: &str = "data.message";
    for field in ["id", "content", "type", "status"] {
        required_str(message, AT, field)?;
    }
    let from = required_str(message, AT, "from")?;
    let to = required_str(message, AT, "to")?;
    let direction = required(message, AT, "direction")?;
    let peer = match direction.as_str() {
        Some("incoming") => from,
        Some("outgoing") => to,
        _ => {
            return Err(SchemaViolation::new(
                "data.message.direction",
                expected(r#""incoming" or "outgoing""#, direction),
            ));
        }
    };
    check_rfc3339(
        "data.message.timestamp",
        required(message, AT, "timestamp")?,
    )?;
    Ok(peer)
}

fn status_group(session: &str) -> String {
    format!("{session}:status")
}

/// The one rule for an event's id, used by ingest ([`validate`]) and the dispatcher
/// ([`probe`]) alike: the sender's `id`, else the hash of the body.
fn event_id(sender_id: Option<&str>, raw: &[u8]) -> String {
    sender_id.map_or_else(|| derived_event_id(raw), str::to_owned)
}

/// Event id for an envelope without `id`: a hash of the exact body, so a sender retrying the
/// same body produces the same id and SQS deduplicates it.
pub fn derived_event_id(raw: &[u8]) -> String {
    format!("evt_{}", hex_prefix(sha256(raw).as_ref(), 16))
}

fn sha256(bytes: &[u8]) -> aws_lc_rs::digest::Digest {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
}

/// What the dispatcher reads from a stored body: its type (for logs and metrics) and its
/// event id (the sender's `id`, else the derived one). The id comes from the body, not from
/// queue attributes, so it stays the same `webhook-id` whatever path the message took
/// (a redrive gives the copy a new deduplication id).
///
/// It reads only the top-level `event` and `id`, skipping the rest without building it. It
/// agrees with [`validate`] on every body ingest accepts: both compare keys unescaped, both
/// read a `null` id as absent, and ingest refuses any body with a repeated key, the one case
/// where parsers disagree (serde's derive refuses it, `serde_json::Value` keeps the last).
pub fn probe(raw: &[u8]) -> (Option<EventType>, String) {
    #[derive(Deserialize)]
    struct Probe {
        event: Option<String>,
        id: Option<String>,
    }
    let probe = serde_json::from_slice::<Probe>(raw).ok();
    let event_type = probe
        .as_ref()
        .and_then(|p| p.event.as_deref())
        .and_then(EventType::parse);
    let id = event_id(probe.as_ref().and_then(|p| p.id.as_deref()), raw);
    (event_type, id)
}

/// The event id of a stored body; see [`probe`].
pub fn event_id_of(raw: &[u8]) -> String {
    probe(raw).1
}

fn hex_prefix(bytes: &[u8], take: usize) -> String {
    bytes
        .iter()
        .take(take)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// SQS allows alphanumerics and ASCII punctuation in group and deduplication ids.
fn is_sqs_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c.is_ascii_punctuation()
}

fn check_sqs_id(path: &str, value: &str, max_len: usize) -> Result<(), SchemaViolation> {
    if value.is_empty() || value.len() > max_len || !value.chars().all(is_sqs_id_char) {
        return Err(SchemaViolation::new(
            path,
            format!(
                "expected 1 to {max_len} ASCII letters, digits or punctuation (no spaces), found {}",
                describe_str(value)
            ),
        ));
    }
    Ok(())
}

fn check_rfc3339(path: &str, value: &Value) -> Result<(), SchemaViolation> {
    let ok = value
        .as_str()
        .is_some_and(|s| OffsetDateTime::parse(s, &Rfc3339).is_ok());
    if ok {
        Ok(())
    } else {
        Err(SchemaViolation::new(
            path,
            expected(
                r#"an RFC 3339 date-time such as "2025-12-21T18:22:44.850Z""#,
                value,
            ),
        ))
    }
}

fn join(at: &str, field: &str) -> String {
    if at.is_empty() {
        field.to_owned()
    } else {
        format!("{at}.{field}")
    }
}

fn required<'a>(
    obj: &'a Map<String, Value>,
    at: &str,
    field: &str,
) -> Result<&'a Value, SchemaViolation> {
    obj.get(field)
        .ok_or_else(|| SchemaViolation::new(join(at, field), "required field is missing"))
}

fn object<'a>(path: &str, value: &'a Value) -> Result<&'a Map<String, Value>, SchemaViolation> {
    value
        .as_object()
        .ok_or_else(|| SchemaViolation::new(path, expected("an object", value)))
}

fn required_str<'a>(
    obj: &'a Map<String, Value>,
    at: &str,
    field: &str,
) -> Result<&'a str, SchemaViolation> {
    let value = required(obj, at, field)?;
    value
        .as_str()
        .ok_or_else(|| SchemaViolation::new(join(at, field), expected("a string", value)))
}

fn required_bool(obj: &Map<String, Value>, at: &str, field: &str) -> Result<bool, SchemaViolation> {
    let value = required(obj, at, field)?;
    value
        .as_bool()
        .ok_or_else(|| SchemaViolation::new(join(at, field), expected("true or false", value)))
}

/// An optional field may be absent or `null`; otherwise it must have its type.
fn optional_str<'a>(
    obj: &'a Map<String, Value>,
    at: &str,
    field: &str,
) -> Result<Option<&'a str>, SchemaViolation> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(SchemaViolation::new(
            join(at, field),
            expected("a string", other),
        )),
    }
}

fn optional_bool(obj: &Map<String, Value>, at: &str, field: &str) -> Result<(), SchemaViolation> {
    match obj.get(field) {
        None | Some(Value::Null | Value::Bool(_)) => Ok(()),
        Some(other) => Err(SchemaViolation::new(
            join(at, field),
            expected("true or false", other),
        )),
    }
}

/// "expected X, found Y" where Y names the JSON type, and shows short strings and numbers.
/// Values are shown only for scalars, and strings are cut, so a QR code or message text that
/// lands in the wrong field is not echoed back whole.
fn expected(what: &str, found: &Value) -> String {
    let found = match found {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => describe_str(s),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    };
    format!("expected {what}, found {found}")
}

fn describe_str(s: &str) -> String {
    const SHOWN: usize = 40;
    if s.chars().count() <= SHOWN {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(SHOWN).collect();
        format!("a {}-character string starting {head:?}", s.chars().count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The seed's own envelopes, one per whatsapp-web.js event.
    pub(crate) fn seeds() -> Vec<Value> {
        vec![
            json!({"event":"status","data":{"connected":true,"clientInfo":{"wid":"5511999990000@c.us","pushname":"Atimo","platform":"android"}},"timestamp":"2025-12-21T18:22:44.850Z"}),
            json!({"event":"status","data":{"connected":false,"authenticated":true},"timestamp":"2025-12-21T18:22:40.000Z"}),
            json!({"event":"status","data":{"connected":false,"error":"auth failure: bad session"},"timestamp":"2025-12-21T18:22:41.000Z"}),
            json!({"event":"status","data":{"connected":false,"reason":"LOGOUT","qrAvailable":false},"timestamp":"2025-12-21T18:22:42.000Z"}),
            json!({"event":"qr","data":{"qr":"data:image/png;base64,iVBORw0KGgo=","available":true},"timestamp":"2025-12-21T18:20:00.000Z"}),
            json!({"event":"message","data":{"message":{"id":"3EB0C767D097B7C7C030","from":"5511999990000@c.us","to":"bot","content":"Oi","type":"text","direction":"incoming","timestamp":"2025-12-21T18:02:52.836Z","status":"received"}},"timestamp":"2025-12-21T18:02:52.900Z"}),
            json!({"event":"message","data":{"message":{"id":"3EB0C767D097B7C7C031","from":"bot","to":"5511999990000@c.us","content":"Olá!","type":"text","direction":"outgoing","timestamp":"2025-12-21T18:02:53.100Z","status":"sent"}},"timestamp":"2025-12-21T18:02:53.200Z","session":"sales","id":"out-3EB0C767D097B7C7C031"}),
        ]
    }

    const KEY: &str = "test-chat-id-key-0123456789abcdef";

    fn key() -> ChatIdKey {
        ChatIdKey::new(KEY).unwrap()
    }

    fn check(value: &Value) -> Result<Routing, SchemaViolation> {
        validate(value, value.to_string().as_bytes(), &key())
    }

    fn violation(value: Value) -> SchemaViolation {
        check(&value).expect_err("envelope should be rejected")
    }

    #[test]
    fn every_seed_example_validates_and_round_trips_through_the_types() {
        for seed in seeds() {
            check(&seed).unwrap_or_else(|e| panic!("{seed}: {e}"));
            let typed: Envelope = serde_json::from_value(seed.clone()).unwrap();
            assert_eq!(serde_json::to_value(&typed).unwrap(), seed);
        }
    }

    #[test]
    fn unknown_fields_are_kept_by_the_types() {
        let value = json!({"event":"qr","data":{"qr":"data:x","available":true,"attempt":2},"timestamp":"2025-12-21T18:20:00Z","traceId":"t-1"});
        check(&value).unwrap();
        let typed: Envelope = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(typed.extra["traceId"], "t-1");
        assert_eq!(serde_json::to_value(&typed).unwrap(), value);
    }

    #[test]
    fn group_ids_follow_the_spec() {
        let s = seeds();
        assert_eq!(check(&s[0]).unwrap().group_id, "default:status");
        assert_eq!(
            check(&s[4]).unwrap().group_id,
            "default:status",
            "qr shares the status group"
        );
        let peer = "5511999990000@c.us";
        assert_eq!(
            check(&s[5]).unwrap().group_id,
            key().chat_group("default", peer),
            "incoming: peer is from"
        );
        assert_eq!(
            check(&s[6]).unwrap().group_id,
            key().chat_group("sales", peer),
            "outgoing: peer is to"
        );
    }

    /// The peer is a phone number: the group id carries a keyed hash of it, never the digits.
    #[test]
    fn a_chat_group_is_a_keyed_hash_of_the_peer() {
        let group = check(&seeds()[5]).unwrap().group_id;
        let hash = group.strip_prefix("default:chat:").expect(&group);
        assert_eq!(hash.len(), 32, "{group}");
        assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()), "{group}");
        assert!(!group.contains("99999"), "{group}");
        // HMAC-SHA256("test-chat-id-key-0123456789abcdef", "5511999990000@c.us"), first 16 bytes,
        // as `openssl dgst -sha256 -hmac` computes it.
        assert_eq!(hash, "f3168106a9d85208961723e0b0cc8afa");

        // One chat, one group: other messages, both directions; another key, other names.
        let mut other = seeds()[5].clone();
        other["data"]["message"]["content"] = json!("outra mensagem");
        assert_eq!(check(&other).unwrap().group_id, group);
        let mut reply = seeds()[6].clone();
        reply.as_object_mut().unwrap().remove("session");
        assert_eq!(check(&reply).unwrap().group_id, group);
        let rotated = ChatIdKey::new(&KEY.replace('0', "1")).unwrap();
        let raw = seeds()[5].to_string();
        assert_ne!(
            validate(&seeds()[5], raw.as_bytes(), &rotated)
                .unwrap()
                .group_id,
            group
        );
        assert_ne!(
            validate(&seeds()[5], raw.as_bytes(), &ChatIdKey::random())
                .unwrap()
                .group_id,
            group
        );
    }

    #[test]
    fn any_peer_gives_a_legal_sqs_group_id() {
        let longest_session = "s".repeat(MAX_SESSION_LEN);
        for peer in ["grupo da família", "", "😀", &"x".repeat(100_000)] {
            let group = key().chat_group(&longest_session, peer);
            assert!(group.len() <= MAX_ID_LEN, "{group}");
            assert!(group.chars().all(is_sqs_id_char), "{group}");
        }
    }

    #[test]
    fn a_short_chat_id_key_is_refused_without_echoing_it() {
        let short = "hunter2-but-longer-31-characters";
        let error = ChatIdKey::new(&short[..31]).unwrap_err();
        assert_eq!(error, ChatIdKeyError::TooShort { chars: 31 });
        assert!(!error.to_string().contains("hunter2"));
        assert!(error.to_string().contains("at least 32 characters"));
        assert!(ChatIdKey::new(short).is_ok());
        assert_eq!(format!("{:?}", key()), "ChatIdKey(..)");
    }

    #[test]
    fn event_id_is_the_senders_or_a_stable_hash_of_the_body() {
        let s = seeds();
        assert_eq!(check(&s[6]).unwrap().event_id, "out-3EB0C767D097B7C7C031");
        let raw = s[5].to_string();
        let id = validate(&s[5], raw.as_bytes(), &key()).unwrap().event_id;
        assert_eq!(id, derived_event_id(raw.as_bytes()));
        assert_eq!(id, event_id_of(raw.as_bytes()));
        assert!(id.starts_with("evt_") && id.len() == 36);
        let other = derived_event_id(format!("{raw} ").as_bytes());
        assert_ne!(id, other, "a different body is a different event");
    }

    #[test]
    fn each_kind_of_violation_names_its_path() {
        let msg = || seeds()[5].clone();
        let cases: Vec<(Value, &str, &str)> = vec![
            (json!([1]), "body", "expected a JSON object"),
            (
                json!({"data":{},"timestamp":"2025-12-21T18:20:00Z"}),
                "event",
                "required field is missing",
            ),
            (
                json!({"event":"typing","data":{},"timestamp":"2025-12-21T18:20:00Z"}),
                "event",
                r#"found "typing""#,
            ),
            (
                json!({"event":"qr","data":{"qr":"x","available":true}}),
                "timestamp",
                "required field is missing",
            ),
            (
                json!({"event":"qr","data":{"qr":"x","available":true},"timestamp":"yesterday"}),
                "timestamp",
                "RFC 3339",
            ),
            (
                json!({"event":"qr","data":[],"timestamp":"2025-12-21T18:20:00Z"}),
                "data",
                "expected an object, found an array",
            ),
            (
                json!({"event":"qr","data":{"available":true},"timestamp":"2025-12-21T18:20:00Z"}),
                "data.qr",
                "required field is missing",
            ),
            (
                json!({"event":"qr","data":{"qr":"x","available":"yes"},"timestamp":"2025-12-21T18:20:00Z"}),
                "data.available",
                r#"expected true or false, found "yes""#,
            ),
            (
                json!({"event":"status","data":{"authenticated":true},"timestamp":"2025-12-21T18:20:00Z"}),
                "data.connected",
                "required",
            ),
            (
                json!({"event":"status","data":{"connected":true,"clientInfo":{"wid":"1","pushname":"p"}},"timestamp":"2025-12-21T18:20:00Z"}),
                "data.clientInfo.platform",
                "required",
            ),
            (
                json!({"event":"status","data":{"connected":true,"reason":5},"timestamp":"2025-12-21T18:20:00Z"}),
                "data.reason",
                "expected a string, found the number 5",
            ),
            (
                json!({"event":"qr","data":{"qr":"x","available":true},"timestamp":"2025-12-21T18:20:00Z","session":"my session"}),
                "session",
                "no spaces",
            ),
            (
                json!({"event":"qr","data":{"qr":"x","available":true},"timestamp":"2025-12-21T18:20:00Z","id":""}),
                "id",
                "1 to 128",
            ),
            (
                json!({"event":"qr","data":{"qr":"x","available":true},"timestamp":"2025-12-21T18:20:00Z","id":7}),
                "id",
                "expected a string",
            ),
        ];
        for (value, path, fragment) in cases {
            let v = violation(value.clone());
            assert_eq!(v.path, path, "{value}");
            assert!(v.expected.contains(fragment), "{value}: {v}");
        }
        let mut m = msg();
        m["data"]["message"]["direction"] = json!("sideways");
        assert_eq!(
            violation(m).to_string(),
            r#"data.message.direction: expected "incoming" or "outgoing", found "sideways""#
        );
        let mut m = msg();
        m["data"]["message"].as_object_mut().unwrap().remove("to");
        assert_eq!(violation(m).path, "data.message.to");
        let mut m = msg();
        m["data"]["message"]["timestamp"] = json!(1766340172);
        assert_eq!(violation(m).path, "data.message.timestamp");
    }

    #[test]
    fn long_strings_are_not_echoed_back_in_errors() {
        let secret_qr = format!("data:image/png;base64,{}", "A".repeat(500));
        let v = violation(
            json!({"event":"qr","data":{"qr":"x","available":secret_qr},"timestamp":"2025-12-21T18:20:00Z"}),
        );
        assert!(v.expected.len() < 200, "{v}");
        assert!(!v.expected.contains(&"A".repeat(50)));
    }

    /// What ingest does with a body: the strict parse, then validation.
    fn accept(raw: &str) -> Result<Routing, SchemaViolation> {
        let (value, repeats) = crate::strict_json::parse(raw).expect("JSON");
        if let Some(repeat) = repeats.into_iter().next() {
            return Err(repeat.into());
        }
        validate(&value, raw.as_bytes(), &key())
    }

    #[test]
    fn a_repeated_key_anywhere_is_refused_with_its_path() {
        const QR: &str = r#""data":{"qr":"x","available":true},"timestamp":"2025-12-21T18:20:00Z""#;
        for (raw, path) in [
            (format!(r#"{{"id":"a","id":"b",{QR}}}"#), "id"),
            (format!(r#"{{"id":"a","id":"b",{QR}}}"#), "id"),
            (
                format!(r#"{{"event":"qr","event":"status",{QR}}}"#),
                "event",
            ),
            (
                format!(r#"{{"event":"qr",{QR},"extra":{{"x":[{{"y":1,"y":1}}]}}}}"#),
                "extra.x[0].y",
            ),
            (
                seeds()[5]
                    .to_string()
                    .replace(r#""to":"bot""#, r#""to":"bot","id":"again""#),
                "data.message.id",
            ),
        ] {
            let v = accept(&raw).expect_err(&raw);
            assert_eq!(v.path, path, "{raw}");
            assert_eq!(
                v.to_string(),
                format!(
                    "{path}: expected each key once per object, found it again (JSON parsers disagree on which copy counts)"
                )
            );
        }
    }

    /// The dispatcher's `probe` reads the same type and id as ingest on every body ingest
    /// accepts, however the keys and values are spelled.
    #[test]
    fn probe_agrees_with_validate_on_accepted_bodies() {
        const DATA: &str = r#""data":{"qr":"x","available":true}"#;
        const TS: &str = r#""timestamp":"2025-12-21T18:20:00Z""#;
        let mut bodies: Vec<String> = vec![
            format!(r#"{{"event":"qr",{DATA},{TS}}}"#),
            format!(r#"{{"event":"qr",{DATA},{TS},"id":"plain"}}"#),
            format!(r#"{{"event":"qr",{DATA},{TS},"id":"escaped-key"}}"#),
            format!(r#"{{"event":"qr",{DATA},{TS},"id":"all-escaped"}}"#),
            format!(r#"{{"event":"qr",{DATA},{TS},"id":"a\/b-c"}}"#),
            format!(r#"{{"event":"qr",{DATA},{TS},"id":null}}"#),
            format!(r#"{{"event":"qr",{DATA},{TS}}}"#),
            format!(r#"{{ "event" : "qr" , {DATA} , {TS} , "ID":"upper", "id ":"space" }}"#),
            format!(r#"{{"event":"qr",{DATA},{TS},"meta":{{"id":"nested","event":"status"}}}}"#),
            format!(r#"{{"id":"first","event":"qr",{DATA},{TS}}}"#),
            format!("{{\n\t\"event\":\"qr\",{DATA},\r\n{TS},\"x\":\"\\ud83d\\ude00 é\"}}"),
        ];
        bodies.extend(seeds().iter().map(Value::to_string));
        for raw in &bodies {
            let routing = accept(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(
                probe(raw.as_bytes()),
                (Some(routing.event_type), routing.event_id.clone()),
                "{raw}"
            );
        }
        assert_eq!(accept(&bodies[2]).unwrap().event_id, "escaped-key");
        assert_eq!(accept(&bodies[4]).unwrap().event_id, "a/b-c");
        assert!(accept(&bodies[5]).unwrap().event_id.starts_with("evt_"));
    }

    #[test]
    fn stored_body_probes_read_type_and_id() {
        let raw = seeds()[6].to_string();
        assert_eq!(
            probe(raw.as_bytes()),
            (Some(EventType::Message), "out-3EB0C767D097B7C7C031".into())
        );
        assert_eq!(probe(b"not json"), (None, derived_event_id(b"not json")));
    }
}
