//! The AWS calls a function makes at init and on its first invocations (Secrets Manager
//! `GetSecretValue` and `BatchGetSecretValue`; SQS `GetQueueAttributes`, `SendMessage`,
//! `SendMessageBatch`), answered at once from memory, for the cold-start measure only.
//!
//! Why: init is judged against a hello-world that calls nothing, and moto's Python spends 3–4 ms
//! on each call, about twice hello-world's whole init, time no change to a function can win
//! back (on AWS it is the service's own latency, also not the function's). Against this
//! endpoint the function's own path still runs in full (the SDK's signing, serialising, HTTP
//! and parsing, the connection and its DNS lookup), so init shows what the function costs
//! itself. The cold-start section runs once against moto too, which stores what ingest sends;
//! the SQS code is checked against moto by the tests, never against this.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What the endpoint holds and counts.
#[derive(Default)]
struct Shared {
    /// Secret ARN → `SecretString`.
    secrets: HashMap<String, String>,
    /// Messages accepted by `SendMessage` and `SendMessageBatch`.
    sent: AtomicUsize,
}

pub struct InstantAws {
    /// The endpoint URL, `http://127.0.0.1:<port>`.
    pub endpoint: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl InstantAws {
    /// Serves `secrets` (ARN → value) and accepts any message to any queue.
    pub async fn start(secrets: HashMap<String, String>) -> InstantAws {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the instant AWS endpoint");
        let address: SocketAddr = listener.local_addr().expect("instant AWS address");
        let shared = Arc::new(Shared {
            secrets,
            sent: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/", post(answer))
            .with_state(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        InstantAws {
            endpoint: format!("http://{address}"),
            shared,
            task,
        }
    }

    /// Messages accepted so far.
    pub fn sent(&self) -> usize {
        self.shared.sent.load(Ordering::Relaxed)
    }
}

impl Drop for InstantAws {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One JSON-protocol call, dispatched on `X-Amz-Target`. Anything else is a 400 naming the
/// operation, so a function that starts calling something new fails the bench loudly.
async fn answer(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    let answer = match target {
        "secretsmanager.GetSecretValue" => {
            let arn = request["SecretId"].as_str().unwrap_or_default();
            match shared.secrets.get(arn) {
                Some(value) => json!({"ARN": arn, "Name": arn, "SecretString": value,
                    "VersionId": "v1", "VersionStages": ["AWSCURRENT"]}),
                None => return refuse("ResourceNotFoundException", "no such secret"),
            }
        }
        "secretsmanager.BatchGetSecretValue" => {
            let ids = request["SecretIdList"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let (mut values, mut errors) = (Vec::new(), Vec::new());
            for id in ids.iter().filter_map(Value::as_str) {
                match shared.secrets.get(id) {
                    Some(value) => {
                        values.push(json!({"ARN": id, "Name": id,
                        "SecretString": value, "VersionId": "v1", "VersionStages": ["AWSCURRENT"]}))
                    }
                    None => errors.push(json!({"SecretId": id,
                        "ErrorCode": "ResourceNotFoundException", "Message": "no such secret"})),
                }
            }
            json!({"SecretValues": values, "Errors": errors})
        }
        "AmazonSQS.GetQueueAttributes" => {
            json!({"Attributes": {"QueueArn": "arn:aws:sqs:us-east-1:123456789012:bench.fifo"}})
        }
        "AmazonSQS.SendMessage" => {
            let n = shared.sent.fetch_add(1, Ordering::Relaxed);
            json!({"MessageId": format!("m-{n}"), "MD5OfMessageBody": "0", "SequenceNumber": n.to_string()})
        }
        "AmazonSQS.SendMessageBatch" => {
            let entries = request["Entries"].as_array().cloned().unwrap_or_default();
            let n = shared.sent.fetch_add(entries.len(), Ordering::Relaxed);
            let successful: Vec<Value> = entries
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    json!({"Id": e["Id"], "MessageId": format!("m-{}", n + i),
                    "MD5OfMessageBody": "0", "SequenceNumber": (n + i).to_string()})
                })
                .collect();
            json!({"Successful": successful, "Failed": []})
        }
        other => return refuse("UnknownOperationException", other),
    };
    (
        StatusCode::OK,
        [("content-type", "application/x-amz-json-1.0")],
        answer.to_string(),
    )
        .into_response()
}

fn refuse(code: &str, message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [("content-type", "application/x-amz-json-1.0")],
        json!({"__type": code, "message": format!("instant AWS endpoint: {message}")}).to_string(),
    )
        .into_response()
}
