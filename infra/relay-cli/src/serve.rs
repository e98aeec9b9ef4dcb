//! How `relay local` and `relay receive` serve HTTP: axum's router over hyper's HTTP/1
//! connections, with the time bounds `axum::serve` leaves off.
//!
//! `axum::serve` builds its connections without a timer, and hyper's header-read timeout needs
//! one: a client that opens a connection and sends half a header (slowloris) would hold a task
//! and a file descriptor forever. Here every connection gets [`Limits::header_read`] for each
//! request's head (idle keep-alive connections included: the clock runs while hyper waits for
//! the next head), and every request [`Limits::request`] from head to answer, which bounds a
//! body that trickles in. WebSocket upgrades (the live hub's `/event/realtime`) work as with
//! `axum::serve`: once upgraded, the connection is the hub's, which bounds it itself.

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use std::future::Future;
use std::pin::pin;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The time bounds of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A request's head (request line and headers) must arrive within this; an idle
    /// keep-alive connection is closed after it too.
    pub header_read: Duration,
    /// From the head to the answer, body included; past it the answer is `408`.
    pub request: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read: Duration::from_secs(10),
            // Above ingest's own body bound (10 s, answered in ingest's error shape) plus its
            // queue call (4 s at most), so this one is only the backstop.
            request: Duration::from_secs(30),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then lets in-flight requests finish
/// (each bounded by [`Limits::request`]) and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let app = app.layer(axum::middleware::from_fn_with_state(
        limits.request,
        answer_within,
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    // Each connection task holds a receiver; `closed()` resolves when the last one is gone.
    let (open_tx, open_rx) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, mostly: wait instead of spinning.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let mut stop = stop_rx.clone();
        let open = open_rx.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read);
            let mut connection = pin!(
                builder
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
            );
            let stopping = async move {
                let _ = stop.wait_for(|stop| *stop).await;
            };
            tokio::select! {
                _ = connection.as_mut() => {}
                () = stopping => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(open);
        });
    }
    drop(listener);
    drop(open_rx);
    let _ = stop_tx.send(true);
    open_tx.closed().await;
}

/// The request's answer, or `408` once [`Limits::request`] has passed.
async fn answer_within(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            Json(json!({
                "error": "request_timeout",
                "message": format!(
                    "the request was not received and answered within {} s: send the whole request at once",
                    limit.as_secs_f32()
                ),
            })),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Upper bounds only: the server must act well before these.
    const GENEROUS: Duration = Duration::from_secs(20);

    async fn start(limits: Limits) -> (std::net::SocketAddr, watch::Sender<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = Router::new().route("/echo", post(|body: axum::body::Bytes| async move { body }));
        let (stop, mut stopped) = watch::channel(false);
        tokio::spawn(serve(listener, app, limits, async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
        (address, stop)
    }

    /// Everything the server sends until it closes the connection.
    async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> String {
        let mut answer = Vec::new();
        tokio::time::timeout(GENEROUS, stream.read_to_end(&mut answer))
            .await
            .expect("the server closes the connection")
            .ok();
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[tokio::test]
    async fn half_a_header_gets_the_connection_closed() {
        let (address, _stop) = start(Limits {
            header_read: Duration::from_millis(300),
            request: Duration::from_secs(60),
        })
        .await;
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Le")
            .await
            .unwrap();
        read_until_closed(&mut stream).await;
        // A connection that sends nothing at all is closed the same way.
        let mut silent = tokio::net::TcpStream::connect(address).await.unwrap();
        read_until_closed(&mut silent).await;
    }

    #[tokio::test]
    async fn a_body_that_never_ends_gets_408() {
        let (address, _stop) = start(Limits {
            header_read: Duration::from_secs(60),
            request: Duration::from_millis(300),
        })
        .await;
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhalf")
            .await
            .unwrap();
        let answer = read_until_closed(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains(r#""error":"request_timeout""#), "{answer}");
    }

    #[tokio::test]
    async fn requests_are_answered_and_a_stopped_server_stops_listening() {
        let (address, stop) = start(Limits::default()).await;
        let client = reqwest::Client::new();
        let answer = client
            .post(format!("http://{address}/echo"))
            .body("hello")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.text().await.unwrap(), "hello");
        stop.send(true).unwrap();
        // The listener is gone once the server stopped.
        let refused = tokio::time::timeout(GENEROUS, async {
            loop {
                if tokio::net::TcpStream::connect(address).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(refused.is_ok(), "the server stopped listening");
    }
}
