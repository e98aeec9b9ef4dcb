//! The local stack end to end: `target/release/relay local` (in-process queue) on a free
//! port, delivering to a [`TimingReceiver`] in this process, driven by a load generator on
//! kept-alive HTTP/1.1 connections. The same generator then POSTs the same signed events
//! straight to a receiver (what the seed did), so the relay's added latency is the difference.
//!
//! Two loads: *closed* (C connections each sending as soon as the last answer came: the most
//! the stack takes) and *paced* (a fixed rate; how late the generator got is recorded, so a
//! stalled generator cannot hide latency). Both are bounded in count and time, loopback only.

use crate::fixtures::{
    CHATS, TYPICAL_BYTES, envelope, event_id, ingest_secrets, signed_header_pairs,
};
use crate::receiver::TimingReceiver;
use crate::stats::Summary;
use axum::body::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub enum Load {
    Closed { concurrency: usize },
    Paced { per_second: u64 },
}

impl Load {
    pub fn describe(&self) -> String {
        match self {
            Load::Closed { concurrency } => format!("closed loop, {concurrency} connections"),
            Load::Paced { per_second } => format!("paced, {per_second} events/s"),
        }
    }
}

/// The outcome of one run.
pub struct LoadResult {
    pub events: usize,
    pub received: usize,
    /// Sender's answers that were not the expected status (or no answer).
    pub refused: usize,
    /// Events/s, first send → last arrival at the receiver.
    pub throughput: f64,
    /// Events/s, first send → last answer to the sender.
    pub accept_rate: f64,
    /// Send → arrival at the receiver.
    pub latency: Summary,
    /// Send → answer (`202` from ingest, `204` from the receiver).
    pub answer: Summary,
    /// Paced load: how late the generator sent an event, at worst (tokio's timer ticks in
    /// milliseconds, so up to ~1 ms is the timer; more means the generator fell behind).
    pub max_lag: Duration,
}

impl LoadResult {
    pub fn to_json(&self) -> Value {
        json!({
            "events": self.events,
            "received": self.received,
            "refused": self.refused,
            "throughput_per_s": self.throughput,
            "accept_rate_per_s": self.accept_rate,
            "latency": self.latency.to_json_ms(),
            "answer": self.answer.to_json_ms(),
            "max_schedule_lag_ms": self.max_lag.as_secs_f64() * 1e3,
        })
    }
}

/// Signed events ready to send: `webhook-id` = the envelope's `id`, so the receiver keys the
/// arrival by it whichever way the event came.
pub struct Prepared {
    bodies: Vec<Bytes>,
    headers: Vec<HeaderMap>,
}

pub fn prepare(prefix: &str, count: usize) -> Prepared {
    let secrets = ingest_secrets();
    let (mut bodies, mut headers) = (Vec::with_capacity(count), Vec::with_capacity(count));
    for i in 0..count {
        let id = event_id(prefix, i);
        let body = envelope(&id, i % CHATS, TYPICAL_BYTES);
        let mut map = HeaderMap::new();
        for (name, value) in signed_header_pairs(&secrets, &id, &body) {
            map.insert(
                HeaderName::from_static(name),
                HeaderValue::from_str(&value).expect("ASCII header"),
            );
        }
        headers.push(map);
        bodies.push(Bytes::from(body));
    }
    Prepared { bodies, headers }
}

/// What every send task shares.
struct Run {
    client: reqwest::Client,
    url: String,
    prepared: Prepared,
    epoch: Instant,
    expect: u16,
    /// Per event, nanoseconds after `epoch` + 1 (0 = never).
    sent: Vec<AtomicU64>,
    answered: Vec<AtomicU64>,
    refused: AtomicUsize,
    /// Nanoseconds; see [`LoadResult::max_lag`].
    lag: AtomicU64,
}

