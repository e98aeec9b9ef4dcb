//! Ingest: a signed HTTP request in, a stored event (or a clear refusal) out. Every status
//! code, its error code and what a sender should do: docs/contract.md, Status codes.
//!
//! Checks run cheapest and least trusting first: content type (415), size (413) and time (408:
//! the body must arrive within [`BODY_READ_TIMEOUT`]), signature on the raw bytes (401), JSON
//! syntax (400), schema (422), then the queue (202, or 503 with `Retry-After` when it did not
//! take the event). `202` is only ever sent after the queue confirmed it stored the event.
//! [`router`] serves the same routes on Lambda (through `lambda_http`) and in the local stack
//! (through the `relay` binary's server).

use crate::clock::unix_millis;
use crate::envelope::{self, ChatIdKey, EventType, Routing, SchemaViolation};
use crate::live::publish::LivePublishing;
use crate::queue::{MAX_BATCH, MAX_MESSAGE_BYTES, NewMessage, Producer, QueueError};
use crate::signature::{SecretSet, VerifyError};
use crate::strict_json;
use crate::telemetry::{Metrics, Summary, dimension, metric};
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Seconds a sender should wait before retrying after a 503.
pub const RETRY_AFTER_SECS: u64 = 5;

/// The longest the body of one request may take to arrive. The size limit bounds memory; this
/// bounds the time a sender trickling bytes holds a task and a connection (`relay local`). On
/// Lambda the body is already buffered, so it never fires there.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The ingest service: secrets to verify with, the key that names chats, and the queue to
/// store in.
pub struct Ingest {
    secrets: SecretSet,
    chat_ids: ChatIdKey,
    queue: Arc<dyn Producer>,
    metrics: Metrics,
    /// Where stored events are also pushed live, if anywhere.
    live: Option<LivePublishing>,
    /// [`BODY_READ_TIMEOUT`], or another bound (tests).
    body_timeout: Duration,
}

/// An event the queue has stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub event_id: String,
    pub event_type: EventType,
    pub group_id: String,
}

/// Why a request was refused. `Display` is the message the sender sees; [`Rejection::status`]
/// is the one place that maps it to a status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("Content-Type must be application/json, found {0}")]
    UnsupportedMediaType(String),
    #[error(
        "body is over the limit of {MAX_MESSAGE_BYTES} bytes (1 MiB, the queue's message size limit)"
    )]
    TooLarge,
    #[error("{0}")]
    Unauthorized(VerifyError),
    #[error("malformed JSON at line {line}, column {column}: {detail}")]
    MalformedJson {
        line: usize,
        column: usize,
        detail: String,
    },
    #[error("body is not valid UTF-8; send JSON encoded as UTF-8")]
    NotUtf8,
    #[error("{0}")]
    Schema(SchemaViolation),
    #[error(
        "the queue is unavailable and nothing was stored: keep the event and retry in {RETRY_AFTER_SECS} s"
    )]
    QueueUnavailable,
    #[error(
        "the queue refused this event ({0}): sending the same event again will be refused again"
    )]
    QueueRefusedEvent(String),
    #[error(
        "the relay's queue refused the request: a configuration problem on the relay's side (its log names the cause), not an outage; retrying helps only once the operator fixes it"
    )]
    QueueMisconfigured,
    #[error(
        "the body did not arrive within {} s: send the whole request at once; nothing was stored",
        .0.as_secs_f32()
    )]
    BodyTimeout(Duration),
    #[error("no such route: use POST /events, POST /events/batch or GET /health")]
    NotFound,
    #[error("method not allowed: use POST /events, POST /events/batch or GET /health")]
    MethodNotAllowed,
}

