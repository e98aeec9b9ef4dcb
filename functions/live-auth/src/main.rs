//! The live authorizer Lambda: AppSync Events' `AWS_LAMBDA` authorization for browser pages.
//! A page connects and subscribes with a live token; only its sessions' channels are allowed,
//! and publishing never is (the relay publishes with IAM).
//!
//! Wiring only: the SDK configuration is loaded once, at init; `LIVE_TOKEN_SECRETS` is fetched
//! from Secrets Manager when given as `LIVE_TOKEN_SECRETS_ARN` (`relay_shared::secrets`); the
//! decision is `relay_shared::live::authorize::Authorizer`, the same one the local hub applies.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use relay_shared::config::LiveAuthConfig;
use relay_shared::live::authorize::{Authorizer, AuthorizerResponse};
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
        async move { Ok::<_, Error>(handle(&authorizer, event, unix_now())) }
    }))
    .await
}

/// One authorization request → AppSync's answer, and one log line without the token.
fn handle(authorizer: &Authorizer, event: LambdaEvent<Value>, now: u64) -> AuthorizerResponse {
    let decision = authorizer.decide_value(event.payload, now);
    let operation = decision.operation.map_or("unparsed", |o| o.as_str());
    let channel = decision.channel.as_deref().unwrap_or("");
    match &decision.denial {
        None => tracing::info!(
            request_id = %decision.request_id,
            operation,
            channel,
            outcome = "allowed",
            "live authorization"
        ),
        Some(denial) => tracing::info!(
            request_id = %decision.request_id,
            operation,
            channel,
            outcome = "denied",
            reason = %denial,
            "live authorization"
        ),
    }
    decision.response
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_runtime::Context;
    use relay_shared::live::token::TokenSecrets;
    use serde_json::json;
    use std::time::Duration;

    const SECRET: &str = "live-auth-test-secret-0123456789abcdef";
    const NOW: u64 = 1_800_000_000;

    /// An invocation as the runtime builds it: the request body AppSync sent, deserialized by
    /// serde into the handler's event type.
    fn invoke(body: &str) -> Value {
        let payload: Value = serde_json::from_str(body).expect("the runtime parses the body");
        let authorizer = Authorizer::new(TokenSecrets::parse(SECRET).unwrap(), "relay");
        let response = handle(
            &authorizer,
            LambdaEvent::new(payload, Context::default()),
            NOW,
        );
        // What the runtime posts back to Lambda, and AppSync reads.
        serde_json::from_str(&serde_json::to_string(&response).unwrap()).unwrap()
    }

    fn token(sessions: &[&str]) -> String {
        let sessions: Vec<String> = sessions.iter().map(|s| s.to_string()).collect();
        TokenSecrets::parse(SECRET)
            .unwrap()
            .mint("op", &sessions, Duration::from_secs(300), NOW)
            .unwrap()
    }

    fn body(token: &str, operation: &str, channel: Option<&str>) -> String {
        let mut context = json!({
            "apiId": "aaaaaa123123123example123",
            "accountId": "111122223333",
            "requestId": "f4081827-1111-4444-5555-5cf4695f339f",
            "operation": operation,
            "channelNamespaceName": null,
            "channel": null,
        });
        if let Some(channel) = channel {
            context["channelNamespaceName"] = json!("relay");
            context["channel"] = json!(channel);
        }
        json!({"authorizationToken": token, "requestContext": context, "requestHeaders": {}})
            .to_string()
    }

    #[test]
    fn the_wire_answer_is_what_appsync_reads() {
        let t = token(&["default"]);
        assert_eq!(
            invoke(&body(&t, "EVENT_CONNECT", None)),
            json!({"isAuthorized": true, "ttlOverride": 0})
        );
        assert_eq!(
            invoke(&body(&t, "EVENT_SUBSCRIBE", Some("/relay/default"))),
            json!({"isAuthorized": true, "ttlOverride": 0})
        );
        for denied in [
            body(&t, "EVENT_SUBSCRIBE", Some("/relay/sales")),
            body(&t, "EVENT_PUBLISH", Some("/relay/default")),
            body("not.a.token", "EVENT_CONNECT", None),
            "{}".to_owned(),
        ] {
            assert_eq!(
                invoke(&denied),
                json!({"isAuthorized": false, "ttlOverride": 0}),
                "{denied}"
            );
        }
    }
}