impl Run {
    async fn send(&self, i: usize, due: Option<Duration>) {
        let at = self.epoch.elapsed();
        self.sent[i].store(at.as_nanos() as u64 + 1, Ordering::SeqCst);
        if let Some(due) = due {
            self.lag
                .fetch_max(at.saturating_sub(due).as_nanos() as u64, Ordering::SeqCst);
        }
        let response = self
            .client
            .post(&self.url)
            .headers(self.prepared.headers[i].clone())
            .body(self.prepared.bodies[i].clone())
            .send()
            .await;
        let ok = match response {
            Ok(r) => {
                let status = r.status().as_u16();
                let _ = r.bytes().await;
                status == self.expect
            }
            Err(_) => false,
        };
        self.answered[i].store(self.epoch.elapsed().as_nanos() as u64 + 1, Ordering::SeqCst);
        if !ok {
            self.refused.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn at(slots: &[AtomicU64], i: usize) -> Option<Duration> {
        let v = slots[i].load(Ordering::SeqCst);
        (v > 0).then(|| Duration::from_nanos(v - 1))
    }
}

/// Sends every prepared event to `url` under `load` (two minutes at most), then waits (at
/// most `drain`) for the receiver to have them all. `expect` is the status the target
/// answers on success.
pub async fn generate(
    url: &str,
    prepared: Prepared,
    load: Load,
    receiver: &TimingReceiver,
    epoch: Instant,
    expect: u16,
    drain: Duration,
) -> LoadResult {
    let count = prepared.bodies.len();
    let in_flight_limit = match load {
        Load::Closed { concurrency } => concurrency,
        Load::Paced { .. } => 512,
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .pool_max_idle_per_host(in_flight_limit)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client");
    let slots = || (0..count).map(|_| AtomicU64::new(0)).collect();
    let run = Arc::new(Run {
        client,
        url: url.to_owned(),
        prepared,
        epoch,
        expect,
        sent: slots(),
        answered: slots(),
        refused: AtomicUsize::new(0),
        lag: AtomicU64::new(0),
    });
    let sending = async {
        match load {
            Load::Closed { concurrency } => {
                let next = Arc::new(AtomicUsize::new(0));
                let workers: Vec<_> = (0..concurrency)
                    .map(|_| {
                        let (next, run) = (Arc::clone(&next), Arc::clone(&run));
                        tokio::spawn(async move {
                            loop {
                                let i = next.fetch_add(1, Ordering::SeqCst);
                                if i >= count {
                                    break;
                                }
                                run.send(i, None).await;
                            }
                        })
                    })
                    .collect();
                for worker in workers {
                    let _ = worker.await;
                }
            }
            Load::Paced { per_second } => {
                let start = epoch.elapsed();
                let gate = Arc::new(tokio::sync::Semaphore::new(in_flight_limit));
                let mut tasks = Vec::with_capacity(count);
                for i in 0..count {
                    let due = start + Duration::from_nanos(i as u64 * 1_000_000_000 / per_second);
                    tokio::time::sleep_until((epoch + due).into()).await;
                    let permit = Arc::clone(&gate)
                        .acquire_owned()
                        .await
                        .expect("open semaphore");
                    let run = Arc::clone(&run);
                    tasks.push(tokio::spawn(async move {
                        run.send(i, Some(due)).await;
                        drop(permit);
                    }));
                }
                for task in tasks {
                    let _ = task.await;
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(120), sending).await;
    receiver.wait_for(count, drain).await;

    let mut latencies = Vec::with_capacity(count);
    let mut answers = Vec::with_capacity(count);
    let (mut first_send, mut last_arrival, mut last_answer) =
        (Duration::MAX, Duration::ZERO, Duration::ZERO);
    for i in 0..count {
        let Some(sent) = Run::at(&run.sent, i) else {
            continue;
        };
        first_send = first_send.min(sent);
        if let Some(answered) = Run::at(&run.answered, i) {
            answers.push(answered.saturating_sub(sent));
            last_answer = last_answer.max(answered);
        }
        if let Some(arrived) = receiver.arrival(i) {
            latencies.push(arrived.saturating_sub(sent));
            last_arrival = last_arrival.max(arrived);
        }
    }
    let rate =
        |n: usize, end: Duration| n as f64 / end.saturating_sub(first_send).as_secs_f64().max(1e-9);
    // An empty set (nothing arrived) summarises as one infinite-looking sample.
    let summary = |v: &[Duration]| Summary::of(if v.is_empty() { &[Duration::MAX] } else { v });
    LoadResult {
        events: count,
        received: latencies.len(),
        refused: run.refused.load(Ordering::SeqCst),
        throughput: rate(latencies.len(), last_arrival),
        accept_rate: rate(answers.len(), last_answer),
        latency: summary(&latencies),
        answer: summary(&answers),
        max_lag: Duration::from_nanos(run.lag.load(Ordering::SeqCst)),
    }
}

/// A running `relay local`, stopped (SIGTERM, then SIGKILL) on drop.
pub struct RelayLocal {
    child: Child,
    pub url: String,
}

impl RelayLocal {
    /// Starts `relay local` on a free port, stdout and stderr to `log`, and waits for
    /// `GET /health`.
    pub async fn start(binary: &Path, webhook_url: &str, log: &Path) -> Result<RelayLocal, String> {
        let port = relay_tests::free_port();
        let log = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new(binary)
            .args(["local", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--webhook-url", webhook_url])
            .args(["--ingest-secrets", crate::fixtures::INGEST_SECRET])
            .args(["--webhook-secrets", crate::fixtures::WEBHOOK_SECRET])
            .env_remove("QUEUE_URL")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let relay = RelayLocal {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(r) = client.get(format!("{}/health", relay.url)).send().await
                && r.status().is_success()
            {
                return Ok(relay);
            }
            if Instant::now() > deadline {
                return Err("relay local did not answer GET /health within 15 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Peak RSS so far, kB.
    pub fn vm_hwm_kb(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// CPU time used so far (user + system), from `/proc/<pid>/stat`.
    pub fn cpu_time(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // Fields after the command name (in parentheses): state is #3, utime #14, stime #15.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some(Duration::from_secs_f64(
            ticks as f64 / clock_ticks_per_second(),
        ))
    }
}

/// `sysconf(_SC_CLK_TCK)`, through `getconf` (100 on Linux unless the kernel says otherwise).
fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

impl Drop for RelayLocal {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
