//! A real HTTP receiver that verifies every delivery with the public `standardwebhooks` crate,
//! as a user's app would, and answers as each test scripts it.

use crate::WEBHOOK_SECRET;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

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

/// Decides the receiver's answer to each request: (status, extra headers). It runs under the
/// receiver's lock on its deliveries, so it must not call back into the receiver.
pub type Script =
    Arc<dyn Fn(&Delivery, usize) -> (StatusCode, Vec<(&'static str, String)>) + Send + Sync>;

/// A real HTTP receiver on 127.0.0.1:0 that verifies every delivery as a user's app would.
pub struct VerifyingReceiver {
    pub url: String,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    /// Connections accepted so far.
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct VerifyingReceiverState {
    webhook: Arc<standardwebhooks::Webhook>,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    script: Script,
}

impl VerifyingReceiver {
    /// Answers 204 to everything.
    pub async fn start_ok() -> VerifyingReceiver {
        VerifyingReceiver::start(Arc::new(|_, _| (StatusCode::NO_CONTENT, Vec::new()))).await
    }

    /// Answers as `script` says; the second argument counts earlier requests.
    pub async fn start(script: Script) -> VerifyingReceiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let url = format!(
            "http://{}/api/webhook/chat-whatsapp",
            listener.local_addr().unwrap()
        );
        let deliveries = Arc::new(Mutex::new(Vec::new()));
        let state = VerifyingReceiverState {
            webhook: Arc::new(
                standardwebhooks::Webhook::new(WEBHOOK_SECRET).expect("webhook secret"),
            ),
            deliveries: Arc::clone(&deliveries),
            script,
        };
        let app = Router::new()
            .route("/api/webhook/chat-whatsapp", axum::routing::post(receive))
            .with_state(state);
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&connections);
        let listener = listener.tap_io(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("receiver serve");
        });
        VerifyingReceiver {
            url,
            deliveries,
            connections,
            task,
        }
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().unwrap().clone()
    }

    /// How many connections the receiver has accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for VerifyingReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State(state): State<VerifyingReceiverState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
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
    // One lock for the count the script sees and the push: two requests at once cannot both
    // be told they are the n-th.
    let (status, extra) = {
        let mut deliveries = state.deliveries.lock().unwrap();
        let (status, extra) = (state.script)(&delivery, deliveries.len());
        delivery.answered = status.as_u16();
        deliveries.push(delivery);
        (status, extra)
    };
    let mut response = status.into_response();
    for (name, value) in extra {
        response
            .headers_mut()
            .insert(name, HeaderValue::from_str(&value).unwrap());
    }
    response
}
