//! Opening a function's connections at init, so its first invocation does not pay for the TCP
//! and TLS handshakes (and the client's own first-call set-up): the dispatcher's to the
//! receiver, ingest's to SQS. Bounded, and never fatal: a warm-up that fails or runs out of
//! time is logged and the first real request connects by itself.

use crate::telemetry::error_chain;
use std::time::{Duration, Instant};

/// Runs `call`, a first request to `what`, for at most `limit`. Its answer if it came in time.
pub async fn warm_up<T, E: std::error::Error>(
    what: &str,
    limit: Duration,
    call: impl Future<Output = Result<T, E>>,
) -> Option<T> {
    let started = Instant::now();
    let problem = match tokio::time::timeout(limit, call).await {
        Ok(Ok(answer)) => return Some(answer),
        Ok(Err(e)) => error_chain(&e),
        Err(_) => format!("no answer within {} ms", limit.as_millis()),
    };
    tracing::warn!(
        connection = what,
        error = %problem,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "warm-up failed; the first request will connect by itself"
    );
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn answers_failures_and_stalls_are_told_apart_and_bounded() {
        let limit = Duration::from_secs(2);
        let ok = async { Ok::<_, std::io::Error>(7) };
        assert_eq!(warm_up("ok", limit, ok).await, Some(7));
        let refused = async { Err::<(), _>(std::io::Error::other("connection refused")) };
        assert!(warm_up("refused", limit, refused).await.is_none());
        let started = tokio::time::Instant::now();
        let stalled = std::future::pending::<Result<(), std::io::Error>>();
        assert!(warm_up("stalled", limit, stalled).await.is_none());
        assert_eq!(started.elapsed(), limit);
    }
}
