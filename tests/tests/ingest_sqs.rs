//! Ingest against a real SQS-protocol server (moto): what is stored, with which FIFO ids, and
//! that every refusal in docs/contract.md's status code table leaves the queue empty.

use aws_sdk_sqs::types::MessageSystemAttributeName;
use axum::http::HeaderValue;
use axum::http::{HeaderMap, StatusCode};
use relay_shared::clock::unix_seconds as unix_now;
use relay_shared::envelope::examples;
use relay_shared::ingest::{Ingest, router};
use relay_shared::queue::MAX_MESSAGE_BYTES;
use relay_shared::queue::memory::MemoryQueue;
use relay_shared::queue::sqs::SqsQueue;
use relay_shared::signature::SecretSet;
use relay_shared::telemetry::Metrics;
use relay_tests::router::call;
use relay_tests::{
    FifoQueues, INGEST_SECRET, MotoServer, WEBHOOK_SECRET, free_port, signed_headers,
    signed_headers_at,
};
use serde_json::{Value, json};
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tower::ServiceExt;

/// docs/contract.md's example message.
fn message_body() -> &'static str {
    static BODY: LazyLock<String> = LazyLock::new(|| {
        examples::incoming("3EB0C767D097B7C7C030", "5511999990000@c.us", "Oi").to_json()
    });
    &BODY
}

fn status_body() -> &'static str {
    static BODY: LazyLock<String> = LazyLock::new(|| {
        examples::status(true)
            .with_session("sales")
            .with_id("status-1")
            .to_json()
    });
    &BODY
}

fn ingest_app(queue: SqsQueue) -> axum::Router {
    let secrets = SecretSet::parse(INGEST_SECRET).unwrap();
    router(Arc::new(Ingest::new(
        secrets,
        relay_tests::chat_id_key(),
        Arc::new(queue),
        Metrics::off(),
    )))
}

async fn post_signed(app: &axum::Router, body: &str) -> (StatusCode, HeaderMap, Value) {
    call(
        app,
        "POST",
        "/events",
        signed_headers(INGEST_SECRET, "req-1", body),
        body.to_owned(),
    )
    .await
}

async fn receive_all(queues: &FifoQueues) -> Vec<aws_sdk_sqs::types::Message> {
    queues
        .client
        .receive_message()
        .queue_url(&queues.queue_url)
        .max_number_of_messages(10)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .expect("receive")
        .messages
        .unwrap_or_default()
}

