//! End to end over real servers: a request signed the way chat-whatsapp signs it → the ingest
//! handler → moto's SQS FIFO queue → receive → the dispatcher handler with the `SqsEvent` built
//! from the received messages → a real HTTP receiver that verifies with the public
//! `standardwebhooks` crate and gets the body byte for byte.

use aws_lambda_events::sqs::SqsEvent;
use axum::http::StatusCode;
use relay_shared::backoff::RetrySchedule;
use relay_shared::deliver::Deliverer;
use relay_shared::dispatch::{DispatchQueues, Dispatcher};
use relay_shared::envelope::examples;
use relay_shared::ingest::{Ingest, router};
use relay_shared::queue::sqs::SqsQueue;
use relay_shared::queue::{Consumer, MAX_BATCH, Queue};
use relay_shared::signature::SecretSet;
use relay_shared::telemetry::Metrics;
use relay_tests::router::post_signed;
use relay_tests::{INGEST_SECRET, MotoServer, VerifyingReceiver, WEBHOOK_SECRET};
use std::sync::Arc;
use std::time::Duration;

/// An incoming message with the sender's `id`, and a field the contract does not know
/// (`data.forwardedBy`): unknown fields must reach the receiver untouched.
fn message_event(id: &str, peer: &str, text: &str) -> String {
    let envelope = examples::incoming(id, peer, text).with_id(id);
    let mut body = serde_json::to_value(envelope).unwrap();
    body["data"]["forwardedBy"] = "seed".into();
    body.to_string()
}

fn dispatcher(
    queue: Arc<dyn Queue>,
    dead_letter: Arc<dyn Queue>,
    receiver: &VerifyingReceiver,
) -> Dispatcher {
    let secrets = Arc::new(SecretSet::parse(WEBHOOK_SECRET).unwrap());
    let deliverer = Deliverer::new(
        receiver.url.parse().unwrap(),
        secrets,
        Duration::from_secs(5),
    )
    .unwrap();
    Dispatcher::new(
        deliverer,
        DispatchQueues {
            source: queue,
            dead_letter,
        },
        RetrySchedule::parse("1,1").unwrap(),
        Metrics::off(),
    )
    .with_jitter(Arc::new(|| 0.5))
}

/// What Lambda's event source mapping does before calling the dispatcher.
async fn receive_as_lambda_event(queue: &SqsQueue) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = queue
        .receive(MAX_BATCH, Duration::from_secs(1))
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.into_lambda_record("arn:aws:sqs:us-east-1:000000000000:e2e.fifo"))
        .collect();
    event
}

fn ingest_app(queue: &Arc<SqsQueue>) -> axum::Router {
    router(Arc::new(Ingest::new(
        SecretSet::parse(INGEST_SECRET).unwrap(),
        relay_tests::chat_id_key(),
        queue.clone(),
        Metrics::off(),
    )))
}

/// The `webhook-id` each record will be delivered under, read back from its body.
fn webhook_ids(event: &SqsEvent) -> Vec<String> {
    event
        .records
        .iter()
        .map(|r| relay_shared::envelope::event_id_of(r.body.as_deref().unwrap().as_bytes()))
        .collect()
}

fn receipts(event: &SqsEvent) -> Vec<String> {
    event
        .records
        .iter()
        .map(|r| r.receipt_handle.clone().unwrap())
        .collect()
}

/// Dispatches a batch that must succeed whole, then deletes it as the event source mapping
/// does.
async fn dispatch_all(dispatcher: &Dispatcher, queue: &SqsQueue, event: SqsEvent) {
    let receipts = receipts(&event);
    let response = dispatcher.handle_batch(event).await;
    assert!(response.batch_item_failures.is_empty());
    for receipt in receipts {
        queue.delete(&receipt).await.unwrap();
    }
}

