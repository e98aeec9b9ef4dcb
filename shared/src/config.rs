//! Configuration from the environment, validated once at start (every variable, its reader and
//! its default: docs/contract.md, Configuration). Every problem is reported, one line each,
//! naming the variable and what it should look like; a function with a bad configuration
//! stops before serving anything.
//!
//! Values come through a lookup function so the local stack can layer command-line flags
//! over the environment and tests can pass plain maps.

use crate::backoff::{DeadLetterStatuses, RetryPolicy, RetrySchedule};
use crate::envelope::ChatIdKey;
use crate::live::channel::{DEFAULT_NAMESPACE as DEFAULT_LIVE_NAMESPACE, is_valid_segment};
use crate::live::token::TokenSecrets;
use crate::signature::SecretSet;
use crate::telemetry::DEFAULT_NAMESPACE;
use std::fmt;
use std::time::Duration;

pub const INGEST_SECRETS: &str = "INGEST_SECRETS";
pub const QUEUE_URL: &str = "QUEUE_URL";
pub const WEBHOOK_URL: &str = "WEBHOOK_URL";
pub const WEBHOOK_SECRETS: &str = "WEBHOOK_SECRETS";
pub const DELIVERY_TIMEOUT_MS: &str = "DELIVERY_TIMEOUT_MS";
pub const RETRY_SCHEDULE: &str = "RETRY_SCHEDULE";
pub const METRICS_NAMESPACE: &str = "METRICS_NAMESPACE";
pub const DEAD_LETTER_STATUSES: &str = "DEAD_LETTER_STATUSES";
pub const QR_TTL_SECONDS: &str = "QR_TTL_SECONDS";
pub const DEAD_LETTER_QUEUE_URL: &str = "DEAD_LETTER_QUEUE_URL";
pub const ATTEMPTS_TABLE: &str = "ATTEMPTS_TABLE";

/// The longest `QR_TTL_SECONDS`: a WhatsApp login code is long dead after an hour.
pub const MAX_QR_TTL_SECS: u64 = 3600;
pub const CHAT_ID_KEY: &str = "CHAT_ID_KEY";
/// The Event API's HTTP publish endpoint (`https://<http domain>/event`); unset, ingest
/// publishes nothing live.
pub const LIVE_EVENTS_URL: &str = "LIVE_EVENTS_URL";
/// The channel namespace: a session's channel is `/<namespace>/<session segment>`.
pub const LIVE_NAMESPACE: &str = "LIVE_NAMESPACE";
/// Space-separated secrets that sign live tokens (the live authorizer, `relay local`).
pub const LIVE_TOKEN_SECRETS: &str = "LIVE_TOKEN_SECRETS";

/// The longest per-attempt timeout: a group of 10 is delivered serially inside one Lambda
/// invocation, and the dispatcher's timeout must cover all of them.
pub const MAX_DELIVERY_TIMEOUT_MS: u64 = 5_000;

/// The AWS SDK's endpoint overrides for the services the relay calls (`AWS_ENDPOINT_URL_SQS`
/// points the relay at a local SQS-protocol server). The SDK reads them, not the relay: unchecked,
/// a malformed one would fail every call (a `503` for every event) instead of stopping the start.
pub const ENDPOINT_OVERRIDES: [&str; 4] = [
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_SQS",
    "AWS_ENDPOINT_URL_SECRETS_MANAGER",
    "AWS_ENDPOINT_URL_DYNAMODB",
];

/// [`ENDPOINT_OVERRIDES`] checked alone, for a start that calls AWS (Secrets Manager) before it
/// reads the rest of its configuration.
pub fn check_endpoint_overrides(
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigErrors> {
    let mut reader = Reader::new(lookup);
    reader.endpoint_overrides();
    reader.finish(|| Some(()))
}

/// One bad variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.var, self.problem)
    }
}

/// Every bad variable, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self
            .0
            .iter()
            .map(|e| format!("configuration error: {e}"))
            .collect();
        f.write_str(&lines.join("\n"))
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    /// For `main`: print every problem and stop with a non-zero status.
    pub fn exit(&self) -> ! {
        eprintln!("{self}");
        std::process::exit(2)
    }
}

