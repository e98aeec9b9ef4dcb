//! `relay`: the developer binary (README, "The local stack"). `relay local` runs the whole relay on
//! one machine (the same ingest router and dispatch code the Lambdas run, over an in-process FIFO
//! queue or a real SQS endpoint); `relay send` signs and posts an envelope to any ingest URL (also
//! the smoke test of a deployed stack); `relay receive` is a dev receiver that verifies and prints
//! each delivery. Every error is one line on stderr and a non-zero exit, never a panic trace.

mod live;
mod local;
mod receive;
mod samples;
mod send;
mod serve;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "relay",
    version,
    about = "Chat webhook relay: local stack, sender and dev receiver"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run ingest + in-process FIFO queue + dispatcher on this machine
    Local(local::LocalArgs),
    /// Sign and POST an envelope (a built-in sample, a file or stdin) to an ingest URL
    Send(send::SendArgs),
    /// A dev receiver: verify each delivery's signature and print it
    Receive(receive::ReceiveArgs),
    /// Move every message of the local stack's DLQ back to its queue, in order
    Redrive(local::RedriveArgs),
    /// Print a live token for a session, signed with LIVE_TOKEN_SECRETS
    Token(live::TokenArgs),
    /// Subscribe to a session's live channel and print what a page would see
    Live(live::LiveArgs),
}

/// A one-line, user-facing failure.
pub struct Failure(pub String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!(
                "relay: {} (see relay --help)",
                first.trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("relay: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Local(args) => local::run(args).await,
            Command::Send(args) => send::run(args).await,
            Command::Receive(args) => receive::run(args).await,
            Command::Redrive(args) => local::redrive(args).await,
            Command::Token(args) => live::token(args),
            Command::Live(args) => live::live(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(Failure(message)) => {
            eprintln!("relay: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Binds a listening socket, or says in one line why not.
pub async fn bind(address: std::net::SocketAddr) -> Result<tokio::net::TcpListener, Failure> {
    tokio::net::TcpListener::bind(address).await.map_err(|e| {
        Failure(format!(
            "cannot listen on {address}: {e}; choose another address with --listen"
        ))
    })
}

/// Human-readable logs for the terminal (the Lambdas log JSON instead).
/// `RUST_LOG` takes `target=level` directives (e.g. `info,relay_shared=debug`).
pub fn init_terminal_logs(default_level: &str) {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|directives| directives.parse::<Targets>().ok())
        .unwrap_or_else(|| default_level.parse().unwrap_or_default());
    let format = tracing_subscriber::fmt::layer()
        .with_target(false)
        .compact();
    let _ = tracing_subscriber::registry()
        .with(format)
        .with(filter)
        .try_init();
}
