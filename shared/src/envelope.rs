//! The wire contract (docs/contract.md, The envelope): the envelope chat-whatsapp sends and
//! chatbot-atimo receives, as typed structs; its validation, which is deserialising those
//! structs (the JSON path of the first offending field and what was expected); and the ids
//! derived from it: the event id (idempotency / FIFO deduplication) and the FIFO group id
//! (ordering).
//!
//! The types are the one definition of the envelope: ingest validates by reading them, and
//! samples, test and bench fixtures build their bodies from them ([`examples`]). A field's
//! rule is its `deserialize_with` (see `wire`), so adding a field is one edit here.
//!
//! The relay never re-serialises an envelope: the body is validated here and then stored and
//! delivered byte for byte, so unknown extra fields always reach the receiver. The types
//! accept unknown fields and do not keep them.

pub mod examples;
mod wire;

use crate::strict_json::RepeatedKey;
use aws_lc_rs::hmac;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;

/// Session name used when the envelope has none (the seed runs one WhatsApp session).
pub const DEFAULT_SESSION: &str = "default";
/// Session names are part of every group id; keep them short enough to leave room for the peer.
pub const MAX_SESSION_LEN: usize = 64;

/// The three event types chat-whatsapp emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
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

/// A typed envelope: `event` and `data` (as [`Payload`]), `timestamp`, and the optional `id`
/// and `session`. It serialises to the wire shape and is read, validated, by
/// [`Envelope::from_value`]. Its strings borrow from the parsed body where they can, so
/// validating a large message copies none of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Envelope<'a> {
    #[serde(flatten)]
    pub payload: Payload<'a>,
    /// RFC 3339 date-time, kept as sent.
    pub timestamp: Cow<'a, str>,
    /// The sender's event id; without it the id is derived from the body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Cow<'a, str>>,
    /// The WhatsApp session; [`DEFAULT_SESSION`] when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<Cow<'a, str>>,
}

