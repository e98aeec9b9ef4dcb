//! `relay-bench`: runs every benchmark of the suite in one go and writes
//! `bench-results/results.md` and `results.json`. Started by `make bench` (`bench/run.sh`),
//! which builds the release binaries first and passes how long that took.
//!
//! Flags: `--build-seconds S` (reported as is), `--quick` (fewer spawns and events: a smoke
//! run of the harness, not for figures), `--only SECTION,…` and `--spawns N` (partial runs),
//! `--lambda-env KEY=VALUE` (extra environment for the cold-start spawns, for experiments),
//! `--out DIR` (default `bench-results/`).

use relay_bench::coldstart::{self, Subject};
use relay_bench::fixtures::{
    self, INGEST_SECRET, TYPICAL_BYTES, WEBHOOK_SECRET, apigw_v2_event, envelope, event_id,
    ingest_secrets, records, signed_header_pairs, sqs_event,
};
use relay_bench::loadgen::{self, Load, LoadResult, RelayLocal};
use relay_bench::receiver::TimingReceiver;
use relay_bench::report::{Report, Verdict, ms, ratio, size, thousands, us};
use relay_bench::stats::Summary;
use relay_bench::{callgrind, warm};
use relay_shared::queue::{NewMessage, Producer};
use serde_json::{Value, json};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

/// How much of everything to run.
struct Plan {
    spawns: usize,
    warm_events: usize,
    dispatch_batches: usize,
    backlog: usize,
    load_events: usize,
    concurrency: usize,
    paced_events: usize,
    paced_rate: u64,
    closed_repeats: usize,
    callgrind_repeats: usize,
    /// Extra environment for the cold-start spawns (experiments, e.g. `SSL_CERT_DIR=`).
    lambda_env: Vec<(String, String)>,
}

impl Plan {
    fn full() -> Plan {
        Plan {
            spawns: 40,
            warm_events: 20_000,
            dispatch_batches: 2_000,
            backlog: 20_000,
            load_events: 20_000,
            concurrency: 64,
            paced_events: 3_000,
            paced_rate: 1_000,
            closed_repeats: 3,
            callgrind_repeats: 2,
            lambda_env: Vec::new(),
        }
    }

    fn quick() -> Plan {
        Plan {
            spawns: 3,
            warm_events: 2_000,
            dispatch_batches: 200,
            backlog: 2_000,
            load_events: 2_000,
            concurrency: 64,
            paced_events: 500,
            paced_rate: 1_000,
            closed_repeats: 1,
            callgrind_repeats: 1,
            lambda_env: Vec::new(),
        }
    }
}

/// The release binaries, next to this one.
struct Bins {
    ingest: PathBuf,
    dispatcher: PathBuf,
    relay: PathBuf,
    hello: PathBuf,
    ingest_events: PathBuf,
}

impl Bins {
    fn locate() -> Result<Bins, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let dir = exe.parent().ok_or("no directory for this binary")?;
        let bin = |name: &str| -> Result<PathBuf, String> {
            let path = dir.join(name);
            path.exists().then_some(path.clone()).ok_or_else(|| {
                format!(
                    "{} is missing: run `make bench` (it builds the release binaries)",
                    path.display()
                )
            })
        };
        Ok(Bins {
            ingest: bin("ingest")?,
            dispatcher: bin("dispatcher")?,
            relay: bin("relay")?,
            hello: bin("hello-lambda")?,
            ingest_events: bin("bench-ingest-events")?,
        })
    }
}

const SECTIONS: [&str; 7] = [
    "sizes",
    "coldstart",
    "warm",
    "callgrind",
    "local",
    "concurrency",
    "payload",
];

const USAGE: &str = "flags: --quick, --only SECTION[,SECTION] (sizes, coldstart, warm, callgrind, local, concurrency, payload), --spawns N, --lambda-env KEY=VALUE, --build-seconds S, --out DIR";

