//! The delivery rules that only show over several rounds, on both queue adapters (in-process
//! and moto's SQS): one poison message dead-letters only itself while its chat goes on in
//! order; attempts are deliveries, so a message held through an outage starts at step 1 of the
//! schedule; a receiver whose answer never ends cannot grow the dispatcher's memory; the
//! DynamoDB attempts ledger works against a DynamoDB-protocol server; a redirect is a failed
//! attempt, never followed; and the connections opened at a cold start's init are the ones its
//! first batch delivers on.

use axum::Router;
use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use relay_shared::attempts::AttemptLedger;
use relay_shared::attempts::dynamodb::{COUNT, DynamoLedger, EXPIRES_AT, KEY};
use relay_shared::backoff::RetrySchedule;
use relay_shared::deliver::{Deliverer, Outcome, Receiver, WARM_CONNECTIONS};
use relay_shared::dispatch::{DispatchQueues, Dispatcher};
use relay_shared::envelope::examples;
use relay_shared::poller::Poller;
use relay_shared::queue::memory::{DeadLetter, MemoryQueue};
use relay_shared::queue::sqs::SqsQueue;
use relay_shared::queue::{NewMessage, Queue, SAFETY_NET_RECEIVES};
use relay_shared::signature::SecretSet;
use relay_shared::telemetry::Metrics;
use relay_tests::{MotoServer, Script, VerifyingReceiver, WEBHOOK_SECRET};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A queue and its DLQ, with a way to count what each holds.
struct Pair {
    queue: Arc<dyn Queue>,
    dlq: Arc<dyn Queue>,
    /// Keeps moto alive for the test.
    _moto: Option<MotoServer>,
}

async fn in_process() -> Pair {
    let dlq = Arc::new(MemoryQueue::new("rules-dlq", Duration::from_secs(30)));
    let queue = MemoryQueue::new("rules", Duration::from_secs(30)).with_dead_letter(DeadLetter {
        queue: Arc::clone(&dlq),
        max_receive_count: SAFETY_NET_RECEIVES,
    });
    Pair {
        queue: Arc::new(queue),
        dlq,
        _moto: None,
    }
}

async fn on_moto(name: &str) -> Pair {
    let moto = MotoServer::start().await;
    let fifo = moto
        .create_fifo_with_dlq(name, SAFETY_NET_RECEIVES, 30)
        .await;
    Pair {
        queue: Arc::new(SqsQueue::new(fifo.client.clone(), &fifo.queue_url)),
        dlq: Arc::new(SqsQueue::new(fifo.client.clone(), &fifo.dlq_url)),
        _moto: Some(moto),
    }
}

fn status_event(id: &str) -> NewMessage {
    NewMessage {
        body: examples::status(true).with_id(id).to_json(),
        group_id: "default:chat:one".into(),
        dedup_id: id.into(),
    }
}

fn dispatcher(pair: &Pair, url: &str, delays: &[u64]) -> Arc<Dispatcher> {
    let deliverer = Deliverer::new(
        url.parse().unwrap(),
        Arc::new(SecretSet::parse(WEBHOOK_SECRET).unwrap()),
        Duration::from_secs(5),
    )
    .unwrap();
    let schedule =
        RetrySchedule::from_delays(delays.iter().map(|s| Duration::from_secs(*s)).collect());
    let queues = DispatchQueues {
        source: pair.queue.clone(),
        dead_letter: pair.dlq.clone(),
    };
    Arc::new(
        Dispatcher::new(deliverer, queues, schedule, Metrics::off()).with_jitter(Arc::new(|| 0.5)),
    )
}

/// Polls until `done` says so; fails, saying `what`, if that takes more than a minute.
async fn poll_until(poller: &Poller, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "not reached within a minute: {what}"
        );
        poller.poll_once().await.unwrap();
    }
}

/// Drains a queue, returning the `id` of each message's body.
async fn drain_ids(queue: &dyn Queue) -> Vec<String> {
    let mut ids = Vec::new();
    loop {
        let got = queue.receive(10, Duration::from_millis(200)).await.unwrap();
        if got.is_empty() {
            return ids;
        }
        for message in got {
            let body: serde_json::Value = serde_json::from_str(&message.body).unwrap();
            ids.push(body["id"].as_str().unwrap().to_owned());
            queue.delete(&message.receipt_handle).await.unwrap();
        }
    }
}

fn id_of(delivery: &relay_tests::Delivery) -> String {
    let body: serde_json::Value = serde_json::from_slice(&delivery.body).unwrap();
    body["id"].as_str().unwrap().to_owned()
}

