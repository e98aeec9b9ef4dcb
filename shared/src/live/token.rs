//! Live tokens: the short-lived HS256 JWTs that let a browser subscribe to its sessions'
//! channels, and nothing else.
//!
//! The app's server (chatbot-atimo) mints one after its own login, with `jose` on npm; the relay
//! verifies it (the local hub, the AppSync Lambda authorizer) and mints one for scripts
//! (`relay token`). Claims: `sub` (who), `sessions` (the session names it may watch), `exp`
//! (at most [`MAX_LIFETIME`] ahead), optionally `iat` and `nbf`. Several secrets are accepted
//! at once (`LIVE_TOKEN_SECRETS`, space-separated) so a rotation never logs anyone out; the
//! first one signs.
//!
//! Verification is `jsonwebtoken` pinned to HS256 (so `alg: none` and every other algorithm
//! are refused before any key is used), over aws-lc-rs, the crypto the relay already links.
//! Times are checked here rather than by the crate, against an injected clock.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// The longest a token may live: a leaked token opens no new connection or subscription once it
/// expires. It does not close one already open: AppSync Events (and the hub, which mirrors it)
/// checks a token at connect and subscribe only.
pub const MAX_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// A token longer than this is refused unread: an honest one is a few hundred bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// At most this many sessions in one token (one operator watches a handful).
pub const MAX_SESSIONS: usize = 32;
/// Clock skew tolerated on `iat` and `nbf` (the minting server's clock may run ahead).
pub const LEEWAY: Duration = Duration::from_secs(30);
/// The shortest secret. RFC 7518 §3.2: "A key of the same size as the hash output (for
/// instance, 256 bits for "HS256") or larger MUST be used with this algorithm."
pub const MIN_SECRET_BYTES: usize = 32;
/// At most this many secrets at once (a rotation needs two).
pub const MAX_SECRETS: usize = 4;

/// The claims a live token carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub sessions: Vec<String>,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
}

impl Claims {
    /// May this token watch `session`?
    pub fn allows(&self, session: &str) -> bool {
        self.sessions.iter().any(|s| s == session)
    }
}

/// Why a token was refused. The message never quotes the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no token was given")]
    Missing,
    #[error("the token is over {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    #[error("the token is not a JWT (header.payload.signature, base64url JSON)")]
    Malformed,
    #[error("the token must be signed with HS256")]
    WrongAlgorithm,
    #[error("the token's signature does not match any of the relay's LIVE_TOKEN_SECRETS")]
    BadSignature,
    #[error("the token's claims are invalid: {0}")]
    BadClaims(String),
    #[error("the token has expired; fetch a new one from the app")]
    Expired,
    #[error(
        "the token is not valid yet (nbf or iat in the future); check the minting server's clock"
    )]
    NotYetValid,
    #[error("the token lives longer than the 15 minutes allowed (exp too far ahead)")]
    LifetimeTooLong,
    #[error("the token does not allow this session")]
    WrongSession,
}

/// A bad `LIVE_TOKEN_SECRETS` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretsError {
    #[error("expected 1 to {MAX_SECRETS} space-separated secrets, found {0}")]
    Count(usize),
    #[error(
        "secret #{0} is {1} bytes; each must be at least {MIN_SECRET_BYTES} (e.g. `openssl rand -base64 32`)"
    )]
    TooShort(usize, usize),
}

/// The secrets that sign and verify live tokens. The first one signs.
#[derive(Clone)]
pub struct TokenSecrets {
    keys: Vec<(EncodingKey, DecodingKey)>,
}

impl fmt::Debug for TokenSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenSecrets({} secret(s), redacted)", self.keys.len())
    }
}