fn attribute(message: &aws_sdk_sqs::types::Message, name: MessageSystemAttributeName) -> String {
    message
        .attributes()
        .and_then(|a| a.get(&name))
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn stores_the_exact_body_with_fifo_ids_and_deduplicates_a_resent_body() {
    let moto = MotoServer::start().await;
    let queues = moto.create_fifo_with_dlq("ingest-ids", 3, 30).await;
    let app = ingest_app(SqsQueue::new(queues.client.clone(), &queues.queue_url));

    let (status, _, first) = post_signed(&app, message_body()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert_eq!(first["status"], "queued");
    let message_id = first["id"].as_str().unwrap().to_owned();
    assert!(message_id.starts_with("evt_"), "{message_id}");

    // The sender retries the same body (signed again, a new timestamp): same id, one message.
    let (status, _, again) = post_signed(&app, message_body()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(again["id"], first["id"]);

    let (status, _, status_reply) = post_signed(&app, status_body()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        status_reply["id"], "status-1",
        "the sender's id is the event id"
    );

    let stored = receive_all(&queues).await;
    assert_eq!(stored.len(), 2, "the resent body was deduplicated");
    let by_group = |group: &str| {
        stored
            .iter()
            .find(|m| attribute(m, MessageSystemAttributeName::MessageGroupId) == group)
            .unwrap_or_else(|| panic!("no message in group {group}"))
    };
    // The chat's group names it by a keyed hash: no phone number in SQS.
    let chat_group = relay_tests::chat_id_key().chat_group("default", "5511999990000@c.us");
    assert!(!chat_group.contains("5511999990000"), "{chat_group}");
    let chat = by_group(&chat_group);
    assert_eq!(chat.body(), Some(message_body()), "stored byte for byte");
    assert_eq!(
        attribute(chat, MessageSystemAttributeName::MessageDeduplicationId),
        message_id
    );
    let status_message = by_group("sales:status");
    assert_eq!(status_message.body(), Some(status_body()));
    assert_eq!(
        attribute(
            status_message,
            MessageSystemAttributeName::MessageDeduplicationId
        ),
        "status-1"
    );
}

/// One refused request: what it is, its headers and body, and the status and message fragment
/// it must get.
type Refusal = (&'static str, HeaderMap, String, StatusCode, &'static str);

fn refusal_cases(huge: &str, malformed: &str, bad_direction: &str) -> Vec<Refusal> {
    let mut text_plain = signed_headers(INGEST_SECRET, "r", message_body());
    text_plain.insert("content-type", "text/plain".parse().unwrap());
    let mut unsigned = HeaderMap::new();
    unsigned.insert("content-type", "application/json".parse().unwrap());
    vec![
        (
            "wrong content type",
            text_plain,
            message_body().into(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        ),
        (
            "no content type",
            HeaderMap::new(),
            message_body().into(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "found none",
        ),
        (
            "over 1 MiB",
            signed_headers(INGEST_SECRET, "r", huge),
            huge.to_owned(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "1048576 bytes",
        ),
        (
            "unsigned",
            unsigned,
            message_body().into(),
            StatusCode::UNAUTHORIZED,
            "missing webhook-id header",
        ),
        (
            "wrong secret",
            signed_headers(WEBHOOK_SECRET, "r", message_body()),
            message_body().into(),
            StatusCode::UNAUTHORIZED,
            "signature does not match",
        ),
        (
            "stale",
            signed_headers_at(INGEST_SECRET, "r", message_body(), unix_now() - 600),
            message_body().into(),
            StatusCode::UNAUTHORIZED,
            "more than 5 minutes old",
        ),
        (
            "tampered",
            signed_headers(INGEST_SECRET, "r", message_body()),
            message_body().replace("Oi", "Tchau"),
            StatusCode::UNAUTHORIZED,
            "signature does not match",
        ),
        (
            "malformed JSON",
            signed_headers(INGEST_SECRET, "r", malformed),
            malformed.into(),
            StatusCode::BAD_REQUEST,
            "malformed JSON at line 2, column 11",
        ),
        (
            "schema",
            signed_headers(INGEST_SECRET, "r", bad_direction),
            bad_direction.to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
            r#"data.message.direction: expected "incoming" or "outgoing", found "sideways""#,
        ),
    ]
}

/// The fields a program can act on: where malformed JSON broke, which field broke the schema,
/// and the size limit.
async fn check_refusal_details(
    app: &axum::Router,
    malformed: &str,
    bad_direction: &str,
    huge: String,
) {
    let (_, _, reply) = call(
        app,
        "POST",
        "/events",
        signed_headers(INGEST_SECRET, "r", malformed),
        malformed.to_owned(),
    )
    .await;
    assert_eq!(
        (reply["line"].as_u64(), reply["column"].as_u64()),
        (Some(2), Some(11))
    );
    let (_, _, reply) = call(
        app,
        "POST",
        "/events",
        signed_headers(INGEST_SECRET, "r", bad_direction),
        bad_direction.to_owned(),
    )
    .await;
    assert_eq!(reply["path"], "data.message.direction");
    let (_, _, reply) = call(
        app,
        "POST",
        "/events",
        signed_headers(INGEST_SECRET, "r", &huge),
        huge,
    )
    .await;
    assert_eq!(reply["limit"], 1_048_576);
}

async fn check_routes_and_methods(app: &axum::Router) {
    let (status, _, reply) = call(app, "POST", "/nope", HeaderMap::new(), "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{reply}");
    let (status, _, _) = call(app, "GET", "/events", HeaderMap::new(), "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _, reply) = call(app, "GET", "/health", HeaderMap::new(), "").await;
    assert_eq!((status, reply), (StatusCode::OK, json!({"status": "ok"})));
}

#[tokio::test]
async fn every_refusal_has_its_status_and_message_and_stores_nothing() {
    let moto = MotoServer::start().await;
    let queues = moto.create_fifo_with_dlq("ingest-refusals", 3, 30).await;
    let app = ingest_app(SqsQueue::new(queues.client.clone(), &queues.queue_url));

    let huge = format!(
        r#"{{"event":"qr","data":{{"qr":"{}","available":true}},"timestamp":"2025-12-21T18:20:00Z"}}"#,
        "A".repeat(MAX_MESSAGE_BYTES)
    );
    let malformed = "{\"event\":\"qr\",\n \"data\": {]}";
    let bad_direction = message_body().replace("\"incoming\"", "\"sideways\"");

    let cases = refusal_cases(&huge, malformed, &bad_direction);
    for (name, headers, body, expected_status, expected_message) in cases {
        let (status, _, reply) = call(&app, "POST", "/events", headers, body).await;
        assert_eq!(status, expected_status, "{name}: {reply}");
        let message = reply["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(expected_message),
            "{name}: {message:?} lacks {expected_message:?}"
        );
        assert!(reply["error"].is_string(), "{name}: machine-readable code");
    }

    // Details a program can use.
    check_refusal_details(&app, malformed, &bad_direction, huge).await;
    check_routes_and_methods(&app).await;

    assert_eq!(
        queues.depth(&queues.queue_url).await,
        0,
        "nothing refused reached the queue"
    );
    assert!(receive_all(&queues).await.is_empty());
}

#[tokio::test]
async fn an_unreachable_queue_gives_503_with_retry_after() {
    // An SQS endpoint where nothing listens: the SDK cannot store the event.
    let config = relay_tests::sdk_config_at(&format!("http://127.0.0.1:{}", free_port())).await;
    let queue = SqsQueue::new(
        aws_sdk_sqs::Client::new(&config),
        "http://127.0.0.1:1/000000000000/gone.fifo",
    );
    let app = ingest_app(queue);
    let (status, headers, reply) = post_signed(&app, message_body()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{reply}");
    assert_eq!(headers["retry-after"], "5");
    assert_eq!(reply["error"], "queue_unavailable");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("nothing was stored")
    );
}

/// A queue that does not exist is a refusal SQS will repeat for every event: not an outage, so
/// not a 503 that would make the sender retry the same event forever behind its backlog.
#[tokio::test]
async fn a_permanent_queue_refusal_is_a_500_not_a_503() {
    let moto = MotoServer::start().await;
    let queues = moto.create_fifo_with_dlq("ingest-refused", 3, 30).await;
    let missing = queues
        .queue_url
        .replace("ingest-refused.fifo", "no-such-queue.fifo");
    let app = ingest_app(SqsQueue::new(queues.client.clone(), &missing));
    let (status, headers, reply) = post_signed(&app, message_body()).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{reply}");
    assert!(headers.get("retry-after").is_none());
    assert_eq!(reply["error"], "queue_misconfigured");
    assert!(reply["message"].as_str().unwrap().contains("not an outage"));

    // The same through the batch route: each item says so.
    let batch = format!("[{},{}]", message_body(), status_body());
    let (status, _, reply) = call(
        &app,
        "POST",
        "/events/batch",
        signed_headers(INGEST_SECRET, "req-2", &batch),
        batch.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::MULTI_STATUS, "{reply}");
    for item in reply["results"].as_array().unwrap() {
        assert_eq!(item["statusCode"], 500, "{item}");
        assert_eq!(item["error"], "queue_misconfigured");
    }
}

/// A refusal of one message's content (SQS's `InvalidMessageContents`, say) is a 422 for that
/// event alone: the sender drops it and goes on with its backlog.
#[tokio::test]
async fn a_queue_refusing_the_event_itself_is_a_422() {
    use relay_shared::queue::{NewMessage, Producer, QueueError};
    struct RefusingQueue;
    #[async_trait::async_trait]
    impl Producer for RefusingQueue {
        async fn send(&self, _: NewMessage) -> Result<(), QueueError> {
            Err(QueueError::MessageRefused(
                "InvalidMessageContents: invalid binary character".into(),
            ))
        }
        async fn send_batch(
            &self,
            messages: Vec<NewMessage>,
        ) -> Result<Vec<Result<(), QueueError>>, QueueError> {
            Ok(messages
                .iter()
                .map(|_| Err(QueueError::MessageRefused("InvalidMessageContents".into())))
                .collect())
        }
    }
    let app = router(Arc::new(Ingest::new(
        SecretSet::parse(INGEST_SECRET).unwrap(),
        relay_tests::chat_id_key(),
        Arc::new(RefusingQueue),
        Metrics::off(),
    )));
    let (status, headers, reply) = post_signed(&app, message_body()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{reply}");
    assert!(headers.get("retry-after").is_none());
    assert_eq!(reply["error"], "queue_refused_event");
    let message = reply["message"].as_str().unwrap();
    assert!(
        message.contains("InvalidMessageContents") && message.contains("refused again"),
        "{message}"
    );
}

#[tokio::test]
async fn a_batch_stores_each_valid_item_and_reports_each_refusal() {
    let moto = MotoServer::start().await;
    let queues = moto.create_fifo_with_dlq("ingest-batch", 3, 30).await;
    let app = ingest_app(SqsQueue::new(queues.client.clone(), &queues.queue_url));

    let bad = r#"{"event":"qr","data":{"available":true},"timestamp":"2025-12-21T18:20:00Z"}"#;
    let batch = format!("[{}, {bad},\n{}]", message_body(), status_body());
    let (status, _, reply) = call(
        &app,
        "POST",
        "/events/batch",
        signed_headers(INGEST_SECRET, "b", &batch),
        batch.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::MULTI_STATUS, "{reply}");
    let results = reply["results"].as_array().unwrap();
    assert_eq!(results[0]["status"], "queued");
    assert_eq!(results[1]["status"], "rejected");
    assert_eq!(results[1]["statusCode"], 422);
    assert_eq!(results[1]["path"], "[1].data.qr");
    assert_eq!(results[2]["id"], "status-1");

    let stored = receive_all(&queues).await;
    let mut bodies: Vec<&str> = stored.iter().filter_map(|m| m.body()).collect();
    bodies.sort();
    assert_eq!(
        bodies,
        [message_body(), status_body()],
        "each item stored as its own bytes"
    );

    let all_good = format!("[{}]", message_body());
    let (status, _, _) = call(
        &app,
        "POST",
        "/events/batch",
        signed_headers(INGEST_SECRET, "b", &all_good),
        all_good.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);

    let eleven = format!("[{}]", [status_body(); 11].join(","));
    let (status, _, reply) = call(
        &app,
        "POST",
        "/events/batch",
        signed_headers(INGEST_SECRET, "b", &eleven),
        eleven.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("1 to 10 envelopes, found 11"),
        "{reply}"
    );
}

#[tokio::test]
async fn api_gateway_v2_events_reach_the_ingest_router_through_lambda_http() {
    let queue = Arc::new(MemoryQueue::new("apigw", Duration::from_secs(30)));
    let app = router(Arc::new(Ingest::new(
        SecretSet::parse(INGEST_SECRET).unwrap(),
        relay_tests::chat_id_key(),
        queue.clone(),
        Metrics::off(),
    )));
    let body = message_body().to_owned();
    let headers = signed_headers(INGEST_SECRET, "apigw-1", &body);
    let header_json: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), Value::from(v.to_str().unwrap())))
        .collect();
    use base64::Engine as _;
    for (encoded, payload) in [
        (false, body.clone()),
        (
            true,
            base64::engine::general_purpose::STANDARD.encode(&body),
        ),
    ] {
        let event = serde_json::json!({
            "version": "2.0", "routeKey": "POST /events", "rawPath": "/events", "rawQueryString": "",
            "headers": header_json,
            "requestContext": {"accountId": "123456789012", "apiId": "api", "domainName": "api.example",
                "domainPrefix": "api", "requestId": "r1", "routeKey": "POST /events", "stage": "$default",
                "time": "21/Dec/2025:18:02:53 +0000", "timeEpoch": 1766340173000u64,
                "http": {"method": "POST", "path": "/events", "protocol": "HTTP/1.1", "sourceIp": "203.0.113.1", "userAgent": "node"}},
            "body": payload, "isBase64Encoded": encoded,
        });
        let request =
            lambda_http::request::from_str(&event.to_string()).expect("an API Gateway v2 event");
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::ACCEPTED,
            "isBase64Encoded={encoded}"
        );
    }
    assert_eq!(queue.len(), 1, "the same body twice is one event");
}

/// `count` listed signatures that match nothing, then the real one.
fn many_signatures(count: usize, real_signature: &str) -> HeaderValue {
    let mut entries = vec!["v1,bm90IGEgc2lnbmF0dXJlIGF0IGFsbA=="; count];
    entries.push(real_signature);
    HeaderValue::from_str(&entries.join(" ")).unwrap()
}

/// (header, what is absurd about it, value, a fragment of the refusal message).
fn absurd_header_cases(
    now: i64,
    real_signature: &str,
) -> Vec<(&'static str, &'static str, HeaderValue, &'static str)> {
    let text = |s: &str| HeaderValue::from_str(s).unwrap();
    let many = |count: usize| many_signatures(count, real_signature);
    vec![
        (
            "webhook-timestamp",
            "i64::MIN",
            text(&i64::MIN.to_string()),
            "more than 5 minutes old",
        ),
        (
            "webhook-timestamp",
            "i64::MAX",
            text(&i64::MAX.to_string()),
            "in the future",
        ),
        (
            "webhook-timestamp",
            "negative",
            text("-1"),
            "more than 5 minutes old",
        ),
        (
            "webhook-timestamp",
            "40 digits",
            text(&"9".repeat(40)),
            "webhook-timestamp header is not valid",
        ),
        (
            "webhook-timestamp",
            "10 KB",
            text(&"1".repeat(10_000)),
            "webhook-timestamp header is not valid",
        ),
        (
            "webhook-timestamp",
            "empty",
            text(""),
            "webhook-timestamp header is not valid",
        ),
        (
            "webhook-timestamp",
            "inner space",
            text(&format!("{} {}", now / 10, now % 10)),
            "webhook-timestamp header is not valid",
        ),
        (
            "webhook-timestamp",
            "decimal",
            text(&format!("{now}.5")),
            "webhook-timestamp header is not valid",
        ),
        (
            "webhook-timestamp",
            "non-ASCII",
            HeaderValue::from_bytes(b"17\xc3\xa900").unwrap(),
            "webhook-timestamp header is not valid",
        ),
        (
            "webhook-timestamp",
            "leading + (signed without it)",
            text(&format!("+{}", now + 1)),
            "signature does not match",
        ),
        (
            "webhook-id",
            "non-ASCII",
            HeaderValue::from_bytes(b"evt-\xff").unwrap(),
            "webhook-id header is not valid",
        ),
        (
            "webhook-id",
            "10 KB",
            text(&"i".repeat(10_000)),
            "signature does not match",
        ),
        ("webhook-id", "empty", text(""), "signature does not match"),
        (
            "webhook-signature",
            "empty",
            text(""),
            "signature does not match",
        ),
        (
            "webhook-signature",
            "10 KB of spaces",
            text(&" ".repeat(10_000)),
            "signature does not match",
        ),
        (
            "webhook-signature",
            "10 KB of base64",
            text(&format!("v1,{}", "A".repeat(10_000))),
            "signature does not match",
        ),
        (
            "webhook-signature",
            "not base64",
            text("v1,***"),
            "signature does not match",
        ),
        (
            "webhook-signature",
            "non-ASCII",
            HeaderValue::from_bytes(b"v1,\xfe").unwrap(),
            "webhook-signature header is not valid",
        ),
        (
            "webhook-signature",
            "10,000 signatures",
            many(10_000),
            "more than 16 v1 signatures",
        ),
        (
            "webhook-signature",
            "17 signatures",
            many(16),
            "more than 16 v1 signatures",
        ),
    ]
}

/// Absurd `webhook-*` header values through the real router: each is a 400 or 401 with a
/// message that names the header, never a panic, and nothing is stored.
#[tokio::test]
async fn absurd_signature_headers_get_400_or_401_never_a_panic() {
    let queue = Arc::new(MemoryQueue::new("headers", Duration::from_secs(30)));
    let app = router(Arc::new(Ingest::new(
        SecretSet::parse(INGEST_SECRET).unwrap(),
        relay_tests::chat_id_key(),
        queue.clone(),
        Metrics::off(),
    )));
    let now = unix_now();
    let good = signed_headers(INGEST_SECRET, "h-1", status_body());
    let real_signature = good["webhook-signature"].to_str().unwrap().to_owned();
    let many = |count: usize| many_signatures(count, &real_signature);
    let cases = absurd_header_cases(now, &real_signature);
    let batch = format!("[{}]", status_body());
    for (name, what, value, expected) in cases {
        for (path, body) in [
            ("/events", status_body()),
            ("/events/batch", batch.as_str()),
        ] {
            let mut headers = signed_headers(INGEST_SECRET, "h-1", body);
            headers.insert(name, value.clone());
            let (status, _, reply) = call(&app, "POST", path, headers, body.to_owned()).await;
            assert!(
                [StatusCode::BAD_REQUEST, StatusCode::UNAUTHORIZED].contains(&status),
                "{path} {name} {what}: {status} {reply}"
            );
            let message = reply["message"].as_str().unwrap_or_default();
            assert!(
                message.contains(expected),
                "{path} {name} {what}: {message:?}"
            );
        }
    }
    assert!(queue.is_empty(), "nothing refused was stored");
    // Sixteen listed signatures are still examined, so the real one is found.
    let mut headers = good.clone();
    headers.insert("webhook-signature", many(15));
    let (status, _, reply) = call(&app, "POST", "/events", headers, status_body()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
}