/// Reads variables through `lookup`, collecting every problem.
struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<ConfigError>,
}

impl<'a> Reader<'a> {
    fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Reader {
            lookup,
            errors: Vec::new(),
        }
    }

    fn fail(&mut self, var: &'static str, problem: impl Into<String>) {
        self.errors.push(ConfigError {
            var,
            problem: problem.into(),
        });
    }

    fn value(&mut self, var: &'static str) -> Option<String> {
        (self.lookup)(var)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn required(&mut self, var: &'static str, hint: &str) -> Option<String> {
        let value = self.value(var);
        if value.is_none() {
            self.fail(var, format!("not set; {hint}"));
        }
        value
    }

    fn secrets(&mut self, var: &'static str) -> Option<SecretSet> {
        let hint = format!(
            "expected space-separated whsec_<base64> secrets (the Lambda functions take {var}_ARN instead, naming a Secrets Manager secret)"
        );
        let list = self.required(var, &hint)?;
        SecretSet::parse(&list)
            .map_err(|e| self.fail(var, e.to_string()))
            .ok()
    }

    /// `CHAT_ID_KEY`; `why` says why it is needed when it is missing.
    fn chat_id_key(&mut self, why: &str) -> Option<ChatIdKey> {
        let text = self.required(CHAT_ID_KEY, why)?;
        ChatIdKey::new(&text)
            .map_err(|e| self.fail(CHAT_ID_KEY, e.to_string()))
            .ok()
    }

    fn queue_url(&mut self) -> Option<String> {
        self.fifo_url(QUEUE_URL)
    }

    /// A FIFO queue URL (`QUEUE_URL`, `DEAD_LETTER_QUEUE_URL`).
    fn fifo_url(&mut self, var: &'static str) -> Option<String> {
        let url = self.required(var, "expected an SQS FIFO queue URL, https://sqs.<region>.amazonaws.com/<account>/<name>.fifo")?;
        match reqwest::Url::parse(&url) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && url.ends_with(".fifo") => {
                Some(url)
            }
            Ok(_) => {
                self.fail(
                    var,
                    format!("{url:?} is not an http(s) URL of a FIFO queue (ending in .fifo)"),
                );
                None
            }
            Err(e) => {
                self.fail(var, format!("{url:?} is not a URL ({e})"));
                None
            }
        }
    }

    /// A DynamoDB table name: 3 to 255 of `a-z A-Z 0-9 _ - .`.
    fn table_name(&mut self, var: &'static str) -> Option<String> {
        let name = self.required(
            var,
            "expected the DynamoDB table that counts delivery attempts",
        )?;
        let valid = (3..=255).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if valid {
            Some(name)
        } else {
            self.fail(
                var,
                format!("{name:?} is not a DynamoDB table name (3 to 255 letters, digits, _ - .)"),
            );
            None
        }
    }

    fn metrics_namespace(&mut self) -> String {
        self.value(METRICS_NAMESPACE)
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned())
    }

    /// `LIVE_EVENTS_URL`: an http(s) URL; a bare endpoint (`https://<domain>`) gets `/event`.
    fn live_events_url(&mut self) -> Option<reqwest::Url> {
        let text = self.required(
            LIVE_EVENTS_URL,
            "expected the Event API's HTTP endpoint, https://<id>.appsync-api.<region>.amazonaws.com/event",
        )?;
        match http_url(&text) {
            Ok(mut url) if url.query().is_none() => {
                if url.path() == "/" {
                    url.set_path("/event");
                }
                Some(url)
            }
            _ => {
                self.fail(
                    LIVE_EVENTS_URL,
                    format!("{text:?} is not an http(s) URL like https://<id>.appsync-api.<region>.amazonaws.com/event"),
                );
                None
            }
        }
    }

    /// `LIVE_NAMESPACE`, default `relay`: one legal channel segment.
    fn live_namespace(&mut self) -> Option<String> {
        let name = self
            .value(LIVE_NAMESPACE)
            .unwrap_or_else(|| DEFAULT_LIVE_NAMESPACE.to_owned());
        if is_valid_segment(&name) {
            Some(name)
        } else {
            self.fail(
                LIVE_NAMESPACE,
                format!("{name:?} is not a channel namespace (1 to 50 letters, digits and inner dashes; default {DEFAULT_LIVE_NAMESPACE})"),
            );
            None
        }
    }

    /// `LIVE_TOKEN_SECRETS`: 1 to 4 space-separated secrets of 32+ characters.
    fn live_token_secrets(&mut self) -> Option<TokenSecrets> {
        let list = self.required(
            LIVE_TOKEN_SECRETS,
            "expected the space-separated secrets (32+ characters each) the app signs live tokens with (the Lambda function takes LIVE_TOKEN_SECRETS_ARN instead, naming a Secrets Manager secret)",
        )?;
        TokenSecrets::parse(&list)
            .map_err(|e| self.fail(LIVE_TOKEN_SECRETS, e.to_string()))
            .ok()
    }

    /// Each [`ENDPOINT_OVERRIDES`] variable that is set is an http(s) URL with a host.
    fn endpoint_overrides(&mut self) {
        for var in ENDPOINT_OVERRIDES {
            let Some(text) = self.value(var) else {
                continue;
            };
            if let Err(problem) = http_url(&text) {
                self.fail(
                    var,
                    format!("{text:?} is not an http(s) URL ({problem}); expected e.g. http://127.0.0.1:5000 (the AWS SDK's endpoint override: unset it to reach AWS)"),
                );
            }
        }
    }

    fn finish<T>(self, build: impl FnOnce() -> Option<T>) -> Result<T, ConfigErrors> {
        if self.errors.is_empty() {
            Ok(build().expect("every value was read without error"))
        } else {
            Err(ConfigErrors(self.errors))
        }
    }
}