#[tokio::test]
async fn a_signed_event_travels_to_a_verifying_receiver_byte_for_byte() {
    let moto = MotoServer::start().await;
    let queues = moto.create_fifo_with_dlq("e2e", 3, 30).await;
    let queue = Arc::new(SqsQueue::new(queues.client.clone(), &queues.queue_url));
    let receiver = VerifyingReceiver::start_ok().await;
    let app = ingest_app(&queue);

    let body = message_event(
        "3EB0C767D097B7C7C030",
        "5511999990000@c.us",
        "Oi, tudo bem?",
    );
    let event_id = ingest(&app, &body).await;

    let event = receive_as_lambda_event(&queue).await;
    assert_eq!(event.records.len(), 1);
    let record_id = event.records[0].message_id.clone().unwrap();
    let receipt = event.records[0].receipt_handle.clone().unwrap();
    let dlq = Arc::new(SqsQueue::new(queues.client.clone(), &queues.dlq_url));
    let response = dispatcher(queue.clone(), dlq, &receiver)
        .handle_batch(event)
        .await;
    assert!(
        response.batch_item_failures.is_empty(),
        "{:?}",
        response.batch_item_failures
    );
    assert!(!record_id.is_empty());
    queue.delete(&receipt).await.unwrap();

    let deliveries = receiver.deliveries();
    assert_eq!(deliveries.len(), 1);
    let delivery = &deliveries[0];
    assert!(
        delivery.verified,
        "standardwebhooks::Webhook::verify accepted the delivery"
    );
    assert_eq!(
        delivery.body,
        body.as_bytes(),
        "byte for byte, unknown fields included"
    );
    assert_eq!(delivery.webhook_id, event_id);
    assert_eq!(delivery.content_type.as_deref(), Some("application/json"));
    assert_eq!(queues.depth(&queues.queue_url).await, 0);
}

/// Receives and dispatches (up to 20 receives) until `count` events went through and the
/// queue hands out nothing more; returns their webhook ids in dispatch order.
async fn dispatch_until(dispatcher: &Dispatcher, queue: &SqsQueue, count: usize) -> Vec<String> {
    let mut delivered_after = Vec::new();
    for _ in 0..20 {
        let event = receive_as_lambda_event(queue).await;
        if event.records.is_empty() {
            if delivered_after.len() == count {
                break;
            }
            continue;
        }
        delivered_after.extend(webhook_ids(&event));
        dispatch_all(dispatcher, queue, event).await;
    }
    delivered_after
}

/// A receiver that fails the first delivery of message A1 only.
async fn receiver_failing_a1_once() -> VerifyingReceiver {
    VerifyingReceiver::start(Arc::new(|delivery, _| {
        let first_a1 = delivery.webhook_id == "A1";
        static FAILED_ONCE: std::sync::atomic::AtomicBool =
            std::sync::atomic::AtomicBool::new(false);
        if first_a1 && !FAILED_ONCE.swap(true, std::sync::atomic::Ordering::SeqCst) {
            (StatusCode::INTERNAL_SERVER_ERROR, Vec::new())
        } else {
            (StatusCode::OK, Vec::new())
        }
    }))
    .await
}

