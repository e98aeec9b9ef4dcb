//! The SQS adapter of the queue port: AWS SQS, or any SQS-protocol server (moto, fauxqs)
//! through the SDK's own `AWS_ENDPOINT_URL_SQS` override.

use super::{
    Consumer, NewMessage, Producer, QueueError, ReceivedMessage, Visibility, check_receive,
};
use crate::aws_http::{LazyClient, lazy_client};
use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::config::timeout::TimeoutConfig;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{MessageSystemAttributeName, SendMessageBatchRequestEntry};
use std::sync::Arc;
use std::time::Duration;

/// The most a cold start spends opening the first connection to SQS.
pub const WARM_UP_LIMIT: Duration = Duration::from_secs(2);

/// A FIFO queue on SQS, addressed by its URL.
#[derive(Clone, Debug)]
pub struct SqsQueue {
    client: LazyClient<Client>,
    queue_url: String,
}

impl SqsQueue {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        SqsQueue {
            client: lazy_client(move || client),
            queue_url: queue_url.into(),
        }
    }

    /// Builds the client from [`sdk_config`]. Done once, at init.
    pub async fn from_env(queue_url: impl Into<String>) -> Self {
        SqsQueue::from_config(&sdk_config().await, queue_url)
    }

    /// A queue on a client built from an SDK configuration loaded once for every client of the
    /// process (see [`sdk_config`]).
    pub fn from_config(config: &aws_config::SdkConfig, queue_url: impl Into<String>) -> Self {
        let config = aws_sdk_sqs::config::Builder::from(config)
            .timeout_config(timeouts(Duration::ZERO))
            .build();
        SqsQueue {
            client: lazy_client(move || Client::from_conf(config)),
            queue_url: queue_url.into(),
        }
    }

    /// Another queue on the same client (the DLQ beside its source queue).
    pub fn sibling(&self, queue_url: impl Into<String>) -> Self {
        SqsQueue {
            client: Arc::clone(&self.client),
            queue_url: queue_url.into(),
        }
    }

    /// One attribute of the queue (`GetQueueAttributes`), if the queue has it.
    async fn attribute(
        &self,
        name: aws_sdk_sqs::types::QueueAttributeName,
    ) -> Result<Option<String>, QueueError> {
        let attributes = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(name.clone())
            .send()
            .await
            .map_err(|e| classify(e, Call::Other))?;
        Ok(attributes.attributes().and_then(|a| a.get(&name)).cloned())
    }

    /// The DLQ named by this queue's redrive policy, for tools given only the source queue.
    pub async fn dead_letter_queue(&self) -> Result<SqsQueue, QueueError> {
        use aws_sdk_sqs::types::QueueAttributeName;
        let policy = self
            .attribute(QueueAttributeName::RedrivePolicy)
            .await?
            .ok_or_else(|| {
                QueueError::Refused(format!(
                    "{} has no redrive policy: set DEAD_LETTER_QUEUE_URL",
                    self.queue_url
                ))
            })?;
        let arn = serde_json::from_str::<serde_json::Value>(&policy)
            .ok()
            .and_then(|p| p["deadLetterTargetArn"].as_str().map(str::to_owned))
            .ok_or_else(|| QueueError::Refused(format!("unreadable redrive policy {policy:?}")))?;
        let name = arn.rsplit(':').next().unwrap_or_default();
        let url = self
            .client
            .get_queue_url()
            .queue_name(name)
            .send()
            .await
            .map_err(|e| classify(e, Call::Other))?;
        Ok(self.sibling(url.queue_url().unwrap_or_default()))
    }

    /// The queue's visibility timeout (`VisibilityTimeout`, whole seconds): how long a received
    /// batch has before its messages are handed out again.
    pub async fn visibility_timeout(&self) -> Result<Duration, QueueError> {
        use aws_sdk_sqs::types::QueueAttributeName;
        let value = self
            .attribute(QueueAttributeName::VisibilityTimeout)
            .await?
            .ok_or_else(|| {
                QueueError::Refused(format!(
                    "{} did not say its VisibilityTimeout",
                    self.queue_url
                ))
            })?;
        value
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| QueueError::Refused(format!("unreadable VisibilityTimeout {value:?}")))
    }

    /// Opens (and keeps in the pool) the connection to SQS at init with one
    /// `GetQueueAttributes` on the queue, so the first send of a cold start pays neither the
    /// handshakes nor the client's first-call set-up (endpoint, credentials, signing). At most
    /// [`WARM_UP_LIMIT`]; a failure is logged and changes nothing.
    pub async fn warm_up(&self) -> bool {
        use aws_sdk_sqs::types::QueueAttributeName;
        let call = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send();
        crate::warm_up::warm_up("SQS", WARM_UP_LIMIT, call)
            .await
            .is_some()
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }
}

