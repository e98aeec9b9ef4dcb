//! Requests through an axum router in process (`tower::ServiceExt::oneshot`), as the Lambda
//! adapter hands them over: the answer's status, headers and JSON body in one call.

use crate::signed_headers;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

/// `method path` with `headers` and `body`; the body of the answer as JSON (`null` when it is
/// not JSON).
pub async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    headers: HeaderMap,
    body: impl Into<Body>,
) -> (StatusCode, HeaderMap, Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .body(body.into())
        .unwrap();
    *request.headers_mut() = headers;
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, json)
}

/// `POST path` with `body` signed by `secret` as message `msg_id`, as a sender sends it.
pub async fn post_signed(
    app: &axum::Router,
    path: &str,
    secret: &str,
    msg_id: &str,
    body: &str,
) -> (StatusCode, Value) {
    let headers = signed_headers(secret, msg_id, body);
    let (status, _, json) = call(app, "POST", path, headers, body.to_owned()).await;
    (status, json)
}