impl Rejection {
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Rejection::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::Unauthorized(VerifyError::NotUtf8) | Rejection::NotUtf8 => {
                StatusCode::BAD_REQUEST
            }
            Rejection::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Rejection::MalformedJson { .. } => StatusCode::BAD_REQUEST,
            Rejection::Schema(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Rejection::QueueUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::QueueRefusedEvent(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Rejection::QueueMisconfigured => StatusCode::INTERNAL_SERVER_ERROR,
            Rejection::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Rejection::NotFound => StatusCode::NOT_FOUND,
            Rejection::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// A stable machine-readable code: the `error` field and the `Reason` metric dimension.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::UnsupportedMediaType(_) => "unsupported_media_type",
            Rejection::TooLarge => "payload_too_large",
            Rejection::Unauthorized(VerifyError::NotUtf8) | Rejection::NotUtf8 => "malformed_json",
            Rejection::Unauthorized(_) => "unauthorized",
            Rejection::MalformedJson { .. } => "malformed_json",
            Rejection::Schema(_) => "schema_violation",
            Rejection::QueueUnavailable => "queue_unavailable",
            Rejection::QueueRefusedEvent(_) => "queue_refused_event",
            Rejection::QueueMisconfigured => "queue_misconfigured",
            Rejection::BodyTimeout(_) => "request_timeout",
            Rejection::NotFound => "not_found",
            Rejection::MethodNotAllowed => "method_not_allowed",
        }
    }

