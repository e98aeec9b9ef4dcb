//! The publisher port on AWS: AppSync Events' HTTP publish, signed with SigV4 as the
//! function's role, so no API key exists anywhere.
//!
//! AWS AppSync Events, "Publish events via HTTP": "Send a POST request to the address:
//! https://HTTP_DOMAIN/event. Add the authorization header(s) required to authorize your
//! request. Specify the following in the request body: The channel that you are publishing to.
//! The list of events you are publishing. You can publish up to 5 events in a batch. Each
//! specified event in your publish request must be a stringified valid JSON value." IAM
//! authorization "utilizes AWS's signature version 4 signing process" ("Configuring
//! authorization and authentication to secure Event APIs"); the signing name is `appsync` and
//! the region the API's. The role needs `appsync:EventPublish` on the namespace's ARN,
//! `arn:aws:appsync:<region>:<account>:apis/<apiId>/channelNamespace/<name>` (the template).
//!
//! One event per request: a request of one keeps a refusal tied to its event. `LivePublishing`
//! sends one session's events one after another (the page applies them in arrival order) and
//! different sessions concurrently; a 5-event batch is not used for the order, since the page
//! quoted above does not say a batch reaches subscribers in its order. The wait is bounded
//! twice: this client's timeout and `LivePublishing`'s budget around all of them. Never
//! retried (at most once, by design).
//!
//! Credentials come from the function's one `SdkConfig` provider and are reused until five
//! minutes before they expire (Lambda's come from the environment and do not change).

use crate::live::channel::session_channel;
use crate::live::publish::{LiveEvent, PUBLISH_TIMEOUT, PublishError, Publisher};
use crate::telemetry::error_chain;
use async_trait::async_trait;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// The SigV4 signing name of AppSync (Event APIs included).
pub const SIGNING_NAME: &str = "appsync";

/// Credentials are refreshed this long before they expire.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

/// AppSync Events over HTTP, as the function's role.
pub struct AppSyncPublisher {
    client: reqwest::Client,
    url: reqwest::Url,
    namespace: String,
    region: String,
    credentials: SharedCredentialsProvider,
    cached: Mutex<Option<Identity>>,
}

impl std::fmt::Debug for AppSyncPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppSyncPublisher")
            .field("url", &self.url.as_str())
            .field("namespace", &self.namespace)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// Why the publisher cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("no AWS region is configured (AWS_REGION); the Event API is signed for its region")]
    NoRegion,
    #[error("no AWS credentials provider is configured")]
    NoCredentials,
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

impl AppSyncPublisher {
    /// `url` is the Event API's `https://<http domain>/event`.
    pub fn new(
        url: reqwest::Url,
        namespace: impl Into<String>,
        region: impl Into<String>,
        credentials: SharedCredentialsProvider,
    ) -> Result<Self, SetupError> {
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(crate::tls::client_config())
            .timeout(PUBLISH_TIMEOUT)
            .connect_timeout(PUBLISH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("chat-relay/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(AppSyncPublisher {
            client,
            url,
            namespace: namespace.into(),
            region: region.into(),
            credentials,
            cached: Mutex::new(None),
        })
    }

    /// From the function's SDK configuration: its region and credentials provider.
    pub fn from_config(
        config: &aws_config::SdkConfig,
        url: reqwest::Url,
        namespace: impl Into<String>,
    ) -> Result<Self, SetupError> {
        let region = config.region().ok_or(SetupError::NoRegion)?.to_string();
        let credentials = config
            .credentials_provider()
            .ok_or(SetupError::NoCredentials)?;
        Self::new(url, namespace, region, credentials)
    }

    async fn identity(&self) -> Result<Identity, PublishError> {
        let now = SystemTime::now();
        if let Some(identity) = self
            .cached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            let fresh = identity
                .expiration()
                .is_none_or(|at| at > now + REFRESH_BEFORE_EXPIRY);
            if fresh {
                return Ok(identity);
            }
        }
        let credentials = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| PublishError::Unavailable(format!("no AWS credentials: {e}")))?;
        let identity: Identity = credentials.into();
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = Some(identity.clone());
        Ok(identity)
    }

    /// The signed request for one event: body and the headers to send with it.
    fn signed(
        &self,
        identity: &Identity,
        body: &[u8],
        at: SystemTime,
    ) -> Result<http::Request<Vec<u8>>, PublishError> {
        let mut request = http::Request::post(self.url.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec())
            .map_err(|e| PublishError::Unavailable(format!("cannot build the request: {e}")))?;
        let params = v4::SigningParams::builder()
            .identity(identity)
            .region(&self.region)
            .name(SIGNING_NAME)
            .time(at)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| PublishError::Unavailable(format!("cannot sign: {e}")))?
            .into();
        let signable = SignableRequest::new(
            "POST",
            self.url.as_str(),
            request
                .headers()
                .iter()
                .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?))),
            SignableBody::Bytes(body),
        )
        .map_err(|e| PublishError::Unavailable(format!("cannot sign: {e}")))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| PublishError::Unavailable(format!("cannot sign: {e}")))?
            .into_parts();
        instructions.apply_to_request_http1x(&mut request);
        Ok(request)
    }
}

