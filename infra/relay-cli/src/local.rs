//! `relay local`: the whole relay in one process. The ingest router is the one the ingest
//! Lambda serves; the poller plays Lambda's event source mapping and calls the dispatcher's
//! handler. The queue is in-process (SQS FIFO semantics, lost on restart) unless `QUEUE_URL`
//! names a real SQS FIFO queue (AWS, or moto through `AWS_ENDPOINT_URL_SQS`).
//!
//! Local-only routes, never deployed: `GET /local/queue` (depths) and `POST /local/redrive`
//! (DLQ → queue, oldest first, like SQS's `StartMessageMoveTask`).

use crate::{Failure, init_terminal_logs};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use relay_shared::config::{
    CHAT_ID_KEY, DEAD_LETTER_QUEUE_URL, DEAD_LETTER_STATUSES, DELIVERY_TIMEOUT_MS, INGEST_SECRETS,
    LocalStackConfig, QR_TTL_SECONDS, QUEUE_URL, RETRY_SCHEDULE, WEBHOOK_SECRETS, WEBHOOK_URL,
};
use relay_shared::deliver::Deliverer;
use relay_shared::dispatch::SETTLE_RESERVE;
use relay_shared::envelope::ChatIdKey;
use relay_shared::local_stack::{InProcessQueues, LocalStack, Parts, QueuePair};
use relay_shared::queue::move_messages;
use relay_shared::queue::sqs::SqsQueue;
use relay_shared::telemetry::Metrics;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args)]
pub struct LocalArgs {
    /// Address for ingest (POST /events, POST /events/batch, GET /health)
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// Where events are delivered, e.g. http://localhost:3001/api/webhook/chat-whatsapp
    // Its value stays out of --help: a URL may carry a token.
    #[arg(long, env = WEBHOOK_URL, hide_env_values = true)]
    webhook_url: Option<String>,
    /// Space-separated whsec_ secrets; every one signs each delivery
    #[arg(long, env = WEBHOOK_SECRETS, hide_env_values = true)]
    webhook_secrets: Option<String>,
    /// Space-separated whsec_ secrets accepted on incoming requests
    #[arg(long, env = INGEST_SECRETS, hide_env_values = true)]
    ingest_secrets: Option<String>,
    /// Seconds to wait after attempt 1, 2, …; e.g. 1,2,4 for quick local retries
    #[arg(long, env = RETRY_SCHEDULE)]
    retry_schedule: Option<String>,
    /// Per-attempt timeout in milliseconds (default 5000)
    #[arg(long, env = DELIVERY_TIMEOUT_MS)]
    delivery_timeout_ms: Option<String>,
    /// Receiver statuses that send an event straight to the DLQ (default "410 413 422"; "" = none)
    #[arg(long, env = DEAD_LETTER_STATUSES)]
    dead_letter_statuses: Option<String>,
    /// A qr event older than this many seconds is not delivered (default 60)
    #[arg(long, env = QR_TTL_SECONDS)]
    qr_ttl_seconds: Option<String>,
    /// Use this SQS FIFO queue instead of the in-process one (with AWS_ENDPOINT_URL_SQS for moto)
    #[arg(long, env = QUEUE_URL)]
    queue_url: Option<String>,
    /// With --queue-url: the SQS FIFO DLQ (default: the one the queue's redrive policy names)
    #[arg(long, env = DEAD_LETTER_QUEUE_URL)]
    dead_letter_queue_url: Option<String>,
    /// 32+ random characters keying the hash that names chats in group ids and logs; required
    /// with --queue-url, else a random key is made for this run
    #[arg(long, env = CHAT_ID_KEY, hide_env_values = true)]
    chat_id_key: Option<String>,
    /// In-process queue: seconds a received message stays invisible before it may be retried
    /// (up to 43200, SQS's 12-hour maximum); also each batch's deadline, so more than the
    /// delivery timeout + 20 s
    // AWS, `CreateQueue`, `VisibilityTimeout`: "Valid values: An integer from 0 to 43,200 (12
    // hours)." 0 is left out: every received message would be visible again at once.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=43_200))]
    visibility_timeout: u64,
    /// Concurrent receive loops (each handles a batch of up to 10)
    #[arg(long, default_value_t = 4)]
    workers: usize,
    #[command(flatten)]
    live: crate::live::LocalLiveArgs,
}

