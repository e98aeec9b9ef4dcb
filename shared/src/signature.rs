//! Standard Webhooks signatures (SPEC §3) on both hops, with several secrets at once so a
//! secret can be rotated without downtime: verification accepts any configured secret, and
//! signing emits one `v1,` signature per secret (receivers accept the message if any matches).
//!
//! Built on the `standardwebhooks` crate, the reference implementation. Its verifier reads the
//! system clock (no injectable clock), so tests of the 5-minute tolerance sign with timestamps
//! well outside the window instead of moving a fake clock.

use http::HeaderMap;
use standardwebhooks::{Webhook, WebhookError};
use std::fmt;

pub use standardwebhooks::{HEADER_WEBHOOK_ID, HEADER_WEBHOOK_SIGNATURE, HEADER_WEBHOOK_TIMESTAMP};

const SECRET_PREFIX: &str = "whsec_";

/// One or more `whsec_…` secrets, parsed from a space-separated list.
pub struct SecretSet {
    webhooks: Vec<Webhook>,
}

impl fmt::Debug for SecretSet {
    // Never print key material, not even in a debug dump.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretSet({} secret(s))", self.webhooks.len())
    }
}

/// Why a secret list was refused; the message never contains the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("no secret given: expected one or more space-separated whsec_<base64> secrets")]
    Empty,
    #[error("secret #{position} does not start with whsec_: expected whsec_<base64>")]
    MissingPrefix { position: usize },
    #[error("secret #{position} is not valid base64 after whsec_")]
    NotBase64 { position: usize },
    #[error("secret #{position} is too short ({bytes} bytes): use at least 24 random bytes")]
    TooShort { position: usize, bytes: usize },
}

/// Standard Webhooks recommends 24 to 64 random bytes; shorter keys are a configuration mistake.
const MIN_SECRET_BYTES: usize = 24;

impl SecretSet {
    pub fn parse(list: &str) -> Result<Self, SecretError> {
        use base64::Engine as _;
        let mut webhooks = Vec::new();
        for (index, secret) in list.split_whitespace().enumerate() {
            let position = index + 1;
            let encoded = secret
                .strip_prefix(SECRET_PREFIX)
                .ok_or(SecretError::MissingPrefix { position })?;
            let key = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|_| SecretError::NotBase64 { position })?;
            if key.len() < MIN_SECRET_BYTES {
                return Err(SecretError::TooShort {
                    position,
                    bytes: key.len(),
                });
            }
            webhooks.push(Webhook::from_bytes(key).expect("from_bytes never fails"));
        }
        if webhooks.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(SecretSet { webhooks })
    }

    pub fn len(&self) -> usize {
        self.webhooks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.webhooks.is_empty()
    }

    /// The `webhook-signature` header value: one `v1,<base64>` per secret, space-separated.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &str) -> String {
        let signatures: Vec<String> = self
            .webhooks
            .iter()
            .map(|wh| {
                wh.sign(msg_id, timestamp, body.as_bytes())
                    .expect("a &str body is valid UTF-8")
            })
            .collect();
        signatures.join(" ")
    }

    /// The three Standard Webhooks headers for one delivery attempt.
    pub fn headers(&self, msg_id: &str, timestamp: i64, body: &str) -> [(&'static str, String); 3] {
        [
            (HEADER_WEBHOOK_ID, msg_id.to_owned()),
            (HEADER_WEBHOOK_TIMESTAMP, timestamp.to_string()),
            (HEADER_WEBHOOK_SIGNATURE, self.sign(msg_id, timestamp, body)),
        ]
    }

    /// Verifies a request's raw body and headers against every configured secret.
    pub fn verify(&self, body: &[u8], headers: &HeaderMap) -> Result<(), VerifyError> {
        let mut first_error = None;
        for wh in &self.webhooks {
            match wh.verify(body, headers) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(VerifyError::from(
            first_error.expect("a SecretSet is never empty"),
        ))
    }
}

/// Why a signed request was refused, in words the sender's developer can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error(
        "missing {0} header: sign each request with Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature)"
    )]
    MissingHeader(&'static str),
    #[error(
        "{0} header is not valid: webhook-timestamp must be unix seconds, webhook-signature \"v1,<base64>\""
    )]
    BadHeader(&'static str),
    #[error(
        "webhook-timestamp is more than 5 minutes old: sign every attempt (retries too) with the current time, and check the sender's clock"
    )]
    Stale,
    #[error("webhook-timestamp is more than 5 minutes in the future: check the sender's clock")]
    Future,
    #[error(
        "signature does not match: sign \"{{webhook-id}}.{{webhook-timestamp}}.{{raw body}}\" with a secret the relay accepts, and send the body byte for byte"
    )]
    Mismatch,
    #[error("body is not valid UTF-8")]
    NotUtf8,
}

impl From<WebhookError> for VerifyError {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::MissingHeader(name) => VerifyError::MissingHeader(header_name(name)),
            WebhookError::InvalidHeader(name) => VerifyError::BadHeader(header_name(name)),
            WebhookError::InvalidTimestamp => VerifyError::BadHeader(HEADER_WEBHOOK_TIMESTAMP),
            WebhookError::TimestampTooOldError => VerifyError::Stale,
            WebhookError::FutureTimestampError => VerifyError::Future,
            WebhookError::InvalidPayload => VerifyError::NotUtf8,
            WebhookError::InvalidSignature | WebhookError::InvalidSecret(_) => {
                VerifyError::Mismatch
            }
        }
    }
}

