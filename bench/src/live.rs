//! The live channel end to end: `relay local` with its hub on, 100 pages (WebSocket clients
//! speaking AppSync Events' protocol, [`relay_tests::live_page`]) subscribed over 10
//! sessions, and the paced load of the local-stack section spread over those sessions. In the
//! same run, each event's webhook delivery is timed too, so the page's latency sits beside the
//! webhook's. Two more paced runs, through a `relay local` without the hub and with the hub but
//! no page, give ingest's answer time without and with publishing: the difference is what
//! publishing adds to ingest, apart from the fan-out, which on AWS is AppSync's work. The hub's
//! memory per connection is taken on a fresh `relay local` holding 1,000 idle subscribed pages.

use crate::fixtures::index_of;
use crate::loadgen::{
    Load, LoadResult, RelayLocal, generate, latency_cell, lost, prepare_in_sessions, session_name,
    summary_cell,
};
use crate::plan::{Bins, Plan};
use crate::receiver::TimingReceiver;
use crate::report::{Report, Verdict, ms, thousands};
use crate::stats::Summary;
use relay_shared::live::channel::{DEFAULT_NAMESPACE, session_channel};
use relay_shared::live::token::{TokenSecrets, unix_now};
use relay_tests::live_page::{self, Socket};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// `LIVE_TOKEN_SECRETS` of the bench's `relay local`.
const LIVE_SECRET: &str = "bench-live-token-secret-0123456789abcdef";
/// Sessions the events and the pages spread over.
const SESSIONS: usize = 10;
/// Pages subscribed during the latency run (10 per session).
const PAGES: usize = 100;
/// Idle pages held for the memory figure.
const MEMORY_PAGES: usize = 1_000;
/// How long a page waits for the hub's answers while connecting.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(10);

/// Arrival times at the pages: one slot per (page, event), nanoseconds after the epoch + 1.
struct Arrivals {
    slots: Vec<AtomicU64>,
    events: usize,
    seen: AtomicUsize,
}

impl Arrivals {
    fn new(pages: usize, events: usize) -> Arc<Self> {
        Arc::new(Arrivals {
            slots: (0..pages * events).map(|_| AtomicU64::new(0)).collect(),
            events,
            seen: AtomicUsize::new(0),
        })
    }

