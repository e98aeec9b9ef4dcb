//! The dispatcher Lambda: SQS FIFO event source mapping → signed delivery to `WEBHOOK_URL`,
//! answering with the failed items only (`ReportBatchItemFailures`).
//!
//! Wiring only: the SDK configuration is loaded once, at init; secret variables are fetched
//! from Secrets Manager when given as `*_ARN` (`relay_shared::secrets`); configuration, the
//! SQS clients (queue and DLQ), the attempts ledger (DynamoDB) and the HTTP client are built
//! then, and a first connection to the receiver is opened, so the first delivery of a cold
//! start does not pay for the TLS handshake. The handler is
//! `relay_shared::dispatch::Dispatcher::handle_batch`, the same one the local stack runs.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use relay_shared::attempts::dynamodb::DynamoLedger;
use relay_shared::config::DispatcherConfig;
use relay_shared::deliver::Deliverer;
use relay_shared::dispatch::{DispatchQueues, Dispatcher};
use relay_shared::queue::sqs::SqsQueue;
use relay_shared::secrets::configure_lambda;
use relay_shared::telemetry::{Metrics, MetricsSink, init_json_logs};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_json_logs();
    let (aws, config) = configure_lambda(DispatcherConfig::from_lookup).await;
    let queue = SqsQueue::from_config(&aws, config.queue_url);
    let queues = DispatchQueues {
        dead_letter: Arc::new(queue.sibling(config.dead_letter_queue_url)),
        source: Arc::new(queue),
    };
    let ledger = Arc::new(DynamoLedger::new(&aws, config.attempts_table));
    let delivery = config.delivery;
    let secrets = Arc::new(delivery.webhook_secrets);
    let deliverer = Deliverer::new(delivery.webhook_url, secrets, delivery.delivery_timeout)?;
    deliverer.warm_up().await;
    let metrics = Metrics::new(config.metrics_namespace, MetricsSink::Stdout);
    let dispatcher =
        Arc::new(Dispatcher::new(deliverer, queues, delivery.retry, metrics).with_attempts(ledger));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let dispatcher = Arc::clone(&dispatcher);
        async move { Ok::<SqsBatchResponse, Error>(dispatcher.handle_batch(event.payload).await) }
    }))
    .await
}
