//! A real moto server (SQS and Secrets Manager) started per test on a free loopback port, and
//! the FIFO queue pairs the tests create on it, wired as the template wires them.

use crate::{free_port, repo_root};
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::QueueAttributeName;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// How many times [`MotoServer::start`] starts moto before it gives up.
const START_ATTEMPTS: usize = 3;

/// A moto SQS server for one test; killed when dropped.
pub struct MotoServer {
    pub endpoint: String,
    /// Held only to be killed on drop (`kill_on_drop`).
    _child: Child,
}

impl MotoServer {
    /// Starts `moto_server` (from `MOTO_SERVER`, else the project's `.venv`) on a free port
    /// and waits until it answers. A server that exits before answering (the port was taken
    /// between choosing it and moto binding it) is started again on another port, up to
    /// [`START_ATTEMPTS`] times; then the test fails saying how moto exited.
    pub async fn start() -> MotoServer {
        let binary = std::env::var_os("MOTO_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join(".venv/bin/moto_server"));
        assert!(
            binary.exists(),
            "moto_server not found at {}: run `make tools` (or scripts/tools.sh), which installs the pinned moto[server] into .venv",
            binary.display()
        );
        let mut exits = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let mut child = Command::new(&binary)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| panic!("could not start {}: {e}", binary.display()));
            let endpoint = format!("http://127.0.0.1:{port}");
            match wait_ready(&mut child, &endpoint).await {
                Ok(()) => {
                    return MotoServer {
                        endpoint,
                        _child: child,
                    };
                }
                Err(exit) => exits.push(format!("port {port}: {exit}")),
            }
        }
        panic!(
            "{} exited before answering, {START_ATTEMPTS} times: {}",
            binary.display(),
            exits.join("; ")
        );
    }

    /// Forgets every queue and message (moto's own reset endpoint).
    pub async fn reset(&self) {
        let response = reqwest::Client::new()
            .post(format!("{}/moto-api/reset", self.endpoint))
            .send()
            .await
            .expect("moto reset request");
        assert!(
            response.status().is_success(),
            "moto reset answered {}",
            response.status()
        );
    }

    /// An SDK configuration pointed at this server (every service), with fake credentials,
    /// through the relay's own SDK HTTP client (the one the functions use).
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        sdk_config_at(&self.endpoint).await
    }

    /// An SQS client pointed at this server, with fake credentials.
    pub async fn client(&self) -> Client {
        Client::new(&self.sdk_config().await)
    }

    /// Stores `value` as the `SecretString` of a new Secrets Manager secret; returns its ARN.
    pub async fn create_secret(&self, name: &str, value: &str) -> String {
        aws_sdk_secretsmanager::Client::new(&self.sdk_config().await)
            .create_secret()
            .name(name)
            .secret_string(value)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "create secret {name}: {}",
                    aws_sdk_secretsmanager::error::DisplayErrorContext(e)
                )
            })
            .arn()
            .expect("a new secret has an ARN")
            .to_owned()
    }

    /// Creates `{name}.fifo` and `{name}-dlq.fifo` wired as the template wires them
    /// (template.yaml: both FIFO, explicit deduplication ids, 1 MiB messages, deduplication
    /// and throughput per message group; the queue's redrive policy and visibility timeout).
    pub async fn create_fifo_with_dlq(
        &self,
        name: &str,
        max_receive_count: u32,
        visibility_secs: u32,
    ) -> FifoQueues {
        let client = self.client().await;
        let dlq_url = create_fifo(&client, &format!("{name}-dlq.fifo"), &[]).await;
        let dlq_arn = client
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("get DLQ arn")
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .expect("DLQ has an ARN");
        let redrive = format!(
            r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"{max_receive_count}"}}"#
        );
        let queue_url = create_fifo(
            &client,
            &format!("{name}.fifo"),
            &[
                (QueueAttributeName::RedrivePolicy, redrive),
                (
                    QueueAttributeName::VisibilityTimeout,
                    visibility_secs.to_string(),
                ),
            ],
        )
        .await;
        FifoQueues {
            client,
            queue_url,
            dlq_url,
        }
    }
}

/// Waits until the moto started as `child` answers on `endpoint`: `Err` with its exit status if
/// it exited first. An answer counts only while `child` is still running and only if it is a
/// success (moto's own API page): whatever else may hold the port is not taken for moto.
async fn wait_ready(child: &mut Child, endpoint: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let http = reqwest::Client::new();
    loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| format!("cannot wait on it: {e}"))?
        {
            return Err(format!("moto_server exited ({status})"));
        }
        let probe = http.get(format!("{endpoint}/moto-api/")).send().await;
        if probe.is_ok_and(|answer| answer.status().is_success()) {
            // Answered: by this child, unless it exited meanwhile (then someone else did).
            return match child.try_wait() {
                Ok(None) => Ok(()),
                Ok(Some(status)) => Err(format!("moto_server exited ({status})")),
                Err(e) => Err(format!("cannot wait on it: {e}")),
            };
        }
        assert!(
            Instant::now() < deadline,
            "moto_server is running but did not answer on {endpoint} within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create_fifo(
    client: &Client,
    name: &str,
    extra: &[(QueueAttributeName, String)],
) -> String {
    let mut request = client
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::FifoQueue, "true")
        .attributes(QueueAttributeName::ContentBasedDeduplication, "false")
        .attributes(QueueAttributeName::MaximumMessageSize, "1048576")
        // As template.yaml sets both queues: a deduplication id counts within its group, and
        // throughput is per group (high-throughput FIFO).
        .attributes(QueueAttributeName::DeduplicationScope, "messageGroup")
        .attributes(QueueAttributeName::FifoThroughputLimit, "perMessageGroupId");
    for (key, value) in extra {
        request = request.attributes(key.clone(), value);
    }
    request
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "create queue {name}: {}",
                aws_sdk_sqs::error::DisplayErrorContext(e)
            )
        })
        .queue_url()
        .expect("queue url")
        .to_owned()
}

/// A FIFO queue and its DLQ on a test server.
pub struct FifoQueues {
    pub client: Client,
    pub queue_url: String,
    pub dlq_url: String,
}

impl FifoQueues {
    /// Messages currently stored (visible + in flight), as SQS reports them.
    pub async fn depth(&self, url: &str) -> usize {
        let attributes = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .expect("get queue attributes");
        let read = |name: QueueAttributeName| {
            attributes
                .attributes()
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0)
        };
        read(QueueAttributeName::ApproximateNumberOfMessages)
            + read(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
    }
}

/// An SDK configuration pointed at `endpoint` (every service), region us-east-1 and fake
/// credentials, through the relay's own SDK HTTP client (the one the functions use): for moto,
/// and for the tests' own servers and dead ports.
pub async fn sdk_config_at(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(relay_shared::aws_http::http_client())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .load()
        .await
}
