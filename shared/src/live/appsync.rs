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
//! `LivePublishing` hands this adapter up to five events of one session at a time, in order,
//! and different sessions concurrently; they go as one request, AppSync's batch, and its answer
//! names each refused event by `index`, so a refusal stays tied to its event. That their order
//! within the batch is the order subscribers get is our reading, not a promise of the page
//! quoted above; the alternative, a request per event one after another, would spend a round
//! trip each of ingest's 250 ms. The wait is bounded twice: this client's timeout and
//! `LivePublishing`'s budget around all of them. Never retried (at most once, by design).
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

/// The publish request body: `{"channel": "/<namespace>/<segment>", "events": ["<json>", …]}`.
pub fn publish_body(channel: &str, payloads: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"channel": channel, "events": payloads}))
        .unwrap_or_default()
}

/// One result per event of a publish from AppSync's answer: `{"successful": [...], "failed":
/// [{"identifier", "index", "code", "message"}]}`, each entry naming its event by `index`. An
/// answer that names no index fails every event (nothing says which were taken).
fn per_event(answer: &serde_json::Value, count: usize) -> Vec<Result<(), PublishError>> {
    let failed = answer
        .get("failed")
        .and_then(|f| f.as_array())
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut results: Vec<Result<(), PublishError>> = vec![Ok(()); count];
    for entry in failed {
        let refusal = || {
            PublishError::Refused(
                one_error(entry).unwrap_or_else(|| "the event was not published".into()),
            )
        };
        match entry
            .get("index")
            .and_then(|i| i.as_u64())
            .and_then(|i| usize::try_from(i).ok())
            .filter(|&i| i < count)
        {
            Some(index) => results[index] = Err(refusal()),
            None => return vec![Err(refusal()); count],
        }
    }
    results
}

#[async_trait]
impl Publisher for AppSyncPublisher {
    async fn publish(&self, event: &LiveEvent) -> Result<(), PublishError> {
        match self.send(&[event]).await {
            Ok(answer) => per_event(&answer, 1).swap_remove(0),
            Err(error) => Err(error),
        }
    }

    /// One request for all of them (at most five, one session's): AppSync's batch publish.
    /// Their order within it is the list's; AppSync's page on HTTP publishing does not say
    /// more, and a request per event would cost a round trip each within ingest's 250 ms.
    async fn publish_in_order(
        &self,
        events: &[&LiveEvent],
        results: &mut Vec<Result<(), PublishError>>,
    ) {
        match self.send(events).await {
            Ok(answer) => results.extend(per_event(&answer, events.len())),
            Err(error) => results.extend(vec![Err(error); events.len()]),
        }
    }
}

impl AppSyncPublisher {
    /// Signs and sends one publish of `events` (one session's); AppSync's answer when it
    /// accepted the request, whatever it then did with each event.
    async fn send(&self, events: &[&LiveEvent]) -> Result<serde_json::Value, PublishError> {
        let Some(first) = events.first() else {
            return Ok(serde_json::Value::Null);
        };
        let channel = session_channel(&self.namespace, &first.session);
        let payloads: Vec<&str> = events.iter().map(|e| e.payload.as_str()).collect();
        let body = publish_body(&channel, &payloads);
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
        Ok(answer)
    }
}

/// The first error's type and message in an AppSync answer (`errors` or `failed`), bounded.
fn first_error(answer: &serde_json::Value) -> Option<String> {
    let first = answer
        .get("errors")
        .or_else(|| answer.get("failed"))?
        .as_array()?
        .first()?;
    one_error(first)
}

/// One error entry (`{"errorType"|"code", "message"}`) as "kind message", bounded.
fn one_error(first: &serde_json::Value) -> Option<String> {
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
        let body = publish_body("/relay/default", &[r#"{"id":"evt_1"}"#]);
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
            .signed(&identity, &publish_body("/relay/other", &["{}"]), at)
            .unwrap();
        assert_ne!(other.headers()["authorization"], auth);
    }

    #[test]
    fn the_body_names_the_channel_and_carries_the_event_as_a_json_string() {
        let body = publish_body("/relay/h-20edde6c7a20d4b4b8f72b7d26264224", &[r#"{"a":1}"#]);
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

    #[test]
    fn each_event_of_a_publish_gets_its_own_result_by_index() {
        let answer = serde_json::json!({
            "successful": [{"identifier": "a", "index": 0}, {"identifier": "c", "index": 2}],
            "failed": [{"identifier": "b", "index": 1, "code": 400, "message": "too big"}]
        });
        let results = per_event(&answer, 3);
        assert_eq!(results[0], Ok(()));
        assert_eq!(results[1], Err(PublishError::Refused("400 too big".into())));
        assert_eq!(results[2], Ok(()));
        // A failure naming no event (or one out of range) fails them all.
        for entry in [
            serde_json::json!({"code": 500, "message": "x"}),
            serde_json::json!({"index": 7, "code": 500, "message": "x"}),
        ] {
            let results = per_event(&serde_json::json!({"failed": [entry]}), 2);
            assert!(results.iter().all(Result::is_err), "{results:?}");
        }
        assert_eq!(per_event(&serde_json::json!({}), 2), vec![Ok(()), Ok(())]);
    }
}
