//! The ingest Lambda: API Gateway HTTP API → validate, authenticate → SQS FIFO.
//!
//! Wiring only: the SDK configuration is loaded once, at init; secret variables are fetched
//! from Secrets Manager when given as `*_ARN` (`relay_shared::secrets`) while a first
//! connection to SQS is opened (bounded), so the first event of a cold start does not pay for
//! it; then configuration is read. The routes are `relay_shared::ingest::router`, the same ones
//! the local stack serves. With `LIVE_EVENTS_URL` set, every stored event is also published to
//! its session's AppSync Events channel, signed as the function's role (never changing the
//! answer). One thread: Lambda hands an execution environment one request at a time.

use relay_shared::config::{IngestConfig, QUEUE_URL};
use relay_shared::ingest::{Ingest, router};
use relay_shared::live::appsync::AppSyncPublisher;
use relay_shared::live::publish::LivePublishing;
use relay_shared::queue::sqs::{SqsQueue, lambda_sdk_config};
use relay_shared::secrets::configure_lambda_alongside;
use relay_shared::telemetry::{Metrics, MetricsSink, init_json_logs};
use std::sync::Arc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    init_json_logs();
    let aws = lambda_sdk_config().await;
    // The queue's URL is no secret: its connection opens while the secrets are fetched. (A
    // malformed URL only fails this warm-up; reading the configuration then names it.)
    let early = std::env::var(QUEUE_URL)
        .ok()
        .map(|url| SqsQueue::from_config(&aws, url.trim()));
    let warm = async {
        if let Some(queue) = &early {
            queue.warm_up().await;
        }
    };
    let config = configure_lambda_alongside(&aws, IngestConfig::from_lookup, warm).await;
    let queue = Arc::new(match early {
        Some(queue) if queue.queue_url() == config.queue_url => queue,
        _ => SqsQueue::from_config(&aws, config.queue_url),
    });
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
