//! `relay receive`: a dev receiver. Verifies each delivery with the webhook secret(s), prints
//! one line per delivery (and the body, with any QR code redacted), answers 204 — or a chosen
//! failure status for the first N deliveries, to watch the relay retry.

use crate::Failure;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use relay_shared::signature::SecretSet;
use serde_json::Value;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(clap::Args)]
pub struct ReceiveArgs {
    /// Address to listen on; any path is accepted
    #[arg(long, default_value = "127.0.0.1:3001")]
    listen: SocketAddr,
    /// Webhook secret(s) to verify with (space-separated whsec_…)
    #[arg(long, env = "WEBHOOK_SECRETS", hide_env_values = true)]
    secret: Option<String>,
    /// Answer this status instead of 204 (e.g. 500 or 429) to try the relay's retries
    #[arg(long, value_parser = parse_status)]
    fail_with: Option<u16>,
    /// Fail only the first N deliveries, then answer 204 (default: fail all when --fail-with is set)
    #[arg(long)]
    fail_times: Option<u64>,
    /// Retry-After seconds to send with a failure
    #[arg(long)]
    retry_after: Option<u64>,
    /// Print one line per delivery, without the body
    #[arg(long)]
    quiet: bool,
}

fn parse_status(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(code) if (100..=599).contains(&code) => Ok(code),
        _ => Err(format!("{text:?} is not an HTTP status code (100 to 599)")),
    }
}

/// What `relay receive` keeps between requests: the secrets it verifies with, the failures it
/// was told to script, and the ids it has answered with success (to flag duplicates).
struct ReceiveState {
    secrets: SecretSet,
    fail_with: Option<StatusCode>,
    fail_times: Option<u64>,
    retry_after: Option<u64>,
    quiet: bool,
    count: AtomicU64,
    seen: Mutex<HashSet<String>>,
}

pub async fn run(args: ReceiveArgs) -> Result<ExitCode, Failure> {
    let list = args
        .secret
        .ok_or_else(|| Failure("no secret: pass --secret whsec_… or set WEBHOOK_SECRETS".into()))?;
    let secrets = SecretSet::parse(&list).map_err(|e| Failure(format!("--secret: {e}")))?;
    let fail_with = args
        .fail_with
        .map(|code| StatusCode::from_u16(code).map_err(|e| Failure(format!("--fail-with: {e}"))))
        .transpose()?;
    let listener = crate::bind(args.listen).await?;
    let address = listener.local_addr().unwrap_or(args.listen);
    println!(
        "relay receive: listening on http://{address} (any path), verifying with {} secret(s)",
        secrets.len()
    );
    let state = Arc::new(ReceiveState {
        secrets,
        fail_with,
        fail_times: args.fail_times,
        retry_after: args.retry_after,
        quiet: args.quiet,
        count: AtomicU64::new(0),
        seen: Mutex::new(HashSet::new()),
    });
    let app = Router::new().fallback(receive).with_state(state);
    crate::serve::serve(listener, app, crate::serve::Limits::default(), async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    Ok(ExitCode::SUCCESS)
}

async fn receive(
    State(receiver): State<Arc<ReceiveState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let number = receiver.count.fetch_add(1, Ordering::SeqCst) + 1;
    let webhook_id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("(none)")
        .to_owned();
    if let Err(e) = receiver.secrets.verify(&body, &headers) {
        println!("#{number} REJECTED webhook-id={webhook_id}: {e} -> 401");
        return (StatusCode::UNAUTHORIZED, e.to_string()).into_response();
    }
    let failing = receiver
        .fail_with
        .filter(|_| receiver.fail_times.is_none_or(|n| number <= n));
    let status = failing.unwrap_or(StatusCode::NO_CONTENT);
    // A duplicate is a delivery of an id already answered with success.
    let duplicate = if failing.is_none() {
        !receiver.seen.lock().unwrap().insert(webhook_id.clone())
    } else {
        receiver.seen.lock().unwrap().contains(&webhook_id)
    };
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let event = parsed
        .as_ref()
        .and_then(|v| v["event"].as_str())
        .unwrap_or("?")
        .to_owned();
    println!(
        "#{number} verified webhook-id={webhook_id} event={event} bytes={}{} -> {}",
        body.len(),
        if duplicate { " (duplicate)" } else { "" },
        status.as_u16()
    );
    if !receiver.quiet {
        println!("   {}", printable(parsed, &body));
    }
    let mut response = status.into_response();
    if let (Some(_), Some(secs)) = (failing, receiver.retry_after) {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from(secs));
    }
    response
}

/// The body for the terminal, with the QR code (a login credential) redacted.
fn printable(parsed: Option<Value>, raw: &[u8]) -> String {
    match parsed {
        Some(mut value) => {
            if let Some(qr) = value.pointer_mut("/data/qr") {
                let length = qr.as_str().map_or(0, str::len);
                *qr = Value::from(format!("<redacted: {length} characters>"));
            }
            value.to_string()
        }
        None => String::from_utf8_lossy(raw).into_owned(),
    }
}
