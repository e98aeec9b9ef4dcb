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
    let store = SecretsManager::from_config(&moto.sdk_config().await);
    let base = env(&[
        (arn(INGEST_SECRETS), &ingest_arn),
        (arn(CHAT_ID_KEY), &key_arn),
        (QUEUE_URL, QUEUE),
    ]);
    let resolved = secrets::resolve(&base, &store).await.expect("resolve");
    assert_eq!(resolved.fetched(), 2);
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
    let text = errors.to_string();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with(&format!(
            "configuration error: INGEST_SECRETS_ARN: cannot read the secret {missing}: ResourceNotFoundException"
        )),
        "{text}"
    );
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
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with("configuration error: WEBHOOK_SECRETS_ARN: cannot read the secret arn:"),
        "{text}"
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
