//! In-process costs, the Lambda handlers without the Lambda around them: the ingest router
//! (`oneshot` of a signed request over the in-process queue), `Dispatcher::handle_batch` to a
//! loopback receiver, the dispatcher's group concurrency against a slow receiver, and how both
//! scale with the body size. Requests are built and signed before the clock starts.

use crate::fixtures::{
    CHATS, Record, TYPICAL_BYTES, WEBHOOK_SECRET, envelope, event_id, ingest_request,
    ingest_secrets, records, signed_header_pairs, typed_sqs_event,
};
use crate::plan::Plan;
use crate::receiver::TimingReceiver;
use crate::report::{Report, Verdict, ms, ratio, thousands, us};
use crate::stats::Summary;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use relay_shared::backoff::RetrySchedule;
use relay_shared::deliver::Deliverer;
use relay_shared::dispatch::{DispatchQueues, Dispatcher};
use relay_shared::ingest::{Ingest, router};
use relay_shared::queue::memory::MemoryQueue;
use relay_shared::signature::SecretSet;
use relay_shared::telemetry::{
    DEFAULT_NAMESPACE, Metrics, MetricsSink, json_subscriber, production_filter,
};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use tower::ServiceExt;

/// Ingest gets a fresh in-process queue every this many events: the queue's deduplication
/// window (5 minutes of ids) would otherwise grow through the run and be measured instead of
/// the handler (see [`ingest_with_backlog`] for that cost on its own).
pub const QUEUE_RESET_EVERY: usize = 1000;

/// The ingest routes over a new in-process queue.
pub fn ingest_router(metrics: Metrics) -> Router {
    let queue = Arc::new(MemoryQueue::new("bench", Duration::from_secs(60)));
    router(Arc::new(Ingest::new(
        ingest_secrets(),
        crate::fixtures::chat_id_key(),
        queue,
        metrics,
    )))
}

/// `count` signed `POST /events` requests of `size` bytes, distinct ids, spread over chats.
pub fn presigned_requests(prefix: &str, count: usize, size: usize) -> Vec<Request<Body>> {
    let secrets = ingest_secrets();
    (0..count)
        .map(|i| {
            let id = event_id(prefix, i);
            let body = envelope(&id, i % CHATS, size);
            ingest_request(&signed_header_pairs(&secrets, &id, &body), body)
        })
        .collect()
}

/// Runs `requests` through fresh routers (a new queue every `reset_every`), timing each
/// `oneshot`; the first `warmup` are not kept. Every answer must be `202`.
pub async fn time_ingest(
    requests: Vec<Request<Body>>,
    warmup: usize,
    reset_every: usize,
    metrics: &Metrics,
    mut between_chunks: impl FnMut(),
) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(requests.len().saturating_sub(warmup));
    let mut app = ingest_router(metrics.clone());
    for (i, request) in requests.into_iter().enumerate() {
        if i > 0 && i % reset_every == 0 {
            app = ingest_router(metrics.clone());
            between_chunks();
        }
        let started = Instant::now();
        let response = app.clone().oneshot(request).await.expect("infallible");
        let took = started.elapsed();
        assert_eq!(
            response.status(),
            StatusCode::ACCEPTED,
            "ingest refused event #{i}"
        );
        if i >= warmup {
            samples.push(took);
        }
    }
    samples
}

/// Ingest per event, bare (no subscriber, metrics off: the handler alone) or with the
/// Lambda's telemetry (its JSON log format at `info`, written to `io::sink`, and an EMF line
/// per event into a buffer): what the ingest Lambda does per event minus the `write`s.
pub fn ingest_per_event(rt: &Runtime, n: usize, warmup: usize, telemetry: bool) -> Summary {
    let requests = presigned_requests(
        if telemetry { "wt" } else { "wb" },
        warmup + n,
        TYPICAL_BYTES,
    );
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let metrics = if telemetry {
        Metrics::new(DEFAULT_NAMESPACE, MetricsSink::Buffer(Arc::clone(&buffer)))
    } else {
        Metrics::off()
    };
    let clear = || buffer.lock().unwrap().clear();
    let run = || {
        rt.block_on(time_ingest(
            requests,
            warmup,
            QUEUE_RESET_EVERY,
            &metrics,
            clear,
        ))
    };
    let samples = if telemetry {
        // `block_on` polls on this thread, so the thread's default subscriber applies.
        let subscriber = json_subscriber(production_filter("info"), std::io::sink);
        tracing::subscriber::with_default(subscriber, run)
    } else {
        run()
    };
    Summary::of(&samples)
}

