//! Test support shared by the integration and end-to-end suites: a real SQS-protocol server
//! (moto, started per test on a free loopback port; it serves Secrets Manager too), a real
//! HTTP receiver that verifies deliveries with the public `standardwebhooks` crate, and
//! request-signing helpers.
//!
//! Nothing here skips: a missing moto is a test failure that says how to install it.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::QueueAttributeName;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use relay_shared::signature::SecretSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

/// Secrets used across the tests (24+ random-looking bytes, as the relay requires).
pub const INGEST_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const WEBHOOK_SECRET: &str = "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24tdGVzdHM=";
/// The key that names chats in group ids (`CHAT_ID_KEY`, 32+ characters).
pub const CHAT_ID_KEY: &str = "test-chat-id-key-never-in-any-log-0123";

/// [`CHAT_ID_KEY`], parsed.
pub fn chat_id_key() -> relay_shared::envelope::ChatIdKey {
    relay_shared::envelope::ChatIdKey::new(CHAT_ID_KEY).expect("test chat id key")
}

/// The repository root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A moto SQS server for one test; killed when dropped.
pub struct MotoServer {
    pub endpoint: String,
    /// Held only to be killed on drop (`kill_on_drop`).
    _child: Child,
}

impl MotoServer {
    /// Starts `moto_server` (from `MOTO_SERVER`, else the project's `.venv`) on a free port
    /// and waits until it answers.
    pub async fn start() -> MotoServer {
        let binary = std::env::var_os("MOTO_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join(".venv/bin/moto_server"));
        assert!(
            binary.exists(),
            "moto_server not found at {}: run `make tools` (or scripts/tools.sh), which installs the pinned moto[server] into .venv",
            binary.display()
        );
        let port = free_port();
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {}: {e}", binary.display()));
        let endpoint = format!("http://127.0.0.1:{port}");
        let server = MotoServer {
            endpoint,
            _child: child,
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let http = reqwest::Client::new();
        loop {
            let probe = http
                .get(format!("{}/moto-api/", self.endpoint))
                .send()
                .await;
            if probe.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer on {} within 60 s",
                self.endpoint
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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

    /// An SDK configuration pointed at this server (every service), with fake credentials.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "test", "test", None, None, "moto",
            ))
            .load()
            .await
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

    /// Creates `{name}.fifo` and `{name}-dlq.fifo` wired as the template wires them.
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
        .attributes(QueueAttributeName::MaximumMessageSize, "1048576");
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

/// The project's Python (`.venv`), with the PyPI `standardwebhooks` library for interop tests.
pub fn venv_python() -> PathBuf {
    let python = repo_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} not found: run `make tools` (scripts/tools.sh installs the pinned Python tools, standardwebhooks included)",
        python.display()
    );
    python
}

/// Now, as an envelope `timestamp` (a `qr` must be fresh to be delivered).
pub fn rfc3339_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("RFC 3339 formats any time")
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free port")
}

/// The three Standard Webhooks headers plus `Content-Type: application/json`, signed now.
pub fn signed_headers(secret: &str, msg_id: &str, body: &str) -> HeaderMap {
    signed_headers_at(secret, msg_id, body, relay_shared::clock::unix_seconds())
}

pub fn signed_headers_at(secret: &str, msg_id: &str, body: &str, timestamp: i64) -> HeaderMap {
    let secrets = SecretSet::parse(secret).expect("test secret");
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    for (name, value) in secrets.headers(msg_id, timestamp, body) {
        headers.insert(name, HeaderValue::from_str(&value).unwrap());
    }
    headers
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub webhook_id: String,
    /// Every request header, as received.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub content_type: Option<String>,
    /// Whether `standardwebhooks::Webhook::verify` accepted it with the webhook secret.
    pub verified: bool,
    /// The status the receiver answered.
    pub answered: u16,
}