/// How `CHAT_ID_KEY` should look, for the "not set" message.
const CHAT_ID_KEY_HINT: &str = "expected a random string of at least 32 characters (e.g. `openssl rand -base64 32`) that keys the hash naming each chat in group ids and logs; keep it stable";

/// What the ingest function needs.
#[derive(Debug)]
pub struct IngestConfig {
    pub secrets: SecretSet,
    /// Names chats in group ids (see [`ChatIdKey`]): ingest's own key, never rotated with the
    /// signing secrets.
    pub chat_id_key: ChatIdKey,
    pub queue_url: String,
    pub metrics_namespace: String,
    /// `QR_TTL_SECONDS`: an older `qr` is not pushed live.
    pub qr_ttl: Duration,
    /// Where accepted events are also published live, if anywhere.
    pub live: Option<LivePublishConfig>,
}

/// Ingest's live publishing on AWS: AppSync Events' HTTP endpoint and the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LivePublishConfig {
    /// `LIVE_EVENTS_URL`, always ending in `/event`.
    pub events_url: reqwest::Url,
    /// `LIVE_NAMESPACE`.
    pub namespace: String,
}

impl IngestConfig {
    pub fn from_env() -> Result<Self, ConfigErrors> {
        Self::from_lookup(&|var| std::env::var(var).ok())
    }

    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigErrors> {
        let mut reader = Reader::new(lookup);
        let secrets = reader.secrets(INGEST_SECRETS);
        let chat_id_key = reader.chat_id_key(CHAT_ID_KEY_HINT);
        let queue_url = reader.queue_url();
        let metrics_namespace = reader.metrics_namespace();
        let qr_ttl = reader.qr_ttl();
        // Only read (and checked) when set: unset means no live publishing.
        let live = reader.value(LIVE_EVENTS_URL).map(|_| {
            let events_url = reader.live_events_url();
            let namespace = reader.live_namespace();
            Some(LivePublishConfig {
                events_url: events_url?,
                namespace: namespace?,
            })
        });
        reader.endpoint_overrides();
        reader.finish(|| {
            Some(IngestConfig {
                secrets: secrets?,
                chat_id_key: chat_id_key?,
                queue_url: queue_url?,
                metrics_namespace,
                qr_ttl: qr_ttl?,
                live: match live {
                    None => None,
                    Some(live) => Some(live?),
                },
            })
        })
    }
}

