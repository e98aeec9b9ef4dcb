//! Where secret variables come from: read once, at init, before the configuration is parsed.
//!
//! Every secret variable `X` (see [`SECRET_VARS`]) has two sources. On AWS the function gets
//! `X_ARN`, naming a Secrets Manager secret whose `SecretString` holds exactly what `X` would
//! hold (one or two space-separated `whsec_` secrets, or the chat-id key), so the value never
//! sits in the function's configuration, where `lambda:GetFunctionConfiguration` (part of
//! AWS's read-only policies) would show it. Locally and in tests `X` itself is set, as before.
//! Both set is a configuration error; a secret that cannot be fetched stops the function at
//! start with one line naming the variable and the cause, never the value.
//!
//! [`resolve`] turns the environment into a lookup where every `X` holds its value, wherever it
//! came from, so `config` parses it unchanged and the domain only ever sees a `SecretSet` (or a
//! plain key string). There is no refresh: a new value reaches a function through a new
//! execution environment (the rotation steps in docs/operations.md force one).

use crate::config::{
    CHAT_ID_KEY, ConfigError, ConfigErrors, INGEST_SECRETS, LIVE_TOKEN_SECRETS, WEBHOOK_SECRETS,
};
use crate::telemetry::error_chain;
use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use std::collections::HashMap;
use std::fmt;

/// Every secret variable and the variable naming its Secrets Manager secret.
/// A new secret variable is one more line here.
pub const SECRET_VARS: [(&str, &str); 4] = [
    (INGEST_SECRETS, "INGEST_SECRETS_ARN"),
    (WEBHOOK_SECRETS, "WEBHOOK_SECRETS_ARN"),
    (CHAT_ID_KEY, "CHAT_ID_KEY_ARN"),
    (LIVE_TOKEN_SECRETS, "LIVE_TOKEN_SECRETS_ARN"),
];

/// The `X_ARN` variable of secret variable `X`, if `X` is one.
pub fn arn_var(var: &str) -> Option<&'static str> {
    SECRET_VARS
        .iter()
        .find(|(secret, _)| *secret == var)
        .map(|(_, arn)| *arn)
}

/// Set on both functions by the template and never read: changing it changes the functions'
/// configuration, so Lambda serves every later invocation from a new execution environment,
/// which reads the secrets again.
pub const SECRETS_REVISION: &str = "SECRETS_REVISION";

/// A store of secrets addressed by ARN: Secrets Manager on AWS (and moto in tests).
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// The secret's current `SecretString`, or why it cannot be had, in one line without it.
    async fn secret_string(&self, arn: &str) -> Result<String, String>;
}

/// AWS Secrets Manager, through the function's one SDK configuration.
#[derive(Clone, Debug)]
pub struct SecretsManager {
    client: Client,
}

impl SecretsManager {
    pub fn new(client: Client) -> Self {
        SecretsManager { client }
    }

    /// From the SDK configuration the function already loaded (region, credentials,
    /// `AWS_ENDPOINT_URL_SECRETS_MANAGER`), so both clients share it.
    pub fn from_config(config: &aws_config::SdkConfig) -> Self {
        SecretsManager::new(Client::new(config))
    }
}

#[async_trait]
impl SecretStore for SecretsManager {
    async fn secret_string(&self, arn: &str) -> Result<String, String> {
        let output = self
            .client
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(|err| match &err {
                // The service's own code and message ("ResourceNotFoundException: Secrets
                // Manager can't find the specified secret.") say most; the SDK's full chain
                // is for transport failures.
                SdkError::ServiceError(service) => {
                    let e = service.err();
                    format!(
                        "{}: {}",
                        e.code().unwrap_or("error"),
                        e.message().unwrap_or("no detail")
                    )
                }
                _ => error_chain(&err),
            })?;
        output
            .secret_string()
            .map(str::to_owned)
            .ok_or_else(|| "the secret has no SecretString (a binary secret?)".to_owned())
    }
}

/// The secret variables' values, wherever they came from. `Debug` shows names only.
pub struct ResolvedSecrets {
    values: HashMap<&'static str, String>,
}

impl fmt::Debug for ResolvedSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.values.keys().collect();
        names.sort();
        write!(f, "ResolvedSecrets({names:?})")
    }
}

impl ResolvedSecrets {
    /// `base` with every fetched secret variable filled in: what `*Config::from_lookup` reads.
    pub fn over<'a>(
        &'a self,
        base: impl Fn(&str) -> Option<String> + 'a,
    ) -> impl Fn(&str) -> Option<String> + 'a {
        move |var| self.values.get(var).cloned().or_else(|| base(var))
    }

    /// How many values came from the store.
    pub fn fetched(&self) -> usize {
        self.values.len()
    }
}

