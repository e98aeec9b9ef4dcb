//! Events carrying every kind of personal data and credential the relay handles, and the check
//! that a log or metric text holds none of it (nor a secret, the chat id key or a signature).

use crate::{CHAT_ID_KEY, INGEST_SECRET, WEBHOOK_SECRET};
use relay_shared::envelope::{ChatMessage, Direction, examples};

/// A login QR code: a credential.
pub const QR_DATA: &str =
    "data:image/png;base64,UVJMT0dJTkNSRURFTlRJQUwtbmV2ZXItbG9nLW1lLTAxMjM0NTY3ODk=";
/// Message text with personal data in it.
pub const CONTENT: &str = "Meu CPF é 123.456.789-00, não conte a ninguém";
/// The customer's WhatsApp id (a phone number), the peer of the chat.
pub const PEER: &str = "5511987654321@c.us";
/// The relay's own account (in a status event's `clientInfo.wid`).
pub const OWN_WID: &str = "5521912340000@c.us";

/// Stamped now: a `qr` older than the QR lifetime is not delivered at all.
pub fn qr_event() -> String {
    examples::qr(QR_DATA, crate::rfc3339_now()).to_json()
}

pub fn status_event() -> String {
    examples::connected_as(OWN_WID).to_json()
}

/// A message of the chat with [`PEER`]; `direction` picks who sent it (any other value is
/// refused by ingest, with the phone numbers still in the body).
pub fn message_event(direction: &str) -> String {
    let (typed, from, to) = match direction {
        "outgoing" => (Direction::Outgoing, OWN_WID, PEER),
        _ => (Direction::Incoming, PEER, OWN_WID),
    };
    let id = format!("3EB0-{direction}");
    let message = ChatMessage::text(typed, &id, from, to, CONTENT);
    let mut event = serde_json::to_value(examples::message(message)).expect("serialises");
    event["data"]["message"]["direction"] = direction.into();
    event.to_string()
}

/// Panics, naming what was found, if `text` holds any of it.
pub fn assert_free_of_personal_data(text: &str, what: &str) {
    let secret_key = |s: &str| s.trim_start_matches("whsec_").to_owned();
    let digits = |jid: &str| jid.trim_end_matches("@c.us").to_owned();
    let forbidden = [
        ("the QR code", QR_DATA.to_owned()),
        ("a piece of the QR code", QR_DATA[22..50].to_owned()),
        ("the message text", CONTENT.to_owned()),
        ("a piece of the message text", "123.456.789-00".to_owned()),
        ("the customer's phone number", digits(PEER)),
        (
            "the end of the customer's phone number",
            digits(PEER)[5..].to_owned(),
        ),
        ("the account's phone number", digits(OWN_WID)),
        ("the ingest secret", secret_key(INGEST_SECRET)),
        ("the webhook secret", secret_key(WEBHOOK_SECRET)),
        ("the chat id key", CHAT_ID_KEY.to_owned()),
        ("a signature", "v1,".to_owned()),
    ];
    for (name, needle) in forbidden {
        assert!(!text.contains(&needle), "{what} contain {name}:\n{text}");
    }
}

/// Whether `group` is a chat group named by the keyed hash: `{session}:chat:{32 hex}`.
pub fn is_hashed_chat_group(group: &str) -> bool {
    group
        .split_once(":chat:")
        .is_some_and(|(_, hash)| hash.len() == 32 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
}
