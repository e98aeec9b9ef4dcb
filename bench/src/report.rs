//! The results: one Markdown table (printed, and written to `results.md`) whose rows put each
//! figure next to its same-run baseline and the aim, plus `results.json` with every number.

use serde_json::{Map, Value};
use std::fmt::Write as _;
use std::path::Path;

/// Whether a figure meets its aim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Meets,
    Misses,
    /// No aim: context for another row.
    Info,
}

impl Verdict {
    pub fn of(meets: bool) -> Verdict {
        if meets {
            Verdict::Meets
        } else {
            Verdict::Misses
        }
    }

    fn label(self) -> &'static str {
        match self {
            Verdict::Meets => "meets",
            Verdict::Misses => "**misses**",
            Verdict::Info => "",
        }
    }
}

pub struct Row {
    pub section: &'static str,
    pub measure: String,
    pub result: String,
    pub baseline: String,
    pub aim: String,
    pub verdict: Verdict,
}

#[derive(Default)]
pub struct Report {
    pub header: Vec<String>,
    rows: Vec<Row>,
    notes: Vec<String>,
    json: Map<String, Value>,
}

impl Report {
    pub fn row(
        &mut self,
        section: &'static str,
        measure: impl Into<String>,
        result: impl Into<String>,
        baseline: impl Into<String>,
        aim: impl Into<String>,
        verdict: Verdict,
    ) {
        self.rows.push(Row {
            section,
            measure: measure.into(),
            result: result.into(),
            baseline: baseline.into(),
            aim: aim.into(),
            verdict,
        });
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub fn json(&mut self, key: &str, value: Value) {
        self.json.insert(key.to_owned(), value);
    }

    pub fn misses(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| r.verdict == Verdict::Misses)
            .count()
    }

    pub fn markdown(&self) -> String {
        let mut out = String::from("# Benchmark results\n\n");
        for line in &self.header {
            let _ = writeln!(out, "- {line}");
        }
        out.push_str("\n| § | measure | result | baseline (same run) | aim | verdict |\n");
        out.push_str("|---|---|---|---|---|---|\n");
        for r in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                r.section,
                r.measure,
                r.result,
                r.baseline,
                r.aim,
                r.verdict.label()
            );
        }
        if !self.notes.is_empty() {
            out.push_str("\nNotes:\n\n");
            for note in &self.notes {
                let _ = writeln!(out, "- {note}");
            }
        }
        out
    }

    /// Writes `results.md` and `results.json` into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("results.md"), self.markdown())?;
        let mut json = self.json.clone();
        json.insert(
            "header".into(),
            Value::from(
                self.header
                    .iter()
                    .map(|h| Value::from(h.as_str()))
                    .collect::<Vec<_>>(),
            ),
        );
        json.insert(
            "table".into(),
            Value::from(
                self.rows
                    .iter()
                    .map(|r| {
                        serde_json::json!({
                            "section": r.section, "measure": r.measure, "result": r.result,
                            "baseline": r.baseline, "aim": r.aim,
                            "verdict": format!("{:?}", r.verdict).to_lowercase(),
                        })
                    })
                    .collect::<Vec<_>>(),
            ),
        );
        let text =
            serde_json::to_string_pretty(&Value::Object(json)).map_err(std::io::Error::other)?;
        std::fs::write(dir.join("results.json"), text + "\n")
    }
}

/// `12.3 ms` style, from microseconds.
pub fn ms(micros: f64) -> String {
    if micros >= 100_000.0 {
        format!("{:.0} ms", micros / 1e3)
    } else if micros >= 1_000.0 {
        format!("{:.1} ms", micros / 1e3)
    } else {
        format!("{:.2} ms", micros / 1e3)
    }
}

/// `12.3 µs` style, from microseconds.
pub fn us(micros: f64) -> String {
    if micros >= 100.0 {
        format!("{micros:.0} µs")
    } else {
        format!("{micros:.1} µs")
    }
}

/// `1.23×`.
pub fn ratio(r: f64) -> String {
    format!("{r:.2}×")
}

/// `5.6 MiB (5,872,025 B)`.
pub fn size(bytes: u64) -> String {
    format!(
        "{:.2} MiB ({} B)",
        bytes as f64 / (1024.0 * 1024.0),
        thousands(bytes)
    )
}

pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Kilobytes (as `/proc` reports memory) in MiB.
pub fn mib_kb(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}
