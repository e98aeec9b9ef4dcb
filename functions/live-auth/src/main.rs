//! The live authorizer Lambda: AppSync Events' `AWS_LAMBDA` authorization for browser pages.
//! A page connects and subscribes with a live token; only its sessions' channels are allowed,
//! and publishing never is (the relay publishes with IAM).
//!
//! Wiring only: the SDK configuration is loaded once, at init; `LIVE_TOKEN_SECRETS` is fetched
//! from Secrets Manager when given as `LIVE_TOKEN_SECRETS_ARN` (`relay_shared::secrets`); the
//! decision and its log line are `relay_shared::live::authorize::Authorizer::handle` (the local
//! hub applies the same decision).

use lambda_runtime::{Error, LambdaEvent, service_fn};
use relay_shared::config::LiveAuthConfig;
use relay_shared::live::authorize::Authorizer;
use relay_shared::live::token::unix_now;
use relay_shared::secrets::configure_lambda;
use relay_shared::telemetry::init_json_logs;
use serde_json::Value;
use std::sync::Arc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    init_json_logs();
    let (_, config) = configure_lambda(LiveAuthConfig::from_lookup).await;
    let authorizer = Arc::new(Authorizer::new(config.secrets, config.namespace));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let authorizer = Arc::clone(&authorizer);
        async move { Ok::<_, Error>(authorizer.handle(event.payload, unix_now())) }
    }))
    .await
}