    /// The JSON error body: `error`, `message`, and the details a program can use.
    pub fn body(&self) -> Value {
        let mut body = json!({"error": self.code(), "message": self.to_string()});
        match self {
            Rejection::TooLarge => body["limit"] = json!(MAX_MESSAGE_BYTES),
            Rejection::MalformedJson { line, column, .. } => {
                body["line"] = json!(line);
                body["column"] = json!(column);
            }
            Rejection::Schema(v) => {
                body["path"] = json!(v.path);
                body["expected"] = json!(v.expected);
            }
            _ => {}
        }
        body
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        if self == Rejection::QueueUnavailable {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}

impl Ingest {
    pub fn new(
        secrets: SecretSet,
        chat_ids: ChatIdKey,
        queue: Arc<dyn Producer>,
        metrics: Metrics,
    ) -> Self {
        Ingest {
            secrets,
            chat_ids,
            queue,
            metrics,
            live: None,
            body_timeout: BODY_READ_TIMEOUT,
        }
    }

    /// Another bound than [`BODY_READ_TIMEOUT`] on a body's arrival.
    pub fn with_body_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = timeout;
        self
    }

    /// Also push every stored event to its session's live channel (after the queue stored
    /// it; bounded; never changes the answer).
    pub fn with_live(mut self, live: LivePublishing) -> Self {
        self.live = Some(live);
        self
    }

    /// `POST /events`: one envelope.
    pub async fn accept_event(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Accepted, Rejection> {
        let received_ms = self.live.as_ref().map(|_| unix_millis());
        let text = self.authenticate(headers, body)?;
        let (value, repeats) = strict_json::parse(text).map_err(malformed)?;
        if let Some(repeat) = repeats.into_iter().next() {
            return Err(Rejection::Schema(repeat.into()));
        }
        let routing =
            envelope::validate(&value, body, &self.chat_ids).map_err(Rejection::Schema)?;
        check_storable(text)?;
        self.queue
            .send(new_message(text, &routing))
            .await
            .map_err(|e| queue_failure(&routing, &e))?;
        if let (Some(live), Some(received_ms)) = (&self.live, received_ms) {
            let event = live.prepare(&value, text, &routing, received_ms);
            live.publish_all(event.into_iter().collect()).await;
        }
        Ok(accepted(routing))
    }

    /// `POST /events/batch`: up to 10 envelopes in a JSON array, one signature for the whole
    /// body. Each item is validated and stored on its own (its own bytes, its own id).
    pub async fn accept_batch(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Vec<ItemResult>, Rejection> {
        let received_ms = self.live.as_ref().map(|_| unix_millis());
        let text = self.authenticate(headers, body)?;
        // One strict parse (syntax, repeated keys per item), then the items' exact bytes.
        let (values, repeats) = match strict_json::parse(text).map_err(malformed)? {
            (Value::Array(array), repeats) if (1..=MAX_BATCH).contains(&array.len()) => {
                (array, repeats)
            }
            (other, _) => {
                let found = match &other {
                    Value::Array(a) => format!("{} envelopes", a.len()),
                    _ => "no array".to_owned(),
                };
                return Err(Rejection::Schema(SchemaViolation {
                    path: "body".into(),
                    expected: format!(
                        "expected a JSON array of 1 to {MAX_BATCH} envelopes, found {found}"
                    ),
                }));
            }
        };
        let items: Vec<&RawValue> =
            serde_json::from_str(text).expect("a JSON array parses as raw items");
        let mut results: Vec<Option<ItemResult>> = vec![None; items.len()];
        for repeat in repeats {
            let index = repeat
                .item
                .expect("a repeated key in an array is inside an item");
            results[index] = Some(ItemResult::Rejected(Rejection::Schema(repeat.into())));
        }
        let mut to_store = Vec::new();
        for (index, (item, value)) in items.iter().zip(&values).enumerate() {
            if results[index].is_some() {
                continue;
            }
            let raw = item.get();
            let checked = envelope::validate(value, raw.as_bytes(), &self.chat_ids)
                .map_err(|v| Rejection::Schema(v.at_batch_index(index)))
                .and_then(|routing| check_storable(raw).map(|()| routing));
            match checked {
                Ok(routing) => to_store.push((index, new_message(raw, &routing), routing)),
                Err(rejection) => results[index] = Some(ItemResult::Rejected(rejection)),
            }
        }
        let messages = to_store.iter().map(|(_, m, _)| m.clone()).collect();
        let stored = match self.queue.send_batch(messages).await {
            Ok(per_item) => per_item,
            Err(e) => vec![Err(e); to_store.len()],
        };
        let mut live_events = Vec::new();
        for ((index, _, routing), outcome) in to_store.into_iter().zip(stored) {
            results[index] = Some(match outcome {
                Ok(()) => {
                    if let (Some(live), Some(received_ms)) = (&self.live, received_ms) {
                        live_events.extend(live.prepare(
                            &values[index],
                            items[index].get(),
                            &routing,
                            received_ms,
                        ));
                    }
                    ItemResult::Queued(accepted(routing))
                }
                Err(e) => ItemResult::Rejected(queue_failure(&routing, &e)),
            });
        }
        if let Some(live) = &self.live {
            live.publish_all(live_events).await;
        }
        Ok(results
            .into_iter()
            .map(|r| r.expect("every item has a result"))
            .collect())
    }

    /// Content type, size and signature: the checks before the body is parsed.
    fn authenticate<'b>(&self, headers: &HeaderMap, body: &'b [u8]) -> Result<&'b str, Rejection> {
        check_content_type(headers)?;
        if body.len() > MAX_MESSAGE_BYTES {
            return Err(Rejection::TooLarge);
        }
        self.secrets
            .verify(body, headers)
            .map_err(Rejection::Unauthorized)?;
        std::str::from_utf8(body).map_err(|_| Rejection::NotUtf8)
    }

    fn record_rejection(&self, rejection: &Rejection, started: Instant) {
        self.metrics.count(
            metric::REJECTED,
            Some((dimension::REASON, rejection.code())),
        );
        // Only the code and status: the message may quote part of the payload.
        tracing::warn!(
            status = rejection.status().as_u16(),
            reason = rejection.code(),
            duration_ms = started.elapsed().as_millis() as u64,
            outcome = "rejected",
            "request rejected"
        );
    }

    /// A request's success-path summary line (one per request, batch or not).
    fn summary(&self) -> Summary {
        self.metrics.summary("queued")
    }

    fn record_accepted(&self, accepted: &Accepted, started: Instant, summary: &Summary) {
        // Counted by SQS itself (`NumberOfMessagesSent`), so no metric: the line stays short.
        summary.event(&accepted.event_id);
        // At DEBUG: the request's summary line names every queued event.
        tracing::debug!(
            event_id = %accepted.event_id,
            event_type = accepted.event_type.as_str(),
            group = %accepted.group_id,
            status = 202,
            duration_ms = started.elapsed().as_millis() as u64,
            outcome = "queued",
            "event queued"
        );
    }
}

/// One item of a batch answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemResult {
    Queued(Accepted),
    Rejected(Rejection),
}

