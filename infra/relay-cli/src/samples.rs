//! Built-in sample envelopes, one per event type, stamped with the current time so each
//! `relay send` is a new event (a different body is a different derived id).

use relay_shared::envelope::{ChatMessage, Direction, Envelope, EventType, examples};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A tiny, valid 1×1 PNG: enough to exercise the path without a real login QR.
const QR_PNG: &str = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

pub fn sample(event: EventType, session: Option<&str>) -> String {
    let now = OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .expect("RFC 3339 formats");
    let nonce = format!("{:016X}", fastrand::u64(..));
    let mut envelope: Envelope = match event {
        EventType::Status => examples::connected_as("5511999990000@c.us"),
        EventType::Qr => examples::qr(QR_PNG, now.as_str()),
        EventType::Message => {
            let mut message = ChatMessage::text(
                Direction::Incoming,
                &nonce,
                "5511999990000@c.us",
                examples::BOT,
                "Oi! (sample message from relay send)",
            );
            message.timestamp = now.as_str().into();
            examples::message(message)
        }
    };
    envelope.timestamp = now.as_str().into();
    if let Some(session) = session {
        envelope = envelope.with_session(session);
    }
    envelope.to_json()
}
