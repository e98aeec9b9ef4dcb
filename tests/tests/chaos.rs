//! Chaos: thousands of events over many chats through ingest → queue → poller → dispatcher →
//! a receiver that randomly fails (500, 429 and 503 with `Retry-After`, answers too late) and is
//! down for a while. Afterwards every event is delivered or in the DLQ, none lost; within each
//! chat, first deliveries follow ingest order; every duplicate carries the same `webhook-id`.
//! Then the receiver is fixed, the DLQ redriven, and the rest arrives in its per-chat order.
//!
//! The schedule is compressed (sub-second on the in-process queue, whole seconds on moto) and
//! the run bounded; the receiver's randomness is seeded, so a failure can be replayed.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use relay_shared::backoff::RetrySchedule;
use relay_shared::deliver::Deliverer;
use relay_shared::dispatch::{DispatchQueues, Dispatcher};
use relay_shared::ingest::{Ingest, router};
use relay_shared::poller::Poller;
use relay_shared::queue::memory::{DeadLetter, MemoryQueue};
use relay_shared::queue::sqs::SqsQueue;
use relay_shared::queue::{Queue, SAFETY_NET_RECEIVES, move_messages};
use relay_shared::signature::SecretSet;
use relay_shared::telemetry::Metrics;
use relay_tests::{INGEST_SECRET, MotoServer, WEBHOOK_SECRET, signed_headers};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
struct Seen {
    key: String,
    webhook_id: String,
    /// The receiver processed it (2xx, or processed and then answered too late).
    processed: bool,
}

#[derive(Clone)]
struct ReceiverState {
    rng: Arc<Mutex<fastrand::Rng>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    healthy: Arc<std::sync::atomic::AtomicBool>,
    webhook: Arc<standardwebhooks::Webhook>,
    too_late: Duration,
}

/// A receiver that can be taken down and brought back on the same port.
struct ChaosReceiver {
    address: SocketAddr,
    state: ReceiverState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl ChaosReceiver {
    async fn start(seed: u64, too_late: Duration) -> ChaosReceiver {
        let state = ReceiverState {
            rng: Arc::new(Mutex::new(fastrand::Rng::with_seed(seed))),
            seen: Arc::new(Mutex::new(Vec::new())),
            healthy: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            webhook: Arc::new(standardwebhooks::Webhook::new(WEBHOOK_SECRET).unwrap()),
            too_late,
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut receiver = ChaosReceiver {
            address: listener.local_addr().unwrap(),
            state,
            stop: None,
        };
        receiver.serve(listener);
        receiver
    }

    fn serve(&mut self, listener: TcpListener) {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let app = Router::new()
            .fallback(chaos_answer)
            .with_state(self.state.clone());
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stop_rx.await;
                })
                .await
                .unwrap();
        });
        self.stop = Some(stop_tx);
    }

    fn down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    async fn up(&mut self) {
        let listener = TcpListener::bind(self.address)
            .await
            .expect("rebind the receiver's port");
        self.serve(listener);
    }

    fn url(&self) -> reqwest::Url {
        format!("http://{}/api/webhook/chat-whatsapp", self.address)
            .parse()
            .unwrap()
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }
}

async fn chaos_answer(
    State(state): State<ReceiverState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    assert!(
        state.webhook.verify(&body, &headers).is_ok(),
        "every delivery verifies"
    );
    let webhook_id = headers["webhook-id"].to_str().unwrap().to_owned();
    let envelope: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let key = envelope["data"]["message"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let roll = if state.healthy.load(std::sync::atomic::Ordering::SeqCst) {
        0.0
    } else {
        state.rng.lock().unwrap().f64()
    };
    let record = |processed| {
        state.seen.lock().unwrap().push(Seen {
            key: key.clone(),
            webhook_id: webhook_id.clone(),
            processed,
        })
    };
    let with_retry_after = |status: StatusCode, value: String| {
        let mut response = status.into_response();
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from_str(&value).unwrap());
        response
    };
    if roll < 0.70 {
        record(true);
        StatusCode::OK.into_response()
    } else if roll < 0.82 {
        record(false);
        StatusCode::INTERNAL_SERVER_ERROR.into_response()
    } else if roll < 0.88 {
        record(false);
        with_retry_after(StatusCode::TOO_MANY_REQUESTS, "1".into())
    } else if roll < 0.92 {
        record(false);
        let soon = std::time::SystemTime::now() + Duration::from_secs(1);
        with_retry_after(
            StatusCode::SERVICE_UNAVAILABLE,
            httpdate::fmt_http_date(soon),
        )
    } else {
        // Processed, but the answer comes after the relay gave up: a duplicate will follow.
        record(true);
        tokio::time::sleep(state.too_late).await;
        StatusCode::OK.into_response()
    }
}