/// Decides the receiver's answer to each request: (status, extra headers).
pub type Script =
    Arc<dyn Fn(&Delivery, usize) -> (StatusCode, Vec<(&'static str, String)>) + Send + Sync>;

/// A real HTTP receiver on 127.0.0.1:0 that verifies every delivery as a user's app would.
pub struct Receiver {
    pub url: String,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct ReceiverState {
    webhook: Arc<standardwebhooks::Webhook>,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    script: Script,
}

impl Receiver {
    /// Answers 204 to everything.
    pub async fn start_ok() -> Receiver {
        Receiver::start(Arc::new(|_, _| (StatusCode::NO_CONTENT, Vec::new()))).await
    }

    /// Answers as `script` says; the second argument counts earlier requests.
    pub async fn start(script: Script) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let url = format!(
            "http://{}/api/webhook/chat-whatsapp",
            listener.local_addr().unwrap()
        );
        let deliveries = Arc::new(Mutex::new(Vec::new()));
        let state = ReceiverState {
            webhook: Arc::new(
                standardwebhooks::Webhook::new(WEBHOOK_SECRET).expect("webhook secret"),
            ),
            deliveries: Arc::clone(&deliveries),
            script,
        };
        let app = Router::new()
            .route("/api/webhook/chat-whatsapp", axum::routing::post(receive))
            .with_state(state);
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("receiver serve");
        });
        Receiver {
            url,
            deliveries,
            task,
        }
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(State(state): State<ReceiverState>, headers: HeaderMap, body: Bytes) -> Response {
    let webhook_id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let verified = state.webhook.verify(&body, &headers).is_ok();
    let mut delivery = Delivery {
        webhook_id,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
            .collect(),
        body,
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        verified,
        answered: 0,
    };
    let earlier = state.deliveries.lock().unwrap().len();
    let (status, extra) = (state.script)(&delivery, earlier);
    delivery.answered = status.as_u16();
    state.deliveries.lock().unwrap().push(delivery);
    let mut response = status.into_response();
    for (name, value) in extra {
        response
            .headers_mut()
            .insert(name, HeaderValue::from_str(&value).unwrap());
    }
    response
}

/// A child process whose stdout and stderr lines are collected as they come; killed on drop.
pub struct Process {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Process {
    pub fn spawn(
        program: impl AsRef<std::ffi::OsStr>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Process {
        use tokio::io::AsyncBufReadExt;
        let mut command = Command::new(program.as_ref());
        command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", program.as_ref()));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        for stream in [
            Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(stderr),
        ] {
            let lines = Arc::clone(&lines);
            tokio::spawn(async move {
                let mut reader = tokio::io::BufReader::new(stream).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Process { child, lines }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until `count` lines contain `needle`; panics with everything printed so far.
    pub async fn wait_for(&self, needle: &str, count: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let matching: Vec<String> = self
                .lines()
                .into_iter()
                .filter(|l| l.contains(needle))
                .collect();
            if matching.len() >= count {
                return matching;
            }
            assert!(
                Instant::now() < deadline,
                "waited {timeout:?} for {count} line(s) containing {needle:?}; output so far:\n{}",
                self.lines().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM, waits for the exit status, and returns it with every line the process
    /// printed, its last words included.
    pub async fn terminate_with_output(self) -> (std::process::ExitStatus, Vec<String>) {
        let lines = Arc::clone(&self.lines);
        let status = self.terminate().await;
        // The readers finish the pipes after the exit; give them a moment to reach the end.
        let mut seen = 0;
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = lines.lock().unwrap().len();
            if now == seen {
                break;
            }
            seen = now;
        }
        let printed = lines.lock().unwrap().clone();
        (status, printed)
    }

    /// Sends SIGTERM (a clean stop) and waits for the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
        }
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("process stops within 20 s of SIGTERM")
            .expect("wait for process")
    }
}

/// Events carrying every kind of personal data and credential the relay handles, and the check
/// that a log or metric text holds none of it (nor a secret, the chat id key or a signature).
pub mod personal_data {
    use super::{CHAT_ID_KEY, INGEST_SECRET, WEBHOOK_SECRET};

    /// A login QR code: a credential.
    pub const QR_DATA: &str =
        "data:image/png;base64,UVJMT0dJTkNSRURFTlRJQUwtbmV2ZXItbG9nLW1lLTAxMjM0NTY3ODk=";
    /// Message text with personal data in it.
    pub const CONTENT: &str = "Meu CPF é 123.456.789-00, não conte a ninguém";
    /// The customer's WhatsApp id (a phone number), the peer of the chat.
    pub const PEER: &str = "5511987654321@c.us";
    /// The relay's own account (in a status event's `clientInfo.wid`).
    pub const OWN_WID: &str = "5521912340000@c.us";

    /// Stamped now: a `qr` older than the QR lifetime is not delivered at all.
    pub fn qr_event() -> String {
        let stamp = super::rfc3339_now();
        format!(
            r#"{{"event":"qr","data":{{"qr":"{QR_DATA}","available":true}},"timestamp":"{stamp}"}}"#
        )
    }

    pub fn status_event() -> String {
        format!(
            r#"{{"event":"status","data":{{"connected":true,"clientInfo":{{"wid":"{OWN_WID}","pushname":"Atimo","platform":"android"}}}},"timestamp":"2025-12-21T18:22:44.850Z"}}"#
        )
    }

    /// A message of the chat with [`PEER`]; `direction` picks who sent it (any other value is
    /// refused by ingest, with the phone numbers still in the body).
    pub fn message_event(direction: &str) -> String {
        let (from, to) = match direction {
            "outgoing" => (OWN_WID, PEER),
            _ => (PEER, OWN_WID),
        };
        format!(
            r#"{{"event":"message","data":{{"message":{{"id":"3EB0-{direction}","from":"{from}","to":"{to}","content":"{CONTENT}","type":"text","direction":"{direction}","timestamp":"2025-12-21T18:02:52.836Z","status":"received"}}}},"timestamp":"2025-12-21T18:02:52.900Z"}}"#
        )
    }

    /// Panics, naming what was found, if `text` holds any of it.
    pub fn assert_free_of_personal_data(text: &str, what: &str) {
        let secret_key = |s: &str| s.trim_start_matches("whsec_").to_owned();
        let digits = |jid: &str| jid.trim_end_matches("@c.us").to_owned();
        let forbidden = [
            ("the QR code", QR_DATA.to_owned()),
            ("a piece of the QR code", QR_DATA[22..50].to_owned()),
            ("the message text", CONTENT.to_owned()),
            ("a piece of the message text", "123.456.789-00".to_owned()),
            ("the customer's phone number", digits(PEER)),
            (
                "the end of the customer's phone number",
                digits(PEER)[5..].to_owned(),
            ),
            ("the account's phone number", digits(OWN_WID)),
            ("the ingest secret", secret_key(INGEST_SECRET)),
            ("the webhook secret", secret_key(WEBHOOK_SECRET)),
            ("the chat id key", CHAT_ID_KEY.to_owned()),
            ("a signature", "v1,".to_owned()),
        ];
        for (name, needle) in forbidden {
            assert!(!text.contains(&needle), "{what} contain {name}:\n{text}");
        }
    }

    /// Whether `group` is a chat group named by the keyed hash: `{session}:chat:{32 hex}`.
    pub fn is_hashed_chat_group(group: &str) -> bool {
        group.split_once(":chat:").is_some_and(|(_, hash)| {
            hash.len() == 32 && hash.bytes().all(|b| b.is_ascii_hexdigit())
        })
    }
}
