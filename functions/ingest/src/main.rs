//! The ingest Lambda: API Gateway HTTP API → validate, authenticate → SQS FIFO.
//!
//! Wiring only: the SDK configuration is loaded once, at init; secret variables are fetched
//! from Secrets Manager when given as `*_ARN` (`relay_shared::secrets`); configuration and the
//! SQS client are built then, and a first connection to SQS is opened (bounded), so the first
//! event of a cold start does not pay for it. The routes are `relay_shared::ingest::router`,
//! the same ones the local stack serves. With `LIVE_EVENTS_URL` set, every stored event is also
//! published to its session's AppSync Events channel, signed as the function's role (never
//! changing the answer).

use relay_shared::config::IngestConfig;
use relay_shared::ingest::{Ingest, router};
use relay_shared::live::appsync::AppSyncPublisher;
use relay_shared::live::publish::LivePublishing;
use relay_shared::queue::sqs::SqsQueue;
use relay_shared::secrets::configure_lambda;
use relay_shared::telemetry::{Metrics, MetricsSink, init_json_logs};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    init_json_logs();
    let (aws, config) = configure_lambda(IngestConfig::from_lookup).await;
    let queue = Arc::new(SqsQueue::from_config(&aws, config.queue_url));
    queue.warm_up().await;
    let metrics = Metrics::new(config.metrics_namespace, MetricsSink::Stdout);
    let mut ingest = Ingest::new(config.secrets, config.chat_id_key, queue, metrics.clone());
    if let Some(live) = config.live {
        let publisher = AppSyncPublisher::from_config(&aws, live.events_url, live.namespace)
            .unwrap_or_else(|e| {
                eprintln!("configuration error: LIVE_EVENTS_URL: {e}");
                std::process::exit(2)
            });
        ingest = ingest.with_live(LivePublishing::new(
            Arc::new(publisher),
            config.qr_ttl,
            metrics,
        ));
    }
    lambda_http::run(router(Arc::new(ingest))).await
}