#[derive(clap::Args)]
pub struct RedriveArgs {
    /// The local stack's base URL (its in-process DLQ is moved back)
    #[arg(long, default_value = "http://127.0.0.1:9000")]
    url: String,
    /// With --dlq-url: move from this SQS DLQ to this SQS queue instead (any SQS endpoint;
    /// on AWS, `aws sqs start-message-move-task` does it server-side)
    #[arg(long, requires = "dlq_url")]
    queue_url: Option<String>,
    /// The SQS dead-letter queue to empty (with --queue-url)
    #[arg(long, requires = "queue_url")]
    dlq_url: Option<String>,
}

pub async fn run(args: LocalArgs) -> Result<ExitCode, Failure> {
    // The per-event `event queued` and `delivered` lines are DEBUG (on Lambda one summary line
    // per invocation replaces them); the local stack shows them, one per event and stage.
    init_terminal_logs("info,relay_shared=debug");
    let config = read_config(&args)?;
    let listener = crate::bind(args.listen).await?;
    let delivery = config.delivery;
    let live = crate::live::local_hub(&args.live, delivery.retry.qr_ttl)?;
    let schedule = delivery.retry.schedule.clone();
    let (queues, in_process, batch_visibility, mut queue_note) = open_queues(
        config.queue_url.as_deref(),
        config.dead_letter_queue_url.as_deref(),
        Duration::from_secs(args.visibility_timeout),
        schedule.max_attempts(),
    )
    .await?;
    // A batch must be settled before its messages are visible again: its deadline is the
    // queue's visibility timeout, which must leave room for one attempt. The in-process
    // timeout is ours to refuse; an SQS queue's is the operator's, and one too short (a test
    // queue, say) runs batches without a deadline, as this stack did before, and says so.
    let settle = delivery.delivery_timeout + SETTLE_RESERVE;
    let batch_time = (batch_visibility > settle).then_some(batch_visibility);
    if batch_time.is_none() {
        if in_process.is_some() {
            return Err(Failure(format!(
                "--visibility-timeout {} s is too short: a batch must be settled before its messages are visible again, and one attempt needs the delivery timeout + {} s; give more than {} s",
                args.visibility_timeout,
                SETTLE_RESERVE.as_secs(),
                settle.as_secs_f64().ceil()
            )));
        }
        queue_note.push_str(&format!(
            "; its VisibilityTimeout ({} s) leaves no room for a batch deadline (the delivery timeout + {} s), so a slow batch may be handed out twice",
            batch_visibility.as_secs(),
            SETTLE_RESERVE.as_secs()
        ));
    }
    let (chat_id_key, key_note) = chat_id_key(config.chat_id_key);
    let secrets_count = delivery.webhook_secrets.len();
    let deliverer = Deliverer::new(
        delivery.webhook_url.clone(),
        Arc::new(delivery.webhook_secrets),
        delivery.delivery_timeout,
    )
    .map_err(|e| Failure(format!("cannot build the HTTP client: {e}")))?;
    let mut stack = LocalStack::assemble(Parts {
        queues,
        ingest_secrets: config.ingest_secrets,
        chat_id_key,
        deliverer,
        retry: delivery.retry.clone(),
        metrics: Metrics::off(),
        poll_wait: Duration::from_secs(1),
    });
    if let Some(live) = &live {
        stack = stack.with_live(live.publishing.clone());
    }
    // A batch that outlives the visibility timeout is handed out again while still being
    // delivered; the dispatcher stops starting attempts before then, as on Lambda.
    if let Some(limit) = batch_time {
        stack = stack.with_batch_time_limit(limit);
    }
    let stack = stack.build();
    let mut app = stack.router();
    if let Some(live) = &live {
        app = app.merge(crate::live::routes(live));
    }
    if let Some(local) = &in_process {
        app = local_routes(local.clone()).merge(app);
    }

    let address = listener.local_addr().unwrap_or(args.listen);
    println!(
        "relay local: listening on http://{address} (POST /events, POST /events/batch, GET /health)"
    );
    println!(
        "relay local: delivering to {} ({secrets_count} signing secret(s), {} ms timeout, retry schedule {schedule} s, straight to the DLQ on [{}], qr events expire after {} s)",
        printable_url(&delivery.webhook_url),
        delivery.delivery_timeout.as_millis(),
        delivery.retry.dead_letter_statuses,
        delivery.retry.qr_ttl.as_secs()
    );
    println!("relay local: queue: {queue_note}");
    if let Some(live) = &live {
        println!(
            "relay local: live hub on ws://{address}/event/realtime, channels /{}/<session>; ingest publishes every accepted event (POST /event refuses page tokens, as AppSync's IAM-only publish does)",
            live.hub.config().namespace
        );
    }
    if let Some(note) = key_note {
        println!("{note}");
    }
    println!("relay local: Ctrl-C stops after in-flight deliveries finish");
    warn_if_unreachable(&delivery.webhook_url).await;

    serve_until_stopped(listener, app, &stack, args.workers).await;
    print_what_is_dropped(in_process.as_ref());
    Ok(ExitCode::SUCCESS)
}