fn main() -> ExitCode {
    let started = Instant::now();
    let mut args = std::env::args().skip(1);
    let (mut plan, mut build_seconds, mut out) = (
        Plan::full(),
        None,
        relay_tests::repo_root().join("bench-results"),
    );
    let (mut quick, mut only, mut spawns) = (false, None::<Vec<String>>, None);
    let mut lambda_env = Vec::new();
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_default();
        match arg.as_str() {
            "--quick" => quick = true,
            "--only" => only = Some(value().split(',').map(str::to_owned).collect()),
            "--spawns" => spawns = value().parse::<usize>().ok(),
            "--lambda-env" => match value().split_once('=') {
                Some((k, v)) => lambda_env.push((k.to_owned(), v.to_owned())),
                None => return usage("--lambda-env takes KEY=VALUE"),
            },
            "--build-seconds" => build_seconds = value().parse::<f64>().ok(),
            "--out" => out = PathBuf::from(value()),
            other => return usage(&format!("unknown argument {other:?}")),
        }
    }
    if quick {
        plan = Plan::quick();
    }
    plan.spawns = spawns.unwrap_or(plan.spawns);
    plan.lambda_env = lambda_env;
    let only = only.unwrap_or_else(|| SECTIONS.iter().map(|s| s.to_string()).collect());
    if let Some(bad) = only.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
        return usage(&format!("no section {bad:?}"));
    }
    let wanted = |name: &str| only.iter().any(|s| s == name);
    let bins = match Bins::locate() {
        Ok(bins) => bins,
        Err(e) => {
            eprintln!("relay-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let logs = out.join("logs");
    if let Err(e) = std::fs::create_dir_all(&logs) {
        eprintln!("relay-bench: cannot create {}: {e}", logs.display());
        return ExitCode::FAILURE;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let epoch = Instant::now();

    let mut report = Report::default();
    report.header = machine(build_seconds, quick);
    if only.len() < SECTIONS.len() {
        report
            .header
            .push(format!("partial run: {}", only.join(", ")));
    }
    if !plan.lambda_env.is_empty() {
        let env: Vec<String> = plan
            .lambda_env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        report.header.push(format!(
            "experiment: cold-start spawns get {}",
            env.join(" ")
        ));
    }
    let mut failed = Vec::new();
    let mut section = |name: &str, report: &mut Report, result: Result<(), String>| {
        eprintln!(
            "relay-bench: {name} done ({:.0} s so far)",
            started.elapsed().as_secs_f64()
        );
        if let Err(e) = result {
            eprintln!("relay-bench: {name} FAILED: {e}");
            report.row(
                "!",
                format!("{name} failed"),
                e.clone(),
                "",
                "",
                Verdict::Misses,
            );
            failed.push(name.to_owned());
        }
    };

    if wanted("sizes") {
        let result = sizes(&mut report, &bins);
        section("artefact sizes", &mut report, result);
    }
    if wanted("coldstart") {
        let result = rt.block_on(cold_start(&mut report, &bins, &plan, &logs, epoch));
        section("cold start", &mut report, result);
    }
    if wanted("warm") {
        let result = warm_costs(&mut report, &rt, &plan, epoch);
        section("warm per-event cost", &mut report, result);
    }
    if wanted("callgrind") {
        let result = callgrind_section(&mut report, &bins, &plan, &out);
        section("callgrind", &mut report, result);
    }
    if wanted("local") {
        let result = rt.block_on(local_stack(&mut report, &bins, &plan, &logs, epoch));
        section("local stack", &mut report, result);
    }
    if wanted("concurrency") {
        let result = rt.block_on(concurrency(&mut report, epoch));
        section("dispatcher concurrency", &mut report, result);
    }
    if wanted("payload") {
        let result = rt.block_on(payload_scaling(&mut report, epoch));
        section("payload scaling", &mut report, result);
    }

    let total = started.elapsed().as_secs_f64();
    report.header.push(format!(
        "bench run time (after the build): {total:.0} s; load average at the end: {}",
        load_average()
    ));
    report.json("run_seconds", json!(total));
    let markdown = report.markdown();
    println!("\n{markdown}");
    if let Err(e) = report.write(&out) {
        eprintln!(
            "relay-bench: cannot write results to {}: {e}",
            out.display()
        );
        return ExitCode::FAILURE;
    }
    println!(
        "written: {} and results.json ({} figure(s) miss their aim)",
        out.join("results.md").display(),
        report.misses()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("relay-bench: {problem} ({USAGE})");
    ExitCode::from(2)
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The header lines: when, what, on which machine.
fn machine(build_seconds: Option<f64>, quick: bool) -> Vec<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or("?".into(), |kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0));
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let git =
        command_output("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "?".into());
    let dirty = command_output("git", &["status", "--porcelain"]).is_some_and(|s| !s.is_empty());
    let mut header = vec![
        format!(
            "date: {}; commit {git}{}",
            command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default(),
            if dirty {
                " (with uncommitted changes)"
            } else {
                ""
            }
        ),
        format!(
            "machine: {cores} cores, {model}, {memory} RAM, Linux {}; {}",
            kernel.trim(),
            command_output("rustc", &["--version"]).unwrap_or_default()
        ),
        format!(
            "load average at the start: {} (the machine is shared: compare ratios, not absolute figures)",
            load_average()
        ),
        match build_seconds {
            Some(s) => format!(
                "release build before the run (`cargo build --release` of ingest, dispatcher, relay and the bench, as it found target/; near 0 = already built): {s:.0} s"
            ),
            None => "release build: not timed (binary started directly)".into(),
        },
    ];
    if quick {
        header.push(
            "**--quick run: too few samples for figures; a smoke test of the harness**".into(),
        );
    }
    header
}

fn sizes(report: &mut Report, bins: &Bins) -> Result<(), String> {
    const AIM: u64 = 8 * 1024 * 1024;
    let hello = std::fs::metadata(&bins.hello)
        .map_err(|e| e.to_string())?
        .len();
    let mut json = serde_json::Map::new();
    for (name, path) in [
        ("ingest", &bins.ingest),
        ("dispatcher", &bins.dispatcher),
        ("relay", &bins.relay),
        ("hello-lambda", &bins.hello),
    ] {
        let bytes = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
        json.insert(name.into(), json!(bytes));
        let (baseline, aim, verdict) = if name == "hello-lambda" {
            (String::new(), String::new(), Verdict::Info)
        } else {
            (
                format!(
                    "hello {} → {}",
                    size(hello),
                    ratio(bytes as f64 / hello as f64)
                ),
                "≤ 8 MiB (8,388,608 B)".into(),
                Verdict::of(bytes <= AIM),
            )
        };
        report.row(
            "6",
            format!("release binary `{name}` (x86_64, stripped)"),
            size(bytes),
            baseline,
            aim,
            verdict,
        );
    }
    let lambda = command_output("cargo", &["lambda", "--version"]);
    let zips: Vec<String> = ["ingest", "dispatcher"]
        .iter()
        .filter_map(|f| {
            let zip = relay_tests::repo_root().join(format!("target/lambda/{f}/bootstrap.zip"));
            std::fs::metadata(&zip)
                .ok()
                .map(|m| format!("{f} {}", size(m.len())))
        })
        .collect();
    let zip_text = match (&lambda, zips.is_empty()) {
        (None, _) => "cargo-lambda not available here (not installed by the bench)".to_owned(),
        (Some(v), true) => format!("{v} present, no target/lambda/*/bootstrap.zip built yet"),
        (Some(_), false) => zips.join("; "),
    };
    report.row("6", "cargo-lambda zip", zip_text, "", "", Verdict::Info);
    report.json("sizes_bytes", Value::Object(json));
    Ok(())
}

async fn cold_start(
    report: &mut Report,
    bins: &Bins,
    plan: &Plan,
    logs: &Path,
    epoch: Instant,
) -> Result<(), String> {
    let moto = relay_tests::MotoServer::start().await;
    let queues = moto.create_fifo_with_dlq("bench-coldstart", 5, 30).await;
    // Context for ingest's first invoke: what one SendMessage to moto costs once warm.
    let sqs =
        relay_shared::queue::sqs::SqsQueue::new(moto.client().await, queues.queue_url.clone());
    let mut sends = Vec::new();
    for i in 0..25 {
        let id = event_id("moto", i);
        let message = NewMessage {
            body: envelope(&id, i, TYPICAL_BYTES),
            group_id: fixtures::group_of(i),
            dedup_id: id,
        };
        let t = Instant::now();
        sqs.send(message)
            .await
            .map_err(|e| format!("moto SendMessage: {e}"))?;
        if i >= 5 {
            sends.push(t.elapsed());
        }
    }
    let moto_send = Summary::of(&sends);
    let receiver = TimingReceiver::start(epoch, 0, Duration::ZERO).await;
    let secrets = ingest_secrets();
    // Secrets by ARN, as the template deploys them: init includes the Secrets Manager fetch
    // (ingest two secrets, the dispatcher one).
    let ingest_arn = moto
        .create_secret("bench/ingest-secrets", INGEST_SECRET)
        .await;
    let chat_id_key_arn = moto
        .create_secret("bench/chat-id-key", &"k".repeat(64))
        .await;
    let webhook_arn = moto
        .create_secret("bench/webhook-secrets", WEBHOOK_SECRET)
        .await;
    let aws_env = vec![
        ("AWS_ENDPOINT_URL_SQS".to_owned(), moto.endpoint.clone()),
        (
            "AWS_ENDPOINT_URL_SECRETS_MANAGER".to_owned(),
            moto.endpoint.clone(),
        ),
        ("QUEUE_URL".to_owned(), queues.queue_url.clone()),
    ];
    let hello_event = apigw_v2_event("hello", &[], "{}");
    let expect_json =
        |body: &[u8]| serde_json::from_slice::<Value>(body).map_err(|e| format!("not JSON: {e}"));
    let delivered = Cell::new(0usize);
    let subjects = [
        Subject {
            name: "hello",
            binary: bins.hello.clone(),
            env: plan.lambda_env.clone(),
            event: Box::new(move |_| hello_event.to_string().into_bytes()),
            check: Box::new(
                move |body, _| match expect_json(body)?["statusCode"].as_u64() {
                    Some(200) => Ok(()),
                    _ => Err(String::from_utf8_lossy(body).into_owned()),
                },
            ),
        },
        Subject {
            name: "ingest",
            binary: bins.ingest.clone(),
            env: [
                aws_env.clone(),
                vec![
                    ("INGEST_SECRETS_ARN".to_owned(), ingest_arn),
                    ("CHAT_ID_KEY_ARN".to_owned(), chat_id_key_arn),
                ],
                plan.lambda_env.clone(),
            ]
            .concat(),
            event: Box::new(move |i| {
                // Signed now, for this spawn.
                let id = event_id("cold", i);
                let body = envelope(&id, i, TYPICAL_BYTES);
                apigw_v2_event(
                    &format!("req-{i}"),
                    &signed_header_pairs(&secrets, &id, &body),
                    &body,
                )
                .to_string()
                .into_bytes()
            }),
            check: Box::new(move |body, _| {
                let response = expect_json(body)?;
                let inner: Value = serde_json::from_str(response["body"].as_str().unwrap_or("{}"))
                    .unwrap_or_default();
                if response["statusCode"] == 202 && inner["status"] == "queued" {
                    Ok(())
                } else {
                    Err(String::from_utf8_lossy(body).into_owned())
                }
            }),
        },
        Subject {
            name: "dispatcher",
            binary: bins.dispatcher.clone(),
            env: [
                aws_env,
                vec![
                    ("WEBHOOK_URL".to_owned(), receiver.url.clone()),
                    ("WEBHOOK_SECRETS_ARN".to_owned(), webhook_arn),
                ],
                plan.lambda_env.clone(),
            ]
            .concat(),
            event: Box::new(|i| {
                sqs_event(
                    &format!("c{i:04}"),
                    &records(&format!("cd{i}"), 10, 10, TYPICAL_BYTES),
                )
                .to_string()
                .into_bytes()
            }),
            check: Box::new(|body, _| {
                let response = expect_json(body)?;
                let now = receiver.received();
                let arrived = now - delivered.replace(now);
                match response["batchItemFailures"].as_array() {
                    Some(failures) if failures.is_empty() && arrived == 10 => Ok(()),
                    _ => Err(format!(
                        "{} ({arrived} of 10 delivered)",
                        String::from_utf8_lossy(body)
                    )),
                }
            }),
        },
    ];
    let series = coldstart::run(&subjects, plan.spawns, logs).await?;
    let stored = queues.depth(&queues.queue_url).await;
    let expected_stored = 25 + plan.spawns + 1;
    if stored != expected_stored {
        return Err(format!(
            "moto holds {stored} messages, expected {expected_stored}: ingest answered 202 without storing"
        ));
    }
    drop(moto);

    let hello = &series[0];
    let (hello_init, hello_first) = (hello.init(), hello.first_invoke());
    let cell = |s: &Summary| format!("{} (p90 {})", ms(s.median), ms(s.p90));
    report.row(
        "1",
        format!(
            "init, exec → first `next` — hello-world ({} spawns)",
            hello.spawns.len()
        ),
        cell(&hello_init),
        "",
        "",
        Verdict::Info,
    );
    for s in &series[1..] {
        let init = s.init();
        let r = init.median / hello_init.median;
        report.row(
            "1",
            format!("init — `{}` ({} spawns)", s.name, s.spawns.len()),
            cell(&init),
            format!("hello {} → {}", ms(hello_init.median), ratio(r)),
            "≤ 2× hello",
            Verdict::of(r <= 2.0),
        );
    }
    report.row(
        "1",
        "first invoke, exec → first response — hello-world",
        cell(&hello_first),
        "",
        "",
        Verdict::Info,
    );
    for s in &series[1..] {
        let first = s.first_invoke();
        let what = if s.name == "ingest" {
            "API GW v2 event → 202, SendMessage to moto"
        } else {
            "10-record SQS event → 10 deliveries, loopback"
        };
        report.row(
            "1",
            format!("first invoke — `{}` ({what})", s.name),
            cell(&first),
            format!(
                "hello {} → {}",
                ms(hello_first.median),
                ratio(first.median / hello_first.median)
            ),
            "",
            Verdict::Info,
        );
    }
    report.row(
        "1",
        "moto SendMessage, warm client (context for ingest's first invoke)",
        cell(&moto_send),
        "",
        "",
        Verdict::Info,
    );
    let hello_rss = hello.vm_hwm_kb();
    for s in &series {
        let rss = s.vm_hwm_kb();
        let baseline = if s.name == "hello" {
            String::new()
        } else {
            format!(
                "hello {} → {}",
                mib_kb(hello_rss),
                ratio(rss as f64 / hello_rss as f64)
            )
        };
        report.row(
            "1",
            format!("peak RSS (VmHWM, median) — `{}`", s.name),
            mib_kb(rss),
            baseline,
            "",
            Verdict::Info,
        );
    }
    report.note("Cold start: exec-to-`next` and exec-to-response are taken by the bench's own Runtime API; peak RSS is `VmHWM` from `/proc/<pid>/status`, read when the function polls `next` again after its response (idle, just before the bench kills it). Spawns are round-robin (hello, ingest, dispatcher) after one untimed spawn each. Secrets are given by ARN, as on AWS: init includes fetching them from moto's Secrets Manager (ingest two, the dispatcher one).");
    report.json("coldstart", json!({
        "hello": hello.to_json(), "ingest": series[1].to_json(), "dispatcher": series[2].to_json(),
        "moto_send_message": moto_send.to_json_ms(),
    }));
    Ok(())
}

fn mib_kb(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

fn warm_costs(
    report: &mut Report,
    rt: &Runtime,
    plan: &Plan,
    epoch: Instant,
) -> Result<(), String> {
    let warmup = 1000;
    let health = rt.block_on(async {
        let app = warm::ingest_router(relay_shared::telemetry::Metrics::off());
        let mut samples = Vec::new();
        for i in 0..warmup + plan.warm_events {
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
    });
    let bare = warm::ingest_per_event(rt, plan.warm_events, warmup, false);
    let telemetry = warm::ingest_per_event(rt, plan.warm_events, warmup, true);
    let backlog = warm::ingest_with_backlog(rt, plan.backlog, 2_000);
    let cell = |s: &Summary| format!("{} (p99 {})", us(s.median), us(s.p99));
    report.row(
        "2",
        format!(
            "ingest per event: router oneshot, signed {TYPICAL_BYTES} B `message`, in-process queue"
        ),
        format!(
            "{}; {} events/s on one core",
            cell(&bare),
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
        cell(&telemetry),
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
        cell(&backlog),
        format!(
            "bare {} → {}",
            us(bare.median),
            ratio(backlog.median / bare.median)
        ),
        "",
        Verdict::Info,
    );

    let (post, one, ten) = rt.block_on(async {
        let receiver = TimingReceiver::start(epoch, 0, Duration::ZERO).await;
        let post = warm::loopback_post(&receiver, plan.dispatch_batches, 200).await;
        let one = warm::dispatch_per_batch(&receiver, 1, plan.dispatch_batches, 200).await;
        let ten = warm::dispatch_per_batch(&receiver, 10, plan.dispatch_batches / 4, 50).await;
        (post, one, ten)
    });
    report.row(
        "2",
        "dispatch: `handle_batch` of 1 record → loopback receiver",
        cell(&one),
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
            cell(&ten),
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
    report.note(format!("Warm costs: {warmup} untimed events first; requests are signed before the clock starts; ingest gets a fresh in-process queue every {} events (its dedup window would otherwise grow through the run — the backlog row measures that on its own); no tracing subscriber unless stated. The receiver is in the bench process and does not verify signatures.", warm::QUEUE_RESET_EVERY));
    report.json("warm", json!({
        "health_oneshot": health.to_json_ms(), "ingest": bare.to_json_ms(), "ingest_with_telemetry": telemetry.to_json_ms(),
        "ingest_with_backlog": backlog.to_json_ms(), "backlog": plan.backlog,
        "loopback_post": post.to_json_ms(), "dispatch_batch_1": one.to_json_ms(), "dispatch_batch_10": ten.to_json_ms(),
    }));
    Ok(())
}

fn callgrind_section(
    report: &mut Report,
    bins: &Bins,
    plan: &Plan,
    out: &Path,
) -> Result<(), String> {
    let result = callgrind::run(
        &bins.ingest_events,
        &out.join("callgrind"),
        plan.callgrind_repeats,
    )?;
    let runs: Vec<String> = result
        .per_event
        .iter()
        .map(|i| thousands(*i as u64))
        .collect();
    report.row(
        "2",
        format!(
            "ingest instructions per event (callgrind, (I({}) − I({})) / {})",
            callgrind::K2,
            callgrind::K1,
            callgrind::K2 - callgrind::K1
        ),
        format!(
            "{} (runs: {}; spread {:.2}%)",
            thousands(result.per_event[0] as u64),
            runs.join(" / "),
            result.spread() * 100.0
        ),
        "",
        "",
        Verdict::Info,
    );
    report.json("callgrind", json!({"k1": callgrind::K1, "k2": callgrind::K2, "instructions_per_event": result.per_event, "spread": result.spread()}));
    Ok(())
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
    let prepared = loadgen::prepare(tag, events);
    let run = if via_relay {
        let log = logs.join(format!("relay-local-{tag}.log"));
        let relay = RelayLocal::start(&bins.relay, &receiver.url, &log).await?;
        let cpu_before = relay.cpu_time();
        let url = format!("{}/events", relay.url);
        let result = loadgen::generate(&url, prepared, load, &receiver, epoch, 202, drain).await;
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
        let result =
            loadgen::generate(&receiver.url, prepared, load, &receiver, epoch, 204, drain).await;
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

fn complete(r: &LoadResult) -> bool {
    r.received == r.events && r.refused == 0
}

fn lost(r: &LoadResult) -> String {
    if complete(r) {
        String::new()
    } else {
        format!(
            " — **{} of {} received, {} refused**",
            r.received, r.events, r.refused
        )
    }
}

fn latency_cell(r: &LoadResult) -> String {
    format!(
        "p50 {} / p99 {} / max {}",
        ms(r.latency.median),
        ms(r.latency.p99),
        ms(r.latency.max)
    )
}

async fn local_stack(
    report: &mut Report,
    bins: &Bins,
    plan: &Plan,
    logs: &Path,
    epoch: Instant,
) -> Result<(), String> {
    // Saturating load: direct and relay alternate, `closed_repeats` times each.
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
    let median_run = |runs: &[LoadRun]| -> usize {
        let mut order: Vec<usize> = (0..runs.len()).collect();
        order.sort_by(|&a, &b| {
            runs[a]
                .result
                .throughput
                .total_cmp(&runs[b].result.throughput)
        });
        order[(order.len() - 1) / 2]
    };
    let (d, r) = (&direct[median_run(&direct)], &relay[median_run(&relay)]);
    let list = |runs: &[LoadRun]| {
        runs.iter()
            .map(|x| thousands(x.result.throughput as u64))
            .collect::<Vec<_>>()
            .join(" / ")
    };
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
            list(&relay),
            thousands(r.result.accept_rate as u64),
            lost(&r.result)
        ),
        format!(
            "direct POST {} events/s (runs {}) → {}",
            thousands(d.result.throughput as u64),
            list(&direct),
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

    // Paced load: what one event waits for when the stack is not saturated.
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
    report.note("Local stack: a fresh `target/release/relay local` per run (in-process queue, default 4 poll workers), its stdout/stderr (one log line per event and stage) redirected to a file in `bench-results/logs/`; the receiver runs inside the bench process, answers 204 without verifying; events are spread over 1,000 chats (FIFO groups). The load generator (reqwest, HTTP/1.1 keep-alive) runs in the bench process too, so generator, relay and receiver share the 2 cores. Latency runs from the moment the generator sends (paced runs also report how late the generator was against its schedule). Latency under the saturating load is queueing (ingest accepts faster than the stack delivers), not overhead.");
    report.json(
        "local_stack",
        json!({
            "closed": {
                "load": closed.describe(),
                "direct": direct.iter().map(LoadRun::to_json).collect::<Vec<_>>(),
                "relay": relay.iter().map(LoadRun::to_json).collect::<Vec<_>>(),
            },
            "paced": {"load": what, "direct": pd.to_json(), "relay": pr.to_json()},
        }),
    );
    Ok(())
}

async fn concurrency(report: &mut Report, epoch: Instant) -> Result<(), String> {
    let delay = Duration::from_millis(200);
    let (ten, one) = warm::concurrency(epoch, delay, 3).await;
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

async fn payload_scaling(report: &mut Report, epoch: Instant) -> Result<(), String> {
    let receiver = TimingReceiver::start(epoch, 0, Duration::ZERO).await;
    let mut points = Vec::new();
    for size in [
        1024,
        64 * 1024,
        512 * 1024,
        relay_shared::queue::MAX_MESSAGE_BYTES - 1,
    ] {
        points.push(warm::payload_point(&receiver, size, 5).await);
    }
    // Marginal cost: extra time per extra byte from the previous size, which leaves out the
    // fixed per-event cost that dominates at 1 KB.
    let total = |p: &warm::PayloadPoint| p.ingest.median + p.dispatch.median;
    let marginal = |a: &warm::PayloadPoint, b: &warm::PayloadPoint| {
        (total(b) - total(a)) * 1e3 / (b.size - a.size) as f64
    };
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