/// Where and how to deliver: what the dispatcher and the local stack share.
#[derive(Debug)]
pub struct DeliveryConfig {
    pub webhook_url: reqwest::Url,
    pub webhook_secrets: SecretSet,
    pub delivery_timeout: Duration,
    /// `RETRY_SCHEDULE`, `DEAD_LETTER_STATUSES`, `QR_TTL_SECONDS`.
    pub retry: RetryPolicy,
}

impl Reader<'_> {
    fn delivery(&mut self) -> Option<DeliveryConfig> {
        let webhook_url = webhook_url(self);
        let webhook_secrets = self.secrets(WEBHOOK_SECRETS);
        let delivery_timeout = delivery_timeout(self);
        let schedule = match self.value(RETRY_SCHEDULE) {
            None => Some(RetrySchedule::default()),
            Some(text) => RetrySchedule::parse(&text)
                .map_err(|e| self.fail(RETRY_SCHEDULE, e))
                .ok(),
        };
        let dead_letter_statuses = match (self.lookup)(DEAD_LETTER_STATUSES) {
            None => Some(DeadLetterStatuses::default()),
            // Set but empty means "none": every failure is retried on the schedule.
            Some(text) => DeadLetterStatuses::parse(&text)
                .map_err(|e| self.fail(DEAD_LETTER_STATUSES, e))
                .ok(),
        };
        let qr_ttl = self.qr_ttl();
        Some(DeliveryConfig {
            webhook_url: webhook_url?,
            webhook_secrets: webhook_secrets?,
            delivery_timeout: delivery_timeout?,
            retry: RetryPolicy {
                schedule: schedule?,
                dead_letter_statuses: dead_letter_statuses?,
                qr_ttl: qr_ttl?,
            },
        })
    }

    fn qr_ttl(&mut self) -> Option<Duration> {
        let Some(text) = self.value(QR_TTL_SECONDS) else {
            return Some(crate::backoff::DEFAULT_QR_TTL);
        };
        match text.parse::<u64>() {
            Ok(secs) if (1..=MAX_QR_TTL_SECS).contains(&secs) => Some(Duration::from_secs(secs)),
            _ => {
                self.fail(
                    QR_TTL_SECONDS,
                    format!("{text:?} is not a whole number of seconds from 1 to {MAX_QR_TTL_SECS} (default 60)"),
                );
                None
            }
        }
    }
}

/// What the dispatcher needs.
#[derive(Debug)]
pub struct DispatcherConfig {
    pub queue_url: String,
    /// Where the dispatcher moves exhausted and dead-letter-status messages itself.
    pub dead_letter_queue_url: String,
    /// The DynamoDB table that counts real delivery attempts.
    pub attempts_table: String,
    pub delivery: DeliveryConfig,
    pub metrics_namespace: String,
}

impl DispatcherConfig {
    pub fn from_env() -> Result<Self, ConfigErrors> {
        Self::from_lookup(&|var| std::env::var(var).ok())
    }

    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigErrors> {
        let mut reader = Reader::new(lookup);
        let queue_url = reader.queue_url();
        let dead_letter_queue_url = reader.fifo_url(DEAD_LETTER_QUEUE_URL);
        let attempts_table = reader.table_name(ATTEMPTS_TABLE);
        let delivery = reader.delivery();
        let metrics_namespace = reader.metrics_namespace();
        reader.endpoint_overrides();
        reader.finish(|| {
            Some(DispatcherConfig {
                queue_url: queue_url?,
                dead_letter_queue_url: dead_letter_queue_url?,
                attempts_table: attempts_table?,
                delivery: delivery?,
                metrics_namespace,
            })
        })
    }
}

/// What the live authorizer (`functions/live-auth`) needs.
#[derive(Debug)]
pub struct LiveAuthConfig {
    pub secrets: TokenSecrets,
    pub namespace: String,
}

