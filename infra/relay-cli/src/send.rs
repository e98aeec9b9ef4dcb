//! `relay send`: sign an envelope the way chat-whatsapp does (Standard Webhooks, the ingest
//! secret) and POST it to an ingest URL — the local stack or a deployed API (a smoke test).
//! Prints the status and the relay's answer; exits non-zero unless the relay accepted it.

use crate::{Failure, samples};
use relay_shared::clock::unix_seconds;
use relay_shared::envelope::EventType;
use relay_shared::signature::SecretSet;
use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct SendArgs {
    /// Ingest URL (…/events, or …/events/batch with a JSON array)
    #[arg(long, default_value = "http://127.0.0.1:9000/events")]
    url: String,
    /// The ingest secret (whsec_…); the first of INGEST_SECRETS when not given
    #[arg(long, env = "INGEST_SECRETS", hide_env_values = true)]
    secret: Option<String>,
    /// Built-in sample to send: status, qr or message
    #[arg(long, default_value = "message", value_parser = parse_event)]
    event: EventType,
    /// Send this file instead of a sample ("-" reads stdin); sent byte for byte
    #[arg(long)]
    file: Option<String>,
    /// Session name for the built-in sample
    #[arg(long)]
    session: Option<String>,
    /// How many samples to send, one after another
    #[arg(long, default_value_t = 1)]
    count: u32,
}

fn parse_event(name: &str) -> Result<EventType, String> {
    EventType::parse(name)
        .ok_or_else(|| format!("unknown event {name:?}: expected status, qr or message"))
}

pub async fn run(args: SendArgs) -> Result<ExitCode, Failure> {
    let secret_list = args
        .secret
        .ok_or_else(|| Failure("no secret: pass --secret whsec_… or set INGEST_SECRETS".into()))?;
    let first = secret_list.split_whitespace().next().unwrap_or_default();
    let secrets = SecretSet::parse(first).map_err(|e| Failure(format!("--secret: {e}")))?;
    let fixed_body = match args.file.as_deref() {
        None => None,
        Some("-") => {
            let mut body = String::new();
            std::io::stdin()
                .read_to_string(&mut body)
                .map_err(|e| Failure(format!("cannot read stdin: {e}")))?;
            Some(body)
        }
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| Failure(format!("cannot read {path}: {e}")))?,
        ),
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| Failure(format!("cannot build the HTTP client: {e}")))?;
    let mut all_accepted = true;
    for _ in 0..args.count.max(1) {
        let body = fixed_body
            .clone()
            .unwrap_or_else(|| samples::sample(args.event, args.session.as_deref()));
        let msg_id = format!("send_{:016x}", fastrand::u64(..));
        let mut request = client
            .post(&args.url)
            .header("content-type", "application/json");
        for (name, value) in secrets.headers(&msg_id, unix_seconds(), &body) {
            request = request.header(name, value);
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| Failure(format!("cannot reach {}: {}", args.url, root_cause(&e))))?;
        let status = response.status();
        let answer = response.text().await.unwrap_or_default();
        println!("{} {}", status.as_u16(), answer.trim());
        all_accepted &= status.is_success();
    }
    Ok(if all_accepted {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// reqwest's top-level message is generic ("error sending request"); the cause says why.
pub fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
