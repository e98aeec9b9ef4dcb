//! Who may watch which channel: the one decision the local hub and the AppSync Events Lambda
//! authorizer (`functions/live-auth`) share.
//!
//! A live token (see [`crate::live::token`]) allows exactly the channels of its sessions,
//! `/<namespace>/<session segment>`: no wildcard, no other namespace, no sub-channel. Pages
//! never publish; only the relay does (with IAM on AWS).
//!
//! On AWS the Event API calls the authorizer for each connection and each subscription
//! (`EventConfig`: `ConnectionAuthModes` and `DefaultSubscribeAuthModes` are `AWS_LAMBDA`;
//! `DefaultPublishAuthModes` is `AWS_IAM` only). AWS AppSync Events, "Configuring
//! authorization and authentication to secure Event APIs": "Lambda authorization: Enables
//! custom authorization logic, evaluated by an Lambda function". The request AppSync sends:
//!
//! ```json
//! {"authorizationToken": "<token>",
//!  "requestContext": {"apiId": "…", "accountId": "…", "requestId": "…",
//!                     "operation": "EVENT_CONNECT" | "EVENT_SUBSCRIBE" | "EVENT_PUBLISH",
//!                     "channelNamespaceName": "relay", "channel": "/relay/default"},
//!  "requestHeaders": {…}}
//! ```
//!
//! (`channelNamespaceName` and `channel` are absent or null on `EVENT_CONNECT`: a connection
//! names no channel), and the answer it reads: `{"isAuthorized": bool, "ttlOverride": n,
//! "handlerContext": {…}}`. The decision is per operation and channel, so a connect is allowed
//! for any valid token, and each subscribe is checked against the token's sessions.
//!
//! `ttlOverride` is always 0. The Lambda authorizer configuration reads: "The number of seconds
//! a response should be cached for. The default is 0 seconds, which disables caching. ... The
//! Lambda function can override this by returning a ttlOverride key in its response"
//! (AppSync API reference, `LambdaAuthorizerConfig.authorizerResultTtlInSeconds`). A cached
//! "allow" is keyed by the token, and one token's answer for `/relay/a` must never stand for
//! `/relay/b`; nor may a token outlive its `exp` in a cache.

use crate::live::channel::{normalize_channel, session_channel};
use crate::live::token::{Claims, TokenError, TokenSecrets};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// May `claims` watch `channel` (canonical form, `/<namespace>/<segment>`)? Only the exact
/// channels of its sessions in `namespace`.
pub fn allows_channel(claims: &Claims, namespace: &str, channel: &str) -> bool {
    claims
        .sessions
        .iter()
        .any(|session| session_channel(namespace, session) == channel)
}

/// The operation an AppSync Events authorizer request is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Operation {
    #[serde(rename = "EVENT_CONNECT")]
    Connect,
    #[serde(rename = "EVENT_SUBSCRIBE")]
    Subscribe,
    #[serde(rename = "EVENT_PUBLISH")]
    Publish,
    /// Anything AppSync may add later: denied.
    #[serde(other)]
    Unknown,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Connect => "EVENT_CONNECT",
            Operation::Subscribe => "EVENT_SUBSCRIBE",
            Operation::Publish => "EVENT_PUBLISH",
            Operation::Unknown => "unknown",
        }
    }
}

/// `requestContext` of an AppSync Events authorizer request (the fields the decision reads).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestContext {
    #[serde(default)]
    pub request_id: String,
    pub operation: Operation,
    #[serde(default)]
    pub channel_namespace_name: Option<String>,
    #[serde(default)]
    pub channel: Option<String>,
}

/// An AppSync Events Lambda authorizer request. `requestHeaders` is not read.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizerRequest {
    #[serde(default)]
    pub authorization_token: String,
    pub request_context: RequestContext,
}

impl std::fmt::Debug for AuthorizerRequest {
    // The token is a live credential: a debug dump shows its length, never its text.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizerRequest")
            .field(
                "authorization_token",
                &format_args!("<{} bytes>", self.authorization_token.len()),
            )
            .field("request_context", &self.request_context)
            .finish()
    }
}

/// The authorizer's answer, as AppSync reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizerResponse {
    pub is_authorized: bool,
    /// Always 0: see the module documentation.
    pub ttl_override: u64,
}

