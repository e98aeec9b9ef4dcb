//! Envelopes as chat-whatsapp sends them, built from the typed envelope: the one source of
//! `relay send`'s samples and of the test and bench fixtures. Each returns an [`Envelope`] to
//! adjust (`with_id`, `with_session`, any public field) before [`Envelope::to_json`].
//!
//! Tests that send a deliberately broken body write it by hand: that is their point.

use std::borrow::Cow;

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

impl<'a> Envelope<'a> {
    /// An envelope without `id` (the relay derives it) nor `session` (the default one).
    pub fn new(payload: Payload<'a>, timestamp: impl Into<Cow<'a, str>>) -> Self {
        Envelope {
            payload,
            timestamp: timestamp.into(),
            id: None,
            session: None,
        }
    }

    /// With the sender's event id.
    pub fn with_id(self, id: impl Into<Cow<'a, str>>) -> Self {
        Envelope {
            id: Some(id.into()),
            ..self
        }
    }

    /// In the named WhatsApp session.
    pub fn with_session(self, session: impl Into<Cow<'a, str>>) -> Self {
        Envelope {
            session: Some(session.into()),
            ..self
        }
    }
}

impl<'a> ChatMessage<'a> {
    /// A text message written at [`MESSAGE_TIMESTAMP`], received if incoming, sent if outgoing.
    pub fn text(
        direction: Direction,
        id: &'a str,
        from: &'a str,
        to: &'a str,
        content: &'a str,
    ) -> Self {
        ChatMessage {
            id: id.into(),
            from: from.into(),
            to: to.into(),
            content: content.into(),
            kind: "text".into(),
            direction,
            timestamp: MESSAGE_TIMESTAMP.into(),
            status: match direction {
                Direction::Incoming => "received",
                Direction::Outgoing => "sent",
            }
            .into(),
        }
    }
}

/// A `message` event carrying `message`, at [`TIMESTAMP`].
pub fn message(message: ChatMessage<'_>) -> Envelope<'_> {
    Envelope::new(Payload::Message(MessageData { message }), TIMESTAMP)
}

/// docs/contract.md's example: a text from `from` to the [`BOT`].
pub fn incoming<'a>(id: &'a str, from: &'a str, content: &'a str) -> Envelope<'a> {
    message(ChatMessage::text(
        Direction::Incoming,
        id,
        from,
        BOT,
        content,
    ))
}

impl StatusData<'_> {
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
pub fn status(connected: bool) -> Envelope<'static> {
    Envelope::new(
        Payload::Status(StatusData::new(connected)),
        STATUS_TIMESTAMP,
    )
}

/// The `status` event of a session that just connected as the account `wid`.
pub fn connected_as(wid: &str) -> Envelope<'_> {
    let client_info = ClientInfo {
        wid: wid.into(),
        pushname: "Atimo".into(),
        platform: "android".into(),
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
pub fn qr<'a>(qr: &'a str, timestamp: impl Into<Cow<'a, str>>) -> Envelope<'a> {
    Envelope::new(
        Payload::Qr(QrData {
            qr: qr.into(),
            available: true,
        }),
        timestamp,
    )
}
