//! The dispatcher Lambda: SQS FIFO event source mapping → signed delivery to `WEBHOOK_URL`,
//! answering with the failed items only (`ReportBatchItemFailures`).
//!
//! Wiring only: configuration, the SQS client and the HTTP client are built once, at init,
//! and a first connection to the receiver is opened then, so the first delivery of a cold
//! start does not pay for the TLS handshake. The handler is
//! `relay_shared::dispatch::Dispatcher::handle_batch`, the same one the local stack runs.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use relay_shared::config::DispatcherConfig;
use relay_shared::deliver::Deliverer;
use relay_shared::dispatch::Dispatcher;
use relay_shared::queue::sqs::SqsQueue;
use relay_shared::telemetry::{Metrics, MetricsSink, init_json_logs};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_json_logs();
    let config = DispatcherConfig::from_env().unwrap_or_else(|errors| errors.exit());
    let queue = Arc::new(SqsQueue::from_env(config.queue_url).await);
    let delivery = config.delivery;
    let secrets = Arc::new(delivery.webhook_secrets);
    let deliverer = Deliverer::new(delivery.webhook_url, secrets, delivery.delivery_timeout)?;
    deliverer.warm_up().await;
    let metrics = Metrics::new(config.metrics_namespace, MetricsSink::Stdout);
    let dispatcher = Arc::new(Dispatcher::new(
        deliverer,
        queue,
        delivery.retry_schedule,
        metrics,
    ));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let dispatcher = Arc::clone(&dispatcher);
        async move { Ok::<SqsBatchResponse, Error>(dispatcher.handle_batch(event.payload).await) }
    }))
    .await
}
