//! The local stack end to end: `target/release/relay local` (in-process queue) on a free
//! port, delivering to a [`TimingReceiver`] in this process, driven by a load generator on
//! kept-alive HTTP/1.1 connections. The same generator then POSTs the same signed events
//! straight to a receiver (what the seed did), so the relay's added latency is the difference.
//!
//! Two loads: *closed* (C connections each sending as soon as the last answer came: the most
//! the stack takes) and *paced* (a fixed rate; how late the generator got is recorded, so a
//! stalled generator cannot hide latency). Both are bounded in count and time, loopback only.

use crate::fixtures::{
    CHATS, TYPICAL_BYTES, envelope_in_session, event_id, ingest_secrets, signed_header_pairs,
};
use crate::plan::{Bins, Plan};
use crate::receiver::TimingReceiver;
use crate::report::{Report, Verdict, mib_kb, ms, ratio, thousands, us};
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
    /// Per event, when it was sent and when its answer came, from the epoch (for figures
    /// that compare other arrivals with these).
    pub sent: Vec<Option<Duration>>,
    pub answered: Vec<Option<Duration>>,
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
    prepare_in_sessions(prefix, count, None)
}

/// [`prepare`], with event `i` in session `s{i % sessions}` when `sessions` is given (the
/// envelope's `session` field; the live channel is per session).
pub fn prepare_in_sessions(prefix: &str, count: usize, sessions: Option<usize>) -> Prepared {
    let secrets = ingest_secrets();
    let (mut bodies, mut headers) = (Vec::with_capacity(count), Vec::with_capacity(count));
    for i in 0..count {
        let id = event_id(prefix, i);
        let session = sessions.map(|sessions| session_name(i % sessions));
        let body = envelope_in_session(session.as_deref(), &id, i % CHATS, TYPICAL_BYTES);
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

/// The name of session `k` in [`prepare_in_sessions`].
pub fn session_name(k: usize) -> String {
    format!("s{k}")
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
            Load::Closed { concurrency } => send_closed(&run, count, concurrency).await,
            Load::Paced { per_second } => {
                send_paced(&run, count, per_second, in_flight_limit).await
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(120), sending).await;
    receiver.wait_for(count, drain).await;

    tally(&run, receiver, count)
}

/// C workers, each sending the next unsent event as soon as its last one was answered.
async fn send_closed(run: &Arc<Run>, count: usize, concurrency: usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, run) = (Arc::clone(&next), Arc::clone(run));
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

/// One event every 1/`per_second` s on schedule, at most `in_flight_limit` unanswered.
async fn send_paced(run: &Arc<Run>, count: usize, per_second: u64, in_flight_limit: usize) {
    let epoch = run.epoch;
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
        let run = Arc::clone(run);
        tasks.push(tokio::spawn(async move {
            run.send(i, Some(due)).await;
            drop(permit);
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

/// Latency and rates from what was sent, answered and received.
fn tally(run: &Run, receiver: &TimingReceiver, count: usize) -> LoadResult {
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
        sent: (0..count).map(|i| Run::at(&run.sent, i)).collect(),
        answered: (0..count).map(|i| Run::at(&run.answered, i)).collect(),
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
        Self::start_with(binary, webhook_url, log, &[]).await
    }

    /// [`RelayLocal::start`] with more flags (e.g. `--live-token-secrets` for the live hub).
    pub async fn start_with(
        binary: &Path,
        webhook_url: &str,
        log: &Path,
        extra: &[&str],
    ) -> Result<RelayLocal, String> {
        let port = relay_tests::free_port();
        let log = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new(binary)
            .args(["local", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--webhook-url", webhook_url])
            .args(["--ingest-secrets", crate::fixtures::INGEST_SECRET])
            .args(["--webhook-secrets", crate::fixtures::WEBHOOK_SECRET])
            .args(extra)
            .env_remove("QUEUE_URL")
            .env_remove("LIVE_TOKEN_SECRETS")
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
        self.status_kb("VmHWM:")
    }

    /// RSS now, kB.
    pub fn vm_rss_kb(&self) -> Option<u64> {
        self.status_kb("VmRSS:")
    }

    fn status_kb(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
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

/// One load run against `relay local` or straight at a receiver.
struct LoadRun {
    result: LoadResult,
    /// `relay local` only: peak RSS (kB) and CPU time per event (µs) over the run.
    relay_rss_kb: Option<u64>,
    relay_cpu_us_per_event: Option<f64>,
}

impl LoadRun {
    fn to_json(&self) -> Value {
        let mut json = self.result.to_json();
        json["relay_vm_hwm_kb"] = json!(self.relay_rss_kb);
        json["relay_cpu_us_per_event"] = json!(self.relay_cpu_us_per_event);
        json
    }
}

/// Runs `load` once through a fresh `relay local` (`via_relay`) or straight at a receiver.
async fn load_run(
    bins: &Bins,
    logs: &Path,
    epoch: Instant,
    tag: &str,
    via_relay: bool,
    load: Load,
    events: usize,
) -> Result<LoadRun, String> {
    let drain = Duration::from_secs(60);
    let receiver = TimingReceiver::start(epoch, events, Duration::ZERO).await;
    let prepared = prepare(tag, events);
    let run = if via_relay {
        let log = logs.join(format!("relay-local-{tag}.log"));
        let relay = RelayLocal::start(&bins.relay, &receiver.url, &log).await?;
        let cpu_before = relay.cpu_time();
        let url = format!("{}/events", relay.url);
        let result = generate(&url, prepared, load, &receiver, epoch, 202, drain).await;
        let cpu = match (cpu_before, relay.cpu_time()) {
            (Some(a), Some(b)) => Some((b - a).as_secs_f64() * 1e6 / events as f64),
            _ => None,
        };
        LoadRun {
            result,
            relay_rss_kb: relay.vm_hwm_kb(),
            relay_cpu_us_per_event: cpu,
        }
    } else {
        let result = generate(&receiver.url, prepared, load, &receiver, epoch, 204, drain).await;
        LoadRun {
            result,
            relay_rss_kb: None,
            relay_cpu_us_per_event: None,
        }
    };
    eprintln!(
        "relay-bench:   {}, {}: {:.0} events/s, {} of {} received",
        if via_relay { "relay" } else { "direct" },
        load.describe(),
        run.result.throughput,
        run.result.received,
        run.result.events
    );
    Ok(run)
}

pub fn complete(r: &LoadResult) -> bool {
    r.received == r.events && r.refused == 0
}

pub fn lost(r: &LoadResult) -> String {
    if complete(r) {
        String::new()
    } else {
        format!(
            " — **{} of {} received, {} refused**",
            r.received, r.events, r.refused
        )
    }
}

pub fn latency_cell(r: &LoadResult) -> String {
    summary_cell(&r.latency)
}

/// "p50 … / p99 … / max …" of a latency summary.
pub fn summary_cell(summary: &Summary) -> String {
    format!(
        "p50 {} / p99 {} / max {}",
        ms(summary.median),
        ms(summary.p99),
        ms(summary.max)
    )
}

/// The local stack section: saturating and paced load through `relay local`, each beside the
/// same load posted straight to a receiver.
pub async fn section(
    report: &mut Report,
    bins: &Bins,
    plan: &Plan,
    logs: &Path,
    epoch: Instant,
) -> Result<(), String> {
    let closed = closed_load(report, bins, plan, logs, epoch).await?;
    let paced = paced_load(report, bins, plan, logs, epoch).await?;
    report.note("Local stack: a fresh `target/release/relay local` per run (in-process queue, default 4 poll workers), its stdout/stderr (one log line per event and stage) redirected to a file in `bench-results/logs/`; the receiver runs inside the bench process, answers 204 without verifying; events are spread over 1,000 chats (FIFO groups). The load generator (reqwest, HTTP/1.1 keep-alive) runs in the bench process too, so generator, relay and receiver share the 2 cores. Latency runs from the moment the generator sends (paced runs also report how late the generator was against its schedule). Latency under the saturating load is queueing (ingest accepts faster than the stack delivers), not overhead.");
    report.json("local_stack", json!({"closed": closed, "paced": paced}));
    Ok(())
}

/// Saturating load: direct and relay alternate, `closed_repeats` times each; the rows show the
/// median run of each. Returns every run, for the JSON file.
async fn closed_load(
    report: &mut Report,
    bins: &Bins,
    plan: &Plan,
    logs: &Path,
    epoch: Instant,
) -> Result<Value, String> {
    let closed = Load::Closed {
        concurrency: plan.concurrency,
    };
    let (mut direct, mut relay) = (Vec::new(), Vec::new());
    for rep in 0..plan.closed_repeats {
        let events = plan.load_events;
        direct.push(
            load_run(
                bins,
                logs,
                epoch,
                &format!("cd{rep}"),
                false,
                closed,
                events,
            )
            .await?,
        );
        relay.push(load_run(bins, logs, epoch, &format!("cr{rep}"), true, closed, events).await?);
    }
    let (d, r) = (median_run(&direct), median_run(&relay));
    let all_complete = relay.iter().chain(&direct).all(|x| complete(&x.result));
    let what = closed.describe();
    report.row(
        "3",
        format!(
            "throughput, sent → all received ({} events, {what}; median of {})",
            thousands(plan.load_events as u64),
            relay.len()
        ),
        format!(
            "{} events/s (runs {}; ingest answered at {} events/s){}",
            thousands(r.result.throughput as u64),
            throughputs(&relay),
            thousands(r.result.accept_rate as u64),
            lost(&r.result)
        ),
        format!(
            "direct POST {} events/s (runs {}) → {}",
            thousands(d.result.throughput as u64),
            throughputs(&direct),
            ratio(r.result.throughput / d.result.throughput)
        ),
        "≥ 20,000 events/s",
        Verdict::of(all_complete && r.result.throughput >= 20_000.0),
    );
    if let (Some(cpu), Some(kb)) = (r.relay_cpu_us_per_event, r.relay_rss_kb) {
        report.row(
            "3",
            "`relay local` CPU time per event (user + system, from /proc) and peak RSS, median run",
            format!("{} per event; {}", us(cpu), mib_kb(kb)),
            "",
            "",
            Verdict::Info,
        );
    }
    report.row(
        "3",
        format!("latency send → receiver under that load ({what})"),
        latency_cell(&r.result),
        format!("direct {}", latency_cell(&d.result)),
        "",
        Verdict::Info,
    );

    Ok(json!({
        "load": closed.describe(),
        "direct": direct.iter().map(LoadRun::to_json).collect::<Vec<_>>(),
        "relay": relay.iter().map(LoadRun::to_json).collect::<Vec<_>>(),
    }))
}

/// The run of median throughput.
fn median_run(runs: &[LoadRun]) -> &LoadRun {
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by(|&a, &b| {
        runs[a]
            .result
            .throughput
            .total_cmp(&runs[b].result.throughput)
    });
    &runs[order[(order.len() - 1) / 2]]
}

/// Every run's throughput, in events/s: "12,345 / 12,001 / …".
fn throughputs(runs: &[LoadRun]) -> String {
    runs.iter()
        .map(|x| thousands(x.result.throughput as u64))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// Paced load: what one event waits for when the stack is not saturated. Returns both runs,
/// for the JSON file.
async fn paced_load(
    report: &mut Report,
    bins: &Bins,
    plan: &Plan,
    logs: &Path,
    epoch: Instant,
) -> Result<Value, String> {
    let paced = Load::Paced {
        per_second: plan.paced_rate,
    };
    let pd = load_run(bins, logs, epoch, "pd", false, paced, plan.paced_events).await?;
    let pr = load_run(bins, logs, epoch, "pr", true, paced, plan.paced_events).await?;
    let (pd_r, pr_r) = (&pd.result, &pr.result);
    let what = paced.describe();
    let ok = complete(pd_r) && complete(pr_r);
    report.row(
        "3",
        format!(
            "latency send → receiver ({} events, {what})",
            thousands(plan.paced_events as u64)
        ),
        format!(
            "{}{} (generator late by ≤ {})",
            latency_cell(pr_r),
            lost(pr_r),
            ms(pr_r.max_lag.as_secs_f64() * 1e6)
        ),
        format!(
            "direct {} (late by ≤ {})",
            latency_cell(pd_r),
            ms(pd_r.max_lag.as_secs_f64() * 1e6)
        ),
        "",
        Verdict::Info,
    );
    let added50 = pr_r.latency.median - pd_r.latency.median;
    let added99 = pr_r.latency.p99 - pd_r.latency.p99;
    report.row(
        "3",
        format!("added latency, p50 ({what})"),
        ms(added50),
        "relay − direct, same run",
        "≤ 1 ms",
        Verdict::of(ok && added50 <= 1_000.0),
    );
    report.row(
        "3",
        format!("added latency, p99 ({what})"),
        ms(added99),
        "relay − direct, same run",
        "≤ 5 ms",
        Verdict::of(ok && added99 <= 5_000.0),
    );
    Ok(json!({"load": what, "direct": pd.to_json(), "relay": pr.to_json()}))
}
