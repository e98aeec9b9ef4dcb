//! `relay-cost` (`make cost`): prints dollars per million events, line by line, and the
//! capacity table, from `template.yaml`, `bench-results/results.json` (else the committed
//! sample `cost/measured.json`) and `cost/prices-us-east-1.yaml`. Offline: it reads files only.

use relay_bench::cost::template::Settings;
use relay_bench::cost::{Measured, Prices, render};
use std::process::ExitCode;

fn main() -> ExitCode {
    let root = relay_tests::repo_root();
    let run = || -> Result<String, String> {
        let settings = Settings::read(&root.join("template.yaml"))?;
        let measured = Measured::load(
            &root.join("bench-results/results.json"),
            &root.join("cost/measured.json"),
        )?;
        let prices_path = root.join("cost/prices-us-east-1.yaml");
        let prices = Prices::parse(
            &std::fs::read_to_string(&prices_path)
                .map_err(|e| format!("cannot read {}: {e}", prices_path.display()))?,
        )?;
        render(&settings, &measured, &prices)
    };
    match run() {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("relay-cost: {e}");
            ExitCode::FAILURE
        }
    }
}
