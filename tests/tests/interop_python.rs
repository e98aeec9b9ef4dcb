//! Interoperability with the PyPI `standardwebhooks` library (docs/contract.md, Signatures): a
//! delivery signed by the real dispatcher, captured by a real receiver, verifies in Python; a
//! request signed in Python is accepted by ingest. (The crates.io library is the receiver of every
//! Rust end-to-end test, and the npm one is exercised by the examples' tests.)

use axum::body::Body;
use axum::http::{Request, StatusCode};
use relay_shared::deliver::Deliverer;
use relay_shared::ingest::{Ingest, router};
use relay_shared::queue::memory::MemoryQueue;
use relay_shared::signature::SecretSet;
use relay_shared::telemetry::Metrics;
use relay_tests::{INGEST_SECRET, VerifyingReceiver, WEBHOOK_SECRET, venv_python};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

const OLD_WEBHOOK_SECRET: &str = "whsec_b2xkLXdlYmhvb2stc2VjcmV0LWJlaW5nLXJvdGF0ZWQ=";

/// Runs `script` with the JSON `input` on stdin; returns stdout, or panics with stderr.
async fn python(script: &str, input: &Value) -> String {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(venv_python())
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start python");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.to_string().as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const VERIFY: &str = r#"
import json, sys
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
case = json.load(sys.stdin)
results = []
for secret in case["secrets"]:
    try:
        Webhook(secret).verify(case["body"].encode(), case["headers"])
        results.append("ok")
    except WebhookVerificationError as e:
        results.append("refused: %s" % e)
print(json.dumps(results))
"#;

#[tokio::test]
async fn python_verifies_what_the_dispatcher_signs_with_either_rotating_secret() {
    let receiver = VerifyingReceiver::start_ok().await;
    let both = format!("{WEBHOOK_SECRET} {OLD_WEBHOOK_SECRET}");
    let deliverer = Deliverer::new(
        receiver.url.parse().unwrap(),
        Arc::new(SecretSet::parse(&both).unwrap()),
        Duration::from_secs(5),
    )
    .unwrap();
    let body = r#"{"event":"status","data":{"connected":true,"reason":"olá"},"timestamp":"2025-12-21T18:22:44.850Z"}"#;
    let (outcome, _) = deliverer.attempt("evt_interop", body.to_owned()).await;
    assert!(
        matches!(outcome, relay_shared::deliver::Outcome::Delivered { .. }),
        "{outcome:?}"
    );
    let delivery = receiver.deliveries().pop().unwrap();
    let headers: serde_json::Map<String, Value> = delivery
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect();
    let received = String::from_utf8(delivery.body.to_vec()).unwrap();
    let case = json!({"secrets": [WEBHOOK_SECRET, OLD_WEBHOOK_SECRET, INGEST_SECRET], "body": received, "headers": headers});
    let results: Vec<String> = serde_json::from_str(&python(VERIFY, &case).await).unwrap();
    assert_eq!(results[0], "ok", "the new secret verifies");
    assert_eq!(
        results[1], "ok",
        "the old secret verifies during the rotation"
    );
    assert!(
        results[2].starts_with("refused"),
        "another secret does not: {results:?}"
    );

    let tampered = json!({"secrets": [WEBHOOK_SECRET], "body": received.replace("olá", "ola"), "headers": headers});
    let results: Vec<String> = serde_json::from_str(&python(VERIFY, &tampered).await).unwrap();
    assert!(
        results[0].starts_with("refused"),
        "a tampered body is refused: {results:?}"
    );
}

#[tokio::test]
async fn ingest_accepts_what_python_signs() {
    const SIGN: &str = r#"
import json, sys
from datetime import datetime, timezone
from standardwebhooks import Webhook
case = json.load(sys.stdin)
now = datetime.now(tz=timezone.utc)
print(json.dumps({
    "webhook-id": case["id"],
    "webhook-timestamp": str(int(now.timestamp())),
    "webhook-signature": Webhook(case["secret"]).sign(case["id"], now, case["body"]),
}))
"#;
    let queue = Arc::new(MemoryQueue::new("interop", Duration::from_secs(30)));
    let app = router(Arc::new(Ingest::new(
        SecretSet::parse(INGEST_SECRET).unwrap(),
        relay_tests::chat_id_key(),
        queue.clone(),
        Metrics::off(),
    )));
    let body = r#"{"event":"qr","data":{"qr":"data:image/png;base64,AAAA","available":true},"timestamp":"2025-12-21T18:20:00.000Z","id":"py-1"}"#;
    for (secret, expected) in [
        (INGEST_SECRET, StatusCode::ACCEPTED),
        (WEBHOOK_SECRET, StatusCode::UNAUTHORIZED),
    ] {
        let signed: serde_json::Map<String, Value> = serde_json::from_str(
            &python(
                SIGN,
                &json!({"id": "msg_py", "secret": secret, "body": body}),
            )
            .await,
        )
        .unwrap();
        let mut request = Request::post("/events")
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        for (name, value) in &signed {
            request.headers_mut().insert(
                name.parse::<http::HeaderName>().unwrap(),
                value.as_str().unwrap().parse().unwrap(),
            );
        }
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(
            response.status(),
            expected,
            "signed in Python with {}",
            &secret[..10]
        );
    }
    assert_eq!(queue.len(), 1);
}