/// Why a request was denied: for the log line, never with the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("the request is not an AppSync Events authorizer request: {0}")]
    BadRequest(String),
    #[error("{0}")]
    Token(#[from] TokenError),
    #[error("pages cannot publish; the relay publishes with IAM")]
    Publish,
    #[error("a subscribe must name one channel like /namespace/session (no wildcards)")]
    NoChannel,
    #[error("the operation is not connect, subscribe or publish")]
    UnknownOperation,
}

/// The decision for one request, with what to log about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub response: AuthorizerResponse,
    pub operation: Option<Operation>,
    pub request_id: String,
    /// The channel asked for, canonical, if it was legal.
    pub channel: Option<String>,
    pub denial: Option<Denial>,
}

/// The live authorizer: token secrets and the namespace its channels live in.
#[derive(Debug, Clone)]
pub struct Authorizer {
    secrets: TokenSecrets,
    namespace: String,
}

impl Authorizer {
    pub fn new(secrets: TokenSecrets, namespace: impl Into<String>) -> Self {
        Authorizer {
            secrets,
            namespace: namespace.into(),
        }
    }

    /// One authorization request as the `live-auth` Lambda gets it → AppSync's answer, with
    /// one log line per decision (operation, channel, outcome, reason; never the token).
    pub fn handle(&self, request: Value, now: u64) -> AuthorizerResponse {
        let decision = self.decide_value(request, now);
        let operation = decision.operation.map_or("unparsed", |o| o.as_str());
        let channel = decision.channel.as_deref().unwrap_or("");
        match &decision.denial {
            None => tracing::info!(
                request_id = %decision.request_id,
                operation,
                channel,
                outcome = "allowed",
                "live authorization"
            ),
            Some(denial) => tracing::info!(
                request_id = %decision.request_id,
                operation,
                channel,
                outcome = "denied",
                reason = %denial,
                "live authorization"
            ),
        }
        decision.response
    }

    /// Decides a raw request (whatever AppSync sent) at `now` (unix seconds). Anything that
    /// does not parse is denied, never an error: an error would make AppSync answer with a
    /// less useful message and count a function failure.
    pub fn decide_value(&self, request: Value, now: u64) -> Decision {
        match serde_json::from_value::<AuthorizerRequest>(request) {
            Ok(request) => self.decide(&request, now),
            Err(e) => deny(None, String::new(), None, Denial::BadRequest(e.to_string())),
        }
    }

    /// Connect: any valid token. Subscribe: a valid token whose sessions include the
    /// channel's. Publish and anything else: denied.
    pub fn decide(&self, request: &AuthorizerRequest, now: u64) -> Decision {
        let context = &request.request_context;
        let operation = Some(context.operation);
        let request_id = context.request_id.clone();
        let channel = context.channel.as_deref().and_then(normalize_channel);
        let denied = |denial| deny(operation, request_id.clone(), channel.clone(), denial);
        let claims = match context.operation {
            Operation::Publish => return denied(Denial::Publish),
            Operation::Unknown => return denied(Denial::UnknownOperation),
            Operation::Connect | Operation::Subscribe => {
                match self.secrets.verify(&request.authorization_token, now) {
                    Ok(claims) => claims,
                    Err(e) => return denied(Denial::Token(e)),
                }
            }
        };
        if context.operation == Operation::Subscribe {
            let Some(canonical) = &channel else {
                return denied(Denial::NoChannel);
            };
            if !allows_channel(&claims, &self.namespace, canonical) {
                return denied(Denial::Token(TokenError::WrongSession));
            }
        }
        Decision {
            response: AuthorizerResponse {
                is_authorized: true,
                ttl_override: 0,
            },
            operation,
            request_id,
            channel,
            denial: None,
        }
    }
}

