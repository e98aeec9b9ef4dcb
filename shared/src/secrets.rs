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

use crate::aws_http::{LazyClient, lazy_client};
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

    /// Several secrets, one answer each in the order asked. By default one after the other.
    async fn secret_strings(&self, arns: &[String]) -> Vec<Result<String, String>> {
        let mut answers = Vec::with_capacity(arns.len());
        for arn in arns {
            answers.push(self.secret_string(arn).await);
        }
        answers
    }
}

/// AWS Secrets Manager, through the function's one SDK configuration. The client is built on
/// first use: a function given its secrets as plain variables (locally) never builds it.
#[derive(Clone, Debug)]
pub struct SecretsManager {
    client: LazyClient<Client>,
}

impl SecretsManager {
    pub fn new(client: Client) -> Self {
        SecretsManager {
            client: lazy_client(move || client),
        }
    }

    /// From the SDK configuration the function already loaded (region, credentials,
    /// `AWS_ENDPOINT_URL_SECRETS_MANAGER`), so both clients share it.
    pub fn from_config(config: &aws_config::SdkConfig) -> Self {
        let config = aws_sdk_secretsmanager::config::Builder::from(config).build();
        SecretsManager {
            client: lazy_client(move || Client::from_conf(config)),
        }
    }
}

/// An SDK failure in one line: the service's own code and message ("ResourceNotFoundException:
/// Secrets Manager can't find the specified secret.") say most; the SDK's full chain is for
/// transport failures.
fn describe<E, R>(err: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug,
{
    match err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            code_and_message(e.code(), e.message())
        }
        _ => error_chain(err),
    }
}

/// A service's refusal as "Code: message", whether the whole call or one secret of a batch.
fn code_and_message(code: Option<&str>, message: Option<&str>) -> String {
    format!(
        "{}: {}",
        code.unwrap_or("error"),
        message.unwrap_or("no detail")
    )
}

fn string_of(value: Option<&str>) -> Result<String, String> {
    value
        .map(str::to_owned)
        .ok_or_else(|| "the secret has no SecretString (a binary secret?)".to_owned())
}

/// Whether a batch answer for the secret `arn`/`name` is the one asked for as `id`: by full
/// ARN, by name, or by partial ARN (the full one without the `-` and six random characters
/// Secrets Manager appends).
fn answers(id: &str, arn: Option<&str>, name: Option<&str>) -> bool {
    arn == Some(id)
        || name == Some(id)
        || arn
            .and_then(|arn| arn.strip_prefix(id))
            .is_some_and(|suffix| suffix.len() == 7 && suffix.starts_with('-'))
}

/// "Retrieves the contents of the encrypted fields SecretString or SecretBinary for up to 20
/// secrets" (BatchGetSecretValue, Secrets Manager API reference): every secret variable fits.
const _: () = assert!(SECRET_VARS.len() <= 20);

#[async_trait]
impl SecretStore for SecretsManager {
    async fn secret_string(&self, arn: &str) -> Result<String, String> {
        let output = self
            .client
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(|err| describe(&err))?;
        string_of(output.secret_string())
    }