/// Ingest per event into one queue that already holds `backlog` events (stored and inside
/// the deduplication window), as in a local stack whose receiver is slow or down.
pub fn ingest_with_backlog(rt: &Runtime, backlog: usize, n: usize) -> Summary {
    let requests = presigned_requests("bl", backlog + n, TYPICAL_BYTES);
    let samples = rt.block_on(time_ingest(
        requests,
        backlog,
        usize::MAX,
        &Metrics::off(),
        || {},
    ));
    Summary::of(&samples)
}

/// A dispatcher delivering to `url` (5 s timeout, default schedule, metrics off).
pub fn dispatcher(url: &str) -> Dispatcher {
    let secrets = Arc::new(SecretSet::parse(WEBHOOK_SECRET).expect("bench webhook secret"));
    let deliverer = Deliverer::new(
        url.parse().expect("receiver URL"),
        secrets,
        Duration::from_secs(5),
    )
    .expect("HTTP client");
    let queues = DispatchQueues {
        source: Arc::new(MemoryQueue::new("bench-dispatch", Duration::from_secs(60))),
        dead_letter: Arc::new(MemoryQueue::new("bench-dlq", Duration::from_secs(60))),
    };
    Dispatcher::new(deliverer, queues, RetrySchedule::default(), Metrics::off())
}

/// Times `handle_batch` on each batch; every batch must come back with no failures.
pub async fn time_batches(
    dispatcher: &Dispatcher,
    batches: Vec<Vec<Record>>,
    warmup: usize,
) -> Vec<Duration> {
    let events: Vec<_> = batches
        .iter()
        .enumerate()
        .map(|(i, b)| typed_sqs_event(&format!("{i:06}"), b))
        .collect();
    let mut samples = Vec::with_capacity(events.len());
    for (i, event) in events.into_iter().enumerate() {
        let started = Instant::now();
        let response = dispatcher.handle_batch(event).await;
        let took = started.elapsed();
        assert!(
            response.batch_item_failures.is_empty(),
            "batch #{i} had failures: {:?}",
            response.batch_item_failures
        );
        if i >= warmup {
            samples.push(took);
        }
    }
    samples
}

/// `handle_batch` of `batch` typical records, each in its own chat (group), per call.
pub async fn dispatch_per_batch(
    receiver: &TimingReceiver,
    batch: usize,
    n: usize,
    warmup: usize,
) -> Summary {
    let dispatcher = dispatcher(&receiver.url);
    let batches = (0..warmup + n)
        .map(|b| records(&format!("d{batch}x{b:06}"), batch, batch, TYPICAL_BYTES))
        .collect();
    Summary::of(&time_batches(&dispatcher, batches, warmup).await)
}

/// The floor under a delivery: one plain reqwest POST of a typical signed body to the same
/// receiver, on a kept-alive connection.
pub async fn loopback_post(receiver: &TimingReceiver, n: usize, warmup: usize) -> Summary {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("HTTP client");
    let secrets = SecretSet::parse(WEBHOOK_SECRET).expect("bench webhook secret");
    let mut samples = Vec::with_capacity(n);
    for i in 0..warmup + n {
        let id = event_id("lp", i);
        let body = envelope(&id, i % CHATS, TYPICAL_BYTES);
        let mut request = client.post(&receiver.url);
        for (name, value) in signed_header_pairs(&secrets, &id, &body) {
            request = request.header(name, value);
        }
        let started = Instant::now();
        let response = request.body(body).send().await.expect("loopback POST");
        let _ = response.bytes().await;
        if i >= warmup {
            samples.push(started.elapsed());
        }
    }
    Summary::of(&samples)
}

