//! Envelopes as chat-whatsapp sends them, built from the typed envelope: the one source of
//! `relay send`'s samples and of the test and bench fixtures. Each returns an [`Envelope`] to
//! adjust (`with_id`, `with_session`, any public field) before [`Envelope::to_json`].
//!
//! Tests that send a deliberately broken body write it by hand: that is their point.

use super::{
    ChatMessage, ClientInfo, Direction, Envelope, MessageData, Payload, QrData, StatusData,
};

/// When the example events happened (docs/contract.md's example message).
pub const TIMESTAMP: &str = "2025-12-21T18:02:52.900Z";
/// When the example message was written, just before the event.
pub const MESSAGE_TIMESTAMP: &str = "2025-12-21T18:02:52.836Z";
/// When the example status events happened.
pub const STATUS_TIMESTAMP: &str = "2025-12-21T18:22:44.850Z";
/// The chatbot's side of a chat, as the seed names it.
pub const BOT: &str = "bot";

impl Envelope {
    /// An envelope without `id` (the relay derives it) nor `session` (the default one).
    pub fn new(payload: Payload, timestamp: impl Into<String>) -> Self {
        Envelope {
            payload,
            timestamp: timestamp.into(),
            id: None,
            session: None,
        }
    }

    /// With the sender's event id.
    pub fn with_id(self, id: impl Into<String>) -> Self {
        Envelope {
            id: Some(id.into()),
            ..self
        }
    }

    /// In the named WhatsApp session.
    pub fn with_session(self, session: impl Into<String>) -> Self {
        Envelope {
            session: Some(session.into()),
            ..self
        }
    }
}

impl ChatMessage {
    /// A text message written at [`MESSAGE_TIMESTAMP`], received if incoming, sent if outgoing.
    pub fn text(direction: Direction, id: &str, from: &str, to: &str, content: &str) -> Self {
        ChatMessage {
            id: id.to_owned(),
            from: from.to_owned(),
            to: to.to_owned(),
            content: content.to_owned(),
            kind: "text".to_owned(),
            direction,
            timestamp: MESSAGE_TIMESTAMP.to_owned(),
            status: match direction {
                Direction::Incoming => "received",
                Direction::Outgoing => "sent",
            }
            .to_owned(),
        }
    }
}

/// A `message` event carrying `message`, at [`TIMESTAMP`].
pub fn message(message: ChatMessage) -> Envelope {
    Envelope::new(Payload::Message(MessageData { message }), TIMESTAMP)
}

/// docs/contract.md's example: a text from `from` to the [`BOT`].
pub fn incoming(id: &str, from: &str, content: &str) -> Envelope {
    message(ChatMessage::text(
        Direction::Incoming,
        id,
        from,
        BOT,
        content,
    ))
}

impl StatusData {
    /// `connected`, and none of the optional fields.
    pub fn new(connected: bool) -> Self {
        StatusData {
            connected,
            authenticated: None,
            error: None,
            reason: None,
            client_info: None,
            qr_available: None,
        }
    }
}

/// A `status` event with `connected` only, at [`STATUS_TIMESTAMP`].
pub fn status(connected: bool) -> Envelope {
    Envelope::new(
        Payload::Status(StatusData::new(connected)),
        STATUS_TIMESTAMP,
    )
}

/// The `status` event of a session that just connected as the account `wid`.
pub fn connected_as(wid: &str) -> Envelope {
    let client_info = ClientInfo {
        wid: wid.to_owned(),
        pushname: "Atimo".to_owned(),
        platform: "android".to_owned(),
    };
    Envelope::new(
        Payload::Status(StatusData {
            client_info: Some(client_info),
            ..StatusData::new(true)
        }),
        STATUS_TIMESTAMP,
    )
}

/// A `qr` event: a login code (a credential), available, issued at `timestamp` (a QR older
/// than its lifetime is not delivered, so tests that deliver one stamp it now).
pub fn qr(qr: &str, timestamp: impl Into<String>) -> Envelope {
    Envelope::new(
        Payload::Qr(QrData {
            qr: qr.to_owned(),
            available: true,
        }),
        timestamp,
    )
}