    /// Two or more secrets in one `BatchGetSecretValue`: one round trip at a cold start instead
    /// of one per secret. Access is still decided per secret by `GetSecretValue` ("you must
    /// have secretsmanager:GetSecretValue for each secret"), and a secret it refuses comes back
    /// in `Errors`, reported for that secret alone. Whatever the batch leaves unanswered (a
    /// secret named in a form the answer does not echo), and every secret when the role lacks
    /// `secretsmanager:BatchGetSecretValue` (a role written before it was needed), is fetched
    /// one by one, so a stricter role costs a request, never the start.
    async fn secret_strings(&self, arns: &[String]) -> Vec<Result<String, String>> {
        let mut answered: Vec<Option<Result<String, String>>> = vec![None; arns.len()];
        // Each secret asked for once, even if two variables name the same one.
        let mut unique: Vec<String> = Vec::with_capacity(arns.len());
        for arn in arns {
            if !unique.contains(arn) {
                unique.push(arn.clone());
            }
        }
        if unique.len() > 1 {
            match self
                .client
                .batch_get_secret_value()
                .set_secret_id_list(Some(unique))
                .send()
                .await
            {
                Ok(output) => {
                    for (id, slot) in arns.iter().zip(answered.iter_mut()) {
                        if let Some(entry) = output
                            .secret_values()
                            .iter()
                            .find(|entry| answers(id, entry.arn(), entry.name()))
                        {
                            *slot = Some(string_of(entry.secret_string()));
                        } else if let Some(error) = output
                            .errors()
                            .iter()
                            .find(|error| error.secret_id() == Some(id))
                        {
                            *slot =
                                Some(Err(code_and_message(error.error_code(), error.message())));
                        }
                    }
                }
                Err(err) if err.code() == Some("AccessDeniedException") => {
                    tracing::warn!(
                        "secretsmanager:BatchGetSecretValue is denied; fetching the secrets one \
                         by one (grant it on \"*\" to save a request at every cold start)"
                    );
                }
                Err(err) => {
                    let cause = describe(&err);
                    return arns.iter().map(|_| Err(cause.clone())).collect();
                }
            }
        }
        for i in 0..arns.len() {
            if answered[i].is_none() {
                let answer = self.secret_string(&arns[i]).await;
                for (arn, slot) in arns.iter().zip(answered.iter_mut()).skip(i) {
                    if *arn == arns[i] && slot.is_none() {
                        *slot = Some(answer.clone());
                    }
                }
            }
        }
        answered.into_iter().flatten().collect()
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
    // Before the first call through the SDK: a malformed override is named, not a failed fetch.
    crate::config::check_endpoint_overrides(&env).unwrap_or_else(|errors| errors.exit());
    let store = SecretsManager::from_config(aws);
    let (resolved, ()) = tokio::join!(resolve(&env, &store), alongside);
    let resolved = resolved.unwrap_or_else(|errors| errors.exit());
    read(&resolved.over(env)).unwrap_or_else(|errors| errors.exit())
}

/// Fetches every secret variable whose `X_ARN` is set in `lookup`, all in one request to the
/// store when it can ([`SecretStore::secret_strings`]). Problems are collected, one line each:
/// `X` and `X_ARN` both set, or a fetch that failed (with the ARN, which is not secret, and the
/// store's reason).
pub async fn resolve(
    lookup: &dyn Fn(&str) -> Option<String>,
    store: &dyn SecretStore,
) -> Result<ResolvedSecrets, ConfigErrors> {
    let mut errors = Vec::new();
    let mut wanted = Vec::new();
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
        wanted.push((var, arn_var, arn));
    }
    // In one request, on one connection: separately and at once, each fetch would open its own
    // (a DNS lookup, a TLS handshake and, for the lookup, a thread); one after the other, each
    // would add a round trip to the cold start.
    let arns: Vec<String> = wanted.iter().map(|(_, _, arn)| arn.clone()).collect();
    let answers = if arns.is_empty() {
        Vec::new()
    } else {
        store.secret_strings(&arns).await
    };
    let mut values = HashMap::new();
    for ((var, arn_var, arn), answer) in wanted.into_iter().zip(answers) {
        match answer {
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

    /// A store holding fixed secrets, recording what was asked, request by request.
    #[derive(Default)]
    struct Fixed {
        secrets: HashMap<String, String>,
        asked: Mutex<Vec<Vec<String>>>,
    }

    #[async_trait]
    impl SecretStore for Fixed {
        async fn secret_string(&self, arn: &str) -> Result<String, String> {
            self.secret_strings(&[arn.to_owned()]).await.remove(0)
        }

        async fn secret_strings(&self, arns: &[String]) -> Vec<Result<String, String>> {
            self.asked.lock().unwrap().push(arns.to_vec());
            arns.iter()
                .map(|arn| {
                    self.secrets.get(arn).cloned().ok_or_else(|| {
                        "ResourceNotFoundException: no such secret\nsecond line".into()
                    })
                })
                .collect()
        }
    }

    #[tokio::test]
    async fn every_secret_is_asked_for_in_one_request() {
        const KEY_ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:key-AbCdEf";
        let store = Fixed {
            secrets: [
                (ARN.to_owned(), SECRET.to_owned()),
                (KEY_ARN.to_owned(), "k".repeat(40)),
            ]
            .into(),
            ..Fixed::default()
        };
        let base = env(&[("INGEST_SECRETS_ARN", ARN), ("CHAT_ID_KEY_ARN", KEY_ARN)]);
        let resolved = resolve(&base, &store).await.unwrap();
        assert_eq!(resolved.fetched(), 2);
        assert_eq!(*store.asked.lock().unwrap(), [vec![ARN, KEY_ARN]]);
        let lookup = resolved.over(&base);
        assert_eq!(lookup(INGEST_SECRETS).as_deref(), Some(SECRET));
        assert_eq!(lookup(CHAT_ID_KEY), Some("k".repeat(40)));
    }

    #[test]
    fn a_batch_answer_is_matched_by_arn_name_or_partial_arn() {
        let arn = Some("arn:aws:secretsmanager:us-east-1:1:secret:relay/ingest-AbCdEf");
        let name = Some("relay/ingest");
        for id in [
            "arn:aws:secretsmanager:us-east-1:1:secret:relay/ingest-AbCdEf",
            "relay/ingest",
            "arn:aws:secretsmanager:us-east-1:1:secret:relay/ingest",
        ] {
            assert!(answers(id, arn, name), "{id}");
        }
        for id in [
            "arn:aws:secretsmanager:us-east-1:1:secret:relay/in",
            "arn:aws:secretsmanager:us-east-1:1:secret:relay",
            "relay/ingest-AbCdEf",
            "",
        ] {
            assert!(!answers(id, arn, name), "{id}");
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