#[tokio::test]
async fn a_failing_group_holds_its_rest_while_other_groups_are_delivered() {
    let moto = MotoServer::start().await;
    let queues = moto.create_fifo_with_dlq("e2e-fail", 5, 30).await;
    let queue = Arc::new(SqsQueue::new(queues.client.clone(), &queues.queue_url));
    let receiver = receiver_failing_a1_once().await;
    let app = ingest_app(&queue);
    for (id, peer) in [
        ("A1", "alice@c.us"),
        ("A2", "alice@c.us"),
        ("B1", "bob@c.us"),
        ("A3", "alice@c.us"),
    ] {
        ingest(&app, &message_event(id, peer, "msg")).await;
    }
    let dlq = Arc::new(SqsQueue::new(queues.client.clone(), &queues.dlq_url));
    let dispatcher = dispatcher(queue.clone(), dlq, &receiver);

    let event = receive_as_lambda_event(&queue).await;
    let ids: Vec<String> = event
        .records
        .iter()
        .map(|r| r.message_id.clone().unwrap())
        .collect();
    assert_eq!(
        webhook_ids(&event),
        ["A1", "A2", "B1", "A3"],
        "moto hands out the batch in FIFO order"
    );
    let receipts = receipts(&event);
    let response = dispatcher.handle_batch(event).await;
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(
        failed,
        [ids[0].as_str(), ids[1].as_str(), ids[3].as_str()],
        "A1 failed, A2 and A3 held; B1 delivered"
    );
    let sent: Vec<(String, u16)> = receiver
        .deliveries()
        .iter()
        .map(|d| (d.webhook_id.clone(), d.answered))
        .collect();
    assert!(
        sent.contains(&("A1".into(), 500)) && sent.contains(&("B1".into(), 200)),
        "{sent:?}"
    );
    assert!(
        !sent.iter().any(|(id, _)| id == "A2" || id == "A3"),
        "held messages are never sent: {sent:?}"
    );
    // The event source mapping deletes what succeeded.
    queue.delete(&receipts[2]).await.unwrap();

    // After A1's backoff (1 s) the group comes back, in order, and is delivered.
    let delivered_after = dispatch_until(&dispatcher, &queue, 3).await;
    assert_eq!(delivered_after, ["A1", "A2", "A3"]);
    let order: Vec<String> = receiver
        .deliveries()
        .iter()
        .filter(|d| d.answered == 200 && d.webhook_id.starts_with('A'))
        .map(|d| d.webhook_id.clone())
        .collect();
    assert_eq!(
        order,
        ["A1", "A2", "A3"],
        "the chat's order survived the failure"
    );
    assert!(receiver.deliveries().iter().all(|d| d.verified));
    assert_eq!(queues.depth(&queues.queue_url).await, 0);
}

