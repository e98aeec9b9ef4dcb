//! The one wall clock: unix time, for what leaves the process (signature timestamps, EMF
//! timestamps, DynamoDB TTLs) and for ages measured against timestamps others wrote (a `qr`'s
//! envelope time, SQS's `SentTimestamp`). Durations inside the process use `Instant` instead.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in unix milliseconds (0 if the system clock is before 1970).
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Now, in whole unix seconds: `webhook-timestamp`, TTL attributes.
pub fn unix_seconds() -> i64 {
    (unix_millis() / 1000) as i64
}