async fn poison_head_dead_letters_alone(pair: Pair) {
    let script: Script = Arc::new(|delivery, _| {
        if id_of(delivery) == "poison" {
            (StatusCode::INTERNAL_SERVER_ERROR, Vec::new())
        } else {
            (StatusCode::NO_CONTENT, Vec::new())
        }
    });
    let receiver = VerifyingReceiver::start(script).await;
    pair.queue.send(status_event("poison")).await.unwrap();
    let followers: Vec<String> = (1..=9).map(|n| format!("follower-{n}")).collect();
    for id in &followers {
        pair.queue.send(status_event(id)).await.unwrap();
    }
    // Three zero waits: four attempts, each a new round in which all nine followers are
    // received again behind the head and released unsent.
    let poller = Poller::new(
        pair.queue.clone(),
        dispatcher(&pair, &receiver.url, &[0, 0, 0]),
        Duration::from_millis(200),
    );
    poll_until(&poller, "the nine followers delivered", || {
        receiver
            .deliveries()
            .iter()
            .filter(|d| d.answered == 204)
            .count()
            == 9
    })
    .await;

    let sent: Vec<String> = receiver.deliveries().iter().map(id_of).collect();
    let delivered: Vec<&String> = sent.iter().filter(|id| *id != "poison").collect();
    assert_eq!(
        delivered,
        followers.iter().collect::<Vec<_>>(),
        "in order, once each"
    );
    assert_eq!(
        sent.iter().filter(|id| *id == "poison").count(),
        4,
        "the head had its four attempts, no more: {sent:?}"
    );
    assert_eq!(
        drain_ids(&*pair.dlq).await,
        ["poison"],
        "only the head is dead-lettered"
    );
    assert!(drain_ids(&*pair.queue).await.is_empty());
}

#[tokio::test]
async fn a_poison_head_dead_letters_alone_and_its_followers_are_delivered_in_order_in_process() {
    poison_head_dead_letters_alone(in_process().await).await;
}

#[tokio::test]
async fn a_poison_head_dead_letters_alone_and_its_followers_are_delivered_in_order_on_moto() {
    poison_head_dead_letters_alone(on_moto("poison").await).await;
}

/// The head fails six times (an outage) while its follower is received again and again. When
/// the follower then fails once, it waits step 1 of the schedule (0 s), not step 7 (an hour):
/// receives are not attempts. With receive counts as attempts this test would not finish.
async fn first_failure_after_an_outage_starts_at_step_one(pair: Pair) {
    let head_failures = Arc::new(AtomicUsize::new(0));
    let follower_failures = Arc::new(AtomicUsize::new(0));
    let (head, follower) = (Arc::clone(&head_failures), Arc::clone(&follower_failures));
    let script: Script = Arc::new(move |delivery, _| {
        let counter = match id_of(delivery).as_str() {
            "head" => &head,
            "follower" => &follower,
            _ => return (StatusCode::NO_CONTENT, Vec::new()),
        };
        let limit = if Arc::ptr_eq(counter, &head) { 6 } else { 1 };
        if counter.fetch_add(1, Ordering::SeqCst) < limit {
            (StatusCode::SERVICE_UNAVAILABLE, Vec::new())
        } else {
            (StatusCode::NO_CONTENT, Vec::new())
        }
    });
    let receiver = VerifyingReceiver::start(script).await;
    for id in ["head", "follower", "last"] {
        pair.queue.send(status_event(id)).await.unwrap();
    }
    let poller = Poller::new(
        pair.queue.clone(),
        dispatcher(&pair, &receiver.url, &[0, 0, 0, 0, 0, 0, 3600, 3600]),
        Duration::from_millis(200),
    );
    poll_until(
        &poller,
        "all three delivered (the follower must not wait an hour)",
        || {
            receiver
                .deliveries()
                .iter()
                .filter(|d| d.answered == 204)
                .count()
                == 3
        },
    )
    .await;
    let order: Vec<String> = receiver
        .deliveries()
        .iter()
        .filter(|d| d.answered == 204)
        .map(id_of)
        .collect();
    assert_eq!(order, ["head", "follower", "last"]);
    assert_eq!(
        follower_failures.load(Ordering::SeqCst),
        2,
        "one failure, one success"
    );
    assert!(drain_ids(&*pair.dlq).await.is_empty());
}

#[tokio::test]
async fn the_first_failure_after_an_outage_starts_at_step_one_in_process() {
    first_failure_after_an_outage_starts_at_step_one(in_process().await).await;
}

#[tokio::test]
async fn the_first_failure_after_an_outage_starts_at_step_one_on_moto() {
    first_failure_after_an_outage_starts_at_step_one(on_moto("outage").await).await;
}

