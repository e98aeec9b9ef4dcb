//! One delivery attempt (docs/contract.md, Delivery to the receiver): POST the stored body, signed,
//! to `WEBHOOK_URL`, and classify the outcome. 2xx is delivered; anything else — 3xx included,
//! since redirects are not followed — is a failure to retry, with the receiver's `Retry-After` when
//! it gave one.
//!
//! The HTTP client is built once and reused across attempts and Lambda invocations, so warm
//! invocations reuse TLS connections to the receiver; at a cold start [`Receiver::warm_up`]
//! opens the ones the first batch will use.

use crate::backoff::{FailureSignal, parse_retry_after};
use crate::clock::unix_seconds;
use crate::signature::SecretSet;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// 5 s per attempt unless `DELIVERY_TIMEOUT_MS` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The most of a receiver's answer that is read. The status and `Retry-After` decide the
/// outcome; the body is read only so a small answer hands its connection back to the pool.
/// Beyond this the connection is dropped: a receiver that streams forever cannot exhaust the
/// dispatcher's memory or hold an attempt open.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// The most a cold start spends opening the first connection to the receiver.
pub const WARM_UP_LIMIT: Duration = Duration::from_secs(1);

/// Connections opened at init to an HTTP/1.1 receiver: as many as one batch delivers at once.
/// A batch's messages are delivered one message group at a time, the groups concurrently, and
/// a batch holds at most 10 messages. AWS, on `BatchSize`: "For standard queues, the maximum is
/// 10,000. For FIFO queues, the maximum is 10." (Lambda Developer Guide, "Lambda parameters for
/// Amazon SQS event source mappings"); the template sets `BatchSize: 10`.
pub const WARM_CONNECTIONS: usize = 10;

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered { status: u16 },
    Failed(Failure),
}

/// A failed attempt: what happened, and what the receiver asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    /// `Retry-After` from a 429 or 503, already parsed and capped.
    pub retry_after: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureKind {
    /// The receiver answered, but not 2xx.
    Status(u16),
    /// No answer within the timeout.
    Timeout,
    /// No connection (refused, DNS, TLS).
    Connect,
    /// Anything else on the way (reset mid-response, protocol error).
    Transport,
}

impl Failure {
    /// For the backoff: a 429 or a timeout means "slow down".
    pub fn signal(&self) -> FailureSignal {
        match self.kind {
            FailureKind::Status(429) | FailureKind::Timeout => FailureSignal::Overloaded,
            _ => FailureSignal::Plain,
        }
    }

    /// A short label for logs and the `StatusClass` metric dimension.
    pub fn class(&self) -> &'static str {
        match self.kind {
            FailureKind::Status(s) if (300..400).contains(&s) => "3xx",
            FailureKind::Status(s) if (400..500).contains(&s) => "4xx",
            FailureKind::Status(_) => "5xx",
            FailureKind::Timeout => "timeout",
            FailureKind::Connect => "connect",
            FailureKind::Transport => "transport",
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self.kind {
            FailureKind::Status(s) => Some(s),
            _ => None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            FailureKind::Status(s) => write!(f, "receiver answered {s}")?,
            FailureKind::Timeout => f.write_str("receiver did not answer in time")?,
            FailureKind::Connect => f.write_str("could not connect to the receiver")?,
            FailureKind::Transport => f.write_str("connection failed mid-request")?,
        }
        if let Some(after) = self.retry_after {
            write!(f, " (Retry-After {} s)", after.as_secs())?;
        }
        Ok(())
    }
}

/// The HTTP client to one receiver, before its secrets are known: the dispatcher opens its
/// connection ([`Receiver::warm_up`]) while the secrets are fetched, then signs with them
/// ([`Receiver::signing_with`]).
pub struct Receiver {
    client: reqwest::Client,
    url: reqwest::Url,
    timeout: Duration,
}