/// Envelopes whose `id` is spelled in every way JSON allows (or absent, or null).
fn tricky_bodies(round: &str) -> Vec<String> {
    const QR: &str = r#""data":{"qr":"data:image/png;base64,AAAA","available":true}"#;
    // Fresh, and the same on every call (tests rebuild bodies to compare them): a stale `qr`
    // is expired by the dispatcher, not delivered.
    static NOW: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let now = NOW.get_or_init(relay_tests::rfc3339_now);
    let ts = format!(r#""timestamp":"{now}""#);
    let ts = ts.as_str();
    // Only the nested message has an `id`: the event's id is derived from the body.
    let mut message = serde_json::to_value(examples::incoming(
        "3EB0-nested-only",
        "5511999990000@c.us",
        "Oi",
    ))
    .unwrap();
    message["data"]["round"] = round.into();
    vec![
        format!(r#"{{"event":"qr",{QR},{ts},"round":"{round}"}}"#),
        format!(r#"{{"event":"qr",{QR},{ts},"id":"plain-{round}"}}"#),
        format!(r#"{{"event":"qr",{QR},{ts},"i\u0064":"escaped-key-{round}"}}"#),
        format!(r#"{{"event":"qr",{QR},{ts},"\u0069\u0064":"all-escaped-{round}"}}"#),
        format!(r#"{{"event":"qr",{QR},{ts},"id":"slash\/and\u002ddash-{round}"}}"#),
        format!(r#"{{"event":"qr",{QR},{ts},"id":null,"round":"{round}"}}"#),
        format!(
            r#"{{"\u0065vent":"status","data":{{"connected":true}},{ts},"meta":{{"id":"not-me"}},"round":"{round}"}}"#
        ),
        message.to_string(),
    ]
}

/// Bodies with a repeated key are refused with the path of the repeat, alone and in a batch
/// beside a valid item; returns the valid item's (id ingest answered, body).
async fn refuse_repeated_keys(app: &axum::Router) -> Vec<(String, String)> {
    let repeated = [
        (r#"{"event":"qr","data":{"qr":"x","available":true},"timestamp":"2025-12-21T18:20:00Z","id":"a","id":"b"}"#.to_owned(), "id"),
        (r#"{"event":"qr","data":{"qr":"x","available":true},"timestamp":"2025-12-21T18:20:00Z","id":"a","i\u0064":"b"}"#.to_owned(), "id"),
        (r#"{"event":"qr","event":"status","data":{"qr":"x","available":true,"connected":true},"timestamp":"2025-12-21T18:20:00Z"}"#.to_owned(), "event"),
        (message_event("m1", "5511999990000@c.us", "Oi").replace(r#""to":"bot""#, r#""to":"bot","id":"m2""#), "data.message.id"),
    ];
    for (body, path) in &repeated {
        let (status, reply) = post(app, "/events", body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {reply}");
        assert_eq!(reply["path"], *path, "{reply}");
        assert!(
            reply["message"]
                .as_str()
                .unwrap()
                .contains("found it again"),
            "{reply}"
        );
    }
    let batch = format!(
        "[{},{},{}]",
        tricky_bodies("batch-ok")[1],
        repeated[0].0,
        repeated[3].0
    );
    let (status, reply) = post(app, "/events/batch", &batch).await;
    assert_eq!(status, StatusCode::MULTI_STATUS, "{reply}");
    let results = reply["results"].as_array().unwrap();
    assert_eq!(results[0]["status"], "queued");
    assert_eq!(
        (
            results[1]["statusCode"].as_u64(),
            results[1]["path"].as_str()
        ),
        (Some(422), Some("[1].id"))
    );
    assert_eq!(results[2]["path"], "[2].data.message.id");
    vec![(
        results[0]["id"].as_str().unwrap().to_owned(),
        tricky_bodies("batch-ok")[1].clone(),
    )]
}

/// The id in ingest's 202 is the `webhook-id` of the delivery, for every spelling of `id`,
/// on both routes; a body with a repeated key (the one case where parsers disagree) is refused
/// with the path of the repeat and never stored.
#[tokio::test]
async fn the_id_ingest_answers_is_the_webhook_id_delivered() {
    let moto = MotoServer::start().await;
    let queues = moto.create_fifo_with_dlq("e2e-ids", 3, 30).await;
    let queue = Arc::new(SqsQueue::new(queues.client.clone(), &queues.queue_url));
    let receiver = VerifyingReceiver::start_ok().await;
    let app = ingest_app(&queue);

    // Refused first, so the queue must stay empty.
    let mut answered = refuse_repeated_keys(&app).await;

    // Accepted: one by one, then all in one batch (different bytes, so new events).
    for body in tricky_bodies("single") {
        let id = ingest(&app, &body).await;
        answered.push((id, body));
    }
    let items = tricky_bodies("batch");
    let (status, reply) = post(&app, "/events/batch", &format!("[{}]", items.join(","))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    for (result, body) in reply["results"].as_array().unwrap().iter().zip(items) {
        answered.push((result["id"].as_str().unwrap().to_owned(), body));
    }
    let ids: Vec<&str> = answered.iter().map(|(id, _)| id.as_str()).collect();
    for expected in [
        "plain-single",
        "escaped-key-single",
        "all-escaped-single",
        "slash/and-dash-single",
        "escaped-key-batch",
    ] {
        assert!(ids.contains(&expected), "{expected} in {ids:?}");
    }

    let dlq = Arc::new(SqsQueue::new(queues.client.clone(), &queues.dlq_url));
    let dispatcher = dispatcher(queue.clone(), dlq, &receiver);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while receiver.deliveries().len() < answered.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            receiver.deliveries()
        );
        let event = receive_as_lambda_event(&queue).await;
        dispatch_all(&dispatcher, &queue, event).await;
    }
    let deliveries = receiver.deliveries();
    assert_eq!(
        deliveries.len(),
        answered.len(),
        "each event once, nothing refused"
    );
    for (id, body) in &answered {
        let delivery = deliveries
            .iter()
            .find(|d| d.body == body.as_bytes())
            .unwrap_or_else(|| panic!("{body} was delivered"));
        assert_eq!(&delivery.webhook_id, id, "{body}");
        assert!(delivery.verified);
    }
}

/// Ingest through the router, signed as chat-whatsapp signs it.
async fn post(app: &axum::Router, path: &str, body: &str) -> (StatusCode, serde_json::Value) {
    post_signed(app, path, INGEST_SECRET, "chat-whatsapp-1", body).await
}

/// One event in, `202`, its event id out.
async fn ingest(app: &axum::Router, body: &str) -> String {
    let (status, reply) = post(app, "/events", body).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    reply["id"].as_str().unwrap().to_owned()
}