/// Serves `app` on a free loopback port; its `/hook` URL.
async fn serve_on_loopback(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// A receiver that answers 200 and then streams its body forever, counting what it produced
/// until the dispatcher dropped the connection.
async fn endless_receiver(produced: Arc<AtomicUsize>, requests: Arc<AtomicUsize>) -> String {
    let chunk = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
    let app = Router::new().fallback(move || {
        let (produced, chunk) = (Arc::clone(&produced), chunk.clone());
        requests.fetch_add(1, Ordering::SeqCst);
        async move {
            let stream = futures::stream::repeat_with(move || {
                produced.fetch_add(chunk.len(), Ordering::SeqCst);
                Ok::<_, std::io::Error>(chunk.clone())
            });
            Response::builder()
                .status(StatusCode::OK)
                .body(Body::from_stream(stream))
                .unwrap()
        }
    });
    serve_on_loopback(app).await
}

#[tokio::test]
async fn an_endless_answer_is_cut_short_and_counts_as_delivered_once() {
    let produced = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let url = endless_receiver(Arc::clone(&produced), Arc::clone(&requests)).await;
    let pair = in_process().await;
    pair.queue.send(status_event("endless")).await.unwrap();
    let poller = Poller::new(
        pair.queue.clone(),
        dispatcher(&pair, &url, &[0, 0]),
        Duration::from_millis(200),
    );
    let report = poller.poll_once().await.unwrap();
    assert_eq!((report.received, report.delivered), (1, 1), "{report:?}");
    assert_eq!(
        requests.load(Ordering::SeqCst),
        1,
        "delivered once, not retried"
    );
    assert!(drain_ids(&*pair.queue).await.is_empty());
    assert!(drain_ids(&*pair.dlq).await.is_empty());
    // The dispatcher reads 64 KiB; what the receiver got out before the connection closed is
    // that plus the sockets' buffers. Reading to the 5 s timeout would be gigabytes. The
    // dispatcher cannot have held more than the receiver produced, so this bounds its memory
    // too (this process's resident size would also count the tests running beside it).
    let sent = produced.load(Ordering::SeqCst);
    assert!(sent < 32 * 1024 * 1024, "receiver produced {sent} bytes");
}

/// A server that answers every request with `status` (3xx) and a `Location` to `target`,
/// counting requests.
async fn redirecting_receiver(
    status: StatusCode,
    target: String,
    hits: Arc<AtomicUsize>,
) -> String {
    let app = Router::new().fallback(move || {
        hits.fetch_add(1, Ordering::SeqCst);
        let target = target.clone();
        async move {
            Response::builder()
                .status(status)
                .header("location", target)
                .body(Body::empty())
                .unwrap()
        }
    });
    serve_on_loopback(app).await
}

/// A redirect is not followed (the signed body would go to a host the operator never named)
/// and counts as a failed attempt, retried on the schedule like any other.
#[tokio::test]
async fn a_redirect_is_not_followed_and_is_a_failed_attempt() {
    let target = VerifyingReceiver::start_ok().await;
    for status in [301, 302, 303, 307, 308] {
        let status = StatusCode::from_u16(status).unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let url = redirecting_receiver(status, target.url.clone(), Arc::clone(&hits)).await;
        let pair = in_process().await;
        pair.queue.send(status_event("moved")).await.unwrap();
        let poller = Poller::new(
            pair.queue.clone(),
            dispatcher(&pair, &url, &[0]),
            Duration::from_millis(200),
        );
        let report = poller.poll_once().await.unwrap();
        assert_eq!(
            (report.received, report.delivered, report.failed),
            (1, 0, 1),
            "{status}: {report:?}"
        );
        assert_eq!(hits.load(Ordering::SeqCst), 1, "{status}");
        assert_eq!(
            drain_ids(&*pair.queue).await,
            ["moved"],
            "{status}: kept for its retry"
        );
    }
    assert!(
        target.deliveries().is_empty(),
        "no redirect was followed to the target"
    );
}

/// The attempts table as the template defines it: partition key `message_id` (S).
async fn create_attempts_table(ledger: &DynamoLedger) {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    ledger
        .client()
        .create_table()
        .table_name("attempts")
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(KEY)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(KEY)
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("create table");
}

#[tokio::test]
async fn the_dynamodb_ledger_counts_forgets_and_ignores_expired_items_on_moto() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let moto = MotoServer::start().await;
    let config = moto.sdk_config().await;
    let ledger = DynamoLedger::new(&config, "attempts");
    create_attempts_table(&ledger).await;

    assert_eq!(ledger.failed_attempts("m-1").await, Ok(0), "never seen");
    assert_eq!(ledger.record_failure("m-1").await, Ok(1));
    assert_eq!(ledger.record_failure("m-1").await, Ok(2));
    assert_eq!(ledger.failed_attempts("m-1").await, Ok(2));
    assert_eq!(ledger.failed_attempts("m-2").await, Ok(0));
    let item = ledger
        .client()
        .get_item()
        .table_name("attempts")
        .key(KEY, AttributeValue::S("m-1".into()))
        .send()
        .await
        .unwrap();
    let expires: u64 = item.item().unwrap()[EXPIRES_AT]
        .as_n()
        .unwrap()
        .parse()
        .unwrap();
    let now = relay_shared::clock::unix_seconds() as u64;
    assert!(
        expires > now + 4 * 24 * 3600,
        "kept longer than the queue keeps messages"
    );
    ledger.forget("m-1").await.unwrap();
    assert_eq!(ledger.failed_attempts("m-1").await, Ok(0), "forgotten");

    // DynamoDB deletes expired items lazily: one still there past its TTL counts as none.
    ledger
        .client()
        .put_item()
        .table_name("attempts")
        .item(KEY, AttributeValue::S("old".into()))
        .item(COUNT, AttributeValue::N("7".into()))
        .item(EXPIRES_AT, AttributeValue::N((now - 1).to_string()))
        .send()
        .await
        .unwrap();
    assert_eq!(ledger.failed_attempts("old").await, Ok(0));

    // A table that does not exist is an error the dispatcher can fall back from.
    let missing = DynamoLedger::new(&config, "no-such-table");
    assert!(missing.failed_attempts("m-1").await.is_err());
}