impl LiveAuthConfig {
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigErrors> {
        let mut reader = Reader::new(lookup);
        let secrets = reader.live_token_secrets();
        let namespace = reader.live_namespace();
        reader.endpoint_overrides();
        reader.finish(|| {
            Some(LiveAuthConfig {
                secrets: secrets?,
                namespace: namespace?,
            })
        })
    }
}

/// What the local stack needs: both functions' settings; the queue URL only when it runs
/// against SQS instead of its in-process queue.
#[derive(Debug)]
pub struct LocalStackConfig {
    pub ingest_secrets: SecretSet,
    /// Required with `queue_url`: a real queue outlives the process, so its group names must
    /// not change at the next start. Without it the caller may use a per-run random key.
    pub chat_id_key: Option<ChatIdKey>,
    pub queue_url: Option<String>,
    /// With `queue_url`: the DLQ; unset, the queue's own redrive policy names it.
    pub dead_letter_queue_url: Option<String>,
    pub delivery: DeliveryConfig,
}

impl LocalStackConfig {
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigErrors> {
        let mut reader = Reader::new(lookup);
        let ingest_secrets = reader.secrets(INGEST_SECRETS);
        // Only read (and checked) when set: unset means the in-process queue.
        let queue_url = reader.value(QUEUE_URL).map(|_| reader.queue_url());
        let dead_letter_queue_url = reader
            .value(DEAD_LETTER_QUEUE_URL)
            .map(|_| reader.fifo_url(DEAD_LETTER_QUEUE_URL));
        let chat_id_key = match (reader.value(CHAT_ID_KEY), &queue_url) {
            (None, None) => None,
            _ => Some(reader.chat_id_key(
                "required with QUEUE_URL: a real queue outlives this process, so the key naming its chats must stay the same across restarts; expected a random string of at least 32 characters (e.g. `openssl rand -base64 32`)",
            )),
        };
        let delivery = reader.delivery();
        reader.endpoint_overrides();
        reader.finish(|| {
            Some(LocalStackConfig {
                ingest_secrets: ingest_secrets?,
                chat_id_key: chat_id_key.map(|key| key.expect("read without error")),
                queue_url: queue_url.map(|url| url.expect("read without error")),
                dead_letter_queue_url: dead_letter_queue_url
                    .map(|url| url.expect("read without error")),
                delivery: delivery?,
            })
        })
    }
}