/// A Lambda function's SDK configuration, loaded once at init and shared by its SQS, Secrets
/// Manager and DynamoDB clients: as [`sdk_config`], but region and credentials are read straight
/// from the variables Lambda sets, instead of building the SDK's default chains (profile files,
/// SSO, web identity, ECS, IMDS), which a function never uses and which cost its cold start
/// about 0.3 ms of CPU. AWS (Lambda Developer Guide, "Defined runtime environment variables"):
/// `AWS_REGION` is "the AWS Region where the Lambda function is executed", and
/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` are "the access keys
/// obtained from the function's execution role". Where they are not set, the default chains
/// are used, as [`sdk_config`] does.
pub async fn lambda_sdk_config() -> aws_config::SdkConfig {
    use aws_config::environment::{
        EnvironmentVariableCredentialsProvider, EnvironmentVariableRegionProvider,
    };
    let set = |var: &str| std::env::var_os(var).is_some_and(|v| !v.is_empty());
    if !(set("AWS_REGION") && set("AWS_ACCESS_KEY_ID") && set("AWS_SECRET_ACCESS_KEY")) {
        return sdk_config().await;
    }
    loader()
        .region(EnvironmentVariableRegionProvider::new())
        .credentials_provider(EnvironmentVariableCredentialsProvider::new())
        .load()
        .await
}

/// The SDK's standard environment (region, credentials, `AWS_ENDPOINT_URL_SQS` and the other
/// `AWS_ENDPOINT_URL_*` overrides) with the relay's timeouts and HTTP client (the process's one
/// TLS configuration, [`crate::aws_http`]), for the `relay` tools and the tests, which run
/// wherever a person's credentials are (profiles, SSO).
pub async fn sdk_config() -> aws_config::SdkConfig {
    loader().load().await
}

/// The SDK's environment with the relay's HTTP client and timeouts, for both configurations.
fn loader() -> aws_config::ConfigLoader {
    aws_config::from_env()
        .http_client(crate::aws_http::http_client())
        .timeout_config(timeouts(Duration::ZERO))
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

/// What a failed call was doing: a refusal of a send's parameters is a refusal of the message.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Call {
    Send,
    Other,
}

/// SQS error codes that mean "not now" although SQS answers them with a 4xx status.
const TRANSIENT_CODES: &[&str] = &[
    "RequestThrottled",
    "ThrottlingException",
    "Throttling",
    "KmsThrottled",
    "KMS.ThrottlingException",
    "ServiceUnavailable",
    "InternalError",
    "InternalFailure",
    "RequestTimeout",
];

/// SQS error codes that refuse what a message carries (characters, size, attributes).
///
/// SQS's JSON protocol is query-compatible: the SDK reports the code of the
/// `x-amzn-query-error` header, which for some errors is prefixed: a batch over 1 MiB comes
/// back as `AWS.SimpleQueueService.BatchRequestTooLong` (the code the SDK's own deserializer
/// expects, and what moto sends). Both spellings are listed.
const MESSAGE_CODES: &[&str] = &[
    "InvalidMessageContents",
    "InvalidParameterValue",
    "InvalidParameterValueException",
    "InvalidAttributeValue",
    "MessageTooLong",
    "BatchRequestTooLong",
    "AWS.SimpleQueueService.BatchRequestTooLong",
];

/// Sorts an SDK error into the port's three kinds: transient (timeouts, connection failures,
/// 5xx, throttling), a refusal of the message itself (on a send), or any other refusal
/// (missing queue, access denied, KMS key disabled: configuration).
fn classify<E>(err: SdkError<E, HttpResponse>, call: Call) -> QueueError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    let refusal = match &err {
        SdkError::ServiceError(service) if service.raw().status().is_client_error() => {
            Some(service.err().code().unwrap_or_default().to_owned())
        }
        _ => None,
    };
    let message = DisplayErrorContext(&err).to_string();
    classify_refusal(refusal.as_deref(), call, message)
}

fn classify_refusal(code: Option<&str>, call: Call, message: String) -> QueueError {
    match code {
        None => QueueError::Unavailable(message),
        Some(code) if TRANSIENT_CODES.contains(&code) => QueueError::Unavailable(message),
        Some(code) if call == Call::Send && MESSAGE_CODES.contains(&code) => {
            QueueError::MessageRefused(message)
        }
        Some(_) => QueueError::Refused(message),
    }
}

#[async_trait]
impl Producer for SqsQueue {
    async fn send(&self, message: NewMessage) -> Result<(), QueueError> {
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(message.body)
            .message_group_id(message.group_id)
            .message_deduplication_id(message.dedup_id)
            .send()
            .await
            .map_err(|e| classify(e, Call::Send))?;
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
            .map_err(|e| classify(e, Call::Send))?;
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
                let code = failed.sender_fault().then(|| failed.code());
                *slot = Err(classify_refusal(code, Call::Send, message));
            }
        }
        Ok(results)
    }
}

/// The port's view of a message SQS handed out. A system attribute SQS left out stays unknown
/// (`sent_timestamp_ms: None`): an invented 0 would date the message to 1970.
fn received(m: &aws_sdk_sqs::types::Message) -> ReceivedMessage {
    let attribute =
        |name: MessageSystemAttributeName| m.attributes().and_then(|a| a.get(&name)).cloned();
    ReceivedMessage {
        message_id: m.message_id().unwrap_or_default().to_owned(),
        receipt_handle: m.receipt_handle().unwrap_or_default().to_owned(),
        body: m.body().unwrap_or_default().to_owned(),
        group_id: attribute(MessageSystemAttributeName::MessageGroupId).unwrap_or_default(),
        dedup_id: attribute(MessageSystemAttributeName::MessageDeduplicationId),
        receive_count: attribute(MessageSystemAttributeName::ApproximateReceiveCount)
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
        sent_timestamp_ms: attribute(MessageSystemAttributeName::SentTimestamp)
            .and_then(|v| v.parse().ok()),
    }
}

#[async_trait]
impl Consumer for SqsQueue {
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        // Refused here, as SQS would refuse them, rather than trimmed into something SQS takes
        // (see MAX_BATCH and MAX_WAIT: "Valid values: 1 to 10", "The maximum long polling wait
        // time is 20 seconds"): the in-process queue refuses the same, so neither adapter
        // hides a caller's mistake.
        check_receive(max, wait)?;
        let output = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max as i32)
            // Whole seconds, 0 to 20 (checked above); a sub-second wait polls without waiting.
            .wait_time_seconds(wait.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .customize()
            .config_override(aws_sdk_sqs::config::Builder::default().timeout_config(timeouts(wait)))
            .send()
            .await
            .map_err(|e| classify(e, Call::Other))?;
        Ok(output.messages().iter().map(received).collect())
    }

    async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .send()
            .await
            .map_err(|e| classify(e, Call::Other))?;
        Ok(())
    }
}

#[async_trait]
impl Visibility for SqsQueue {
    async fn change_visibility(
        &self,
        receipt_handle: &str,
        timeout: Duration,
    ) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            // AWS, `ChangeMessageVisibility`, `VisibilityTimeout`: "The new value for the
            // message's visibility timeout (in seconds). Values range: 0 to 43200. Maximum: 12
            // hours." Whole seconds: round, so a jittered 0.8 s wait is 1 s, not 0. Not trimmed
            // to the 12 h limit: SQS refuses what exceeds it, and so must the caller see.
            .visibility_timeout(timeout.as_secs_f64().round() as i32)
            .send()
            .await
            .map_err(|e| classify(e, Call::Other))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(code: Option<&str>, call: Call) -> &'static str {
        match classify_refusal(code, call, String::new()) {
            QueueError::Unavailable(_) => "unavailable",
            QueueError::MessageRefused(_) => "message",
            QueueError::Refused(_) => "refused",
        }
    }

    #[test]
    fn a_missing_sent_timestamp_stays_unknown() {
        use aws_sdk_sqs::types::Message;
        let bare = Message::builder()
            .message_id("m1")
            .receipt_handle("r1")
            .body("{}")
            .attributes(MessageSystemAttributeName::MessageGroupId, "g")
            .build();
        let message = received(&bare);
        assert_eq!(message.sent_timestamp_ms, None, "not 0: that is 1970");
        assert_eq!(message.group_id, "g");
        assert!(
            !message
                .into_lambda_record("arn")
                .attributes
                .contains_key(crate::queue::attr::SENT_TIMESTAMP)
        );

        let unreadable = Message::builder()
            .attributes(MessageSystemAttributeName::SentTimestamp, "yesterday")
            .build();
        assert_eq!(received(&unreadable).sent_timestamp_ms, None);

        let stamped = Message::builder()
            .attributes(MessageSystemAttributeName::SentTimestamp, "1700000000123")
            .build();
        assert_eq!(
            received(&stamped).sent_timestamp_ms,
            Some(1_700_000_000_123)
        );
    }

    #[test]
    fn only_outages_and_throttling_are_transient() {
        assert_eq!(
            kind(None, Call::Send),
            "unavailable",
            "no answer, timeout, 5xx"
        );
        assert_eq!(kind(Some("RequestThrottled"), Call::Send), "unavailable");
        assert_eq!(kind(Some("KmsThrottled"), Call::Send), "unavailable");
        assert_eq!(kind(Some("InvalidMessageContents"), Call::Send), "message");
        assert_eq!(kind(Some("InvalidParameterValue"), Call::Send), "message");
        assert_eq!(kind(Some("InvalidParameterValue"), Call::Other), "refused");
        assert_eq!(
            kind(
                Some("AWS.SimpleQueueService.BatchRequestTooLong"),
                Call::Send
            ),
            "message"
        );
        assert_eq!(
            kind(
                Some("AWS.SimpleQueueService.TooManyEntriesInBatchRequest"),
                Call::Send
            ),
            "refused"
        );
        assert_eq!(
            kind(Some("AWS.SimpleQueueService.NonExistentQueue"), Call::Send),
            "refused"
        );
        assert_eq!(kind(Some("AccessDenied"), Call::Send), "refused");
        assert_eq!(kind(Some("KmsDisabled"), Call::Send), "refused");
    }
}