/// The configuration, from flags over the environment; one line per problem, with its flag.
fn read_config(args: &LocalArgs) -> Result<LocalStackConfig, Failure> {
    let lookup = |var: &str| -> Option<String> {
        match var {
            WEBHOOK_URL => args.webhook_url.clone(),
            WEBHOOK_SECRETS => args.webhook_secrets.clone(),
            INGEST_SECRETS => args.ingest_secrets.clone(),
            RETRY_SCHEDULE => args.retry_schedule.clone(),
            DELIVERY_TIMEOUT_MS => args.delivery_timeout_ms.clone(),
            DEAD_LETTER_STATUSES => args.dead_letter_statuses.clone(),
            QR_TTL_SECONDS => args.qr_ttl_seconds.clone(),
            QUEUE_URL => args.queue_url.clone(),
            DEAD_LETTER_QUEUE_URL => args.dead_letter_queue_url.clone(),
            CHAT_ID_KEY => args.chat_id_key.clone(),
            _ => None,
        }
    };
    LocalStackConfig::from_lookup(&lookup).map_err(|errors| {
        let lines: Vec<String> = errors
            .0
            .iter()
            .map(|e| format!("{e} (flag --{})", e.var.to_lowercase().replace('_', "-")))
            .collect();
        Failure(lines.join("\nrelay: "))
    })
}

/// The SQS pair named by `queue_url` (and its DLQ), or the in-process pair; with the time a
/// received batch has before it is handed out again (the SQS queue's `VisibilityTimeout`, or
/// `visibility` for the in-process one) and a line that says which queue.
async fn open_queues(
    queue_url: Option<&str>,
    dead_letter_queue_url: Option<&str>,
    visibility: Duration,
    max_attempts: u32,
) -> Result<(QueuePair, Option<InProcessQueues>, Duration, String), Failure> {
    let Some(url) = queue_url else {
        let local = InProcessQueues::new("local", visibility);
        let note = format!(
            "in-process FIFO queue, DLQ after {max_attempts} attempts; it does NOT survive a restart"
        );
        return Ok((local.pair(), Some(local), visibility, note));
    };
    let queue = SqsQueue::from_env(url).await;
    let batch_time = queue
        .visibility_timeout()
        .await
        .map_err(|e| Failure(format!("cannot read the VisibilityTimeout of {url}: {e}")))?;
    let dlq = match dead_letter_queue_url {
        Some(dlq_url) => queue.sibling(dlq_url),
        None => queue.dead_letter_queue().await.map_err(|e| {
            Failure(format!(
                "cannot find the DLQ of {url}: {e} (flag --dead-letter-queue-url)"
            ))
        })?,
    };
    let note = format!(
        "SQS queue {url}, DLQ {} after {max_attempts} attempts",
        dlq.queue_url()
    );
    let pair = QueuePair {
        queue: Arc::new(queue),
        dead_letter: Arc::new(dlq),
    };
    Ok((pair, None, batch_time, note))
}

