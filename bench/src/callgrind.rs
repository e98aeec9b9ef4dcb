//! Instructions per ingest event under `valgrind --tool=callgrind`: `bench-ingest-events` runs
//! twice per repeat, with K₁ and K₂ events and the same number of requests signed up front,
//! so (I(K₂) − I(K₁)) / (K₂ − K₁) leaves out process start, runtime set-up and signing.
//! Instruction counts do not depend on the machine's load, so two repeats should agree to a
//! fraction of a percent (hash seeds and timestamps differ between runs).

use crate::plan::{Bins, Plan};
use crate::report::{Report, Verdict, thousands};
use serde_json::json;
use std::path::Path;
use std::process::Command;

pub const K1: usize = 1000;
pub const K2: usize = 3000;

/// Instructions per event, one value per repeat.
pub struct Callgrind {
    pub per_event: Vec<f64>,
}

impl Callgrind {
    /// Largest relative difference between repeats.
    pub fn spread(&self) -> f64 {
        let min = self.per_event.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.per_event.iter().copied().fold(0.0, f64::max);
        (max - min) / min
    }
}

/// Total instructions (`Ir`) of one run.
fn instructions(binary: &Path, events: usize, out: &Path) -> Result<u64, String> {
    let status = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(binary)
        .arg(events.to_string())
        .arg(K2.to_string())
        .output()
        .map_err(|e| format!("cannot run valgrind: {e}"))?;
    if !status.status.success() {
        return Err(format!(
            "valgrind failed: {}",
            String::from_utf8_lossy(&status.stderr)
        ));
    }
    let text = std::fs::read_to_string(out).map_err(|e| format!("{}: {e}", out.display()))?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no totals in {}", out.display()))
}

pub fn run(binary: &Path, out_dir: &Path, repeats: usize) -> Result<Callgrind, String> {
    Command::new("valgrind")
        .arg("--version")
        .output()
        .map_err(|_| "valgrind is not installed".to_owned())?;
    std::fs::create_dir_all(out_dir).map_err(|e| e.to_string())?;
    let mut per_event = Vec::new();
    for repeat in 1..=repeats {
        let small = instructions(
            binary,
            K1,
            &out_dir.join(format!("ingest-{K1}-run{repeat}.out")),
        )?;
        let large = instructions(
            binary,
            K2,
            &out_dir.join(format!("ingest-{K2}-run{repeat}.out")),
        )?;
        per_event.push((large as f64 - small as f64) / (K2 - K1) as f64);
    }
    Ok(Callgrind { per_event })
}

/// The callgrind row of the report.
pub fn section(report: &mut Report, bins: &Bins, plan: &Plan, out: &Path) -> Result<(), String> {
    let result = run(
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
            K2,
            K1,
            K2 - K1
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
    report.json("callgrind", json!({"k1": K1, "k2": K2, "instructions_per_event": result.per_event, "spread": result.spread()}));
    Ok(())
}
