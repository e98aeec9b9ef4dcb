//! Standard Webhooks signatures on both hops (docs/contract.md, Signatures), with several
//! secrets at once so a secret can be rotated without downtime: verification accepts any
//! configured secret, and signing emits one `v1,` signature per secret (receivers accept the
//! message if any matches).
//!
//! The scheme is HMAC-SHA256 over `"{webhook-id}.{webhook-timestamp}.{body}"`, base64, with a
//! 5-minute tolerance on the timestamp. It is computed here with `aws-lc-rs` (already the TLS
//! stack's crypto) rather than through the `standardwebhooks` crate, for two reasons: that
//! crate copies the whole body into a new string before hashing and hashes in portable
//! software, which made signing the largest cost of ingesting a large body (the README's
//! Performance section has the measurements), and its verifier reads the system clock, so
//! tolerance tests could not be exact. Interoperability with the `standardwebhooks` libraries
//! of crates.io, npm and PyPI is tested both ways.

use aws_lc_rs::{constant_time, hmac};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::HeaderMap;
use std::fmt;

pub const HEADER_WEBHOOK_ID: &str = "webhook-id";
pub const HEADER_WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
pub const HEADER_WEBHOOK_SIGNATURE: &str = "webhook-signature";

const SECRET_PREFIX: &str = "whsec_";
const SIGNATURE_VERSION: &str = "v1";
/// Standard Webhooks' replay window: a timestamp more than this far from now is refused.
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// The most `v1,` signatures one request may list. A sender signs once per secret it holds,
/// and holds two during a rotation; 16 leaves room for any honest sender while bounding the
/// decoding and comparing a hostile header could ask for (a 10,000-entry list is refused
/// before any of it is decoded).
pub const MAX_SIGNATURES: usize = 16;

/// One or more `whsec_…` secrets, parsed from a space-separated list.
pub struct SecretSet {
    keys: Vec<hmac::Key>,
}

impl fmt::Debug for SecretSet {
    // Never print key material, not even in a debug dump.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretSet({} secret(s))", self.keys.len())
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
        let mut keys = Vec::new();
        for (index, secret) in list.split_whitespace().enumerate() {
            let position = index + 1;
            let encoded = secret
                .strip_prefix(SECRET_PREFIX)
                .ok_or(SecretError::MissingPrefix { position })?;
            let key = BASE64
                .decode(encoded)
                .map_err(|_| SecretError::NotBase64 { position })?;
            if key.len() < MIN_SECRET_BYTES {
                return Err(SecretError::TooShort {
                    position,
                    bytes: key.len(),
                });
            }
            keys.push(hmac::Key::new(hmac::HMAC_SHA256, &key));
        }
        if keys.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(SecretSet { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The `webhook-signature` header value: one `v1,<base64>` per secret, space-separated.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &str) -> String {
        let signatures: Vec<String> = self
            .keys
            .iter()
            .map(|key| {
                let tag = tag(key, msg_id, timestamp, body.as_bytes());
                format!("{SIGNATURE_VERSION},{}", BASE64.encode(tag.as_ref()))
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

    /// Verifies a request's raw body and headers against every configured secret, now.
    pub fn verify(&self, body: &[u8], headers: &HeaderMap) -> Result<(), VerifyError> {
        self.verify_at(body, headers, crate::clock::unix_seconds())
    }

    /// The same, with `now` (unix seconds) given: the clock is injectable for exact tests.
    /// Checks run in the reference libraries' order: headers, timestamp, body, signature.
    pub fn verify_at(&self, body: &[u8], headers: &HeaderMap, now: i64) -> Result<(), VerifyError> {
        let msg_id = header(headers, HEADER_WEBHOOK_ID)?;
        let signatures = header(headers, HEADER_WEBHOOK_SIGNATURE)?;
        let timestamp: i64 = header(headers, HEADER_WEBHOOK_TIMESTAMP)?
            .trim()
            .parse()
            .map_err(|_| VerifyError::BadHeader(HEADER_WEBHOOK_TIMESTAMP))?;
        // Widened: any two i64s subtract without overflow, so an absurd timestamp such as
        // i64::MIN is simply stale instead of a panic (debug) or a wrap past the check (release).
        let age = i128::from(now) - i128::from(timestamp);
        if age > i128::from(TOLERANCE_SECS) {
            return Err(VerifyError::Stale);
        }
        if -age > i128::from(TOLERANCE_SECS) {
            return Err(VerifyError::Future);
        }
        std::str::from_utf8(body).map_err(|_| VerifyError::NotUtf8)?;
        let listed = signatures
            .split(' ')
            .filter_map(|s| s.split_once(','))
            .filter(|(version, _)| *version == SIGNATURE_VERSION);
        if listed.clone().count() > MAX_SIGNATURES {
            return Err(VerifyError::TooManySignatures);
        }
        let candidates: Vec<Vec<u8>> = listed
            .filter_map(|(_, encoded)| BASE64.decode(encoded).ok())
            .collect();
        let matched = self.keys.iter().any(|key| {
            let expected = tag(key, msg_id, timestamp, body);
            candidates.iter().any(|candidate| {
                constant_time::verify_slices_are_equal(expected.as_ref(), candidate).is_ok()
            })
        });
        if matched {
            Ok(())
        } else {
            Err(VerifyError::Mismatch)
        }
    }
}

/// HMAC-SHA256 of `"{id}.{timestamp}.{body}"`, fed in pieces: the body is never copied.
fn tag(key: &hmac::Key, msg_id: &str, timestamp: i64, body: &[u8]) -> hmac::Tag {
    let mut context = hmac::Context::with_key(key);
    context.update(msg_id.as_bytes());
    context.update(b".");
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    context.sign()
}

fn header<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<&'h str, VerifyError> {
    headers
        .get(name)
        .ok_or(VerifyError::MissingHeader(name))?
        .to_str()
        .map_err(|_| VerifyError::BadHeader(name))
}

/// Why a signed request was refused, in words the sender's developer can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error(
        "missing {0} header: sign each request with Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature)"
    )]
    MissingHeader(&'static str),
    #[error("{0} header is not valid: {rule}", rule = header_rule(.0))]
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
    #[error(
        "webhook-signature lists more than {MAX_SIGNATURES} v1 signatures: send one per signing secret"
    )]
    TooManySignatures,
    #[error("body is not valid UTF-8")]
    NotUtf8,
}

