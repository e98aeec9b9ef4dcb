//! The functions' init path against moto's Secrets Manager: secret variables given as
//! `*_ARN` are fetched, parsed by the same configuration code as plain variables, and verify
//! (or sign) what their stored value signs; a missing secret, an unreachable service, or a
//! variable set both ways stops init with one line naming the variable and never the value.

use http::{HeaderMap, HeaderValue};
use relay_shared::config::{
    CHAT_ID_KEY, DispatcherConfig, INGEST_SECRETS, IngestConfig, QUEUE_URL, WEBHOOK_SECRETS,
    WEBHOOK_URL,
};
use relay_shared::secrets::{self, SecretsManager, arn_var};
use relay_tests::{INGEST_SECRET, MotoServer, WEBHOOK_SECRET, free_port};
use std::collections::HashMap;

const QUEUE: &str = "https://sqs.us-east-1.amazonaws.com/123456789012/chat-relay.fifo";
/// The secret a rotation adds, and one nobody configured.
const NEW_SECRET: &str = "whsec_bmV3LXNlY3JldC1hZnRlci1yb3RhdGlvbi0xMjM0NQ==";
const STRANGER: &str = "whsec_c29tZW9uZS1lbHNlcy1zZWNyZXQtbm90LWNvbmZpZ3VyZWQ=";

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |var| map.get(var).cloned()
}

fn arn(var: &str) -> &'static str {
    arn_var(var).expect("a secret variable")
}

/// Standard Webhooks headers signed by the public crate with `secret`.
fn signed_by(secret: &str, id: &str, body: &str) -> HeaderMap {
    let timestamp = relay_shared::clock::unix_seconds();
    let signature = standardwebhooks::Webhook::new(secret)
        .expect("secret")
        .sign(id, timestamp, body.as_bytes())
        .expect("sign");
    let mut headers = HeaderMap::new();
    headers.insert("webhook-id", HeaderValue::from_str(id).unwrap());
    headers.insert("webhook-timestamp", HeaderValue::from(timestamp));
    headers.insert(
        "webhook-signature",
        HeaderValue::from_str(&signature).unwrap(),
    );
    headers
}

/// The operations a Secrets Manager client sends, by `X-Amz-Target`, in order.
#[derive(Clone, Debug, Default)]
struct Targets(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl aws_sdk_secretsmanager::config::Intercept for Targets {
    fn name(&self) -> &'static str {
        "Targets"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_secretsmanager::config::interceptors::BeforeTransmitInterceptorContextRef<
            '_,
        >,
        _components: &aws_sdk_secretsmanager::config::RuntimeComponents,
        _config: &mut aws_sdk_secretsmanager::config::ConfigBag,
    ) -> Result<(), aws_sdk_secretsmanager::error::BoxError> {
        if let Some(target) = context.request().headers().get("x-amz-target") {
            self.0.lock().unwrap().push(target.to_owned());
        }
        Ok(())
    }
}

impl Targets {
    /// A store over `config` whose requests this records.
    fn store(&self, config: &aws_config::SdkConfig) -> SecretsManager {
        let config = aws_sdk_secretsmanager::config::Builder::from(config)
            .interceptor(self.clone())
            .build();
        SecretsManager::new(aws_sdk_secretsmanager::Client::from_conf(config))
    }

