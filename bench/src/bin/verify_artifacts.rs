//! `relay-verify-artifacts`: runs the three Lambda `bootstrap` files `sam build` produced
//! through a launcher (an emulator for arm64 on x86_64) against the bench's Lambda Runtime
//! API, moto and a verifying receiver; one line per check, non-zero exit if any fails.
//! Started by `make verify-artifacts` (`scripts/verify-artifacts.sh`), which builds them.

use clap::Parser;
use relay_bench::artifacts::{Artifacts, verify};
use std::path::PathBuf;
use std::process::ExitCode;

/// Runs the deployable Lambda artefacts and checks what they answer.
#[derive(Parser)]
#[command(name = "relay-verify-artifacts")]
struct Args {
    /// The ingest function's `bootstrap`.
    #[arg(long, value_name = "PATH")]
    ingest: PathBuf,
    /// The dispatcher function's `bootstrap`.
    #[arg(long, value_name = "PATH")]
    dispatcher: PathBuf,
    /// The live authorizer's `bootstrap`.
    #[arg(long, value_name = "PATH")]
    live_auth: PathBuf,
    /// What runs each binary, split on spaces, e.g. `qemu-aarch64 -L /usr/aarch64-linux-gnu`;
    /// empty runs them directly (binaries built for this machine).
    #[arg(long, value_name = "COMMAND", default_value = "")]
    launcher: String,
    /// Where each function's output goes (one log file per check).
    #[arg(long, value_name = "DIR")]
    logs: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let artifacts = Artifacts {
        ingest: args.ingest,
        dispatcher: args.dispatcher,
        live_auth: args.live_auth,
    };
    for path in [
        &artifacts.ingest,
        &artifacts.dispatcher,
        &artifacts.live_auth,
    ] {
        if !path.is_file() {
            eprintln!(
                "relay-verify-artifacts: {} is missing: run `make verify-artifacts` (scripts/sam-build.sh builds it)",
                path.display()
            );
            return ExitCode::FAILURE;
        }
    }
    let launcher: Vec<String> = args
        .launcher
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let logs = args
        .logs
        .unwrap_or_else(|| relay_tests::repo_root().join("target/verify-artifacts"));
    if let Err(e) = std::fs::create_dir_all(&logs) {
        eprintln!(
            "relay-verify-artifacts: cannot create {}: {e}",
            logs.display()
        );
        return ExitCode::FAILURE;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let failed = rt.block_on(verify(&artifacts, &launcher, &logs));
    if failed > 0 {
        eprintln!(
            "relay-verify-artifacts: {failed} check(s) failed; the functions' output is in {}",
            logs.display()
        );
        return ExitCode::FAILURE;
    }
    println!("relay-verify-artifacts: every check passed");
    ExitCode::SUCCESS
}