/// Wall time of a batch of 10 against a receiver taking `delay` per request: 10 chats
/// (delivered concurrently) and 1 chat (delivered in order, one after the other).
pub async fn concurrency(epoch: Instant, delay: Duration, reps: usize) -> (Summary, Summary) {
    let receiver = TimingReceiver::start(epoch, 0, delay).await;
    let dispatcher = dispatcher(&receiver.url);
    // A first batch opens the pooled connections, as a warm Lambda has them.
    time_batches(&dispatcher, vec![records("cw", 10, 10, TYPICAL_BYTES)], 0).await;
    let mut ten = Vec::new();
    let mut one = Vec::new();
    for rep in 0..reps {
        ten.extend(
            time_batches(
                &dispatcher,
                vec![records(&format!("ct{rep}"), 10, 10, TYPICAL_BYTES)],
                0,
            )
            .await,
        );
        one.extend(
            time_batches(
                &dispatcher,
                vec![records(&format!("co{rep}"), 10, 1, TYPICAL_BYTES)],
                0,
            )
            .await,
        );
    }
    (Summary::of(&ten), Summary::of(&one))
}

/// Ingest and dispatch of one body of `size` bytes, each timed on its own.
pub struct PayloadPoint {
    pub size: usize,
    pub ingest: Summary,
    pub dispatch: Summary,
}

impl PayloadPoint {
    /// Median ingest + median dispatch, per byte.
    pub fn ns_per_byte(&self) -> f64 {
        (self.ingest.median + self.dispatch.median) * 1e3 / self.size as f64
    }
}

/// Iterations for a body size: fewer for big bodies, never under 20.
fn iterations_for(size: usize, budget_bytes: usize) -> usize {
    (budget_bytes / size).clamp(20, 500)
}

pub async fn payload_point(receiver: &TimingReceiver, size: usize, warmup: usize) -> PayloadPoint {
    let n = iterations_for(size, 48 << 20);
    let requests = presigned_requests(&format!("p{size}"), warmup + n, size);
    let ingest = Summary::of(
        &time_ingest(requests, warmup, QUEUE_RESET_EVERY, &Metrics::off(), || {}).await,
    );
    let dispatcher = dispatcher(&receiver.url);
    let batches = (0..warmup + n)
        .map(|i| {
            let id = event_id(&format!("q{size}"), i);
            vec![Record {
                body: envelope(&id, i % CHATS, size),
                group: crate::fixtures::group_of(i % CHATS),
                dedup_id: id,
            }]
        })
        .collect();
    let dispatch = Summary::of(&time_batches(&dispatcher, batches, warmup).await);
    PayloadPoint {
        size,
        ingest,
        dispatch,
    }
}

/// The warm per-event section of the report: ingest and dispatch in process.
pub fn section(
    report: &mut Report,
    rt: &Runtime,
    plan: &Plan,
    epoch: Instant,
) -> Result<(), String> {
    let warmup = 1000;
    let health = health_oneshot(rt, plan.warm_events, warmup);
    let bare = ingest_per_event(rt, plan.warm_events, warmup, false);
    let telemetry = ingest_per_event(rt, plan.warm_events, warmup, true);
    let backlog = ingest_with_backlog(rt, plan.backlog, 2_000);
    report_ingest(report, plan, [&health, &bare, &telemetry, &backlog]);
    let (post, one, ten) = rt.block_on(async {
        let receiver = TimingReceiver::start(epoch, 0, Duration::ZERO).await;
        let post = loopback_post(&receiver, plan.dispatch_batches, 200).await;
        let one = dispatch_per_batch(&receiver, 1, plan.dispatch_batches, 200).await;
        let ten = dispatch_per_batch(&receiver, 10, plan.dispatch_batches / 4, 50).await;
        (post, one, ten)
    });
    report_dispatch(report, [&post, &one, &ten]);
    report.note(format!("Warm costs: {warmup} untimed events first; requests are signed before the clock starts; ingest gets a fresh in-process queue every {} events (its dedup window would otherwise grow through the run — the backlog row measures that on its own); no tracing subscriber unless stated. The receiver is in the bench process and does not verify signatures.", QUEUE_RESET_EVERY));
    report.json("warm", json!({
        "health_oneshot": health.to_json_ms(), "ingest": bare.to_json_ms(), "ingest_with_telemetry": telemetry.to_json_ms(),
        "ingest_with_backlog": backlog.to_json_ms(), "backlog": plan.backlog,
        "loopback_post": post.to_json_ms(), "dispatch_batch_1": one.to_json_ms(), "dispatch_batch_10": ten.to_json_ms(),
    }));
    Ok(())
}

