//! A minimal Lambda Runtime API (the 2018-06-01 interface a custom runtime polls), enough to
//! start a release binary as Lambda does and time it: `GET …/invocation/next` hands out the
//! armed events in order, with the `lambda-runtime-*` headers, and then holds further polls (the
//! function is idle, as between invocations); `POST …/invocation/{id}/response` and `/error`,
//! and `POST …/init/error`, are recorded with the instant they arrived.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What the function did, when.
#[derive(Debug)]
pub enum ApiEvent {
    /// It asked for the next invocation.
    Next(Instant),
    Response(Instant, Bytes),
    Error(Instant, Bytes),
    InitError(Instant, Bytes),
}

struct Invocation {
    request_id: String,
    function_arn: String,
    payload: Vec<u8>,
}

struct Shared {
    armed: Mutex<VecDeque<Invocation>>,
    events: mpsc::UnboundedSender<ApiEvent>,
}

pub struct RuntimeApi {
    /// What `AWS_LAMBDA_RUNTIME_API` is set to.
    pub address: SocketAddr,
    shared: Arc<Shared>,
    events: mpsc::UnboundedReceiver<ApiEvent>,
    task: tokio::task::JoinHandle<()>,
}

/// How long a second `next` is held before being answered with an error (the bench kills
/// the function well before).
const HOLD: Duration = Duration::from_secs(60);

impl RuntimeApi {
    pub async fn start() -> RuntimeApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the runtime API");
        let address = listener.local_addr().expect("runtime API address");
        let (tx, events) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            armed: Mutex::new(VecDeque::new()),
            events: tx,
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(|s: State<Arc<Shared>>, b: Bytes| record(s, b, ApiEvent::Response)),
            )
            .route(
                "/2018-06-01/runtime/invocation/{id}/error",
                post(|s: State<Arc<Shared>>, b: Bytes| record(s, b, ApiEvent::Error)),
            )
            .route(
                "/2018-06-01/runtime/init/error",
                post(|s: State<Arc<Shared>>, b: Bytes| record(s, b, ApiEvent::InitError)),
            )
            .with_state(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        RuntimeApi {
            address,
            shared,
            events,
            task,
        }
    }

    /// Sets the events the next polls hand out, one each in order (request id, payload), and
    /// forgets what earlier spawns did.
    pub fn arm(&mut self, function_name: &str, invocations: Vec<(String, Vec<u8>)>) {
        while self.events.try_recv().is_ok() {}
        let function_arn =
            format!("arn:aws:lambda:us-east-1:123456789012:function:{function_name}");
        *self.shared.armed.lock().unwrap() = invocations
            .into_iter()
            .map(|(request_id, payload)| Invocation {
                request_id,
                function_arn: function_arn.clone(),
                payload,
            })
            .collect();
    }

    /// The next thing the function did, or `None` after `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<ApiEvent> {
        tokio::time::timeout(timeout, self.events.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn next(State(shared): State<Arc<Shared>>) -> Response {
    let at = Instant::now();
    // Take the event before reporting the poll: once the bench has seen this poll it may kill
    // the process and arm the next spawn's event, which this poll must not take.
    let armed = shared.armed.lock().unwrap().pop_front();
    let _ = shared.events.send(ApiEvent::Next(at));
    let Some(invocation) = armed else {
        // Idle between invocations; the bench ends the process while this waits.
        tokio::time::sleep(HOLD).await;
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let deadline = relay_shared::clock::unix_millis() + 30_000;
    (
        StatusCode::OK,
        [
            ("content-type", "application/json".to_owned()),
            ("lambda-runtime-aws-request-id", invocation.request_id),
            ("lambda-runtime-deadline-ms", deadline.to_string()),
            (
                "lambda-runtime-invoked-function-arn",
                invocation.function_arn,
            ),
            (
                "lambda-runtime-trace-id",
                "Root=1-6766f5d4-1b2c3d4e5f60718293a4b5c6;Parent=53995c3f42cd8ad8;Sampled=0"
                    .to_owned(),
            ),
        ],
        invocation.payload,
    )
        .into_response()
}

async fn record(
    State(shared): State<Arc<Shared>>,
    body: Bytes,
    kind: fn(Instant, Bytes) -> ApiEvent,
) -> StatusCode {
    let _ = shared.events.send(kind(Instant::now(), body));
    StatusCode::ACCEPTED
}
