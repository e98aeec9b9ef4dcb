//! Standard Webhooks request headers signed with the relay's own `SecretSet`, as a sender signs.

use axum::http::{HeaderMap, HeaderValue};
use relay_shared::signature::SecretSet;

/// The three Standard Webhooks headers plus `Content-Type: application/json`, signed now.
pub fn signed_headers(secret: &str, msg_id: &str, body: &str) -> HeaderMap {
    signed_headers_at(secret, msg_id, body, relay_shared::clock::unix_seconds())
}

pub fn signed_headers_at(secret: &str, msg_id: &str, body: &str, timestamp: i64) -> HeaderMap {
    let secrets = SecretSet::parse(secret).expect("test secret");
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    for (name, value) in secrets.headers(msg_id, timestamp, body) {
        headers.insert(name, HeaderValue::from_str(&value).unwrap());
    }
    headers
}
