//! The ingest Lambda: API Gateway HTTP API → validate, authenticate → SQS FIFO.
//!
//! Wiring only: configuration and the SQS client are built once, at init, and the routes are
//! `relay_shared::ingest::router`, the same ones the local stack serves.

use relay_shared::config::IngestConfig;
use relay_shared::ingest::{Ingest, router};
use relay_shared::queue::sqs::SqsQueue;
use relay_shared::telemetry::{Metrics, MetricsSink, init_json_logs};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    init_json_logs();
    let config = IngestConfig::from_env().unwrap_or_else(|errors| errors.exit());
    let queue = Arc::new(SqsQueue::from_env(config.queue_url).await);
    let metrics = Metrics::new(config.metrics_namespace, MetricsSink::Stdout);
    let ingest = Arc::new(Ingest::new(
        config.secrets,
        config.chat_id_key,
        queue,
        metrics,
    ));
    lambda_http::run(router(ingest)).await
}
