//! Built-in sample envelopes, one per event type, stamped with the current time so each
//! `relay send` is a new event (a different body is a different derived id).

use relay_shared::envelope::EventType;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub fn sample(event: EventType, session: Option<&str>) -> String {
    let now = OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .expect("RFC 3339 formats");
    let nonce = format!("{:016X}", fastrand::u64(..));
    let data = match event {
        EventType::Status => json!({
            "connected": true,
            "clientInfo": {"wid": "5511999990000@c.us", "pushname": "Atimo", "platform": "android"}
        }),
        // A tiny, valid 1×1 PNG: enough to exercise the path without a real login QR.
        EventType::Qr => json!({
            "qr": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==",
            "available": true
        }),
        EventType::Message => json!({"message": {
            "id": nonce,
            "from": "5511999990000@c.us",
            "to": "bot",
            "content": "Oi! (sample message from relay send)",
            "type": "text",
            "direction": "incoming",
            "timestamp": now,
            "status": "received"
        }}),
    };
    let mut envelope = json!({"event": event.as_str(), "data": data, "timestamp": now});
    if let Some(session) = session {
        envelope["session"] = json!(session);
    }
    envelope.to_string()
}