/// `WEBHOOK_URL` and `DELIVERY_TIMEOUT_MS` alone, read before the secrets are fetched so the
/// dispatcher can open its connection to the receiver meanwhile. `None` if either is unusable:
/// reading the whole configuration afterwards names the problem.
pub fn delivery_target(
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Option<(reqwest::Url, Duration)> {
    let mut reader = Reader::new(lookup);
    let target = (webhook_url(&mut reader)?, delivery_timeout(&mut reader)?);
    reader.errors.is_empty().then_some(target)
}

/// `WEBHOOK_URL` alone, for tools that deliver without a queue (the local stack's checks).
fn webhook_url(reader: &mut Reader<'_>) -> Option<reqwest::Url> {
    let text = reader.required(
        WEBHOOK_URL,
        "expected where to deliver, e.g. https://<app>.vercel.app/api/webhook/chat-whatsapp",
    )?;
    // The value is not echoed: a receiver's URL may carry a token (`?token=`, `user:pass@`), and
    // this line reaches CloudWatch. What is wrong with it is enough to fix it.
    let problem = match http_url(&text) {
        Ok(url) => return Some(url),
        Err(problem) => problem,
    };
    reader.fail(
        WEBHOOK_URL,
        format!(
            "{problem} (value not shown: it may carry a token); expected e.g. https://<app>.vercel.app/api/webhook/chat-whatsapp"
        ),
    );
    None
}

/// `text` as an http(s) URL with a host, or what is wrong with it (without the value, which
/// may carry a token).
fn http_url(text: &str) -> Result<reqwest::Url, String> {
    match reqwest::Url::parse(text) {
        Ok(url) if !matches!(url.scheme(), "http" | "https") => Err(format!(
            "the scheme is {:?}, not http or https",
            url.scheme()
        )),
        Ok(url) if url.host().is_none() => Err("the URL has no host".to_owned()),
        Ok(url) => Ok(url),
        Err(e) => Err(format!("not a URL ({e})")),
    }
}

fn delivery_timeout(reader: &mut Reader<'_>) -> Option<Duration> {
    let Some(text) = reader.value(DELIVERY_TIMEOUT_MS) else {
        return Some(crate::deliver::DEFAULT_TIMEOUT);
    };
    match text.parse::<u64>() {
        Ok(ms) if (1..=MAX_DELIVERY_TIMEOUT_MS).contains(&ms) => Some(Duration::from_millis(ms)),
        _ => {
            reader.fail(
                DELIVERY_TIMEOUT_MS,
                format!("{text:?} is not a whole number of milliseconds from 1 to {MAX_DELIVERY_TIMEOUT_MS} (default 5000)"),
            );
            None
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    /// A lookup over fixed pairs: the environment of a configuration test.
    pub(crate) fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |var| map.get(var).cloned()
    }

    #[test]
    fn a_complete_dispatcher_config_reads_with_defaults() {
        let env = lookup(&[
            (
                QUEUE_URL,
                "https://sqs.us-east-1.amazonaws.com/123456789012/chat-relay.fifo",
            ),
            (
                DEAD_LETTER_QUEUE_URL,
                "https://sqs.us-east-1.amazonaws.com/123456789012/chat-relay-dlq.fifo",
            ),
            (ATTEMPTS_TABLE, "chat-relay-attempts"),
            (WEBHOOK_URL, "https://app.example/api/webhook/chat-whatsapp"),
            (WEBHOOK_SECRETS, SECRET),
        ]);
        let config = DispatcherConfig::from_lookup(&env).unwrap();
        assert_eq!(config.delivery.delivery_timeout, Duration::from_secs(5));
        assert_eq!(config.delivery.retry, RetryPolicy::default());
        assert_eq!(config.metrics_namespace, DEFAULT_NAMESPACE);
    }

    #[test]
    fn every_bad_variable_gets_its_own_line() {
        let env = lookup(&[
            (
                QUEUE_URL,
                "https://sqs.us-east-1.amazonaws.com/123/standard-queue",
            ),
            (WEBHOOK_URL, "ftp://app"),
            (WEBHOOK_SECRETS, "hunter2"),
            (DEAD_LETTER_QUEUE_URL, "https://sqs.example/dlq"),
            (ATTEMPTS_TABLE, "a"),
            (DELIVERY_TIMEOUT_MS, "5s"),
            (RETRY_SCHEDULE, "5,later"),
            (DEAD_LETTER_STATUSES, "410 200"),
            (QR_TTL_SECONDS, "0"),
        ]);
        let errors = DispatcherConfig::from_lookup(&env).unwrap_err();
        let vars: Vec<&str> = errors.0.iter().map(|e| e.var).collect();
        assert_eq!(
            vars,
            [
                QUEUE_URL,
                DEAD_LETTER_QUEUE_URL,
                ATTEMPTS_TABLE,
                WEBHOOK_URL,
                WEBHOOK_SECRETS,
                DELIVERY_TIMEOUT_MS,
                RETRY_SCHEDULE,
                DEAD_LETTER_STATUSES,
                QR_TTL_SECONDS,
            ]
        );
        let text = errors.to_string();
        assert_eq!(text.lines().count(), 9);
        assert!(text.lines().all(|l| l.starts_with("configuration error: ")));
        assert!(!text.contains("hunter2"), "secrets are never echoed");
    }

    #[test]
    fn a_malformed_sdk_endpoint_override_stops_the_start_naming_it() {
        let dispatcher = [
            (QUEUE_URL, QUEUE),
            (DEAD_LETTER_QUEUE_URL, QUEUE),
            (ATTEMPTS_TABLE, "attempts"),
            (WEBHOOK_URL, "https://app.example/hook"),
            (WEBHOOK_SECRETS, SECRET),
        ];
        let with = |extra: (&'static str, &'static str)| {
            let mut pairs = dispatcher.to_vec();
            pairs.push(extra);
            DispatcherConfig::from_lookup(&lookup(&pairs))
        };
        assert!(with(("AWS_ENDPOINT_URL_SQS", "http://127.0.0.1:5000")).is_ok());
        for var in ENDPOINT_OVERRIDES {
            for bad in ["localhost:5000", "ftp://host", "not a url"] {
                let errors = with((var, bad)).unwrap_err();
                assert_eq!(errors.0.len(), 1, "{errors}");
                assert_eq!(errors.0[0].var, var);
                assert!(
                    errors.to_string().contains("is not an http(s) URL"),
                    "{errors}"
                );
                let alone = check_endpoint_overrides(&lookup(&[(var, bad)])).unwrap_err();
                assert_eq!(alone.0[0].var, var);
            }
        }
        assert!(check_endpoint_overrides(&lookup(&[])).is_ok());
    }

    #[test]
    fn a_bad_webhook_url_is_described_not_echoed() {
        for (url, problem) in [
            (
                "ftp://app.example/hook?token=s3cr3t",
                "the scheme is \"ftp\"",
            ),
            (
                "https://user:s3cr3t@app.example:99999/hook",
                "not a URL (invalid port number)",
            ),
            ("s3cr3t", "not a URL (relative URL without a base)"),
        ] {
            let lookup = |var: &str| (var == WEBHOOK_URL).then(|| url.to_owned());
            let mut reader = Reader::new(&lookup);
            assert!(webhook_url(&mut reader).is_none(), "{url}");
            let text = reader.errors[0].to_string();
            assert!(text.starts_with("WEBHOOK_URL: "), "{text}");
            assert!(text.contains(problem), "{text}");
            assert!(!text.contains("s3cr3t"), "the URL is never echoed: {text}");
        }
    }

    #[test]
    fn missing_variables_are_named() {
        let errors = IngestConfig::from_lookup(&lookup(&[])).unwrap_err();
        assert_eq!(errors.0.len(), 3);
        assert!(
            errors.0[0]
                .to_string()
                .starts_with("INGEST_SECRETS: not set")
        );
        assert!(errors.0[1].to_string().starts_with("CHAT_ID_KEY: not set"));
        assert!(errors.0[2].to_string().starts_with("QUEUE_URL: not set"));
    }

    const QUEUE: &str = "https://sqs.us-east-1.amazonaws.com/123456789012/chat-relay.fifo";
    const CHAT_KEY: &str = "a-chat-id-key-of-thirty-two-chars";

    #[test]
    fn ingest_reads_a_chat_id_key_of_at_least_32_characters() {
        let env = |key: &str| {
            IngestConfig::from_lookup(&lookup(&[
                (INGEST_SECRETS, SECRET),
                (QUEUE_URL, QUEUE),
                (CHAT_ID_KEY, key),
            ]))
        };
        assert!(env(CHAT_KEY).is_ok());
        let short = "s3cr3t-but-only-31-characters-x";
        let errors = env(short).unwrap_err();
        assert_eq!(errors.0.len(), 1);
        assert_eq!(errors.0[0].var, CHAT_ID_KEY);
        let text = errors.to_string();
        assert!(
            text.starts_with("configuration error: CHAT_ID_KEY: is 31 characters long"),
            "{text}"
        );
        assert!(!text.contains(short), "the key is never echoed: {text}");
    }

    #[test]
    fn the_local_stack_needs_a_chat_id_key_only_with_a_real_queue() {
        let base = [
            (INGEST_SECRETS, SECRET),
            (
                WEBHOOK_URL,
                "http://localhost:3001/api/webhook/chat-whatsapp",
            ),
            (WEBHOOK_SECRETS, SECRET),
        ];
        let with = |extra: &[(&str, &str)]| {
            let mut pairs = base.to_vec();
            pairs.extend_from_slice(extra);
            LocalStackConfig::from_lookup(&lookup(&pairs))
        };
        assert!(with(&[]).unwrap().chat_id_key.is_none(), "in-process queue");
        assert!(
            with(&[(CHAT_ID_KEY, CHAT_KEY)])
                .unwrap()
                .chat_id_key
                .is_some()
        );
        let errors = with(&[(QUEUE_URL, QUEUE)]).unwrap_err();
        assert_eq!(errors.0.len(), 1);
        assert_eq!(errors.0[0].var, CHAT_ID_KEY);
        assert!(
            errors.0[0].problem.contains("required with QUEUE_URL"),
            "{errors}"
        );
        assert!(with(&[(QUEUE_URL, QUEUE), (CHAT_ID_KEY, CHAT_KEY)]).is_ok());
        let errors = with(&[(CHAT_ID_KEY, "short")]).unwrap_err();
        assert_eq!(errors.0[0].var, CHAT_ID_KEY, "a key given is checked too");
    }
    #[test]
    fn ingest_publishes_live_only_when_the_events_url_is_set() {
        let base = [
            (INGEST_SECRETS, SECRET),
            (QUEUE_URL, QUEUE),
            (CHAT_ID_KEY, CHAT_KEY),
        ];
        let with = |extra: &[(&str, &str)]| {
            let mut pairs = base.to_vec();
            pairs.extend_from_slice(extra);
            IngestConfig::from_lookup(&lookup(&pairs))
        };
        let off = with(&[(LIVE_NAMESPACE, "bad namespace!")]).unwrap();
        assert_eq!(
            off.live, None,
            "unset: no live publishing, LIVE_NAMESPACE unread"
        );
        assert_eq!(off.qr_ttl, Duration::from_secs(60));
        let bare = with(&[(
            LIVE_EVENTS_URL,
            "https://abc.appsync-api.eu-west-1.amazonaws.com",
        )])
        .unwrap()
        .live
        .unwrap();
        assert_eq!(
            bare.events_url.as_str(),
            "https://abc.appsync-api.eu-west-1.amazonaws.com/event"
        );
        assert_eq!(bare.namespace, "relay");
        let full = with(&[
            (
                LIVE_EVENTS_URL,
                "https://abc.appsync-api.eu-west-1.amazonaws.com/event",
            ),
            (LIVE_NAMESPACE, "chat-live"),
            (QR_TTL_SECONDS, "30"),
        ])
        .unwrap();
        assert_eq!(full.qr_ttl, Duration::from_secs(30));
        assert_eq!(full.live.unwrap().namespace, "chat-live");
        let errors = with(&[
            (LIVE_EVENTS_URL, "ftp://abc"),
            (LIVE_NAMESPACE, "chat_live"),
        ])
        .unwrap_err();
        let vars: Vec<&str> = errors.0.iter().map(|e| e.var).collect();
        assert_eq!(vars, [LIVE_EVENTS_URL, LIVE_NAMESPACE]);
    }

    #[test]
    fn the_live_authorizer_needs_its_token_secrets() {
        let errors = LiveAuthConfig::from_lookup(&lookup(&[])).unwrap_err();
        assert_eq!(errors.0.len(), 1);
        assert!(
            errors.0[0].problem.contains("LIVE_TOKEN_SECRETS_ARN"),
            "{errors}"
        );
        let short = "too-short-live-secret";
        let errors =
            LiveAuthConfig::from_lookup(&lookup(&[(LIVE_TOKEN_SECRETS, short)])).unwrap_err();
        assert_eq!(errors.0[0].var, LIVE_TOKEN_SECRETS);
        assert!(!errors.to_string().contains(short), "never echoed");
        let config = LiveAuthConfig::from_lookup(&lookup(&[(
            LIVE_TOKEN_SECRETS,
            "live-secret-0123456789abcdef0123456789 live-secret-second-0123456789abcdef",
        )]))
        .unwrap();
        assert_eq!(config.secrets.len(), 2);
        assert_eq!(config.namespace, "relay");
    }
}