impl TokenSecrets {
    /// Space-separated secrets, each used as its raw UTF-8 bytes (what `jose` does with
    /// `new TextEncoder().encode(secret)`).
    pub fn parse(list: &str) -> Result<Self, SecretsError> {
        let secrets: Vec<&str> = list.split_whitespace().collect();
        if secrets.is_empty() || secrets.len() > MAX_SECRETS {
            return Err(SecretsError::Count(secrets.len()));
        }
        let mut keys = Vec::with_capacity(secrets.len());
        for (index, secret) in secrets.iter().enumerate() {
            if secret.len() < MIN_SECRET_BYTES {
                return Err(SecretsError::TooShort(index + 1, secret.len()));
            }
            keys.push((
                EncodingKey::from_secret(secret.as_bytes()),
                DecodingKey::from_secret(secret.as_bytes()),
            ));
        }
        Ok(TokenSecrets { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// A token for `sessions`, valid from `now` (unix seconds) for `ttl`, signed with the
    /// first secret.
    pub fn mint(
        &self,
        sub: &str,
        sessions: &[String],
        ttl: Duration,
        now: u64,
    ) -> Result<String, TokenError> {
        if ttl.is_zero() || ttl > MAX_LIFETIME {
            return Err(TokenError::LifetimeTooLong);
        }
        let claims = Claims {
            sub: sub.to_owned(),
            sessions: sessions.to_vec(),
            exp: now + ttl.as_secs(),
            iat: Some(now),
            nbf: None,
        };
        check_shape(&claims)?;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.keys[0].0)
            .map_err(|e| TokenError::BadClaims(e.to_string()))
    }

    /// The token's claims if it is well formed, signed by one of the secrets with HS256, and
    /// valid at `now` (unix seconds).
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge);
        }
        let mut validation = Validation::new(Algorithm::HS256);
        // Times are checked below against the injected clock; no audience is used.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let mut last = TokenError::BadSignature;
        for (_, key) in &self.keys {
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => return check_claims(data.claims, now),
                Err(e) => match e.kind() {
                    ErrorKind::InvalidSignature => last = TokenError::BadSignature,
                    // Not a key question: the next secret would say the same.
                    ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                        return Err(TokenError::WrongAlgorithm);
                    }
                    ErrorKind::Json(_) | ErrorKind::InvalidClaimFormat(_) => {
                        return Err(bad_json_or_alg(token));
                    }
                    _ => return Err(TokenError::Malformed),
                },
            }
        }
        Err(last)
    }

    /// [`TokenSecrets::verify`], then: may it watch `session`?
    pub fn authorize(&self, token: &str, session: &str, now: u64) -> Result<Claims, TokenError> {
        let claims = self.verify(token, now)?;
        if claims.allows(session) {
            Ok(claims)
        } else {
            Err(TokenError::WrongSession)
        }
    }
}

/// A JSON error from the crate may come from the header (an unknown `alg` such as `none` does
/// not deserialize) or from the claims; tell the sender which.
fn bad_json_or_alg(token: &str) -> TokenError {
    match jsonwebtoken::decode_header(token) {
        Err(_) => {
            let alg_named = token
                .split('.')
                .next()
                .and_then(|h| {
                    use base64::Engine;
                    base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode(h)
                        .ok()
                })
                .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h).ok())
                .is_some_and(|h| h.get("alg").is_some());
            if alg_named {
                TokenError::WrongAlgorithm
            } else {
                TokenError::Malformed
            }
        }
        Ok(_) => TokenError::BadClaims(
            "expected sub (string), sessions (array of names), exp (number), optional iat and nbf"
                .into(),
        ),
    }
}

fn check_shape(claims: &Claims) -> Result<(), TokenError> {
    if claims.sub.is_empty() || claims.sub.len() > 256 {
        return Err(TokenError::BadClaims("sub must be 1 to 256 bytes".into()));
    }
    if claims.sessions.is_empty() || claims.sessions.len() > MAX_SESSIONS {
        return Err(TokenError::BadClaims(format!(
            "sessions must list 1 to {MAX_SESSIONS} session names"
        )));
    }
    if let Some(bad) = claims
        .sessions
        .iter()
        .find(|s| crate::live::channel::check_session(s).is_err())
    {
        return Err(TokenError::BadClaims(format!(
            "sessions: {:?} is not a session name ({})",
            bad.chars().take(70).collect::<String>(),
            crate::live::channel::SESSION_RULE
        )));
    }
    Ok(())
}

fn check_claims(claims: Claims, now: u64) -> Result<Claims, TokenError> {
    check_shape(&claims)?;
    let leeway = LEEWAY.as_secs();
    if claims.exp <= now {
        return Err(TokenError::Expired);
    }
    if claims.nbf.is_some_and(|nbf| nbf > now + leeway)
        || claims.iat.is_some_and(|iat| iat > now + leeway)
    {
        return Err(TokenError::NotYetValid);
    }
    // At most 15 minutes from when it was issued, and never more than 15 minutes from now.
    let lifetime = MAX_LIFETIME.as_secs();
    let issued = claims.iat.unwrap_or(now).max(claims.nbf.unwrap_or(0));
    if claims.exp > now + lifetime + leeway || claims.exp.saturating_sub(issued) > lifetime {
        return Err(TokenError::LifetimeTooLong);
    }
    Ok(claims)
}

