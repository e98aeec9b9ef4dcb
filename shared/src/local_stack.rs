//! The whole relay in one process: the ingest router in front of a queue, and a poller that
//! plays Lambda's event source mapping for the dispatcher. `relay local`, the chaos tests and
//! anything else that runs the relay outside Lambda assemble it here, from the same parts the
//! Lambdas run, instead of wiring them by hand.

use crate::attempts::AttemptLedger;
use crate::backoff::RetryPolicy;
use crate::deliver::Deliverer;
use crate::dispatch::{DispatchQueues, Dispatcher, JitterSource};
use crate::envelope::ChatIdKey;
use crate::ingest::{Ingest, router};
use crate::live::publish::LivePublishing;
use crate::poller::Poller;
use crate::queue::memory::{DeadLetter, MemoryQueue};
use crate::queue::{Queue, SAFETY_NET_RECEIVES};
use crate::signature::SecretSet;
use crate::telemetry::Metrics;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// A queue and the DLQ the dispatcher moves exhausted messages to.
#[derive(Clone)]
pub struct QueuePair {
    pub queue: Arc<dyn Queue>,
    pub dead_letter: Arc<dyn Queue>,
}

/// The in-process pair, kept concrete for what only it can tell (depths, what a stop drops).
#[derive(Clone)]
pub struct InProcessQueues {
    pub queue: Arc<MemoryQueue>,
    pub dead_letter: Arc<MemoryQueue>,
}

impl InProcessQueues {
    /// A FIFO queue named `name` and its DLQ `{name}-dlq`, both with `visibility` as their
    /// visibility timeout; the queue's redrive safety net is [`SAFETY_NET_RECEIVES`].
    pub fn new(name: &str, visibility: Duration) -> Self {
        let dead_letter = Arc::new(MemoryQueue::new(format!("{name}-dlq"), visibility));
        let queue = Arc::new(
            MemoryQueue::new(name, visibility).with_dead_letter(DeadLetter {
                queue: Arc::clone(&dead_letter),
                max_receive_count: SAFETY_NET_RECEIVES,
            }),
        );
        InProcessQueues { queue, dead_letter }
    }

    pub fn pair(&self) -> QueuePair {
        QueuePair {
            queue: self.queue.clone(),
            dead_letter: self.dead_letter.clone(),
        }
    }
}

/// What a stack is made of; [`LocalStack::assemble`] puts it together.
pub struct Parts {
    pub queues: QueuePair,
    pub ingest_secrets: SecretSet,
    pub chat_id_key: ChatIdKey,
    pub deliverer: Deliverer,
    pub retry: RetryPolicy,
    pub metrics: Metrics,
    /// How long each receive waits for messages (SQS allows up to 20 s).
    pub poll_wait: Duration,
}

/// The assembled relay: ingest, dispatcher and poller over one queue pair.
pub struct LocalStack {
    pub ingest: Arc<Ingest>,
    pub dispatcher: Arc<Dispatcher>,
    pub poller: Arc<Poller>,
    pub queues: QueuePair,
}

/// Optional parts, set before [`LocalStackBuilder::build`].
pub struct LocalStackBuilder {
    parts: Parts,
    live: Option<LivePublishing>,
    attempts: Option<Arc<dyn AttemptLedger>>,
    jitter: Option<JitterSource>,
    batch_time: Option<Duration>,
}

impl LocalStack {
    pub fn assemble(parts: Parts) -> LocalStackBuilder {
        LocalStackBuilder {
            parts,
            live: None,
            attempts: None,
            jitter: None,
            batch_time: None,
        }
    }

    /// The ingest routes (`POST /events`, `POST /events/batch`, `GET /health`).
    pub fn router(&self) -> axum::Router {
        router(Arc::clone(&self.ingest))
    }

    /// Runs `workers` receive loops until `shutdown` completes; a batch in hand is finished.
    pub async fn run_poller(&self, workers: usize, shutdown: impl Future<Output = ()>) {
        Arc::clone(&self.poller).run(workers, shutdown).await
    }
}

impl LocalStackBuilder {
    /// Ingest also pushes each stored event to this live channel.
    pub fn with_live(mut self, live: LivePublishing) -> Self {
        self.live = Some(live);
        self
    }

    /// A shared attempts ledger instead of the dispatcher's in-memory one.
    pub fn with_attempts(mut self, ledger: Arc<dyn AttemptLedger>) -> Self {
        self.attempts = Some(ledger);
        self
    }

    /// The queue's visibility timeout: each batch must settle within it
    /// ([`Poller::with_batch_time_limit`]).
    pub fn with_batch_time_limit(mut self, limit: Duration) -> Self {
        self.batch_time = Some(limit);
        self
    }

    /// Fixed jitter, for exact tests.
    pub fn with_jitter(mut self, jitter: JitterSource) -> Self {
        self.jitter = Some(jitter);
        self
    }

    pub fn build(self) -> LocalStack {
        let Parts {
            queues,
            ingest_secrets,
            chat_id_key,
            deliverer,
            retry,
            metrics,
            poll_wait,
        } = self.parts;
        let dispatch_queues = DispatchQueues {
            source: queues.queue.clone(),
            dead_letter: queues.dead_letter.clone(),
        };
        let mut dispatcher = Dispatcher::new(deliverer, dispatch_queues, retry, metrics.clone());
        if let Some(ledger) = self.attempts {
            dispatcher = dispatcher.with_attempts(ledger);
        }
        if let Some(jitter) = self.jitter {
            dispatcher = dispatcher.with_jitter(jitter);
        }
        let dispatcher = Arc::new(dispatcher);
        let mut ingest = Ingest::new(ingest_secrets, chat_id_key, queues.queue.clone(), metrics);
        if let Some(live) = self.live {
            ingest = ingest.with_live(live);
        }
        let mut poller = Poller::new(queues.queue.clone(), Arc::clone(&dispatcher), poll_wait);
        if let Some(limit) = self.batch_time {
            poller = poller.with_batch_time_limit(limit);
        }
        let poller = Arc::new(poller);
        LocalStack {
            ingest: Arc::new(ingest),
            dispatcher,
            poller,
            queues,
        }
    }
}
