//! Artefact sizes: the release binaries next to the hello-world Lambda, and the cargo-lambda
//! zips when they have been built.

use crate::host::command_output;
use crate::plan::Bins;
use crate::report::{Report, Verdict, ratio, size};
use serde_json::{Value, json};

/// The sizes section of the report.
pub fn section(report: &mut Report, bins: &Bins) -> Result<(), String> {
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