/// The configured key, or one made for this run (with the line that says so). The in-process
/// queue is lost on restart, so a per-run key cannot split a chat's order across two names; a
/// real queue requires `CHAT_ID_KEY` (the configuration refuses to start without it).
fn chat_id_key(configured: Option<ChatIdKey>) -> (ChatIdKey, Option<String>) {
    match configured {
        Some(key) => (key, None),
        None => (
            ChatIdKey::random(),
            Some(format!(
                "relay local: {CHAT_ID_KEY} not set: chats are named by a random key made for this run (fine for the in-process queue, which is lost on restart too)"
            )),
        ),
    }
}

/// Serves and polls until Ctrl-C or SIGTERM; in-flight deliveries finish first.
async fn serve_until_stopped(
    listener: tokio::net::TcpListener,
    app: Router,
    stack: &LocalStack,
    workers: usize,
) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let polling = stack.run_poller(workers, stopped(stop_rx.clone()));
    let serving = tokio::spawn(crate::serve::serve(
        listener,
        app,
        crate::serve::Limits::default(),
        stopped(stop_rx),
    ));
    let signal = async {
        shutdown_signal().await;
        println!("relay local: stopping (finishing in-flight deliveries)…");
        let _ = stop_tx.send(true);
    };
    tokio::join!(polling, signal);
    let _ = serving.await;
}

/// The in-process queue goes with the process: say how much.
fn print_what_is_dropped(in_process: Option<&InProcessQueues>) {
    match in_process {
        Some(local) => println!(
            "relay local: stopped; dropped with the in-process queue: {} event(s) ({} waiting for a retry or in flight), and {} in its DLQ",
            local.queue.len(),
            local.queue.in_flight(),
            local.dead_letter.len()
        ),
        None => println!("relay local: stopped; undelivered events stay in the SQS queue"),
    }
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// A receiver that is down is not an error for a relay (events wait and retry), but a
/// newcomer should know at once that nothing will arrive yet.
async fn warn_if_unreachable(url: &reqwest::Url) {
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return;
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let connect = tokio::net::TcpStream::connect((host.as_str(), port));
    let url = printable_url(url);
    match tokio::time::timeout(Duration::from_secs(2), connect).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => println!(
            "relay local: warning: {url} is not reachable now ({e}); events will wait in the queue and be retried"
        ),
        Err(_) => println!(
            "relay local: warning: {url} did not accept a connection within 2 s; events will wait in the queue and be retried"
        ),
    }
}

/// `scheme://host:port/path` of a URL, for the terminal: a query or `user:pass@` may carry a
/// token, and terminals end up in screenshots and scrollback.
fn printable_url(url: &reqwest::Url) -> String {
    // `host_str` keeps an IPv6 address's brackets.
    let host = url.host_str().unwrap_or_default();
    let port = url
        .port_or_known_default()
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    format!("{}://{host}{port}{}", url.scheme(), url.path())
}

fn local_routes(queues: InProcessQueues) -> Router {
    Router::new()
        .route("/local/queue", get(queue_depths))
        .route("/local/redrive", post(redrive_dlq))
        .with_state(queues)
}

async fn queue_depths(State(queues): State<InProcessQueues>) -> Json<Value> {
    Json(json!({
        "queue": {"messages": queues.queue.len(), "inFlight": queues.queue.in_flight()},
        "dlq": {"messages": queues.dead_letter.len()},
    }))
}

async fn redrive_dlq(State(queues): State<InProcessQueues>) -> Response {
    match move_messages(&*queues.dead_letter, &*queues.queue).await {
        Ok(moved) => {
            tracing::info!(moved, "redrive: DLQ messages moved back to the queue");
            Json(json!({"moved": moved})).into_response()
        }
        Err(e) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "redrive_failed", "message": e.to_string()})),
        )
            .into_response(),
    }
}

