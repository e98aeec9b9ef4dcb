//! The attempts ledger: how many real delivery attempts a queue message has had.
//!
//! SQS's `ApproximateReceiveCount` counts receives, not attempts: a message held behind a
//! failing head of its group is received (and released unsent) with every batch, so its count
//! climbs without a single delivery. The dispatcher therefore counts failed attempts itself,
//! keyed by the SQS message id, and decides on its own when a message is exhausted.
//!
//! Writes happen on failures only; a message delivered at its first attempt never touches the
//! ledger, and a message received for the first time is never looked up. Two adapters: DynamoDB
//! on AWS (an item per failing message, expired by the table's TTL) and in-process for the
//! local stack and tests.

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// How long a count is kept: longer than any message can live in the queue (the template keeps
/// messages 14 days, SQS's maximum), so a count never expires while its message can come back.
pub const ENTRY_TTL: Duration = Duration::from_secs(15 * 24 * 60 * 60);

/// The ledger could not be read or written. The dispatcher carries on without it (see
/// `dispatch`): the queue's `maxReceiveCount` is the safety net.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("attempts ledger unavailable: {0}")]
pub struct LedgerError(pub String);

#[async_trait]
pub trait AttemptLedger: Send + Sync + 'static {
    /// Failed attempts recorded for `message_id` (0 when there are none).
    async fn failed_attempts(&self, message_id: &str) -> Result<u32, LedgerError>;

    /// Records one more failed attempt; returns the count including it.
    async fn record_failure(&self, message_id: &str) -> Result<u32, LedgerError>;

    /// Forgets `message_id` (delivered, or moved to the DLQ after failures).
    async fn forget(&self, message_id: &str) -> Result<(), LedgerError>;
}

/// In-process ledger: one process's memory, so only for a single dispatcher (the local stack,
/// tests). Entries older than [`ENTRY_TTL`] are dropped as new ones come in.
#[derive(Default)]
pub struct MemoryLedger {
    entries: Mutex<HashMap<String, (u32, tokio::time::Instant)>>,
}

/// Above this many entries, each write first sweeps out the expired ones.
const SWEEP_ABOVE: usize = 10_000;

impl MemoryLedger {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl AttemptLedger for MemoryLedger {
    async fn failed_attempts(&self, message_id: &str) -> Result<u32, LedgerError> {
        let now = tokio::time::Instant::now();
        let entries = self.entries.lock().unwrap();
        Ok(entries
            .get(message_id)
            .filter(|(_, expires)| *expires > now)
            .map_or(0, |(count, _)| *count))
    }

    async fn record_failure(&self, message_id: &str) -> Result<u32, LedgerError> {
        let now = tokio::time::Instant::now();
        let mut entries = self.entries.lock().unwrap();
        if entries.len() > SWEEP_ABOVE {
            entries.retain(|_, (_, expires)| *expires > now);
        }
        let entry = entries.entry(message_id.to_owned()).or_insert((0, now));
        if entry.1 <= now {
            entry.0 = 0;
        }
        entry.0 += 1;
        entry.1 = now + ENTRY_TTL;
        Ok(entry.0)
    }

    async fn forget(&self, message_id: &str) -> Result<(), LedgerError> {
        self.entries.lock().unwrap().remove(message_id);
        Ok(())
    }
}

pub mod dynamodb {
    //! The DynamoDB adapter: table with partition key `message_id` (string), the count in
    //! `attempts` (number) and a TTL attribute `expires_at` (unix seconds). One `UpdateItem`
    //! (atomic `ADD`) per failed attempt, one strongly consistent `GetItem` per re-received
    //! message, one `DeleteItem` when a message that had failed is settled.

    use super::{AttemptLedger, ENTRY_TTL, LedgerError};
    use crate::aws_http::{LazyClient, lazy_client};
    use async_trait::async_trait;
    use aws_sdk_dynamodb::Client;
    use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
    use aws_sdk_dynamodb::error::DisplayErrorContext;
    use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
    use std::time::Duration;