/// `GET /health` through the same router: the floor under ingest's per-event cost.
fn health_oneshot(rt: &Runtime, n: usize, warmup: usize) -> Summary {
    rt.block_on(async {
        let app = ingest_router(relay_shared::telemetry::Metrics::off());
        let mut samples = Vec::new();
        for i in 0..warmup + n {
            let request = axum::http::Request::get("/health")
                .body(axum::body::Body::empty())
                .expect("request");
            let t = Instant::now();
            let response = tower::ServiceExt::oneshot(app.clone(), request)
                .await
                .expect("infallible");
            let took = t.elapsed();
            assert_eq!(response.status(), 200);
            if i >= warmup {
                samples.push(took);
            }
        }
        Summary::of(&samples)
    })
}

/// The ingest rows: bare, with telemetry and with a backlog, each beside its baseline.
fn report_ingest(
    report: &mut Report,
    plan: &Plan,
    [health, bare, telemetry, backlog]: [&Summary; 4],
) {
    let cell = |s: &Summary| format!("{} (p99 {})", us(s.median), us(s.p99));
    report.row(
        "2",
        format!(
            "ingest per event: router oneshot, signed {TYPICAL_BYTES} B `message`, in-process queue"
        ),
        format!(
            "{}; {} events/s on one core",
            cell(bare),
            thousands((1e6 / bare.median) as u64)
        ),
        format!(
            "`GET /health` oneshot {} → {}",
            us(health.median),
            ratio(bare.median / health.median)
        ),
        "",
        Verdict::Info,
    );
    report.row(
        "2",
        "ingest per event + the Lambda's telemetry (JSON log line to a sink, EMF line)",
        cell(telemetry),
        format!(
            "bare {} → {}",
            us(bare.median),
            ratio(telemetry.median / bare.median)
        ),
        "",
        Verdict::Info,
    );
    report.row(
        "2",
        format!(
            "ingest per event with {} events already in the queue's dedup window",
            thousands(plan.backlog as u64)
        ),
        cell(backlog),
        format!(
            "bare {} → {}",
            us(bare.median),
            ratio(backlog.median / bare.median)
        ),
        "",
        Verdict::Info,
    );
}

/// The dispatch rows: a batch of 1 beside a plain POST, a batch of 10 beside a batch of 1.
fn report_dispatch(report: &mut Report, [post, one, ten]: [&Summary; 3]) {
    let cell = |s: &Summary| format!("{} (p99 {})", us(s.median), us(s.p99));
    report.row(
        "2",
        "dispatch: `handle_batch` of 1 record → loopback receiver",
        cell(one),
        format!(
            "plain reqwest POST {} → {}",
            us(post.median),
            ratio(one.median / post.median)
        ),
        "",
        Verdict::Info,
    );
    report.row(
        "2",
        "dispatch: `handle_batch` of 10 records (10 chats) → loopback receiver",
        format!(
            "{} per batch, {} per event",
            cell(ten),
            us(ten.median / 10.0)
        ),
        format!(
            "batch of 1 {} → {} per event",
            us(one.median),
            ratio(ten.median / 10.0 / one.median)
        ),
        "",
        Verdict::Info,
    );
}