    fn record(&self, page: usize, event: usize, at: Duration) {
        if event >= self.events {
            return;
        }
        let slot = &self.slots[page * self.events + event];
        if slot
            .compare_exchange(
                0,
                at.as_nanos() as u64 + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
        {
            self.seen.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn at(&self, page: usize, event: usize) -> Option<Duration> {
        let v = self.slots[page * self.events + event].load(Ordering::SeqCst);
        (v > 0).then(|| Duration::from_nanos(v - 1))
    }
}

/// A token for one session, valid for the run.
fn token(secrets: &TokenSecrets, session: &str) -> Result<String, String> {
    secrets
        .mint(
            "bench-page",
            &[session.to_owned()],
            Duration::from_secs(600),
            unix_now(),
        )
        .map_err(|e| e.to_string())
}

/// Opens `count` pages on `host`, page `p` subscribed to session `p % SESSIONS`.
async fn open_pages(host: &str, count: usize) -> Result<Vec<Socket>, String> {
    let secrets = TokenSecrets::parse(LIVE_SECRET).map_err(|e| e.to_string())?;
    let mut pages = Vec::with_capacity(count);
    for p in 0..count {
        let session = session_name(p % SESSIONS);
        let token = token(&secrets, &session)?;
        let channel = session_channel(DEFAULT_NAMESPACE, &session);
        let page = live_page::subscribed(host, &token, &channel, HANDSHAKE_WAIT)
            .await
            .map_err(|e| format!("page {p} ({channel}): {e}"))?;
        pages.push(page);
    }
    Ok(pages)
}

/// Reads each page until it closes, recording when each event (by its id) arrived.
fn listen(pages: Vec<Socket>, arrivals: &Arc<Arrivals>, epoch: Instant) {
    for (p, mut socket) in pages.into_iter().enumerate() {
        let arrivals = Arc::clone(arrivals);
        tokio::spawn(async move {
            while let Some(message) = live_page::next(&mut socket, Duration::from_secs(120)).await {
                let at = epoch.elapsed();
                if message["type"] != "data" {
                    continue;
                }
                let index = message["event"]
                    .as_str()
                    .and_then(|text| serde_json::from_str::<Value>(text).ok())
                    .and_then(|event| event["id"].as_str().and_then(index_of));
                if let Some(index) = index {
                    arrivals.record(p, index, at);
                }
            }
        });
    }
}

/// What one paced run measured at the pages.
struct PageFigures {
    /// Send → arrival at a page, every (page, event) pair of the event's session.
    latency: Summary,
    /// Arrival at a page − the `202` reaching the sender (negative: the page was first).
    after_answer_p50_ms: f64,
    after_answer_p99_ms: f64,
    expected: usize,
    arrived: usize,
}

fn page_figures(result: &LoadResult, arrivals: &Arrivals, pages: usize) -> PageFigures {
    let (mut latencies, mut after_answer) = (Vec::new(), Vec::new());
    let mut expected = 0;
    for event in 0..result.events {
        let Some(sent) = result.sent[event] else {
            continue;
        };
        for page in (event % SESSIONS..pages).step_by(SESSIONS) {
            expected += 1;
            let Some(at) = arrivals.at(page, event) else {
                continue;
            };
            latencies.push(at.saturating_sub(sent));
            if let Some(answered) = result.answered[event] {
                after_answer.push((at.as_secs_f64() - answered.as_secs_f64()) * 1e3);
            }
        }
    }
    let arrived = latencies.len();
    let latency = Summary::of(if latencies.is_empty() {
        &[Duration::MAX]
    } else {
        &latencies
    });
    after_answer.sort_by(f64::total_cmp);
    let rank = |q: f64| {
        after_answer
            .get(((q * after_answer.len() as f64).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN)
    };
    PageFigures {
        latency,
        after_answer_p50_ms: rank(0.50),
        after_answer_p99_ms: rank(0.99),
        expected,
        arrived,
    }
}

/// Whether the hub is on in a paced run, and how many pages listen.
#[derive(Clone, Copy, PartialEq)]
enum Hub {
    Off,
    On { pages: usize },
}

/// One paced run through a fresh `relay local`.
async fn paced_run(
    bins: &Bins,
    plan: &Plan,
    logs: &Path,
    epoch: Instant,
    hub: Hub,
) -> Result<(LoadResult, Option<PageFigures>), String> {
    let events = plan.paced_events;
    let (tag, live, pages) = match hub {
        Hub::Off => ("lo".to_owned(), false, 0),
        Hub::On { pages } => (format!("l{pages}"), true, pages),
    };
    let tag = tag.as_str();
    let receiver = TimingReceiver::start(epoch, events, Duration::ZERO).await;
    let log = logs.join(format!("relay-local-live-{tag}.log"));
    let extra: &[&str] = if live {
        &["--live-token-secrets", LIVE_SECRET]
    } else {
        &[]
    };
    let relay = RelayLocal::start_with(&bins.relay, &receiver.url, &log, extra).await?;
    let arrivals = Arrivals::new(pages, events);
    if pages > 0 {
        let host = relay.url.trim_start_matches("http://");
        listen(open_pages(host, pages).await?, &arrivals, epoch);
    }
    let prepared = prepare_in_sessions(tag, events, Some(SESSIONS));
    let load = Load::Paced {
        per_second: plan.paced_rate,
    };
    let url = format!("{}/events", relay.url);
    let drain = Duration::from_secs(60);
    let result = generate(&url, prepared, load, &receiver, epoch, 202, drain).await;
    if pages == 0 {
        return Ok((result, None));
    }
    let want = events * pages / SESSIONS;
    let deadline = Instant::now() + Duration::from_secs(10);
    while arrivals.seen.load(Ordering::SeqCst) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let figures = page_figures(&result, &arrivals, pages);
    Ok((result, Some(figures)))
}

/// The hub's memory per connection: RSS of a fresh `relay local` before and after
/// [`MEMORY_PAGES`] pages connected and subscribed, divided by their number.
async fn memory_per_page(bins: &Bins, logs: &Path, epoch: Instant) -> Result<f64, String> {
    let receiver = TimingReceiver::start(epoch, 1, Duration::ZERO).await;
    let log = logs.join("relay-local-live-memory.log");
    let extra = ["--live-token-secrets", LIVE_SECRET];
    let relay = RelayLocal::start_with(&bins.relay, &receiver.url, &log, &extra).await?;
    let host = relay.url.trim_start_matches("http://").to_owned();
    // One page first, so the hub's once-only allocations are in the baseline.
    let warm = open_pages(&host, 1).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = relay.vm_rss_kb().ok_or("cannot read relay local's RSS")?;
    let pages = open_pages(&host, MEMORY_PAGES).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = relay.vm_rss_kb().ok_or("cannot read relay local's RSS")?;
    drop((warm, pages));
    Ok(after.saturating_sub(before) as f64 * 1024.0 / MEMORY_PAGES as f64)
}

/// The live section: page latency beside webhook latency, what publishing adds to ingest,
/// and the hub's memory per connection.
pub async fn section(
    report: &mut Report,
    bins: &Bins,
    plan: &Plan,
    logs: &Path,
    epoch: Instant,
) -> Result<(), String> {
    let (without, _) = paced_run(bins, plan, logs, epoch, Hub::Off).await?;
    let (unheard, _) = paced_run(bins, plan, logs, epoch, Hub::On { pages: 0 }).await?;
    let (with, pages) = paced_run(bins, plan, logs, epoch, Hub::On { pages: PAGES }).await?;
    let runs = Runs {
        pages: pages.expect("the live run measures pages"),
        bytes_per_page: memory_per_page(bins, logs, epoch).await?,
        what: format!(
            "{} events at {}/s over {SESSIONS} sessions, {PAGES} pages",
            thousands(plan.paced_events as u64),
            thousands(plan.paced_rate)
        ),
        without,
        unheard,
        with,
    };
    runs.page_rows(report);
    runs.ingest_rows(report);
    runs.memory_row(report);
    report.note("Live: `relay local` with `--live-token-secrets`, the hub in the same process as ingest (on AWS the publish is an HTTPS call to AppSync Events instead, bounded by 250 ms). Pages are WebSocket clients in the bench process that speak AppSync Events' protocol (subprotocols, `connection_init`, `subscribe`), 10 per session; an event reaches the 10 pages of its session. Latency is taken from the moment the generator sends, for the pages and the webhook alike; generator, relay, receiver and pages share the 2 cores.");
    report.json("live", runs.to_json());
    Ok(())
}

/// What the section measured: the three paced runs, the pages of the last, the hub's memory.
struct Runs {
    /// The load, in words.
    what: String,
    /// Hub off.
    without: LoadResult,
    /// Hub on, no page listening.
    unheard: LoadResult,
    /// Hub on, [`PAGES`] pages listening.
    with: LoadResult,
    pages: PageFigures,
    bytes_per_page: f64,
}

impl Runs {
    /// The pages' latency beside the webhook's, and their arrival against the `202`.
    fn page_rows(&self, report: &mut Report) {
        let (pages, with) = (&self.pages, &self.with);
        let all_arrived = pages.arrived == pages.expected;
        report.row(
            "8",
            format!("live: ingest send → page ({})", self.what),
            format!(
                "{}{}",
                summary_cell(&pages.latency),
                if all_arrived {
                    String::new()
                } else {
                    format!(" — **{} of {} arrived**", pages.arrived, pages.expected)
                }
            ),
            format!(
                "webhook delivery, same run: {}{}",
                latency_cell(with),
                lost(with)
            ),
            "p99 ≤ 1 s (a `qr` must be on the page within a second)",
            Verdict::of(all_arrived && pages.latency.p99 <= 1e6),
        );
        report.row(
            "8",
            "live: page arrival − `202` at the sender (negative: the page saw it first)",
            format!(
                "p50 {:+.2} ms / p99 {:+.2} ms",
                pages.after_answer_p50_ms, pages.after_answer_p99_ms
            ),
            "",
            "",
            Verdict::Info,
        );
    }

    /// Ingest's answer: what publishing adds, and with the pages listening.
    fn ingest_rows(&self, report: &mut Report) {
        let (without, unheard, with) = (&self.without, &self.unheard, &self.with);
        let added50 = unheard.answer.median - without.answer.median;
        let added99 = unheard.answer.p99 - without.answer.p99;
        report.row(
            "8",
            "live: what publishing adds to ingest's answer (send → `202`; hub on, no page listening), p50 / p99",
            format!("{} / {}", ms(added50), ms(added99)),
            format!(
                "hub off: p50 {} / p99 {}; hub on: p50 {} / p99 {}",
                ms(without.answer.median),
                ms(without.answer.p99),
                ms(unheard.answer.median),
                ms(unheard.answer.p99)
            ),
            "p50 ≤ 1 ms",
            Verdict::of(
                added50 <= 1_000.0 && lost(unheard).is_empty() && lost(without).is_empty(),
            ),
        );
        report.row(
            "8",
            format!("live: ingest's answer with {PAGES} pages listening (the hub's fan-out shares the process and the 2 cores)"),
            format!("p50 {} / p99 {}", ms(with.answer.median), ms(with.answer.p99)),
            "",
            "",
            Verdict::Info,
        );
    }

    /// The hub's memory per connection.
    fn memory_row(&self, report: &mut Report) {
        report.row(
            "8",
            format!(
                "live: hub memory per connection ({} idle subscribed pages, RSS delta)",
                thousands(MEMORY_PAGES as u64)
            ),
            format!("{:.1} KiB", self.bytes_per_page / 1024.0),
            "",
            "",
            Verdict::Info,
        );
    }

    /// The section's `live` object in `results.json`.
    fn to_json(&self) -> Value {
        let pages = &self.pages;
        json!({
            "load": self.what,
            "page_latency": pages.latency.to_json_ms(),
            "page_arrivals": {"expected": pages.expected, "arrived": pages.arrived},
            "page_after_answer_ms": {"p50": pages.after_answer_p50_ms, "p99": pages.after_answer_p99_ms},
            "webhook_latency": self.with.latency.to_json_ms(),
            "answer_hub_off": self.without.answer.to_json_ms(),
            "answer_hub_on_no_pages": self.unheard.answer.to_json_ms(),
            "answer_hub_on_with_pages": self.with.answer.to_json_ms(),
            "hub_bytes_per_connection": self.bytes_per_page,
        })
    }
}
