//! The SQS adapter of the queue port: AWS SQS, or any SQS-protocol server (moto, fauxqs)
//! through the SDK's own `AWS_ENDPOINT_URL_SQS` override.

use super::{NewMessage, Queue, QueueError, ReceivedMessage};
use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::config::timeout::TimeoutConfig;
use aws_sdk_sqs::error::{DisplayErrorContext, SdkError};
use aws_sdk_sqs::types::{MessageSystemAttributeName, SendMessageBatchRequestEntry};
use std::time::Duration;

/// A FIFO queue on SQS, addressed by its URL.
#[derive(Clone, Debug)]
pub struct SqsQueue {
    client: Client,
    queue_url: String,
}

impl SqsQueue {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        SqsQueue {
            client,
            queue_url: queue_url.into(),
        }
    }

    /// Builds the client from [`sdk_config`]. Done once, at init.
    pub async fn from_env(queue_url: impl Into<String>) -> Self {
        SqsQueue::from_config(&sdk_config().await, queue_url)
    }

    /// Builds the client from an SDK configuration the caller shares with other clients.
    pub fn from_config(config: &aws_config::SdkConfig, queue_url: impl Into<String>) -> Self {
        SqsQueue::new(Client::new(config), queue_url)
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }
}

/// The SDK's standard environment (region, credentials, `AWS_ENDPOINT_URL_SQS` and the other
/// `AWS_ENDPOINT_URL_*` overrides) with the relay's timeouts: loaded once per function, at init,
/// and shared by its SQS and Secrets Manager clients.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::from_env()
        .timeout_config(timeouts(Duration::ZERO))
        .load()
        .await
}

/// SQS answers in milliseconds; a call that stalls must fail fast enough for ingest to answer
/// 503 before the sender's own 5 s timeout (2 s per attempt, 4 s with the SDK's retries).
/// A receive waits `long_poll` longer.
fn timeouts(long_poll: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .operation_attempt_timeout(Duration::from_secs(2) + long_poll)
        .operation_timeout(Duration::from_secs(4) + long_poll)
        .build()
}

/// Client-side refusals (4xx) are the caller's mistake; everything else may pass.
fn classify<E>(err: SdkError<E, HttpResponse>) -> QueueError
where
    E: std::error::Error + Send + Sync + 'static,
{
    let client_fault =
        matches!(&err, SdkError::ServiceError(service) if service.raw().status().is_client_error());
    let message = DisplayErrorContext(&err).to_string();
    if client_fault {
        QueueError::Refused(message)
    } else {
        QueueError::Unavailable(message)
    }
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send(&self, message: NewMessage) -> Result<(), QueueError> {
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(message.body)
            .message_group_id(message.group_id)
            .message_deduplication_id(message.dedup_id)
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn send_batch(
        &self,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<Result<(), QueueError>>, QueueError> {
        // More than MAX_BATCH entries is left to SQS to refuse, as the in-process queue does.
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let count = messages.len();
        let entries = messages
            .into_iter()
            .enumerate()
            .map(|(index, m)| {
                SendMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .message_body(m.body)
                    .message_group_id(m.group_id)
                    .message_deduplication_id(m.dedup_id)
                    .build()
                    .expect("id and body are set")
            })
            .collect();
        let output = self
            .client
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(classify)?;
        // Anything SQS neither confirmed nor refused counts as not stored.
        let mut results: Vec<Result<(), QueueError>> = vec![
            Err(QueueError::Unavailable(
                "SQS did not report this entry".into()
            ));
            count
        ];
        for ok in output.successful() {
            if let Some(slot) = ok
                .id()
                .parse::<usize>()
                .ok()
                .and_then(|i| results.get_mut(i))
            {
                *slot = Ok(());
            }
        }
        for failed in output.failed() {
            if let Some(slot) = failed
                .id()
                .parse::<usize>()
                .ok()
                .and_then(|i| results.get_mut(i))
            {
                let message = format!(
                    "{}: {}",
                    failed.code(),
                    failed.message().unwrap_or("no detail")
                );
                *slot = Err(if failed.sender_fault() {
                    QueueError::Refused(message)
                } else {
                    QueueError::Unavailable(message)
                });
            }
        }
        Ok(results)
    }

    async fn receive(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        let output = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max as i32)
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .customize()
            .config_override(aws_sdk_sqs::config::Builder::default().timeout_config(timeouts(wait)))
            .send()
            .await
            .map_err(classify)?;
        Ok(output
            .messages()
            .iter()
            .map(|m| {
                let attribute = |name: MessageSystemAttributeName| {
                    m.attributes().and_then(|a| a.get(&name)).cloned()
                };
                ReceivedMessage {
                    message_id: m.message_id().unwrap_or_default().to_owned(),
                    receipt_handle: m.receipt_handle().unwrap_or_default().to_owned(),
                    body: m.body().unwrap_or_default().to_owned(),
                    group_id: attribute(MessageSystemAttributeName::MessageGroupId)
                        .unwrap_or_default(),
                    dedup_id: attribute(MessageSystemAttributeName::MessageDeduplicationId),
                    receive_count: attribute(MessageSystemAttributeName::ApproximateReceiveCount)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(1),
                    sent_timestamp_ms: attribute(MessageSystemAttributeName::SentTimestamp)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                }
            })
            .collect())
    }

    async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn change_visibility(
        &self,
        receipt_handle: &str,
        timeout: Duration,
    ) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            // SQS takes whole seconds: round, so a jittered 0.8 s wait is 1 s, not 0.
            .visibility_timeout(timeout.min(super::MAX_VISIBILITY).as_secs_f64().round() as i32)
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }
}