fn new_message(text: &str, routing: &Routing) -> NewMessage {
    NewMessage {
        body: text.to_owned(),
        group_id: routing.group_id.clone(),
        dedup_id: routing.event_id.clone(),
    }
}

fn accepted(routing: Routing) -> Accepted {
    Accepted {
        event_id: routing.event_id,
        event_type: routing.event_type,
        group_id: routing.group_id,
    }
}

/// Only an outage is a `503` (the sender keeps the event and retries). A refusal is
/// deterministic: a `503` would make the sender retry it forever and block its ordered backlog.
fn queue_failure(routing: &Routing, error: &QueueError) -> Rejection {
    // The operator needs the cause; the sender gets what it can act on.
    tracing::error!(event_id = %routing.event_id, group = %routing.group_id, error = %error, "queue did not store the event");
    match error {
        QueueError::Unavailable(_) => Rejection::QueueUnavailable,
        QueueError::MessageRefused(reason) => {
            Rejection::QueueRefusedEvent(reason.chars().take(300).collect())
        }
        QueueError::Refused(_) => Rejection::QueueMisconfigured,
    }
}

fn malformed(e: serde_json::Error) -> Rejection {
    // serde_json's message ends with " at line L column C"; the fields carry those.
    let text = e.to_string();
    let detail = text
        .rsplit_once(" at line ")
        .map_or(text.as_str(), |(head, _)| head)
        .to_owned();
    Rejection::MalformedJson {
        line: e.line(),
        column: e.column(),
        detail,
    }
}

fn check_content_type(headers: &HeaderMap) -> Result<(), Rejection> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    let essence = value.map(|v| {
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    match essence.as_deref() {
        Some("application/json") => Ok(()),
        Some(_) => Err(Rejection::UnsupportedMediaType(format!(
            "{:?}",
            value.unwrap_or_default()
        ))),
        None => Err(Rejection::UnsupportedMediaType("none".into())),
    }
}

/// SQS stores only XML-safe characters; valid JSON text can still carry U+FFFE and U+FFFF raw.
fn check_storable(text: &str) -> Result<(), Rejection> {
    match text.chars().find(|c| matches!(c, '\u{FFFE}' | '\u{FFFF}')) {
        None => Ok(()),
        Some(c) => Err(Rejection::Schema(SchemaViolation {
            path: "body".into(),
            expected: format!(
                "the character U+{:04X} cannot be stored by SQS; send it escaped as \\u{:04X}",
                c as u32, c as u32
            ),
        })),
    }
}

/// The routes, for Lambda (`lambda_http::run(router(..))`) and for the local stack.
pub fn router(ingest: Arc<Ingest>) -> Router {
    Router::new()
        .route("/events", post(post_event))
        .route("/events/batch", post(post_batch))
        .route("/health", get(health))
        .fallback(|| async { Rejection::NotFound })
        .method_not_allowed_fallback(|| async { Rejection::MethodNotAllowed })
        // Our own limit answers 413 with the JSON error body; axum's default would not.
        .layer(DefaultBodyLimit::disable())
        .with_state(ingest)
}

/// The body, read only if the content type is right, and never past the size limit or the
/// time limit.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    timeout: Duration,
) -> Result<bytes::Bytes, Rejection> {
    check_content_type(headers)?;
    tokio::time::timeout(timeout, axum::body::to_bytes(body, MAX_MESSAGE_BYTES))
        .await
        .map_err(|_| Rejection::BodyTimeout(timeout))?
        .map_err(|_| Rejection::TooLarge)
}