/// Wall-clock unix seconds (from [`crate::clock`]): the production clock for
/// [`TokenSecrets::verify`], which takes the time as an argument so tests are exact.
pub fn unix_now() -> u64 {
    crate::clock::unix_seconds() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

    const A: &str = "live-secret-a-0123456789abcdef0123456789";
    const B: &str = "live-secret-b-0123456789abcdef0123456789";
    const NOW: u64 = 1_800_000_000;

    fn secrets(list: &str) -> TokenSecrets {
        TokenSecrets::parse(list).unwrap()
    }

    fn sessions(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// A token with any header and claims, signed with HS256 under `secret`.
    fn forge(header: serde_json::Value, claims: serde_json::Value, secret: &str) -> String {
        use aws_lc_rs::hmac;
        let signing_input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        let tag = hmac::sign(&key, signing_input.as_bytes());
        format!("{signing_input}.{}", B64.encode(tag.as_ref()))
    }

    fn hs256() -> serde_json::Value {
        serde_json::json!({"alg": "HS256", "typ": "JWT"})
    }

    #[test]
    fn a_minted_token_verifies_and_names_its_sessions() {
        let s = secrets(A);
        let token = s
            .mint("op-1", &sessions(&["default", "sales"]), MAX_LIFETIME, NOW)
            .unwrap();
        let claims = s.verify(&token, NOW + 60).unwrap();
        assert_eq!(claims.sub, "op-1");
        assert!(claims.allows("sales"));
        assert!(!claims.allows("other"));
        assert_eq!(claims.exp, NOW + 900);
        assert!(s.authorize(&token, "default", NOW).is_ok());
    }

    #[test]
    fn either_secret_verifies_during_a_rotation() {
        let old = secrets(A).mint("u", &sessions(&["s"]), Duration::from_secs(60), NOW);
        let new = secrets(B).mint("u", &sessions(&["s"]), Duration::from_secs(60), NOW);
        let both = secrets(&format!("{B} {A}"));
        assert!(both.verify(&old.unwrap(), NOW).is_ok());
        assert!(both.verify(&new.unwrap(), NOW).is_ok());
    }

    #[test]
    fn expired_is_denied_from_the_second_exp_is_reached() {
        let s = secrets(A);
        let token = s
            .mint("u", &sessions(&["s"]), Duration::from_secs(60), NOW)
            .unwrap();
        assert!(s.verify(&token, NOW + 59).is_ok());
        assert_eq!(s.verify(&token, NOW + 60), Err(TokenError::Expired));
        assert_eq!(s.verify(&token, NOW + 10_000), Err(TokenError::Expired));
    }

    #[test]
    fn not_yet_valid_is_denied() {
        let claims =
            serde_json::json!({"sub":"u","sessions":["s"],"nbf": NOW + 120,"exp": NOW + 600});
        let token = forge(hs256(), claims, A);
        assert_eq!(secrets(A).verify(&token, NOW), Err(TokenError::NotYetValid));
        assert!(secrets(A).verify(&token, NOW + 120).is_ok());
        let issued_later =
            serde_json::json!({"sub":"u","sessions":["s"],"iat": NOW + 300,"exp": NOW + 600});
        assert_eq!(
            secrets(A).verify(&forge(hs256(), issued_later, A), NOW),
            Err(TokenError::NotYetValid)
        );
    }

    #[test]
    fn a_lifetime_over_15_minutes_is_denied() {
        let long = serde_json::json!({"sub":"u","sessions":["s"],"iat": NOW,"exp": NOW + 901});
        assert_eq!(
            secrets(A).verify(&forge(hs256(), long, A), NOW),
            Err(TokenError::LifetimeTooLong)
        );
        let no_iat = serde_json::json!({"sub":"u","sessions":["s"],"exp": NOW + 3600});
        assert_eq!(
            secrets(A).verify(&forge(hs256(), no_iat, A), NOW),
            Err(TokenError::LifetimeTooLong)
        );
        let ok = serde_json::json!({"sub":"u","sessions":["s"],"iat": NOW,"exp": NOW + 900});
        assert!(secrets(A).verify(&forge(hs256(), ok, A), NOW).is_ok());
        assert_eq!(
            secrets(A).mint("u", &sessions(&["s"]), Duration::from_secs(901), NOW),
            Err(TokenError::LifetimeTooLong)
        );
    }

    #[test]
    fn wrong_session_is_denied() {
        let s = secrets(A);
        let token = s
            .mint("u", &sessions(&["default"]), Duration::from_secs(60), NOW)
            .unwrap();
        assert_eq!(
            s.authorize(&token, "sales", NOW),
            Err(TokenError::WrongSession)
        );
    }

    #[test]
    fn a_tampered_payload_or_signature_is_denied() {
        let s = secrets(A);
        let token = s
            .mint("u", &sessions(&["default"]), Duration::from_secs(60), NOW)
            .unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        // Same signature, a payload that widens the sessions.
        let widened = B64.encode(
            serde_json::json!({"sub":"u","sessions":["default","sales"],"iat":NOW,"exp":NOW+60})
                .to_string(),
        );
        let tampered = format!("{}.{}.{}", parts[0], widened, parts[2]);
        assert_eq!(s.verify(&tampered, NOW), Err(TokenError::BadSignature));
        let mut sig = B64.decode(parts[2]).unwrap();
        sig[0] ^= 1;
        let flipped = format!("{}.{}.{}", parts[0], parts[1], B64.encode(sig));
        assert_eq!(s.verify(&flipped, NOW), Err(TokenError::BadSignature));
        // Signed with a secret the relay does not hold.
        let other = secrets(B)
            .mint("u", &sessions(&["default"]), Duration::from_secs(60), NOW)
            .unwrap();
        assert_eq!(s.verify(&other, NOW), Err(TokenError::BadSignature));
    }

    #[test]
    fn alg_none_is_denied() {
        let claims = serde_json::json!({"sub":"u","sessions":["s"],"exp": NOW + 60});
        for header in [
            serde_json::json!({"alg":"none","typ":"JWT"}),
            serde_json::json!({"alg":"None"}),
        ] {
            let unsigned = format!(
                "{}.{}.",
                B64.encode(header.to_string()),
                B64.encode(claims.to_string())
            );
            assert_eq!(
                secrets(A).verify(&unsigned, NOW),
                Err(TokenError::WrongAlgorithm),
                "{header}"
            );
        }
    }

    #[test]
    fn another_algorithm_is_denied_even_with_a_valid_mac() {
        let claims = serde_json::json!({"sub":"u","sessions":["s"],"exp": NOW + 60});
        for alg in ["HS512", "HS384", "RS256", "ES256"] {
            let token = forge(serde_json::json!({"alg": alg}), claims.clone(), A);
            assert_eq!(
                secrets(A).verify(&token, NOW),
                Err(TokenError::WrongAlgorithm),
                "{alg}"
            );
        }
    }

    #[test]
    fn oversized_empty_and_malformed_tokens_are_denied_with_no_panic() {
        let s = secrets(A);
        assert_eq!(
            s.verify(&"a".repeat(MAX_TOKEN_BYTES + 1), NOW),
            Err(TokenError::TooLarge)
        );
        assert_eq!(s.verify("", NOW), Err(TokenError::Missing));
        assert_eq!(s.verify("   ", NOW), Err(TokenError::Missing));
        for junk in ["abc", "a.b", "a.b.c", "...", "é.é.é", "eyJ.eyJ.x"] {
            assert_eq!(s.verify(junk, NOW), Err(TokenError::Malformed), "{junk}");
        }
    }

    #[test]
    fn claims_of_the_wrong_shape_are_denied() {
        for claims in [
            serde_json::json!({"sub":"u","exp": NOW + 60}),
            serde_json::json!({"sub":"u","sessions":"s","exp": NOW + 60}),
            serde_json::json!({"sub":"u","sessions":[],"exp": NOW + 60}),
            serde_json::json!({"sub":"","sessions":["s"],"exp": NOW + 60}),
            serde_json::json!({"sub":"u","sessions":["s"]}),
            serde_json::json!({"sub":"u","sessions":["s"],"exp":"tomorrow"}),
            serde_json::json!({"sub":"u","sessions":["bad session\n"],"exp": NOW + 60}),
        ] {
            assert!(
                matches!(
                    secrets(A).verify(&forge(hs256(), claims.clone(), A), NOW),
                    Err(TokenError::BadClaims(_))
                ),
                "{claims}"
            );
        }
    }

    #[test]
    fn secrets_must_be_long_enough_and_few() {
        assert_eq!(
            TokenSecrets::parse("short").unwrap_err(),
            SecretsError::TooShort(1, 5)
        );
        assert_eq!(TokenSecrets::parse("").unwrap_err(), SecretsError::Count(0));
        assert_eq!(
            TokenSecrets::parse(&[A; 5].join(" ")).unwrap_err(),
            SecretsError::Count(5)
        );
        assert!(!format!("{:?}", secrets(A)).contains("live-secret"));
    }
}