/// The knobs of one chaos run.
struct Plan {
    events: usize,
    groups: usize,
    schedule: RetrySchedule,
    delivery_timeout: Duration,
    down_after: Duration,
    down_for: Duration,
    workers: usize,
    deadline: Duration,
}

type Depth = Box<dyn Fn() -> BoxFuture<'static, usize> + Send + Sync>;

struct Queues {
    queue: Arc<dyn Queue>,
    dlq: Arc<dyn Queue>,
    /// Messages stored (visible or in flight) in the queue, and in the DLQ.
    queue_depth: Depth,
    dlq_depth: Depth,
}

#[derive(Debug)]
struct Figures {
    sent: usize,
    delivered: usize,
    duplicates: usize,
    in_dlq: usize,
    max_attempts: usize,
}

fn message_body(key: &str, group: usize, seq: usize) -> String {
    format!(
        r#"{{"event":"message","data":{{"message":{{"id":"{key}","from":"55119{group:08}@c.us","to":"bot","content":"chaos #{seq}","type":"text","direction":"incoming","timestamp":"2025-12-21T18:02:52.836Z","status":"received"}}}},"timestamp":"2025-12-21T18:02:52.900Z"}}"#
    )
}

async fn wait_until_empty(depth: &Depth, receiver: &ChaosReceiver, deadline: Instant, phase: &str) {
    loop {
        let depth = depth().await;
        if depth == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{phase}: {depth} messages still queued at the deadline ({} requests seen)",
            receiver.seen().len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn run_chaos(plan: Plan, queues: Queues, seed: u64) -> Figures {
    let started = Instant::now();
    let deadline = started + plan.deadline;
    let mut receiver = ChaosReceiver::start(seed, plan.delivery_timeout * 2).await;
    let deliverer = Deliverer::new(
        receiver.url(),
        Arc::new(SecretSet::parse(WEBHOOK_SECRET).unwrap()),
        plan.delivery_timeout,
    )
    .unwrap();
    let dispatcher = Arc::new(Dispatcher::new(
        deliverer,
        DispatchQueues {
            source: Arc::clone(&queues.queue),
            dead_letter: Arc::clone(&queues.dlq),
        },
        plan.schedule.clone(),
        Metrics::off(),
    ));
    let poller = Arc::new(Poller::new(
        Arc::clone(&queues.queue),
        dispatcher,
        Duration::from_millis(500),
    ));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let polling = tokio::spawn(poller.run(plan.workers, async {
        let _ = stop_rx.await;
    }));

    // Ingest every event through the real router, recording each chat's order.
    let app = router(Arc::new(Ingest::new(
        SecretSet::parse(INGEST_SECRET).unwrap(),
        relay_tests::chat_id_key(),
        Arc::clone(&queues.queue),
        Metrics::off(),
    )));
    let mut order: HashMap<usize, Vec<String>> = HashMap::new();
    let mut webhook_id_of: HashMap<String, String> = HashMap::new();
    let mut group_of: HashMap<String, usize> = HashMap::new();
    let mut outage = Some(());
    for seq in 0..plan.events {
        let group = seq % plan.groups;
        let key = format!("m{seq:06}");
        let body = message_body(&key, group, seq);
        let mut request = Request::post("/events")
            .body(axum::body::Body::from(body.clone()))
            .unwrap();
        *request.headers_mut() = signed_headers(INGEST_SECRET, "chaos", &body);
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED, "ingest of {key}");
        let reply = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap();
        webhook_id_of.insert(key.clone(), reply["id"].as_str().unwrap().to_owned());
        group_of.insert(key.clone(), group);
        order.entry(group).or_default().push(key);
        if outage.is_some() && started.elapsed() >= plan.down_after {
            outage = None;
            receiver.down();
        }
        if seq % 50 == 49 {
            tokio::task::yield_now().await;
        }
    }
    if outage.is_some() {
        tokio::time::sleep(plan.down_after.saturating_sub(started.elapsed())).await;
        receiver.down();
    }
    tokio::time::sleep(plan.down_for).await;
    receiver.up().await;

    // Phase 1: everything is delivered or parked in the DLQ.
    wait_until_empty(&queues.queue_depth, &receiver, deadline, "phase 1").await;
    let phase_one = receiver.seen();
    let in_dlq = (queues.dlq_depth)().await;

    // Phase 2: the receiver is fixed, the DLQ redriven, and the rest arrives.
    receiver
        .state
        .healthy
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let moved = move_messages(&*queues.dlq, &*queues.queue).await.unwrap();
    assert_eq!(moved, in_dlq, "the redrive moved every parked message");
    wait_until_empty(&queues.queue_depth, &receiver, deadline, "after redrive").await;
    assert_eq!(
        (queues.dlq_depth)().await,
        0,
        "the fixed receiver took everything"
    );
    let _ = stop_tx.send(());
    polling.await.unwrap();
    let seen = receiver.seen();

    // Nothing lost: every event processed at least once.
    let processed: Vec<&Seen> = seen.iter().filter(|s| s.processed).collect();
    let keys: HashSet<&str> = processed.iter().map(|s| s.key.as_str()).collect();
    let missing: Vec<&String> = webhook_id_of
        .keys()
        .filter(|k| !keys.contains(k.as_str()))
        .collect();
    assert!(missing.is_empty(), "lost events: {missing:?}");

    // Every attempt of an event carries the webhook-id ingest returned for it.
    for s in &seen {
        assert_eq!(
            s.webhook_id, webhook_id_of[&s.key],
            "webhook-id of {}",
            s.key
        );
    }

    // Per chat, first deliveries in ingest order: in phase 1, and among the redriven events
    // (first processed after the redrive) — a parked event's chat moved on without it, as
    // SQS FIFO does when a message goes to the DLQ.
    let first_processed =
        |requests: &[Seen], skip: &HashSet<String>| -> BTreeMap<usize, Vec<String>> {
            let mut firsts: BTreeMap<usize, Vec<String>> = BTreeMap::new();
            let mut done = skip.clone();
            for s in requests.iter().filter(|s| s.processed) {
                if done.insert(s.key.clone()) {
                    firsts
                        .entry(group_of[&s.key])
                        .or_default()
                        .push(s.key.clone());
                }
            }
            firsts
        };
    let phase_one_firsts = first_processed(&phase_one, &HashSet::new());
    let delivered_in_phase_one: HashSet<String> =
        phase_one_firsts.values().flatten().cloned().collect();
    let redriven_firsts = first_processed(&seen[phase_one.len()..], &delivered_in_phase_one);
    for (phase, firsts) in [
        ("phase 1", &phase_one_firsts),
        ("after redrive", &redriven_firsts),
    ] {
        for (group, keys) in firsts {
            let rank: HashMap<&String, usize> = order[group]
                .iter()
                .enumerate()
                .map(|(i, k)| (k, i))
                .collect();
            let ranks: Vec<usize> = keys.iter().map(|k| rank[k]).collect();
            assert!(
                ranks.windows(2).all(|w| w[0] < w[1]),
                "{phase}: chat {group} delivered out of order: {keys:?} (phase 1: {:?}, redriven: {:?})",
                phase_one_firsts.get(group),
                redriven_firsts.get(group)
            );
        }
    }

    let mut attempts: HashMap<&str, usize> = HashMap::new();
    for s in &seen {
        *attempts.entry(s.key.as_str()).or_default() += 1;
    }
    let figures = Figures {
        sent: plan.events,
        delivered: keys.len(),
        duplicates: processed.len() - keys.len(),
        in_dlq,
        max_attempts: attempts.values().copied().max().unwrap_or(0),
    };
    println!(
        "chaos: sent {} over {} chats, delivered {}, duplicates {}, in DLQ before redrive {}, max attempts {}, {:.1} s",
        figures.sent,
        plan.groups,
        figures.delivered,
        figures.duplicates,
        figures.in_dlq,
        figures.max_attempts,
        started.elapsed().as_secs_f64()
    );
    figures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_in_process_queue_2000_events_over_50_chats() {
    let dlq = Arc::new(MemoryQueue::new("chaos-dlq", Duration::from_secs(10)));
    let schedule = RetrySchedule::from_delays(
        [100, 200, 300, 400, 500, 600]
            .into_iter()
            .map(Duration::from_millis)
            .collect(),
    )
    .with_overload_floor(Duration::from_millis(300));
    let queue = Arc::new(
        MemoryQueue::new("chaos", Duration::from_secs(10)).with_dead_letter(DeadLetter {
            queue: Arc::clone(&dlq) as Arc<MemoryQueue>,
            max_receive_count: SAFETY_NET_RECEIVES,
        }),
    );
    let (q, d) = (Arc::clone(&queue), Arc::clone(&dlq));
    let queues = Queues {
        queue,
        dlq,
        queue_depth: Box::new(move || {
            let depth = q.len();
            Box::pin(async move { depth })
        }),
        dlq_depth: Box::new(move || {
            let depth = d.len();
            Box::pin(async move { depth })
        }),
    };
    let figures = run_chaos(
        Plan {
            events: 2000,
            groups: 50,
            schedule,
            delivery_timeout: Duration::from_millis(250),
            down_after: Duration::from_millis(500),
            down_for: Duration::from_secs(2),
            workers: 8,
            deadline: Duration::from_secs(150),
        },
        queues,
        0x5EED_2025,
    )
    .await;
    assert_eq!(figures.delivered, 2000);
    assert!(
        figures.max_attempts > 1,
        "the receiver's failures caused retries: {figures:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_moto_sqs_300_events_over_50_chats() {
    let moto = MotoServer::start().await;
    let schedule = RetrySchedule::parse("1,1,2,2")
        .unwrap()
        .with_overload_floor(Duration::from_secs(1));
    let fifo = Arc::new(
        moto.create_fifo_with_dlq("chaos", SAFETY_NET_RECEIVES, 10)
            .await,
    );
    let queue = Arc::new(SqsQueue::new(fifo.client.clone(), &fifo.queue_url));
    let dlq = Arc::new(SqsQueue::new(fifo.client.clone(), &fifo.dlq_url));
    let (f1, f2) = (Arc::clone(&fifo), Arc::clone(&fifo));
    let queues = Queues {
        queue,
        dlq,
        queue_depth: Box::new(move || {
            let f = Arc::clone(&f1);
            Box::pin(async move { f.depth(&f.queue_url).await })
        }),
        dlq_depth: Box::new(move || {
            let f = Arc::clone(&f2);
            Box::pin(async move { f.depth(&f.dlq_url).await })
        }),
    };
    let figures = run_chaos(
        Plan {
            events: 300,
            groups: 50,
            schedule,
            delivery_timeout: Duration::from_millis(500),
            down_after: Duration::from_millis(300),
            down_for: Duration::from_secs(2),
            // One receive at a time: moto checks a group's in-flight lock against a snapshot
            // taken when a receive starts, so two concurrent receives can hand out two
            // messages of one group (real SQS does not). The in-process run uses 8.
            workers: 1,
            deadline: Duration::from_secs(150),
        },
        queues,
        0x5EED_0300,
    )
    .await;
    assert_eq!(figures.delivered, 300);
    assert!(figures.max_attempts > 1, "{figures:?}");
}