    fn sent(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn ingest_secrets_fetched_by_arn_verify_what_either_stored_secret_signs() {
    let moto = MotoServer::start().await;
    // Mid-rotation: the secret holds the old and the new value.
    let stored = format!("{INGEST_SECRET} {NEW_SECRET}");
    let ingest_arn = moto.create_secret("chat-relay/ingest", &stored).await;
    let key_arn = moto
        .create_secret(
            "chat-relay/chat-id-key",
            "k3y0123456789abcdefghijklmnopqrstuvwxyz",
        )
        .await;
    let targets = Targets::default();
    let store = targets.store(&moto.sdk_config().await);
    let base = env(&[
        (arn(INGEST_SECRETS), &ingest_arn),
        (arn(CHAT_ID_KEY), &key_arn),
        (QUEUE_URL, QUEUE),
    ]);
    let resolved = secrets::resolve(&base, &store).await.expect("resolve");
    assert_eq!(resolved.fetched(), 2);
    assert_eq!(
        targets.sent(),
        ["secretsmanager.BatchGetSecretValue"],
        "both secrets in one request"
    );
    let lookup = resolved.over(&base);
    assert_eq!(
        lookup(CHAT_ID_KEY).as_deref(),
        Some("k3y0123456789abcdefghijklmnopqrstuvwxyz"),
        "a plain key comes through as stored"
    );
    let config = IngestConfig::from_lookup(&lookup).expect("config");
    assert_eq!(config.secrets.len(), 2);
    let body = r#"{"event":"status","session":"default","data":{}}"#;
    for secret in [INGEST_SECRET, NEW_SECRET] {
        config
            .secrets
            .verify(body.as_bytes(), &signed_by(secret, "evt_1", body))
            .expect("a signature by a stored secret verifies");
    }
    assert!(
        config
            .secrets
            .verify(body.as_bytes(), &signed_by(STRANGER, "evt_1", body))
            .is_err(),
        "a secret that is not stored does not"
    );
}

#[tokio::test]
async fn webhook_secrets_fetched_by_arn_sign_deliveries_the_receiver_accepts() {
    let moto = MotoServer::start().await;
    let webhook_arn = moto
        .create_secret("chat-relay/webhook", WEBHOOK_SECRET)
        .await;
    let store = SecretsManager::from_config(&moto.sdk_config().await);
    let base = env(&[
        (arn(WEBHOOK_SECRETS), &webhook_arn),
        (QUEUE_URL, QUEUE),
        (
            relay_shared::config::DEAD_LETTER_QUEUE_URL,
            "https://sqs.us-east-1.amazonaws.com/000000000000/relay-dlq.fifo",
        ),
        (relay_shared::config::ATTEMPTS_TABLE, "relay-attempts"),
        (WEBHOOK_URL, "https://app.example/api/webhook/chat-whatsapp"),
    ]);
    let resolved = secrets::resolve(&base, &store).await.expect("resolve");
    let config = DispatcherConfig::from_lookup(&resolved.over(&base)).expect("config");
    let body = r#"{"event":"message"}"#;
    let timestamp = relay_shared::clock::unix_seconds();
    let mut headers = HeaderMap::new();
    for (name, value) in config
        .delivery
        .webhook_secrets
        .headers("evt_2", timestamp, body)
    {
        headers.insert(name, HeaderValue::from_str(&value).unwrap());
    }
    standardwebhooks::Webhook::new(WEBHOOK_SECRET)
        .unwrap()
        .verify(body.as_bytes(), &headers)
        .expect("the receiver's library accepts the signature");
}

#[tokio::test]
async fn an_arn_that_does_not_exist_is_one_line_naming_the_variable() {
    let moto = MotoServer::start().await;
    // A real secret exists, so a wrong ARN is not mistaken for an empty store.
    moto.create_secret("chat-relay/ingest", INGEST_SECRET).await;
    let missing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:chat-relay/nope-AbCdEf";
    let store = SecretsManager::from_config(&moto.sdk_config().await);
    let base = env(&[(arn(INGEST_SECRETS), missing), (QUEUE_URL, QUEUE)]);
    let errors = secrets::resolve(&base, &store).await.unwrap_err();
    assert_one_line(
        &errors.to_string(),
        &format!(
            "configuration error: INGEST_SECRETS_ARN: cannot read the secret {missing}: ResourceNotFoundException"
        ),
    );
}

/// `text` is one line, starting with `start`.
fn assert_one_line(text: &str, start: &str) {
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.starts_with(start), "{text}");
}

#[tokio::test]
async fn an_unreachable_secrets_manager_is_one_line_without_the_value() {
    let moto = MotoServer::start().await;
    let real_arn = moto
        .create_secret("chat-relay/webhook", WEBHOOK_SECRET)
        .await;
    // The same SDK configuration, pointed at a port nobody listens on.
    let config = moto
        .sdk_config()
        .await
        .into_builder()
        .endpoint_url(format!("http://127.0.0.1:{}", free_port()))
        .build();
    let store = SecretsManager::from_config(&config);
    let base = env(&[(arn(WEBHOOK_SECRETS), &real_arn)]);
    let errors = secrets::resolve(&base, &store).await.unwrap_err();
    let text = errors.to_string();
    assert_one_line(
        &text,
        "configuration error: WEBHOOK_SECRETS_ARN: cannot read the secret arn:",
    );
    assert!(!text.contains("whsec_"), "{text}");
}

#[tokio::test]
async fn a_variable_set_both_ways_is_refused_before_anything_is_fetched() {
    let moto = MotoServer::start().await;
    let ingest_arn = moto.create_secret("chat-relay/ingest", INGEST_SECRET).await;
    let store = SecretsManager::from_config(&moto.sdk_config().await);
    let base = env(&[
        (INGEST_SECRETS, INGEST_SECRET),
        (arn(INGEST_SECRETS), &ingest_arn),
    ]);
    let text = secrets::resolve(&base, &store)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        text,
        "configuration error: INGEST_SECRETS_ARN: both INGEST_SECRETS and INGEST_SECRETS_ARN are set; set only one (INGEST_SECRETS_ARN on AWS, INGEST_SECRETS locally)"
    );
}

#[tokio::test]
async fn a_batch_with_one_missing_secret_fails_that_variable_alone() {
    let moto = MotoServer::start().await;
    let ingest_arn = moto.create_secret("chat-relay/ingest", INGEST_SECRET).await;
    let missing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:chat-relay/nope-AbCdEf";
    let targets = Targets::default();
    let store = targets.store(&moto.sdk_config().await);
    let base = env(&[
        (arn(INGEST_SECRETS), &ingest_arn),
        (arn(CHAT_ID_KEY), missing),
    ]);
    let errors = secrets::resolve(&base, &store).await.unwrap_err();
    assert_eq!(targets.sent(), ["secretsmanager.BatchGetSecretValue"]);
    assert_one_line(
        &errors.to_string(),
        &format!(
            "configuration error: CHAT_ID_KEY_ARN: cannot read the secret {missing}: ResourceNotFoundException"
        ),
    );
}