/// What a header must look like, for [`VerifyError::BadHeader`].
fn header_rule(name: &str) -> &'static str {
    match name {
        HEADER_WEBHOOK_TIMESTAMP => "it must be the signing time in unix seconds, e.g. 1766340172",
        HEADER_WEBHOOK_SIGNATURE => "it must be space-separated \"v1,<base64>\" signatures",
        _ => "it must be visible ASCII text",
    }
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
        let headers = header_map(&[
            (HEADER_WEBHOOK_ID, VECTOR_ID.into()),
            (HEADER_WEBHOOK_TIMESTAMP, VECTOR_TS.to_string()),
            (
                HEADER_WEBHOOK_SIGNATURE,
                format!("v1,bm90IGl0 {VECTOR_SIG} v2,whatever"),
            ),
        ]);
        assert_eq!(
            set.verify_at(VECTOR_BODY.as_bytes(), &headers, VECTOR_TS),
            Ok(()),
            "any listed v1 signature may match"
        );
    }

    #[test]
    fn sign_then_verify_round_trips() {
        let set = SecretSet::parse(VECTOR_SECRET).unwrap();
        let headers = header_map(&set.headers("evt_1", crate::clock::unix_seconds(), "{\"a\":1}"));
        set.verify(b"{\"a\":1}", &headers).unwrap();
    }

    #[test]
    fn tampered_body_wrong_secret_stale_and_future_all_fail() {
        let set = SecretSet::parse(VECTOR_SECRET).unwrap();
        let body = "{\"a\":1}";
        let headers = header_map(&set.headers("evt_1", crate::clock::unix_seconds(), body));
        assert_eq!(
            set.verify(b"{\"a\":2}", &headers),
            Err(VerifyError::Mismatch)
        );

        let other = SecretSet::parse(OTHER_SECRET).unwrap();
        assert_eq!(
            other.verify(body.as_bytes(), &headers),
            Err(VerifyError::Mismatch)
        );

        let stale = header_map(&set.headers("evt_1", crate::clock::unix_seconds() - 301, body));
        assert_eq!(set.verify(body.as_bytes(), &stale), Err(VerifyError::Stale));
        let future = header_map(&set.headers("evt_1", crate::clock::unix_seconds() + 301, body));
        assert_eq!(
            set.verify(body.as_bytes(), &future),
            Err(VerifyError::Future)
        );
    }

    #[test]
    fn the_tolerance_is_five_minutes_to_the_second() {
        let set = SecretSet::parse(VECTOR_SECRET).unwrap();
        let signed_at = 1_700_000_000;
        let headers = header_map(&set.headers("evt_1", signed_at, "{}"));
        let at = |now| set.verify_at(b"{}", &headers, now);
        assert_eq!(at(signed_at + 300), Ok(()));
        assert_eq!(at(signed_at + 301), Err(VerifyError::Stale));
        assert_eq!(at(signed_at - 300), Ok(()));
        assert_eq!(at(signed_at - 301), Err(VerifyError::Future));
    }

    #[test]
    fn a_body_that_is_not_utf8_is_named() {
        let set = SecretSet::parse(VECTOR_SECRET).unwrap();
        let headers = header_map(&set.headers("evt_1", 1_700_000_000, "{}"));
        assert_eq!(
            set.verify_at(&[0xff, 0xfe], &headers, 1_700_000_000),
            Err(VerifyError::NotUtf8)
        );
    }

    #[test]
    fn missing_and_malformed_headers_are_named() {
        let set = SecretSet::parse(VECTOR_SECRET).unwrap();
        let mut headers = header_map(&set.headers("evt_1", crate::clock::unix_seconds(), "{}"));
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

    /// Every header value, however absurd, is a refusal with a reason, never a panic.
    #[test]
    fn absurd_header_values_are_refused_without_panicking() {
        let set = SecretSet::parse(VECTOR_SECRET).unwrap();
        let now = 1_700_000_000;
        let good = set.headers("evt_1", now, "{}");
        let with = |name: &'static str, value: HeaderValue| {
            let mut headers = header_map(&good);
            headers.insert(name, value);
            set.verify_at(b"{}", &headers, now)
        };
        let text = |s: &str| HeaderValue::from_str(s).unwrap();
        use VerifyError::*;
        let ts = HEADER_WEBHOOK_TIMESTAMP;
        for (value, outcome) in [
            (i64::MIN.to_string(), Stale),
            ((i64::MIN + 1).to_string(), Stale),
            ("-1".to_owned(), Stale),
            ("0".to_owned(), Stale),
            (i64::MAX.to_string(), Future),
            ("9".repeat(40), BadHeader(ts)),
            ("-".to_owned() + &"9".repeat(40), BadHeader(ts)),
            ("1".repeat(10_000), BadHeader(ts)),
            ("".to_owned(), BadHeader(ts)),
            ("17 00".to_owned(), BadHeader(ts)),
            ("1.7e9".to_owned(), BadHeader(ts)),
            ("0x10".to_owned(), BadHeader(ts)),
        ] {
            assert_eq!(with(ts, text(&value)), Err(outcome), "timestamp {value:?}");
        }
        // The extreme timestamps at the extreme clocks too.
        let mut headers = header_map(&good);
        headers.insert(ts, text(&i64::MIN.to_string()));
        assert_eq!(set.verify_at(b"{}", &headers, i64::MAX), Err(Stale));
        headers.insert(ts, text(&i64::MAX.to_string()));
        assert_eq!(set.verify_at(b"{}", &headers, i64::MIN), Err(Future));
        // Leading + and surrounding spaces read as the number (as the reference libraries
        // do); the signature is over the number, so a mismatch here, not a crash.
        assert_eq!(with(ts, text(&format!("+{now}"))), Ok(()));
        assert_eq!(with(ts, text(&format!(" {now} "))), Ok(()));
        let non_ascii = HeaderValue::from_bytes(b"17\xff00").unwrap();
        assert_eq!(with(ts, non_ascii.clone()), Err(BadHeader(ts)));
        assert_eq!(
            with(HEADER_WEBHOOK_ID, non_ascii.clone()),
            Err(BadHeader(HEADER_WEBHOOK_ID))
        );
        assert_eq!(
            with(HEADER_WEBHOOK_SIGNATURE, non_ascii),
            Err(BadHeader(HEADER_WEBHOOK_SIGNATURE))
        );
        assert_eq!(
            with(HEADER_WEBHOOK_ID, text(&"x".repeat(10_000))),
            Err(Mismatch)
        );
        assert_eq!(with(HEADER_WEBHOOK_ID, text("")), Err(Mismatch));
        let sig = HEADER_WEBHOOK_SIGNATURE;
        for value in [
            String::new(),
            " ".repeat(10_000),
            "v1,".to_owned(),
            "v1,!!!!".to_owned(),
            "v1".to_owned(),
            ",,,,".to_owned(),
            format!("v1,{}", "A".repeat(10_000)),
        ] {
            assert_eq!(with(sig, text(&value)), Err(Mismatch), "{value:.20}");
        }
    }

    #[test]
    fn at_most_sixteen_signatures_are_examined() {
        let set = SecretSet::parse(VECTOR_SECRET).unwrap();
        let now = 1_700_000_000;
        let real = set.sign("evt_1", now, "{}");
        let decoy = "v1,bm90IGEgc2lnbmF0dXJlIGF0IGFsbCwganVzdCBub2lzZSE=";
        let list = |decoys: usize| {
            let mut entries = vec![decoy; decoys];
            entries.push(&real);
            entries.join(" ")
        };
        let verify = |signatures: String| {
            let mut headers = header_map(&set.headers("evt_1", now, "{}"));
            headers.insert(
                HEADER_WEBHOOK_SIGNATURE,
                HeaderValue::from_str(&signatures).unwrap(),
            );
            set.verify_at(b"{}", &headers, now)
        };
        assert_eq!(verify(list(MAX_SIGNATURES - 1)), Ok(()));
        assert_eq!(
            verify(list(MAX_SIGNATURES)),
            Err(VerifyError::TooManySignatures)
        );
        assert_eq!(verify(list(10_000)), Err(VerifyError::TooManySignatures));
        // Other versions do not count: a receiver skips what it does not know.
        let mut others = vec!["v2,abc"; 100];
        others.push(&real);
        assert_eq!(verify(others.join(" ")), Ok(()));
        assert!(
            VerifyError::TooManySignatures
                .to_string()
                .contains("more than 16")
        );
    }

    #[test]
    fn rotation_verifies_with_any_secret_and_signs_with_all() {
        let both = SecretSet::parse(&format!("{OTHER_SECRET} {VECTOR_SECRET}")).unwrap();
        let old = SecretSet::parse(VECTOR_SECRET).unwrap();
        let new = SecretSet::parse(OTHER_SECRET).unwrap();
        let now = crate::clock::unix_seconds();
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