/// `event` + `data`, by event type.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", content = "data", rename_all = "lowercase")]
pub enum Payload<'a> {
    Status(StatusData<'a>),
    Qr(QrData<'a>),
    Message(MessageData<'a>),
}

impl Payload<'_> {
    pub fn event_type(&self) -> EventType {
        match self {
            Payload::Status(_) => EventType::Status,
            Payload::Qr(_) => EventType::Qr,
            Payload::Message(_) => EventType::Message,
        }
    }
}

/// The envelope around `data`, as validation reads it first: `data` must be an object, read
/// by event type afterwards. Keep in step with [`Envelope`] (the destructuring in
/// [`Envelope::from_value`] fails to compile when a field is added to one and not the other).
#[derive(Deserialize)]
struct Head<'a> {
    event: EventType,
    #[serde(borrow, deserialize_with = "wire::rfc3339")]
    timestamp: Cow<'a, str>,
    #[serde(default, borrow, deserialize_with = "wire::opt_session")]
    session: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "wire::opt_event_id")]
    id: Option<Cow<'a, str>>,
    data: wire::AnObject,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusData<'a> {
    #[serde(deserialize_with = "wire::boolean")]
    pub connected: bool,
    #[serde(
        default,
        deserialize_with = "wire::opt_boolean",
        skip_serializing_if = "Option::is_none"
    )]
    pub authenticated: Option<bool>,
    #[serde(
        default,
        borrow,
        deserialize_with = "wire::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub error: Option<Cow<'a, str>>,
    #[serde(
        default,
        borrow,
        deserialize_with = "wire::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub reason: Option<Cow<'a, str>>,
    #[serde(
        default,
        borrow,
        deserialize_with = "wire::opt_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub client_info: Option<ClientInfo<'a>>,
    #[serde(
        default,
        deserialize_with = "wire::opt_boolean",
        skip_serializing_if = "Option::is_none"
    )]
    pub qr_available: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientInfo<'a> {
    #[serde(borrow, deserialize_with = "wire::string")]
    pub wid: Cow<'a, str>,
    #[serde(borrow, deserialize_with = "wire::string")]
    pub pushname: Cow<'a, str>,
    #[serde(borrow, deserialize_with = "wire::string")]
    pub platform: Cow<'a, str>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QrData<'a> {
    /// A PNG data URL: a login credential, never logged.
    #[serde(borrow, deserialize_with = "wire::string")]
    pub qr: Cow<'a, str>,
    #[serde(deserialize_with = "wire::boolean")]
    pub available: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageData<'a> {
    #[serde(borrow, deserialize_with = "wire::object")]
    pub message: ChatMessage<'a>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage<'a> {
    #[serde(borrow, deserialize_with = "wire::string")]
    pub id: Cow<'a, str>,
    #[serde(borrow, deserialize_with = "wire::string")]
    pub from: Cow<'a, str>,
    #[serde(borrow, deserialize_with = "wire::string")]
    pub to: Cow<'a, str>,
    /// Message text: personal data, never logged.
    #[serde(borrow, deserialize_with = "wire::string")]
    pub content: Cow<'a, str>,
    #[serde(rename = "type", borrow, deserialize_with = "wire::string")]
    pub kind: Cow<'a, str>,
    pub direction: Direction,
    #[serde(borrow, deserialize_with = "wire::rfc3339")]
    pub timestamp: Cow<'a, str>,
    #[serde(borrow, deserialize_with = "wire::string")]
    pub status: Cow<'a, str>,
}

impl ChatMessage<'_> {
    /// The other party of the chat: the sender of an incoming message, the recipient of an
    /// outgoing one. Its chat is its FIFO group.
    pub fn peer(&self) -> &str {
        match self.direction {
            Direction::Incoming => &self.from,
            Direction::Outgoing => &self.to,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Incoming,
    Outgoing,
}

impl<'a> Envelope<'a> {
    /// Reads and validates a parsed envelope: the first rule it breaks, with its path.
    pub fn from_value(value: &'a Value) -> Result<Self, SchemaViolation> {
        if !value.is_object() {
            return Err(SchemaViolation::new(
                "body",
                wire::expected("a JSON object (the event envelope)", found(value)),
            ));
        }
        // Exhaustive on purpose: a field added to `Head` must be carried over here.
        let Head {
            event,
            timestamp,
            session,
            id,
            data: wire::AnObject,
        } = read("", value)?;
        let data = &value["data"];
        let payload = match event {
            EventType::Status => Payload::Status(read("data", data)?),
            EventType::Qr => Payload::Qr(read("data", data)?),
            EventType::Message => Payload::Message(read("data", data)?),
        };
        Ok(Envelope {
            payload,
            timestamp,
            id,
            session,
        })
    }

    /// The body as a sender writes it: compact JSON in the wire shape.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an envelope serialises")
    }
}

/// Deserialises `T` from `value` (found at `prefix`), naming the first offending field.
///
/// Tracking the path costs an allocation per key read, so it is done only to explain a
/// refusal: the second, tracked read meets the same first error (deserialising is
/// deterministic).
fn read<'de, T: Deserialize<'de>>(prefix: &str, value: &'de Value) -> Result<T, SchemaViolation> {
    T::deserialize(value).map_err(|untracked| {
        let (path, error) = match serde_path_to_error::deserialize::<_, T>(value) {
            Err(tracked) => (tracked.path().to_string(), tracked.into_inner()),
            // Cannot happen (the same read just failed); the untracked error still reads well.
            Ok(_) => (String::new(), untracked),
        };
        violation_at(prefix, &path, error.to_string())
    })
}

/// A refusal from `read`: serde's path (`.` for the value itself) after `prefix`, and our
/// wording. serde reports a missing field as "missing field `x`" at the object holding it:
/// that becomes "required field is missing" at the field itself.
fn violation_at(prefix: &str, path: &str, message: String) -> SchemaViolation {
    let mut segments: Vec<&str> = [prefix, path]
        .into_iter()
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'));
    let expected = match missing {
        Some(field) => {
            segments.push(field);
            "required field is missing".to_owned()
        }
        None => message.clone(),
    };
    let path = match segments.join(".") {
        root if root.is_empty() => "body".to_owned(),
        path => path,
    };
    SchemaViolation::new(path, expected)
}

fn found(value: &Value) -> wire::Found<'_> {
    match value {
        Value::Null => wire::Found::Null,
        Value::Bool(b) => wire::Found::Bool(*b),
        Value::Number(n) => wire::Found::Number(n.to_string()),
        Value::String(s) => wire::Found::Str(s),
        Value::Array(_) => wire::Found::Array,
        Value::Object(_) => wire::Found::Object,
    }
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
    /// [`MAX_SESSION_LEN`] the whole id stays under [`MAX_ID_LEN`](crate::queue::MAX_ID_LEN).
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
    let envelope = Envelope::from_value(value)?;
    let session = envelope.session.as_deref().unwrap_or(DEFAULT_SESSION);
    let group_id = match &envelope.payload {
        Payload::Status(_) | Payload::Qr(_) => status_group(session),
        Payload::Message(data) => chat_ids.chat_group(session, data.message.peer()),
    };
    Ok(Routing {
        event_type: envelope.payload.event_type(),
        event_id: event_id(envelope.id.as_deref(), raw),
        group_id,
    })
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

/// Lower-case hex of the first `take` bytes.
pub(crate) fn hex_prefix(bytes: &[u8], take: usize) -> String {
    hex::encode(&bytes[..take.min(bytes.len())])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::MAX_ID_LEN;
    use crate::queue::is_sqs_id_char;
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
            let typed = Envelope::from_value(&seed).unwrap();
            assert_eq!(serde_json::to_value(&typed).unwrap(), seed);
        }
    }

    /// The relay delivers the body as sent, so unknown fields reach the receiver; the types
    /// accept them, at any depth, and do not keep them.
    #[test]
    fn unknown_fields_are_accepted() {
        let value = json!({"event":"qr","data":{"qr":"data:x","available":true,"attempt":2},"timestamp":"2025-12-21T18:20:00Z","traceId":"t-1"});
        check(&value).unwrap();
        assert_eq!(
            Envelope::from_value(&value).unwrap().to_json(),
            r#"{"event":"qr","data":{"qr":"data:x","available":true},"timestamp":"2025-12-21T18:20:00Z"}"#
        );
    }

    #[test]
    fn the_examples_are_valid_envelopes_in_the_wire_shape() {
        let built = [
            examples::incoming("m-1", "5511999990000@c.us", "Oi"),
            examples::message(ChatMessage::text(
                Direction::Outgoing,
                "m-2",
                "bot",
                "5511999990000@c.us",
                "Olá!",
            ))
            .with_session("sales")
            .with_id("out-m-2"),
            examples::status(false),
            examples::connected_as("5511999990000@c.us"),
            examples::qr("data:image/png;base64,AAAA", "2025-12-21T18:20:00Z"),
        ];
        for envelope in built {
            let raw = envelope.to_json();
            let value: Value = serde_json::from_str(&raw).unwrap();
            let routing = validate(&value, raw.as_bytes(), &key()).unwrap();
            assert_eq!(routing.event_type, envelope.payload.event_type());
            assert_eq!(Envelope::from_value(&value).unwrap(), envelope, "{raw}");
        }
        assert_eq!(
            examples::incoming("m-1", "5511999990000@c.us", "Oi").to_json(),
            r#"{"event":"message","data":{"message":{"id":"m-1","from":"5511999990000@c.us","to":"bot","content":"Oi","type":"text","direction":"incoming","timestamp":"2025-12-21T18:02:52.836Z","status":"received"}},"timestamp":"2025-12-21T18:02:52.900Z"}"#
        );
    }

    /// serde names a missing field at the object holding it; a refusal names the field.
    #[test]
    fn serde_paths_become_violation_paths() {
        let at = |prefix, path, message: &str| {
            let v = violation_at(prefix, path, message.to_owned());
            (v.path, v.expected)
        };
        let missing = "required field is missing".to_owned();
        assert_eq!(
            at("", ".", "missing field `event`"),
            ("event".into(), missing.clone())
        );
        assert_eq!(
            at("data", ".", "missing field `qr`"),
            ("data.qr".into(), missing.clone())
        );
        assert_eq!(
            at("data", "message", "missing field `to`"),
            ("data.message.to".into(), missing)
        );
        assert_eq!(
            at("data", "message.direction", "expected x, found y"),
            (
                "data.message.direction".into(),
                "expected x, found y".into()
            )
        );
        assert_eq!(
            at("", ".", "expected x"),
            ("body".into(), "expected x".into())
        );
        // A string value that merely looks like serde's wording is not taken for it.
        assert_eq!(
            at("", "id", r#"expected a string, found "missing field `x`""#).0,
            "id"
        );
    }

    /// Reading a large message borrows its text from the parsed body instead of copying it.
    #[test]
    fn validated_strings_borrow_from_the_parsed_body() {
        let value = seeds()[5].clone();
        let typed = Envelope::from_value(&value).unwrap();
        let Payload::Message(data) = &typed.payload else {
            panic!("a message: {typed:?}")
        };
        assert!(matches!(data.message.content, Cow::Borrowed(_)));
        assert!(matches!(typed.timestamp, Cow::Borrowed(_)));
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

    /// Every JSON type in the wrong place is named, with short scalars quoted; `null` in an
    /// optional field reads as absent.
    #[test]
    fn wrong_types_are_named_in_our_words() {
        let long = "B".repeat(500);
        let qr = |data: Value| json!({"event":"qr","data":data,"timestamp":"2025-12-21T18:20:00Z"});
        let status =
            |data: Value| json!({"event":"status","data":data,"timestamp":"2025-12-21T18:20:00Z"});
        let mut message = seeds()[5].clone();
        message["data"]["message"] = json!(long);
        let cases: Vec<(Value, &str, String)> = vec![
            (
                message,
                "data.message",
                format!("expected an object, found a 500-character string starting \"{}\"", &long[..40]),
            ),
            (
                status(json!({"connected":true,"clientInfo":[]})),
                "data.clientInfo",
                "expected an object, found an array".into(),
            ),
            (
                status(json!({"connected":null})),
                "data.connected",
                "expected true or false, found null".into(),
            ),
            (
                qr(json!({"qr":{},"available":true})),
                "data.qr",
                "expected a string, found an object".into(),
            ),
            (
                json!({"event":1.5,"data":{},"timestamp":"2025-12-21T18:20:00Z"}),
                "event",
                r#"expected one of "status", "qr", "message", found the number 1.5"#.into(),
            ),
            (
                json!({"event":"qr","data":{"qr":"x","available":true},"timestamp":-1}),
                "timestamp",
                r#"expected an RFC 3339 date-time such as "2025-12-21T18:22:44.850Z", found the number -1"#.into(),
            ),
        ];
        for (value, path, expected) in cases {
            let v = violation(value.clone());
            assert_eq!(
                (v.path.as_str(), v.expected.as_str()),
                (path, expected.as_str()),
                "{value}"
            );
        }
        let nulls = json!({"event":"status","data":{"connected":true,"authenticated":null,"clientInfo":null},"timestamp":"2025-12-21T18:20:00Z","session":null,"id":null});
        assert_eq!(check(&nulls).unwrap().group_id, "default:status");
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