/// The crate names headers by their short name ("id", "signature", "timestamp").
fn header_name(short: &str) -> &'static str {
    match short {
        "id" => HEADER_WEBHOOK_ID,
        "timestamp" => HEADER_WEBHOOK_TIMESTAMP,
        _ => HEADER_WEBHOOK_SIGNATURE,
    }
}

/// Now, in unix seconds, for `webhook-timestamp`.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// The published Standard Webhooks test vector (also reproduced with the PyPI library).
    const VECTOR_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const VECTOR_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const VECTOR_TS: i64 = 1614265330;
    const VECTOR_BODY: &str = r#"{"test": 2432232314}"#;
    const VECTOR_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    const OTHER_SECRET: &str = "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24tdGVzdHM=";

    fn header_map(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn signing_matches_the_published_test_vector() {
        let set = SecretSet::parse(VECTOR_SECRET).unwrap();
        assert_eq!(set.sign(VECTOR_ID, VECTOR_TS, VECTOR_BODY), VECTOR_SIG);
    }

    #[test]
    fn sign_then_verify_round_trips() {
        let set = SecretSet::parse(VECTOR_SECRET).unwrap();
        let headers = header_map(&set.headers("evt_1", unix_now(), "{\"a\":1}"));
        set.verify(b"{\"a\":1}", &headers).unwrap();
    }

    #[test]
    fn tampered_body_wrong_secret_stale_and_future_all_fail() {
        let set = SecretSet::parse(VECTOR_SECRET).unwrap();
        let body = "{\"a\":1}";
        let headers = header_map(&set.headers("evt_1", unix_now(), body));
        assert_eq!(
            set.verify(b"{\"a\":2}", &headers),
            Err(VerifyError::Mismatch)
        );

        let other = SecretSet::parse(OTHER_SECRET).unwrap();
        assert_eq!(
            other.verify(body.as_bytes(), &headers),
            Err(VerifyError::Mismatch)
        );

        let stale = header_map(&set.headers("evt_1", unix_now() - 301, body));
        assert_eq!(set.verify(body.as_bytes(), &stale), Err(VerifyError::Stale));
        let future = header_map(&set.headers("evt_1", unix_now() + 301, body));
        assert_eq!(
            set.verify(body.as_bytes(), &future),
            Err(VerifyError::Future)
        );
    }

    #[test]
    fn missing_and_malformed_headers_are_named() {
        let set = SecretSet::parse(VECTOR_SECRET).unwrap();
        let mut headers = header_map(&set.headers("evt_1", unix_now(), "{}"));
        headers.remove(HEADER_WEBHOOK_SIGNATURE);
        assert_eq!(
            set.verify(b"{}", &headers),
            Err(VerifyError::MissingHeader(HEADER_WEBHOOK_SIGNATURE))
        );
        headers.insert(HEADER_WEBHOOK_SIGNATURE, HeaderValue::from_static("v1,abc"));
        headers.insert(HEADER_WEBHOOK_TIMESTAMP, HeaderValue::from_static("soon"));
        assert_eq!(
            set.verify(b"{}", &headers),
            Err(VerifyError::BadHeader(HEADER_WEBHOOK_TIMESTAMP))
        );
    }

    #[test]
    fn rotation_verifies_with_any_secret_and_signs_with_all() {
        let both = SecretSet::parse(&format!("{OTHER_SECRET} {VECTOR_SECRET}")).unwrap();
        let old = SecretSet::parse(VECTOR_SECRET).unwrap();
        let new = SecretSet::parse(OTHER_SECRET).unwrap();
        let now = unix_now();
        // A sender still on the old secret is accepted during the rotation.
        both.verify(b"{}", &header_map(&old.headers("e", now, "{}")))
            .unwrap();
        // A receiver on either secret accepts what the rotating dispatcher signs.
        let signed = header_map(&both.headers("e", now, "{}"));
        assert_eq!(
            signed[HEADER_WEBHOOK_SIGNATURE]
                .to_str()
                .unwrap()
                .split(' ')
                .count(),
            2
        );
        old.verify(b"{}", &signed).unwrap();
        new.verify(b"{}", &signed).unwrap();
    }

    #[test]
    fn bad_secret_lists_are_refused_without_echoing_them() {
        assert_eq!(SecretSet::parse("  ").unwrap_err(), SecretError::Empty);
        assert_eq!(
            SecretSet::parse(&format!("{VECTOR_SECRET} hunter2")).unwrap_err(),
            SecretError::MissingPrefix { position: 2 }
        );
        assert_eq!(
            SecretSet::parse("whsec_not*base64").unwrap_err(),
            SecretError::NotBase64 { position: 1 }
        );
        assert_eq!(
            SecretSet::parse("whsec_c2hvcnQ=").unwrap_err(),
            SecretError::TooShort {
                position: 1,
                bytes: 5
            }
        );
        let message = SecretSet::parse("whsec_c2hvcnQ=").unwrap_err().to_string();
        assert!(!message.contains("c2hvcnQ"));
        assert_eq!(
            format!("{:?}", SecretSet::parse(VECTOR_SECRET).unwrap()),
            "SecretSet(1 secret(s))"
        );
    }
}