/// The publish request body: `{"channel": "/<namespace>/<segment>", "events": ["<json>"]}`.
pub fn publish_body(channel: &str, payload: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"channel": channel, "events": [payload]}))
        .unwrap_or_default()
}

#[async_trait]
impl Publisher for AppSyncPublisher {
    async fn publish(&self, event: &LiveEvent) -> Result<(), PublishError> {
        let channel = session_channel(&self.namespace, &event.session);
        let body = publish_body(&channel, &event.payload);
        let identity = self.identity().await?;
        let request = self.signed(&identity, &body, SystemTime::now())?;
        let (parts, body) = request.into_parts();
        let response = self
            .client
            .post(self.url.clone())
            .headers(parts.headers)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    PublishError::Timeout(PUBLISH_TIMEOUT.as_millis())
                } else {
                    PublishError::Unavailable(error_chain(&e))
                }
            })?;
        let status = response.status();
        // The answer is small ({"successful": [...], "failed": [...]} or {"errors": [...]}).
        let text = response.text().await.unwrap_or_default();
        let answer: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if !status.is_success() {
            return Err(PublishError::Refused(format!(
                "HTTP {}: {}",
                status.as_u16(),
                first_error(&answer).unwrap_or_else(|| "no detail".into())
            )));
        }
        match answer.get("failed").and_then(|f| f.as_array()) {
            Some(failed) if !failed.is_empty() => Err(PublishError::Refused(
                first_error(&answer).unwrap_or_else(|| "the event was not published".into()),
            )),
            _ => Ok(()),
        }
    }
}

/// The first error's type and message in an AppSync answer (`errors` or `failed`), bounded.
fn first_error(answer: &serde_json::Value) -> Option<String> {
    let first = answer
        .get("errors")
        .or_else(|| answer.get("failed"))?
        .as_array()?
        .first()?;
    let kind = first
        .get("errorType")
        .or_else(|| first.get("code"))
        .map(|v| v.to_string().trim_matches('"').to_owned())
        .unwrap_or_default();
    let message = first
        .get("message")
        .and_then(|m| m.as_str())
        .unwrap_or_default();
    Some(
        format!("{kind} {message}")
            .trim()
            .chars()
            .take(300)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::Credentials;

    fn publisher() -> AppSyncPublisher {
        AppSyncPublisher::new(
            "https://abc.appsync-api.eu-west-1.amazonaws.com/event"
                .parse()
                .unwrap(),
            "relay",
            "eu-west-1",
            SharedCredentialsProvider::new(Credentials::new(
                "AKIDEXAMPLE",
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                Some("session-token".into()),
                None,
                "test",
            )),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn the_request_is_signed_for_appsync_in_the_apis_region() {
        let publisher = publisher();
        let identity = publisher.identity().await.unwrap();
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_766_341_200);
        let body = publish_body("/relay/default", r#"{"id":"evt_1"}"#);
        let request = publisher.signed(&identity, &body, at).unwrap();
        let auth = request.headers()["authorization"].to_str().unwrap();
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20251221/eu-west-1/appsync/aws4_request, SignedHeaders="
            ),
            "{auth}"
        );
        let signed: Vec<&str> = auth
            .split("SignedHeaders=")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .split(';')
            .collect();
        for header in ["content-type", "host", "x-amz-date", "x-amz-security-token"] {
            assert!(signed.contains(&header), "{header} is signed: {signed:?}");
        }
        assert_eq!(request.headers()["x-amz-date"], "20251221T182000Z");
        assert_eq!(request.headers()["x-amz-security-token"], "session-token");
        // The same request signed again gives the same signature; another body does not.
        let again = publisher.signed(&identity, &body, at).unwrap();
        assert_eq!(again.headers()["authorization"], auth);
        let other = publisher
            .signed(&identity, &publish_body("/relay/other", "{}"), at)
            .unwrap();
        assert_ne!(other.headers()["authorization"], auth);
    }

    #[test]
    fn the_body_names_the_channel_and_carries_the_event_as_a_json_string() {
        let body = publish_body("/relay/h-20edde6c7a20d4b4b8f72b7d26264224", r#"{"a":1}"#);
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"channel": "/relay/h-20edde6c7a20d4b4b8f72b7d26264224", "events": ["{\"a\":1}"]})
        );
    }

    #[test]
    fn appsync_errors_are_summarised_in_one_bounded_line() {
        let answer = serde_json::json!({"errors": [{"errorType": "UnauthorizedException", "message": "You are not authorized"}]});
        assert_eq!(
            first_error(&answer).unwrap(),
            "UnauthorizedException You are not authorized"
        );
        let failed = serde_json::json!({"successful": [], "failed": [{"identifier": "x", "index": 0, "code": 400, "message": "x".repeat(1000)}]});
        assert_eq!(first_error(&failed).unwrap().len(), 300);
        assert_eq!(first_error(&serde_json::json!({})), None);
    }
}