    pub const KEY: &str = "message_id";
    pub const COUNT: &str = "attempts";
    pub const EXPIRES_AT: &str = "expires_at";

    #[derive(Clone, Debug)]
    pub struct DynamoLedger {
        client: LazyClient<Client>,
        table: String,
    }

    impl DynamoLedger {
        /// The client gets the same short timeouts as the SQS client: a stalled ledger must
        /// not stall a batch.
        pub fn new(config: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
            let config = aws_sdk_dynamodb::config::Builder::from(config)
                .timeout_config(
                    TimeoutConfig::builder()
                        .connect_timeout(Duration::from_secs(2))
                        .operation_attempt_timeout(Duration::from_secs(2))
                        .operation_timeout(Duration::from_secs(4))
                        .build(),
                )
                .build();
            DynamoLedger {
                client: lazy_client(move || Client::from_conf(config)),
                table: table.into(),
            }
        }

        pub fn client(&self) -> &Client {
            &self.client
        }

        fn key(message_id: &str) -> AttributeValue {
            AttributeValue::S(message_id.to_owned())
        }
    }

    fn unavailable(e: impl std::error::Error) -> LedgerError {
        LedgerError(DisplayErrorContext(e).to_string())
    }

    fn count_of(value: Option<&AttributeValue>) -> u32 {
        value
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    #[async_trait]
    impl AttemptLedger for DynamoLedger {
        async fn failed_attempts(&self, message_id: &str) -> Result<u32, LedgerError> {
            let output = self
                .client
                .get_item()
                .table_name(&self.table)
                .key(KEY, Self::key(message_id))
                .consistent_read(true)
                .send()
                .await
                .map_err(unavailable)?;
            let item = output.item();
            // An item past its TTL may still be there (DynamoDB deletes lazily): ignore it.
            let expired = item
                .and_then(|i| i.get(EXPIRES_AT))
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|at| at <= crate::clock::unix_seconds() as u64);
            Ok(if expired {
                0
            } else {
                count_of(item.and_then(|i| i.get(COUNT)))
            })
        }

        async fn record_failure(&self, message_id: &str) -> Result<u32, LedgerError> {
            let expires_at = crate::clock::unix_seconds() as u64 + ENTRY_TTL.as_secs();
            let output = self
                .client
                .update_item()
                .table_name(&self.table)
                .key(KEY, Self::key(message_id))
                .update_expression("ADD #count :one SET #expires = :expires")
                .expression_attribute_names("#count", COUNT)
                .expression_attribute_names("#expires", EXPIRES_AT)
                .expression_attribute_values(":one", AttributeValue::N("1".into()))
                .expression_attribute_values(":expires", AttributeValue::N(expires_at.to_string()))
                .return_values(ReturnValue::UpdatedNew)
                .send()
                .await
                .map_err(unavailable)?;
            Ok(count_of(output.attributes().and_then(|a| a.get(COUNT))).max(1))
        }

        async fn forget(&self, message_id: &str) -> Result<(), LedgerError> {
            self.client
                .delete_item()
                .table_name(&self.table)
                .key(KEY, Self::key(message_id))
                .send()
                .await
                .map_err(unavailable)?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn counts_failures_forgets_and_expires() {
        let ledger = MemoryLedger::new();
        assert_eq!(ledger.failed_attempts("m").await, Ok(0));
        assert_eq!(ledger.record_failure("m").await, Ok(1));
        assert_eq!(ledger.record_failure("m").await, Ok(2));
        assert_eq!(ledger.failed_attempts("m").await, Ok(2));
        assert_eq!(ledger.failed_attempts("other").await, Ok(0));
        ledger.forget("m").await.unwrap();
        assert_eq!(ledger.failed_attempts("m").await, Ok(0));
        ledger.record_failure("m").await.unwrap();
        tokio::time::advance(ENTRY_TTL + Duration::from_secs(1)).await;
        assert_eq!(ledger.failed_attempts("m").await, Ok(0), "expired");
        assert_eq!(ledger.record_failure("m").await, Ok(1), "starts again");
    }
}