/// The dispatcher concurrency section: ten chats against one, with a slow receiver.
pub async fn concurrency_section(report: &mut Report, epoch: Instant) -> Result<(), String> {
    let delay = Duration::from_millis(200);
    let (ten, one) = concurrency(epoch, delay, 3).await;
    let d = delay.as_secs_f64() * 1e6;
    report.row(
        "4",
        "batch of 10, 10 chats (concurrent), receiver takes 200 ms",
        format!("{} (median of 3)", ms(ten.median)),
        format!("200 ms → {}", ratio(ten.median / d)),
        "≤ 1.2 × 200 ms",
        Verdict::of(ten.median <= 1.2 * d),
    );
    report.row(
        "4",
        "batch of 10, 1 chat (in order by design), receiver takes 200 ms",
        format!("{} (median of 3)", ms(one.median)),
        format!("10 × 200 ms → {}", ratio(one.median / (10.0 * d))),
        "≈ 2 s (serial)",
        Verdict::Info,
    );
    report.json(
        "dispatcher_concurrency",
        json!({"delay_ms": 200, "ten_groups": ten.to_json_ms(), "one_group": one.to_json_ms()}),
    );
    Ok(())
}

/// The payload scaling section: per-byte cost from 1 KB to the SQS maximum.
pub async fn payload_section(report: &mut Report, epoch: Instant) -> Result<(), String> {
    let receiver = TimingReceiver::start(epoch, 0, Duration::ZERO).await;
    let mut points = Vec::new();
    for size in [
        1024,
        64 * 1024,
        512 * 1024,
        relay_shared::queue::MAX_MESSAGE_BYTES - 1,
    ] {
        points.push(payload_point(&receiver, size, 5).await);
    }
    // Marginal cost: extra time per extra byte from the previous size, which leaves out the
    // fixed per-event cost that dominates at 1 KB.
    let total = |p: &PayloadPoint| p.ingest.median + p.dispatch.median;
    let marginal =
        |a: &PayloadPoint, b: &PayloadPoint| (total(b) - total(a)) * 1e3 / (b.size - a.size) as f64;
    for (i, p) in points.iter().enumerate() {
        let label = match p.size {
            1024 => "1 KB".to_owned(),
            s if s < 1_000_000 => format!("{} KB", s / 1024),
            s => format!("1 MiB − 1 B ({} B)", thousands(s as u64)),
        };
        let per_byte = |micros: f64| micros * 1e3 / p.size as f64;
        report.row(
            "5",
            format!("{label}: ingest + dispatch, medians (n={})", p.ingest.n),
            format!(
                "{} ({:.2} ns/B) + {} ({:.2} ns/B) = {:.2} ns/B",
                us(p.ingest.median),
                per_byte(p.ingest.median),
                us(p.dispatch.median),
                per_byte(p.dispatch.median),
                p.ns_per_byte()
            ),
            match i {
                0 => "fixed per-event cost dominates".to_owned(),
                _ => format!(
                    "marginal from {} B: {:.2} ns/B",
                    thousands(points[i - 1].size as u64),
                    marginal(&points[i - 1], p)
                ),
            },
            "",
            Verdict::Info,
        );
    }
    let flat = marginal(&points[2], &points[3]) / marginal(&points[1], &points[2]);
    report.row(
        "5",
        "per-byte cost: marginal 512 KB→1 MiB vs 64 KB→512 KB",
        ratio(flat),
        "",
        "flat (0.67× to 1.5×)",
        Verdict::of((1.0 / 1.5..=1.5).contains(&flat)),
    );
    report.json("payload", Value::from(points.iter().map(|p| json!({"bytes": p.size, "ingest": p.ingest.to_json_ms(), "dispatch": p.dispatch.to_json_ms(), "ns_per_byte": p.ns_per_byte()})).collect::<Vec<_>>()));
    Ok(())
}
