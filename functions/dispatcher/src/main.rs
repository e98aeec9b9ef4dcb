//! The dispatcher Lambda: SQS FIFO event source mapping → signed delivery to `WEBHOOK_URL`,
//! answering with the failed items only (`ReportBatchItemFailures`).
//!
//! Wiring only: the SDK configuration is loaded once, at init; secret variables are fetched
//! from Secrets Manager when given as `*_ARN` (`relay_shared::secrets`) while a first
//! connection to the receiver is opened (bounded), so the first delivery of a cold start does
//! not pay for the TLS handshake; then configuration is read and the HTTP client, the SQS
//! clients (queue and DLQ) and the attempts ledger (DynamoDB) are set up, the last two built
//! on first use, as only failures need them. The handler is
//! `relay_shared::dispatch::Dispatcher::handle_batch_until` (the invocation's deadline), the
//! same handler the local stack runs.
//! One thread: Lambda hands an execution environment one batch at a time, and a batch's
//! deliveries are waits on the network, run concurrently on that thread.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use relay_shared::attempts::dynamodb::DynamoLedger;
use relay_shared::config::{DispatcherConfig, delivery_target};
use relay_shared::deliver::{Deliverer, Receiver};
use relay_shared::dispatch::{DispatchQueues, Dispatcher, deadline_from_unix_ms};
use relay_shared::queue::sqs::{SqsQueue, lambda_sdk_config};
use relay_shared::secrets::configure_lambda_alongside;
use relay_shared::telemetry::{Metrics, MetricsSink, init_json_logs};
use std::sync::Arc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    init_json_logs();
    let aws = lambda_sdk_config().await;
    // The receiver's URL and timeout are no secret: its connection opens while the secrets
    // are fetched.
    let env = |var: &str| std::env::var(var).ok();
    let early = delivery_target(&env).and_then(|(url, timeout)| Receiver::new(url, timeout).ok());
    let warm = async {
        if let Some(receiver) = &early {
            receiver.warm_up().await;
        }
    };
    let config = configure_lambda_alongside(&aws, DispatcherConfig::from_lookup, warm).await;
    let queue = SqsQueue::from_config(&aws, config.queue_url);
    let queues = DispatchQueues {
        dead_letter: Arc::new(queue.sibling(config.dead_letter_queue_url)),
        source: Arc::new(queue),
    };
    let ledger = Arc::new(DynamoLedger::new(&aws, config.attempts_table));
    let delivery = config.delivery;
    let secrets = Arc::new(delivery.webhook_secrets);
    let deliverer = match early {
        Some(receiver) if receiver.is_for(&delivery.webhook_url, delivery.delivery_timeout) => {
            receiver.signing_with(secrets)
        }
        _ => Deliverer::new(delivery.webhook_url, secrets, delivery.delivery_timeout)?,
    };
    let metrics = Metrics::new(config.metrics_namespace, MetricsSink::Stdout);
    let dispatcher =
        Arc::new(Dispatcher::new(deliverer, queues, delivery.retry, metrics).with_attempts(ledger));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let dispatcher = Arc::clone(&dispatcher);
        // No attempt starts that could outrun the function's timeout (see `dispatch`).
        let deadline = deadline_from_unix_ms(event.context.deadline);
        async move {
            Ok::<SqsBatchResponse, Error>(
                dispatcher
                    .handle_batch_until(event.payload, Some(deadline))
                    .await,
            )
        }
    }))
    .await
}
