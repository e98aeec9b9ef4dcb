//! `relay-bench`: runs every benchmark of the suite in one go and writes
//! `bench-results/results.md` and `results.json`. Started by `make bench` (`bench/run.sh`),
//! which builds the release binaries first and passes how long that took.
//!
//! This file holds the arguments and the report; each section's driver sits beside its
//! measurement code (`sizes`, `coldstart`, `warm`, `callgrind`, `loadgen`).

use clap::Parser;
use clap::builder::PossibleValuesParser;
use relay_bench::host::{load_average, machine};
use relay_bench::plan::{Bins, Plan, SECTIONS};
use relay_bench::report::{Report, Verdict};
use relay_bench::{callgrind, coldstart, live, loadgen, logbytes, sizes, warm};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// Runs the relay's benchmark suite and writes the results table.
#[derive(Parser)]
#[command(name = "relay-bench")]
struct Args {
    /// Fewer spawns and events: a smoke run of the harness, not for figures.
    #[arg(long)]
    quick: bool,
    /// Run only these sections (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = PossibleValuesParser::new(SECTIONS))]
    only: Option<Vec<String>>,
    /// Cold-start spawns per subject.
    #[arg(long, value_name = "N")]
    spawns: Option<usize>,
    /// Extra environment for the cold-start spawns (experiments, e.g. `SSL_CERT_DIR=`); repeatable.
    #[arg(long, value_name = "KEY=VALUE", value_parser = key_value)]
    lambda_env: Vec<(String, String)>,
    /// How long the release build took (reported as is; `bench/run.sh` passes it).
    #[arg(long, value_name = "S")]
    build_seconds: Option<f64>,
    /// Where the results go (default `bench-results/` at the repository root).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| "--lambda-env takes KEY=VALUE".to_owned())
}

fn main() -> ExitCode {
    let started = Instant::now();
    let args = Args::parse();
    let mut plan = if args.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    plan.spawns = args.spawns.unwrap_or(plan.spawns);
    plan.lambda_env = args.lambda_env;
    let out = args
        .out
        .unwrap_or_else(|| relay_tests::repo_root().join("bench-results"));
    let only = args
        .only
        .unwrap_or_else(|| SECTIONS.iter().map(|s| s.to_string()).collect());
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
    let mut report = Report::default();
    report.header = header(&plan, &only, args.build_seconds, args.quick);
    let run = Run {
        bins: &bins,
        plan: &plan,
        out: &out,
        logs: &logs,
        started,
    };
    let failed = run.sections(&mut report, &only);
    if !finish(&mut report, &out, started) || !failed.is_empty() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// The machine, and what this run leaves out or changes.
fn header(plan: &Plan, only: &[String], build_seconds: Option<f64>, quick: bool) -> Vec<String> {
    let mut header = machine(build_seconds, quick);
    if only.len() < SECTIONS.len() {
        header.push(format!("partial run: {}", only.join(", ")));
    }
    if !plan.lambda_env.is_empty() {
        let env: Vec<String> = plan
            .lambda_env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        header.push(format!(
            "experiment: cold-start spawns get {}",
            env.join(" ")
        ));
    }
    header
}

/// What every section needs.
struct Run<'a> {
    bins: &'a Bins,
    plan: &'a Plan,
    out: &'a Path,
    logs: &'a Path,
    started: Instant,
}

impl Run<'_> {
    /// Runs the wanted sections in order; a failed one becomes a row and its name is returned.
    fn sections(&self, report: &mut Report, only: &[String]) -> Vec<String> {
        let (bins, plan, logs) = (self.bins, self.plan, self.logs);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let epoch = Instant::now();
        let mut failed = Vec::new();
        for name in SECTIONS.iter().filter(|s| only.iter().any(|o| o == *s)) {
            let (title, result) = match *name {
                "sizes" => ("artefact sizes", sizes::section(report, bins)),
                "coldstart" => (
                    "cold start",
                    rt.block_on(coldstart::section(report, bins, plan, logs, epoch)),
                ),
                "logbytes" => (
                    "log bytes per event",
                    rt.block_on(logbytes::section(report, bins, logs, epoch)),
                ),
                "warm" => (
                    "warm per-event cost",
                    warm::section(report, &rt, plan, epoch),
                ),
                "callgrind" => (
                    "callgrind",
                    callgrind::section(report, bins, plan, self.out),
                ),
                "local" => (
                    "local stack",
                    rt.block_on(loadgen::section(report, bins, plan, logs, epoch)),
                ),
                "live" => (
                    "live channel",
                    rt.block_on(live::section(report, bins, plan, logs, epoch)),
                ),
                "concurrency" => (
                    "dispatcher concurrency",
                    rt.block_on(warm::concurrency_section(report, epoch)),
                ),
                "payload" => (
                    "payload scaling",
                    rt.block_on(warm::payload_section(report, epoch)),
                ),
                other => unreachable!("SECTIONS has no {other:?}"),
            };
            eprintln!(
                "relay-bench: {title} done ({:.0} s so far)",
                self.started.elapsed().as_secs_f64()
            );
            if let Err(e) = result {
                eprintln!("relay-bench: {title} FAILED: {e}");
                report.row("!", format!("{title} failed"), e, "", "", Verdict::Misses);
                failed.push(title.to_owned());
            }
        }
        failed
    }
}

/// Prints the table and writes both files; false if they could not be written.
fn finish(report: &mut Report, out: &Path, started: Instant) -> bool {
    let total = started.elapsed().as_secs_f64();
    report.header.push(format!(
        "bench run time (after the build): {total:.0} s; load average at the end: {}",
        load_average()
    ));
    report.json("run_seconds", json!(total));
    let markdown = report.markdown();
    println!("\n{markdown}");
    if let Err(e) = report.write(out) {
        eprintln!(
            "relay-bench: cannot write results to {}: {e}",
            out.display()
        );
        return false;
    }
    println!(
        "written: {} and results.json ({} figure(s) miss their aim)",
        out.join("results.md").display(),
        report.misses()
    );
    true
}
