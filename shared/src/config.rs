//! Configuration from the environment (SPEC §7), validated once at start. Every problem is
//! reported, one line each, naming the variable and what it should look like; a function
//! with a bad configuration stops before serving anything.
//!
//! Values come through a lookup function so the local stack can layer command-line flags
//! over the environment and tests can pass plain maps.

use crate::backoff::RetrySchedule;
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
pub const CHAT_ID_KEY: &str = "CHAT_ID_KEY";
pub const DEAD_LETTER_STATUSES: &str = "DEAD_LETTER_STATUSES";
pub const QR_TTL_SECONDS: &str = "QR_TTL_SECONDS";
pub const DEAD_LETTER_QUEUE_URL: &str = "DEAD_LETTER_QUEUE_URL";
pub const ATTEMPTS_TABLE: &str = "ATTEMPTS_TABLE";

/// The longest per-attempt timeout: a group of 10 is delivered serially inside one Lambda
/// invocation, and the dispatcher's timeout must cover all of them.
pub const MAX_DELIVERY_TIMEOUT_MS: u64 = 5_000;

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

    fn queue_url(&mut self) -> Option<String> {
        let url = self.required(QUEUE_URL, "expected the SQS FIFO queue URL, https://sqs.<region>.amazonaws.com/<account>/<name>.fifo")?;
        match reqwest::Url::parse(&url) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && url.ends_with(".fifo") => {
                Some(url)
            }
            Ok(_) => {
                self.fail(
                    QUEUE_URL,
                    format!("{url:?} is not an http(s) URL of a FIFO queue (ending in .fifo)"),
                );
                None
            }
            Err(e) => {
                self.fail(QUEUE_URL, format!("{url:?} is not a URL ({e})"));
                None
            }
        }
    }

    fn metrics_namespace(&mut self) -> String {
        self.value(METRICS_NAMESPACE)
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned())
    }

    fn finish<T>(self, build: impl FnOnce() -> Option<T>) -> Result<T, ConfigErrors> {
        if self.errors.is_empty() {
            Ok(build().expect("every value was read without error"))
        } else {
            Err(ConfigErrors(self.errors))
        }
    }
}

/// What the ingest function needs.
#[derive(Debug)]
pub struct IngestConfig {
    pub secrets: SecretSet,
    pub queue_url: String,
    pub metrics_namespace: String,
}

impl IngestConfig {
    pub fn from_env() -> Result<Self, ConfigErrors> {
        Self::from_lookup(&|var| std::env::var(var).ok())
    }

    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigErrors> {
        let mut reader = Reader::new(lookup);
        let secrets = reader.secrets(INGEST_SECRETS);
        let queue_url = reader.queue_url();
        let metrics_namespace = reader.metrics_namespace();
        reader.finish(|| {
            Some(IngestConfig {
                secrets: secrets?,
                queue_url: queue_url?,
                metrics_namespace,
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
    pub retry_schedule: RetrySchedule,
}

impl Reader<'_> {
    fn delivery(&mut self) -> Option<DeliveryConfig> {
        let webhook_url = webhook_url(self);
        let webhook_secrets = self.secrets(WEBHOOK_SECRETS);
        let delivery_timeout = delivery_timeout(self);
        let retry_schedule = match self.value(RETRY_SCHEDULE) {
            None => Some(RetrySchedule::default()),
            Some(text) => RetrySchedule::parse(&text)
                .map_err(|e| self.fail(RETRY_SCHEDULE, e))
                .ok(),
        };
        Some(DeliveryConfig {
            webhook_url: webhook_url?,
            webhook_secrets: webhook_secrets?,
            delivery_timeout: delivery_timeout?,
            retry_schedule: retry_schedule?,
        })
    }
}

/// What the dispatcher needs.
#[derive(Debug)]
pub struct DispatcherConfig {
    pub queue_url: String,
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
        let delivery = reader.delivery();
        let metrics_namespace = reader.metrics_namespace();
        reader.finish(|| {
            Some(DispatcherConfig {
                queue_url: queue_url?,
                delivery: delivery?,
                metrics_namespace,
            })
        })
    }
}

/// What the local stack needs: both functions' settings; the queue URL only when it runs
/// against SQS instead of its in-process queue.
#[derive(Debug)]
pub struct LocalStackConfig {
    pub ingest_secrets: SecretSet,
    pub queue_url: Option<String>,
    pub delivery: DeliveryConfig,
}

impl LocalStackConfig {
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigErrors> {
        let mut reader = Reader::new(lookup);
        let ingest_secrets = reader.secrets(INGEST_SECRETS);
        // Only read (and checked) when set: unset means the in-process queue.
        let queue_url = reader.value(QUEUE_URL).map(|_| reader.queue_url());
        let delivery = reader.delivery();
        reader.finish(|| {
            Some(LocalStackConfig {
                ingest_secrets: ingest_secrets?,
                queue_url: queue_url.map(|url| url.expect("read without error")),
                delivery: delivery?,
            })
        })
    }
}

/// `WEBHOOK_URL` alone, for tools that deliver without a queue (the local stack's checks).
fn webhook_url(reader: &mut Reader<'_>) -> Option<reqwest::Url> {
    let text = reader.required(
        WEBHOOK_URL,
        "expected where to deliver, e.g. https://<app>.vercel.app/api/webhook/chat-whatsapp",
    )?;
    match reqwest::Url::parse(&text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Some(url),
        _ => {
            reader.fail(WEBHOOK_URL, format!("{text:?} is not an http(s) URL"));
            None
        }
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
mod tests {
    use super::*;
    use std::collections::HashMap;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
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
            (WEBHOOK_URL, "https://app.example/api/webhook/chat-whatsapp"),
            (WEBHOOK_SECRETS, SECRET),
        ]);
        let config = DispatcherConfig::from_lookup(&env).unwrap();
        assert_eq!(config.delivery.delivery_timeout, Duration::from_secs(5));
        assert_eq!(config.delivery.retry_schedule, RetrySchedule::default());
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
            (DELIVERY_TIMEOUT_MS, "5s"),
            (RETRY_SCHEDULE, "5,later"),
        ]);
        let errors = DispatcherConfig::from_lookup(&env).unwrap_err();
        let vars: Vec<&str> = errors.0.iter().map(|e| e.var).collect();
        assert_eq!(
            vars,
            [
                QUEUE_URL,
                WEBHOOK_URL,
                WEBHOOK_SECRETS,
                DELIVERY_TIMEOUT_MS,
                RETRY_SCHEDULE
            ]
        );
        let text = errors.to_string();
        assert_eq!(text.lines().count(), 5);
        assert!(text.lines().all(|l| l.starts_with("configuration error: ")));
        assert!(!text.contains("hunter2"), "secrets are never echoed");
    }

    #[test]
    fn missing_variables_are_named() {
        let errors = IngestConfig::from_lookup(&lookup(&[])).unwrap_err();
        assert_eq!(errors.0.len(), 2);
        assert!(
            errors.0[0]
                .to_string()
                .starts_with("INGEST_SECRETS: not set")
        );
        assert!(errors.0[1].to_string().starts_with("QUEUE_URL: not set"));
    }
}