async fn post_event(State(ingest): State<Arc<Ingest>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let result = match read_body(&headers, body, ingest.body_timeout).await {
        Ok(bytes) => ingest.accept_event(&headers, &bytes).await,
        Err(rejection) => Err(rejection),
    };
    match result {
        Ok(accepted) => {
            let summary = ingest.summary();
            ingest.record_accepted(&accepted, started, &summary);
            summary.emit();
            (
                StatusCode::ACCEPTED,
                axum::Json(json!({"id": accepted.event_id, "status": "queued"})),
            )
                .into_response()
        }
        Err(rejection) => {
            ingest.record_rejection(&rejection, started);
            rejection.into_response()
        }
    }
}

async fn post_batch(State(ingest): State<Arc<Ingest>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let result = match read_body(&headers, body, ingest.body_timeout).await {
        Ok(bytes) => ingest.accept_batch(&headers, &bytes).await,
        Err(rejection) => Err(rejection),
    };
    let items = match result {
        Ok(items) => items,
        Err(rejection) => {
            ingest.record_rejection(&rejection, started);
            return rejection.into_response();
        }
    };
    let mut body = Vec::with_capacity(items.len());
    let summary = ingest.summary();
    for (index, item) in items.iter().enumerate() {
        body.push(match item {
            ItemResult::Queued(accepted) => {
                ingest.record_accepted(accepted, started, &summary);
                json!({"index": index, "id": accepted.event_id, "status": "queued"})
            }
            ItemResult::Rejected(rejection) => {
                ingest.record_rejection(rejection, started);
                let mut result = rejection.body();
                result["index"] = json!(index);
                result["status"] = json!("rejected");
                result["statusCode"] = json!(rejection.status().as_u16());
                result
            }
        });
    }
    summary.emit();
    let queued = items
        .iter()
        .filter(|i| matches!(i, ItemResult::Queued(_)))
        .count();
    let all_unavailable = items
        .iter()
        .all(|i| matches!(i, ItemResult::Rejected(Rejection::QueueUnavailable)));
    let status = if queued == items.len() {
        StatusCode::ACCEPTED
    } else if all_unavailable {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::MULTI_STATUS
    };
    let mut response = (status, axum::Json(json!({"results": body}))).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    }
    response
}

async fn health() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::memory::MemoryQueue;
    use axum::http::Request;
    use tower::ServiceExt;

    fn app(body_timeout: Duration) -> Router {
        let ingest = Ingest::new(
            SecretSet::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap(),
            ChatIdKey::random(),
            Arc::new(MemoryQueue::new("ingest-test", Duration::from_secs(30))),
            Metrics::off(),
        )
        .with_body_timeout(body_timeout);
        router(Arc::new(ingest))
    }

    /// A body that sends a few bytes, then nothing, and never ends.
    fn trickle() -> Body {
        let first = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from("{\"ev"))]);
        Body::from_stream(futures::StreamExt::chain(first, futures::stream::pending()))
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_does_not_arrive_in_time_gets_408_in_ingests_error_shape() {
        for path in ["/events", "/events/batch"] {
            let request = Request::post(path)
                .header(header::CONTENT_TYPE, "application/json")
                .body(trickle())
                .unwrap();
            let response = app(Duration::from_millis(500))
                .oneshot(request)
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT, "{path}");
            let body = axum::body::to_bytes(response.into_body(), 4096)
                .await
                .unwrap();
            let body: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["error"], "request_timeout", "{path}");
            assert_eq!(
                body["message"],
                "the body did not arrive within 0.5 s: send the whole request at once; nothing was stored"
            );
        }
    }
}