fn deny(
    operation: Option<Operation>,
    request_id: String,
    channel: Option<String>,
    denial: Denial,
) -> Decision {
    Decision {
        response: AuthorizerResponse {
            is_authorized: false,
            ttl_override: 0,
        },
        operation,
        request_id,
        channel,
        denial: Some(denial),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::channel::session_channel;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use serde_json::json;
    use std::time::Duration;

    const SECRET: &str = "authorizer-test-secret-0123456789abcdef";
    const OTHER: &str = "authorizer-other-secret-0123456789abcdef";
    const NOW: u64 = 1_800_000_000;

    fn authorizer() -> Authorizer {
        Authorizer::new(TokenSecrets::parse(SECRET).unwrap(), "relay")
    }

    fn token(sessions: &[&str], ttl: u64, now: u64) -> String {
        let sessions: Vec<String> = sessions.iter().map(|s| s.to_string()).collect();
        TokenSecrets::parse(SECRET)
            .unwrap()
            .mint("op-1", &sessions, Duration::from_secs(ttl), now)
            .unwrap()
    }

    /// The request exactly as AppSync Events sends it.
    fn request(token: &str, operation: &str, channel: Option<&str>) -> Value {
        let mut context = json!({
            "apiId": "aaaaaa123123123example123",
            "accountId": "111122223333",
            "requestId": "f4081827-1111-4444-5555-5cf4695f339f",
            "operation": operation,
        });
        if let Some(channel) = channel {
            context["channelNamespaceName"] = json!("relay");
            context["channel"] = json!(channel);
        }
        json!({
            "authorizationToken": token,
            "requestContext": context,
            "requestHeaders": {"host": "abc.appsync-api.eu-west-1.amazonaws.com"},
        })
    }

    fn allowed(value: Value) -> bool {
        let decision = authorizer().decide_value(value, NOW);
        let wire = serde_json::to_value(&decision.response).unwrap();
        assert_eq!(wire["ttlOverride"], 0, "never cached");
        assert_eq!(wire["isAuthorized"], decision.denial.is_none());
        decision.denial.is_none()
    }

    fn denial(value: Value) -> Denial {
        authorizer()
            .decide_value(value, NOW)
            .denial
            .expect("denied")
    }

    #[test]
    fn a_valid_token_connects_and_subscribes_to_its_sessions_only() {
        let t = token(&["default", "sales.team"], 600, NOW);
        assert!(allowed(request(&t, "EVENT_CONNECT", None)));
        assert!(allowed(request(
            &t,
            "EVENT_SUBSCRIBE",
            Some("/relay/default")
        )));
        let mapped = session_channel("relay", "sales.team");
        assert!(allowed(request(&t, "EVENT_SUBSCRIBE", Some(&mapped))));
        for other in ["/relay/other", "/relay/default/x", "/other/default"] {
            assert_eq!(
                denial(request(&t, "EVENT_SUBSCRIBE", Some(other))),
                Denial::Token(TokenError::WrongSession),
                "{other}"
            );
        }
        for illegal in ["/relay/a b", "/relay/*", "/*"] {
            assert_eq!(
                denial(request(&t, "EVENT_SUBSCRIBE", Some(illegal))),
                Denial::NoChannel,
                "{illegal}: wildcards are never allowed"
            );
        }
        assert_eq!(
            denial(request(&t, "EVENT_SUBSCRIBE", None)),
            Denial::NoChannel
        );
    }

    #[test]
    fn browsers_never_publish_even_with_a_valid_token() {
        let t = token(&["default"], 600, NOW);
        assert_eq!(
            denial(request(&t, "EVENT_PUBLISH", Some("/relay/default"))),
            Denial::Publish
        );
        assert_eq!(
            denial(request(&t, "EVENT_SOMETHING_NEW", Some("/relay/default"))),
            Denial::UnknownOperation
        );
    }

    #[test]
    fn expired_and_not_yet_valid_tokens_are_denied() {
        let t = token(&["default"], 60, NOW - 60);
        assert_eq!(
            denial(request(&t, "EVENT_CONNECT", None)),
            Denial::Token(TokenError::Expired)
        );
        assert_eq!(
            denial(request(&t, "EVENT_SUBSCRIBE", Some("/relay/default"))),
            Denial::Token(TokenError::Expired)
        );
        let future = token(&["default"], 600, NOW + 600);
        assert_eq!(
            denial(request(&future, "EVENT_SUBSCRIBE", Some("/relay/default"))),
            Denial::Token(TokenError::NotYetValid)
        );
    }

    #[test]
    fn tampered_foreign_and_alg_none_tokens_are_denied() {
        let t = token(&["default"], 600, NOW);
        // Widen the sessions in the payload, keep the signature.
        let parts: Vec<&str> = t.split('.').collect();
        let mut claims: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
        claims["sessions"] = json!(["default", "other"]);
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            B64.encode(claims.to_string()),
            parts[2]
        );
        assert_eq!(
            denial(request(&tampered, "EVENT_SUBSCRIBE", Some("/relay/other"))),
            Denial::Token(TokenError::BadSignature)
        );
        let foreign = TokenSecrets::parse(OTHER)
            .unwrap()
            .mint("x", &["default".to_owned()], Duration::from_secs(600), NOW)
            .unwrap();
        assert_eq!(
            denial(request(&foreign, "EVENT_CONNECT", None)),
            Denial::Token(TokenError::BadSignature)
        );
        let none = format!(
            "{}.{}.",
            B64.encode(r#"{"alg":"none","typ":"JWT"}"#),
            B64.encode(claims.to_string())
        );
        assert_eq!(
            denial(request(&none, "EVENT_SUBSCRIBE", Some("/relay/default"))),
            Denial::Token(TokenError::WrongAlgorithm)
        );
        assert_eq!(
            denial(request("", "EVENT_CONNECT", None)),
            Denial::Token(TokenError::Missing)
        );
    }

    #[test]
    fn a_request_that_is_not_appsyncs_shape_is_denied_not_an_error() {
        for junk in [
            json!(null),
            json!({"authorizationToken": "x"}),
            json!({"requestContext": {"operation": 7}}),
            json!([1, 2, 3]),
        ] {
            assert!(
                matches!(denial(junk.clone()), Denial::BadRequest(_)),
                "{junk}"
            );
        }
    }

    #[test]
    fn the_decision_names_what_to_log_and_never_the_token() {
        let t = token(&["default"], 600, NOW);
        let decision =
            authorizer().decide_value(request(&t, "EVENT_SUBSCRIBE", Some("relay/other")), NOW);
        assert_eq!(decision.operation, Some(Operation::Subscribe));
        assert_eq!(decision.channel.as_deref(), Some("/relay/other"));
        assert_eq!(decision.request_id, "f4081827-1111-4444-5555-5cf4695f339f");
        let text = format!("{:?} {}", decision, decision.denial.clone().unwrap());
        assert!(!text.contains(&t), "the token is never in the decision");
        let parsed: AuthorizerRequest =
            serde_json::from_value(request(&t, "EVENT_CONNECT", None)).unwrap();
        let dump = format!("{parsed:?}");
        assert!(
            !dump.contains(&t),
            "nor in a debug dump of the request: {dump}"
        );
        assert!(dump.contains(&format!("<{} bytes>", t.len())), "{dump}");
    }

    /// A request as AppSync's Lambda authorizer documentation shows it, deserialized as the
    /// runtime does (from the body's text), for the wire answer below.
    fn wire_request(token: &str, operation: &str, channel: Option<&str>) -> Value {
        let mut context = json!({
            "apiId": "aaaaaa123123123example123",
            "accountId": "111122223333",
            "requestId": "f4081827-1111-4444-5555-5cf4695f339f",
            "operation": operation,
            "channelNamespaceName": null,
            "channel": null,
        });
        if let Some(channel) = channel {
            context["channelNamespaceName"] = json!("relay");
            context["channel"] = json!(channel);
        }
        let body =
            json!({"authorizationToken": token, "requestContext": context, "requestHeaders": {}})
                .to_string();
        serde_json::from_str(&body).expect("the runtime parses the body")
    }

    #[test]
    fn the_wire_answer_is_what_appsync_reads() {
        let answer = |request: Value| {
            let response = authorizer().handle(request, NOW);
            // What the runtime posts back to Lambda, and AppSync reads.
            serde_json::from_str::<Value>(&serde_json::to_string(&response).unwrap()).unwrap()
        };
        let t = token(&["default"], 300, NOW);
        let allowed = json!({"isAuthorized": true, "ttlOverride": 0});
        let denied = json!({"isAuthorized": false, "ttlOverride": 0});
        assert_eq!(answer(wire_request(&t, "EVENT_CONNECT", None)), allowed);
        assert_eq!(
            answer(wire_request(&t, "EVENT_SUBSCRIBE", Some("/relay/default"))),
            allowed
        );
        for request in [
            wire_request(&t, "EVENT_SUBSCRIBE", Some("/relay/sales")),
            wire_request(&t, "EVENT_PUBLISH", Some("/relay/default")),
            wire_request("not.a.token", "EVENT_CONNECT", None),
            json!({}),
        ] {
            assert_eq!(answer(request.clone()), denied, "{request}");
        }
    }
}