/// The dispatcher's warm-up opens the connections its first batch uses: to an HTTP/1.1 receiver
/// at least one per delivery a batch makes at once, so that many concurrent deliveries after it
/// open none, and they are signed as usual. A `HEAD` is no delivery.
#[tokio::test(flavor = "current_thread")]
async fn warm_up_opens_the_connections_of_a_first_batch() {
    let receiver = VerifyingReceiver::start_ok().await;
    let target = Receiver::new(receiver.url.parse().unwrap(), Duration::from_secs(5)).unwrap();
    assert!(target.warm_up().await);
    let warmed = receiver.connections();
    assert!(warmed >= WARM_CONNECTIONS, "{warmed} connections");
    assert!(receiver.deliveries().is_empty());
    // A connection goes back to the pool once the client has seen its answer end: at once when
    // the connection's task is already waiting for the next request, else on a task of its own
    // that needs no I/O, only a turn. On this one-thread runtime one yield gives every task that
    // is ready its turn, however slow the machine; on Lambda the runtime's `next` round trip
    // lies between init and the first batch.
    tokio::task::yield_now().await;
    let deliverer = target.signing_with(Arc::new(SecretSet::parse(WEBHOOK_SECRET).unwrap()));
    let attempts = (0..WARM_CONNECTIONS).map(|n| {
        let id = format!("msg_warm{n}");
        let body = examples::status(true).with_id(&id).to_json();
        let deliverer = deliverer.clone();
        async move { deliverer.attempt(&id, body).await.0 }
    });
    for outcome in futures::future::join_all(attempts).await {
        assert!(matches!(outcome, Outcome::Delivered { .. }), "{outcome:?}");
    }
    assert_eq!(
        receiver.connections(),
        warmed,
        "the batch opened connections"
    );
    let deliveries = receiver.deliveries();
    assert_eq!(deliveries.len(), WARM_CONNECTIONS);
    assert!(deliveries.iter().all(|d| d.verified));
}

/// The poller gives each batch the queue's visibility timeout as its deadline, as Lambda gives
/// an invocation its timeout: with too little of it left nothing is sent, the batch stays in
/// the queue, visible again at once, and a poller with the time delivers it.
#[tokio::test]
async fn a_batch_gets_the_visibility_timeout_as_its_deadline() {
    let pair = in_process().await;
    let receiver =
        VerifyingReceiver::start(Arc::new(|_, _| (StatusCode::NO_CONTENT, Vec::new()))).await;
    for id in ["first", "second"] {
        pair.queue.send(status_event(id)).await.unwrap();
    }
    let hurried = Poller::new(
        pair.queue.clone(),
        dispatcher(&pair, &receiver.url, &[0]),
        Duration::from_millis(200),
    )
    .with_batch_time_limit(Duration::from_secs(1));
    let report = hurried.poll_once().await.unwrap();
    assert_eq!((report.received, report.delivered), (2, 0), "{report:?}");
    assert!(receiver.deliveries().is_empty(), "no attempt started");

    let patient = Poller::new(
        pair.queue.clone(),
        dispatcher(&pair, &receiver.url, &[0]),
        Duration::from_millis(200),
    )
    .with_batch_time_limit(Duration::from_secs(60));
    let report = patient.poll_once().await.unwrap();
    assert_eq!(
        (report.received, report.delivered),
        (2, 2),
        "visible again at once: {report:?}"
    );
    let sent: Vec<String> = receiver.deliveries().iter().map(id_of).collect();
    assert_eq!(sent, ["first", "second"]);
}