fn set(lookup: &dyn Fn(&str) -> Option<String>, var: &str) -> Option<String> {
    lookup(var)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// A Lambda function's start, the same for every function: the SDK configuration (loaded once,
/// shared by every client), the secret variables resolved from the environment or Secrets
/// Manager, then the function's typed configuration read by `read`. Any problem stops the
/// function here, one line per variable, exit status 2.
pub async fn configure_lambda<T>(
    read: impl FnOnce(&dyn Fn(&str) -> Option<String>) -> Result<T, ConfigErrors>,
) -> (aws_config::SdkConfig, T) {
    let aws = crate::queue::sqs::lambda_sdk_config().await;
    let config = configure_lambda_alongside(&aws, read, async {}).await;
    (aws, config)
}

/// [`configure_lambda`] on an SDK configuration already loaded, running `alongside` (a bounded
/// warm-up that needs no secret) while the secrets are fetched: both are waits on the network,
/// on AWS each a TLS handshake with a different host, so a cold start pays for the longer one
/// instead of both.
pub async fn configure_lambda_alongside<T>(
    aws: &aws_config::SdkConfig,
    read: impl FnOnce(&dyn Fn(&str) -> Option<String>) -> Result<T, ConfigErrors>,
    alongside: impl Future<Output = ()>,
) -> T {
    let env = |var: &str| std::env::var(var).ok();
    let store = SecretsManager::from_config(aws);
    let (resolved, ()) = tokio::join!(resolve(&env, &store), alongside);
    let resolved = resolved.unwrap_or_else(|errors| errors.exit());
    read(&resolved.over(env)).unwrap_or_else(|errors| errors.exit())
}

/// Fetches, one after the other, every secret variable whose `X_ARN` is set in `lookup`.
/// Problems are collected, one line each: `X` and `X_ARN` both set, or a fetch that failed (with
/// the ARN, which is not secret, and the store's reason).
pub async fn resolve(
    lookup: &dyn Fn(&str) -> Option<String>,
    store: &dyn SecretStore,
) -> Result<ResolvedSecrets, ConfigErrors> {
    let mut errors = Vec::new();
    let mut values = HashMap::new();
    // One after the other, on one connection: at once, each would open its own (a DNS lookup,
    // a TLS handshake and, for the lookup, a thread), which costs a cold start more CPU than a
    // second request costs time on a warm connection.
    for (var, arn_var) in SECRET_VARS {
        let Some(arn) = set(lookup, arn_var) else {
            continue;
        };
        if set(lookup, var).is_some() {
            errors.push(ConfigError {
                var: arn_var,
                problem: format!(
                    "both {var} and {arn_var} are set; set only one ({arn_var} on AWS, {var} locally)"
                ),
            });
            continue;
        }
        match store.secret_string(arn.as_str()).await {
            Ok(value) => {
                values.insert(var, value);
            }
            Err(cause) => errors.push(ConfigError {
                var: arn_var,
                // One line whatever the SDK's error chain looks like.
                problem: format!("cannot read the secret {arn}: {cause}")
                    .replace(['\n', '\r'], " "),
            }),
        }
    }
    if errors.is_empty() {
        Ok(ResolvedSecrets { values })
    } else {
        Err(ConfigErrors(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{IngestConfig, QUEUE_URL};
    use std::sync::Mutex;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:ingest-AbCdEf";

    /// A store holding fixed secrets, recording what was asked.
    #[derive(Default)]
    struct Fixed {
        secrets: HashMap<String, String>,
        asked: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl SecretStore for Fixed {
        async fn secret_string(&self, arn: &str) -> Result<String, String> {
            self.asked.lock().unwrap().push(arn.to_owned());
            self.secrets
                .get(arn)
                .cloned()
                .ok_or_else(|| "ResourceNotFoundException: no such secret\nsecond line".into())
        }
    }

    use crate::config::tests::lookup as env;

    #[test]
    fn every_secret_variable_has_its_arn_twin() {
        for (var, arn) in SECRET_VARS {
            assert_eq!(arn, format!("{var}_ARN"));
            assert_eq!(arn_var(var), Some(arn));
        }
        assert_eq!(arn_var(QUEUE_URL), None);
    }

    #[tokio::test]
    async fn an_arn_is_fetched_and_fills_the_variable() {
        let store = Fixed {
            secrets: [(ARN.to_owned(), SECRET.to_owned())].into(),
            ..Fixed::default()
        };
        let base = env(&[
            ("INGEST_SECRETS_ARN", ARN),
            (
                QUEUE_URL,
                "https://sqs.us-east-1.amazonaws.com/123456789012/q.fifo",
            ),
            (
                crate::config::CHAT_ID_KEY,
                "a-chat-id-key-of-at-least-32-characters",
            ),
        ]);
        let resolved = resolve(&base, &store).await.unwrap();
        assert_eq!(resolved.fetched(), 1);
        let config = IngestConfig::from_lookup(&resolved.over(&base)).unwrap();
        assert_eq!(config.secrets.len(), 1);
        assert!(!format!("{resolved:?}").contains("whsec_"));
    }

    #[tokio::test]
    async fn without_arns_the_environment_is_used_and_nothing_is_fetched() {
        let store = Fixed::default();
        let base = env(&[(INGEST_SECRETS, SECRET)]);
        let resolved = resolve(&base, &store).await.unwrap();
        assert_eq!(resolved.fetched(), 0);
        assert!(store.asked.lock().unwrap().is_empty());
        assert_eq!(
            resolved.over(&base)(INGEST_SECRETS).as_deref(),
            Some(SECRET)
        );
    }

    #[tokio::test]
    async fn both_set_is_refused_naming_both() {
        let store = Fixed::default();
        let base = env(&[(WEBHOOK_SECRETS, SECRET), ("WEBHOOK_SECRETS_ARN", ARN)]);
        let errors = resolve(&base, &store).await.unwrap_err();
        let text = errors.to_string();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.contains("WEBHOOK_SECRETS and WEBHOOK_SECRETS_ARN"),
            "{text}"
        );
        assert!(!text.contains(SECRET));
        assert!(store.asked.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn every_failed_fetch_is_one_line_naming_the_variable() {
        let store = Fixed::default();
        let base = env(&[("INGEST_SECRETS_ARN", ARN), ("CHAT_ID_KEY_ARN", "arn:x")]);
        let errors = resolve(&base, &store).await.unwrap_err();
        let vars: Vec<&str> = errors.0.iter().map(|e| e.var).collect();
        assert_eq!(vars, ["INGEST_SECRETS_ARN", "CHAT_ID_KEY_ARN"]);
        let text = errors.to_string();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains(&format!(
            "cannot read the secret {ARN}: ResourceNotFoundException"
        )));
    }
}