/// `relay redrive`: asks a running local stack to move its DLQ back (for AWS, use
/// `aws sqs start-message-move-task`, see docs/operations.md, Redrive).
pub async fn redrive(args: RedriveArgs) -> Result<ExitCode, Failure> {
    if let (Some(queue_url), Some(dlq_url)) = (args.queue_url, args.dlq_url) {
        let queue = SqsQueue::from_env(queue_url).await;
        let dlq = SqsQueue::from_env(dlq_url).await;
        let moved = move_messages(&dlq, &queue)
            .await
            .map_err(|e| Failure(format!("redrive stopped: {e}")))?;
        println!("{}", json!({"moved": moved}));
        return Ok(ExitCode::SUCCESS);
    }
    let url = format!("{}/local/redrive", args.url.trim_end_matches('/'));
    // The local stack moves its in-process DLQ in memory and answers `{"moved": n}` at once;
    // anything slower or bigger is not it.
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(REDRIVE_TIMEOUT)
        .build()
        .map_err(|e| Failure(format!("cannot build the HTTP client: {e}")))?;
    let not_reached = |e: reqwest::Error| {
        if e.is_timeout() {
            Failure(format!(
                "{url} did not answer within {} s; is `relay local` running there?",
                REDRIVE_TIMEOUT.as_secs()
            ))
        } else {
            Failure(format!(
                "cannot reach {url}: {e}; is `relay local` running there?"
            ))
        }
    };
    let response = client.post(&url).send().await.map_err(not_reached)?;
    let status = response.status();
    let body = read_bounded(response, MAX_ANSWER_BYTES)
        .await
        .map_err(not_reached)?;
    if !status.is_success() {
        return Err(Failure(format!(
            "{url} answered {status}: {}",
            excerpt(&body, MAX_ECHO_CHARS)
        )));
    }
    println!("{}", excerpt(&body, MAX_ECHO_CHARS));
    Ok(ExitCode::SUCCESS)
}

/// The longest `relay redrive` waits for the local stack's answer.
const REDRIVE_TIMEOUT: Duration = Duration::from_secs(30);
/// The most of an answer `relay redrive` reads; the local stack's is a few bytes.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// The most of an answer a message quotes.
const MAX_ECHO_CHARS: usize = 300;

/// The answer's body, read up to `limit` bytes (the rest is dropped with the connection).
async fn read_bounded(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<String, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= limit {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// At most `limit` characters of `text`, on one line (an error is one line), `…` if cut.
fn excerpt(text: &str, limit: usize) -> String {
    let mut line: String = text
        .trim()
        .chars()
        .take(limit)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.trim().chars().nth(limit).is_some() {
        line.push('…');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn printed(url: &str) -> String {
        printable_url(&url.parse().unwrap())
    }

    #[test]
    fn a_printed_url_keeps_no_query_and_no_credentials() {
        assert_eq!(
            printed("https://user:pa55@example.com/api/hook?token=secret#frag"),
            "https://example.com:443/api/hook"
        );
        assert_eq!(
            printed("http://localhost:3001/api/webhook/chat-whatsapp"),
            "http://localhost:3001/api/webhook/chat-whatsapp"
        );
        assert_eq!(printed("http://[::1]:8080/x?k=v"), "http://[::1]:8080/x");
        assert_eq!(printed("http://token@127.0.0.1/"), "http://127.0.0.1:80/");
    }

    #[test]
    fn an_excerpt_is_one_short_line() {
        assert_eq!(excerpt("  {\"moved\": 2}\n", 300), "{\"moved\": 2}");
        let long = "x".repeat(1_000);
        let cut = excerpt(&long, 300);
        assert_eq!(cut.chars().count(), 301);
        assert!(cut.ends_with('…'));
        assert_eq!(excerpt("a\nb\r\nc", 300), "a b  c");
    }
}
