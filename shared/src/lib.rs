//! The relay's domain: everything the ingest and dispatcher Lambdas, the local stack and the
//! tests share. The Lambda binaries only read configuration, build adapters and call in here.
//!
//! | module | role |
//! |---|---|
//! | [`envelope`] | the wire contract, validation with JSON paths, event and group ids |
//! | [`strict_json`] | JSON parsing that finds keys repeated in one object |
//! | [`signature`] | Standard Webhooks signing and verification, several secrets at once |
//! | [`queue`] | the queue port and its adapters: SQS and in-process |
//! | [`attempts`] | the attempts ledger: real delivery attempts per message (DynamoDB or in-process) |
//! | [`deliver`] | one signed delivery attempt and its outcome |
//! | [`backoff`] | the retry schedule, jitter and `Retry-After` |
//! | [`dispatch`] | a batch of queue messages in, the failed ones out; FIFO group rules |
//! | [`local_stack`] | the whole relay in one process: ingest, queue, poller, dispatcher |
//! | [`poller`] | receive → dispatch → delete: the event source mapping, outside Lambda |
//! | [`ingest`] | HTTP request in, stored event or clear refusal out |
//! | [`clock`] | the one unix wall clock |
//! | [`live`] | live updates: tokens, channels, the publisher port, the local hub |
//! | [`config`] | environment → typed configuration, one error line per bad variable |
//! | [`secrets`] | secret variables from the environment or, by ARN, from Secrets Manager |
//! | [`tls`] | the one TLS configuration (trusted roots) every HTTPS client shares |
//! | [`aws_http`] | the AWS SDK's HTTP client, over that TLS configuration; SDK clients built on first use |
//! | [`warm_up`] | opening a function's connections at init, bounded |
//! | [`telemetry`] | JSON logs and CloudWatch Embedded Metric Format |

pub mod attempts;
pub mod aws_http;
pub mod backoff;
pub mod clock;
pub mod config;
pub mod deliver;
pub mod dispatch;
pub mod envelope;
pub mod ingest;
pub mod live;
pub mod local_stack;
pub mod poller;
pub mod queue;
pub mod secrets;
pub mod signature;
pub mod strict_json;
pub mod telemetry;
pub mod tls;
pub mod warm_up;