#[tokio::test]
async fn a_batch_answers_secrets_named_by_arn_name_or_partial_arn_in_the_order_asked() {
    let moto = MotoServer::start().await;
    let ingest_arn = moto.create_secret("chat-relay/ingest", INGEST_SECRET).await;
    let webhook_arn = moto
        .create_secret("chat-relay/webhook", WEBHOOK_SECRET)
        .await;
    moto.create_secret(
        "chat-relay/chat-id-key",
        "k3y0123456789abcdefghijklmnopqrstuvwxyz",
    )
    .await;
    let partial = webhook_arn[..webhook_arn.len() - 7].to_owned();
    assert!(
        webhook_arn.starts_with(&format!("{partial}-")),
        "{webhook_arn}"
    );
    let targets = Targets::default();
    let store = targets.store(&moto.sdk_config().await);
    let asked = [
        "chat-relay/chat-id-key".to_owned(),
        partial,
        ingest_arn.clone(),
    ];
    let answers: Vec<String> = secrets::SecretStore::secret_strings(&store, &asked)
        .await
        .into_iter()
        .map(|answer| answer.expect("every secret exists"))
        .collect();
    assert_eq!(
        answers,
        [
            "k3y0123456789abcdefghijklmnopqrstuvwxyz",
            WEBHOOK_SECRET,
            INGEST_SECRET
        ]
    );
    assert_eq!(
        targets.sent(),
        ["secretsmanager.BatchGetSecretValue"],
        "every form matched in the batch's answer, none fetched again"
    );
}

#[tokio::test]
async fn two_variables_naming_one_secret_ask_for_it_once() {
    let moto = MotoServer::start().await;
    let shared_arn = moto
        .create_secret(
            "chat-relay/shared",
            "k3y0123456789abcdefghijklmnopqrstuvwxyz",
        )
        .await;
    let other_arn = moto.create_secret("chat-relay/ingest", INGEST_SECRET).await;
    let targets = Targets::default();
    let store = targets.store(&moto.sdk_config().await);
    let asked = [shared_arn.clone(), other_arn, shared_arn];
    let answers = secrets::SecretStore::secret_strings(&store, &asked).await;
    let key = "k3y0123456789abcdefghijklmnopqrstuvwxyz".to_owned();
    assert_eq!(
        answers,
        [
            Ok(key.clone()),
            Ok(INGEST_SECRET.to_owned()),
            Ok(key.clone())
        ]
    );
    assert_eq!(targets.sent(), ["secretsmanager.BatchGetSecretValue"]);

    let targets = Targets::default();
    let store = targets.store(&moto.sdk_config().await);
    let answers =
        secrets::SecretStore::secret_strings(&store, &[asked[0].clone(), asked[0].clone()]).await;
    assert_eq!(answers, [Ok(key.clone()), Ok(key)]);
    assert_eq!(targets.sent(), ["secretsmanager.GetSecretValue"]);
}

/// A role without `secretsmanager:BatchGetSecretValue` (written before the functions asked for
/// it) still starts: the secrets are fetched one by one.
#[tokio::test]
async fn a_denied_batch_falls_back_to_one_request_per_secret() {
    use axum::http::{HeaderMap as Headers, StatusCode};
    use std::sync::{Arc, Mutex};

    let calls = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = Arc::clone(&calls);
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |headers: Headers, body: String| {
            let seen = Arc::clone(&seen);
            async move {
                let target = headers["x-amz-target"].to_str().unwrap().to_owned();
                seen.lock().unwrap().push(target.clone());
                let request: serde_json::Value = serde_json::from_str(&body).unwrap();
                let (status, answer) = if target == "secretsmanager.BatchGetSecretValue" {
                    (
                        StatusCode::BAD_REQUEST,
                        serde_json::json!({"__type": "AccessDeniedException",
                            "message": "not authorized to perform: secretsmanager:BatchGetSecretValue"}),
                    )
                } else {
                    let id = request["SecretId"].as_str().unwrap();
                    (
                        StatusCode::OK,
                        serde_json::json!({"ARN": id, "Name": id, "SecretString": format!("value of {id}")}),
                    )
                };
                (
                    status,
                    [("content-type", "application/x-amz-json-1.1")],
                    answer.to_string(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let store = SecretsManager::from_config(&relay_tests::sdk_config_at(&endpoint).await);
    let asked = ["a".to_owned(), "b".to_owned()];
    let answers = secrets::SecretStore::secret_strings(&store, &asked).await;
    assert_eq!(
        answers,
        [Ok("value of a".to_owned()), Ok("value of b".to_owned())]
    );
    assert_eq!(
        *calls.lock().unwrap(),
        [
            "secretsmanager.BatchGetSecretValue",
            "secretsmanager.GetSecretValue",
            "secretsmanager.GetSecretValue"
        ]
    );
}