impl Receiver {
    pub fn new(url: reqwest::Url, timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(crate::tls::client_config())
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("chat-relay/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Receiver {
            client,
            url,
            timeout,
        })
    }

    /// Whether this is the client [`Receiver::new`] would build for `url` and `timeout`.
    pub fn is_for(&self, url: &reqwest::Url, timeout: Duration) -> bool {
        &self.url == url && self.timeout == timeout
    }

    /// Opens (and keeps in the pool) the connections a batch's deliveries will use, TLS
    /// handshakes included, so the first batch of a cold start does not pay for them: one
    /// `HEAD`, and if the receiver answered it over HTTP/1.1, which carries one request at a
    /// time, [`WARM_CONNECTIONS`] more at once (the first connection may serve one of them, if
    /// it is back in the pool in time; over HTTP/2 the one connection carries them all). Any
    /// answer will do (a Next.js route answers a HEAD with 405); a receiver that is down or
    /// silent costs the cold start at most twice [`WARM_UP_LIMIT`] and a warning (without the
    /// URL, which may carry a token).
    pub async fn warm_up(&self) -> bool {
        let head = || {
            let request = self.client.head(self.url.clone()).send();
            async {
                let response = request.await.map_err(reqwest::Error::without_url)?;
                Ok::<_, reqwest::Error>(response.version())
            }
        };
        let limit = WARM_UP_LIMIT;
        match crate::warm_up::warm_up("receiver", limit, head()).await {
            None => false,
            Some(version) if version >= reqwest::Version::HTTP_2 => true,
            Some(_) => {
                let more = futures::future::try_join_all((0..WARM_CONNECTIONS).map(|_| head()));
                crate::warm_up::warm_up("receiver", limit, more)
                    .await
                    .is_some()
            }
        }
    }

    /// The deliverer on this client (and the connection it may have opened).
    pub fn signing_with(self, secrets: Arc<SecretSet>) -> Deliverer {
        Deliverer {
            client: self.client,
            url: self.url,
            secrets,
            timeout: self.timeout,
        }
    }
}

/// Signs and POSTs bodies to one webhook URL.
#[derive(Clone)]
pub struct Deliverer {
    client: reqwest::Client,
    url: reqwest::Url,
    secrets: Arc<SecretSet>,
    timeout: Duration,
}

impl Deliverer {
    pub fn new(
        url: reqwest::Url,
        secrets: Arc<SecretSet>,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        Ok(Receiver::new(url, timeout)?.signing_with(secrets))
    }

    pub fn url(&self) -> &reqwest::Url {
        &self.url
    }

    /// The longest one attempt can take (the client's whole-request timeout).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// One signed POST. `event_id` is the `webhook-id`: the same on every retry, so the
    /// receiver can drop duplicates.
    pub async fn attempt(&self, event_id: &str, body: String) -> (Outcome, Duration) {
        let started = Instant::now();
        let mut request = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json");
        for (name, value) in self.secrets.headers(event_id, unix_seconds(), &body) {
            request = request.header(name, value);
        }
        let outcome = match request.body(body).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = match status {
                    429 | 503 => response
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| parse_retry_after(v, SystemTime::now())),
                    _ => None,
                };
                drain_bounded(response).await;
                if (200..300).contains(&status) {
                    Outcome::Delivered { status }
                } else {
                    Outcome::Failed(Failure {
                        kind: FailureKind::Status(status),
                        retry_after,
                    })
                }
            }
            Err(e) => Outcome::Failed(Failure {
                kind: if e.is_timeout() {
                    FailureKind::Timeout
                } else if e.is_connect() {
                    FailureKind::Connect
                } else {
                    FailureKind::Transport
                },
                retry_after: None,
            }),
        };
        (outcome, started.elapsed())
    }
}

/// Reads an answer to its end if it is at most [`MAX_RESPONSE_BYTES`] (the connection goes
/// back to the pool), else stops there and drops it (the connection is closed). Errors while
/// reading do not change the outcome: the status line already decided it.
async fn drain_bounded(mut response: reqwest::Response) {
    let mut read = 0usize;
    while let Ok(Some(chunk)) = response.chunk().await {
        read += chunk.len();
        if read > MAX_RESPONSE_BYTES {
            tracing::debug!(
                limit = MAX_RESPONSE_BYTES,
                "receiver's answer is over the limit: connection dropped"
            );
            return;
        }
    }
}
