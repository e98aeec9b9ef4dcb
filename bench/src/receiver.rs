//! A webhook receiver on a loopback port inside the bench process. It records when each
//! event first arrived (keyed by the index in its `webhook-id`), answers `204`, and can take
//! a fixed time per request to play a slow app. It does not verify signatures: that cost
//! would belong to the app, and here it would take CPU from the relay sharing the machine.
//! `HEAD` (the dispatcher's connection warm-up) is answered and not counted.

use crate::fixtures::index_of;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The bench's sink: times each event's first arrival; verifies nothing.
pub struct TimingReceiver {
    pub url: String,
    state: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    epoch: Instant,
    /// Nanoseconds after `epoch` + 1 at which event `i` arrived; 0 = not yet.
    arrivals: Vec<AtomicU64>,
    received: AtomicUsize,
    bytes: AtomicU64,
    delay: Duration,
    changed: Notify,
}

impl TimingReceiver {
    /// Listens on 127.0.0.1:0. `capacity` events can be timed (indices 0..capacity); times are
    /// measured from `epoch`, shared with the sender.
    pub async fn start(epoch: Instant, capacity: usize, delay: Duration) -> TimingReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let url = format!(
            "http://{}/api/webhook/chat-whatsapp",
            listener.local_addr().expect("receiver address")
        );
        let state = Arc::new(Shared {
            epoch,
            arrivals: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
            received: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
            delay,
            changed: Notify::new(),
        });
        let app = Router::new()
            .fallback(receive)
            .layer(DefaultBodyLimit::disable())
            .with_state(Arc::clone(&state));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TimingReceiver { url, state, task }
    }

    /// Requests received (HEAD excluded).
    pub fn received(&self) -> usize {
        self.state.received.load(Ordering::SeqCst)
    }

    pub fn bytes(&self) -> u64 {
        self.state.bytes.load(Ordering::SeqCst)
    }

    /// When event `index` arrived, measured from the epoch.
    pub fn arrival(&self, index: usize) -> Option<Duration> {
        let at = self.state.arrivals.get(index)?.load(Ordering::SeqCst);
        (at > 0).then(|| Duration::from_nanos(at - 1))
    }

    /// Waits until `count` requests have arrived; false after `timeout`.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.state.changed.notified();
            if self.received() >= count {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.received() >= count;
            }
        }
    }
}

impl Drop for TimingReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State(state): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    if method == Method::HEAD {
        return StatusCode::NO_CONTENT;
    }
    let at = state.epoch.elapsed().as_nanos() as u64 + 1;
    let index = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .and_then(index_of);
    if let Some(slot) = index.and_then(|i| state.arrivals.get(i)) {
        let _ = slot.compare_exchange(0, at, Ordering::SeqCst, Ordering::SeqCst);
    }
    if !state.delay.is_zero() {
        tokio::time::sleep(state.delay).await;
    }
    state.bytes.fetch_add(body.len() as u64, Ordering::SeqCst);
    state.received.fetch_add(1, Ordering::SeqCst);
    state.changed.notify_waiters();
    StatusCode::NO_CONTENT
}
