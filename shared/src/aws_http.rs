//! The AWS SDK's HTTP client: reqwest over the process's one TLS configuration
//! ([`crate::tls`]), so the SDK's clients (SQS, Secrets Manager, DynamoDB) trust the same roots
//! as delivery and publishing, loaded once. The SDK's own client would load and parse the
//! system's roots again for every client and timeout setting it builds.
//!
//! It does what the SDK's default client does: one connection pool per timeout setting, no
//! redirects followed, no proxy, and failures sorted into the SDK's kinds (timeout, I/O, other)
//! so its retry rules apply unchanged.

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

/// An SDK client built on first use. Building one assembles its runtime plugins and parses its
/// crate's endpoint partition table, about 0.1–0.2 ms of CPU; the dispatcher's SQS and DynamoDB
/// clients serve only failures and retries, so a cold start whose batch succeeds never pays for
/// them. Clones share the one client.
pub type LazyClient<C> = Arc<LazyLock<C, Box<dyn FnOnce() -> C + Send>>>;

/// A [`LazyClient`] that `build` makes when it is first used.
pub fn lazy_client<C>(build: impl FnOnce() -> C + Send + 'static) -> LazyClient<C> {
    Arc::new(LazyLock::new(Box::new(build)))
}

/// The HTTP client for [`aws_config::ConfigLoader::http_client`].
pub fn http_client() -> SharedHttpClient {
    SharedHttpClient::new(ReqwestHttpClient::default())
}

/// One reqwest client per (connect, read) timeout pair the SDK asks for.
#[derive(Debug, Default, Clone)]
struct ReqwestHttpClient {
    clients: Arc<Mutex<HashMap<Timeouts, reqwest::Client>>>,
}

type Timeouts = (Option<Duration>, Option<Duration>);

impl ReqwestHttpClient {
    fn client(&self, timeouts: Timeouts) -> Result<reqwest::Client, reqwest::Error> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(&timeouts) {
            return Ok(client.clone());
        }
        let (connect, read) = timeouts;
        let mut builder = reqwest::Client::builder()
            .tls_backend_preconfigured(crate::tls::client_config())
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        if let Some(connect) = connect {
            builder = builder.connect_timeout(connect);
        }
        if let Some(read) = read {
            builder = builder.read_timeout(read);
        }
        let client = builder.build()?;
        clients.insert(timeouts, client.clone());
        Ok(client)
    }
}

impl HttpClient for ReqwestHttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let client = self.client((settings.connect_timeout(), settings.read_timeout()));
        SharedHttpConnector::new(Connector {
            client: client.map_err(Arc::new),
        })
    }
}

#[derive(Debug)]
struct Connector {
    /// A client that could not be built fails every call with the reason.
    client: Result<reqwest::Client, Arc<reqwest::Error>>,
}

impl HttpConnector for Connector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = self.client.clone();
        HttpConnectorFuture::new(async move {
            let client = client.map_err(|e| ConnectorError::other(e.to_string().into(), None))?;
            let request = request
                .try_into_http1x()
                .map_err(|e| ConnectorError::user(e.into()))?
                .map(|body| match body.bytes() {
                    Some(bytes) => reqwest::Body::from(bytes.to_vec()),
                    None => reqwest::Body::wrap(body),
                });
            let request =
                reqwest::Request::try_from(request).map_err(|e| ConnectorError::user(e.into()))?;
            let response = client.execute(request).await.map_err(classify)?;
            let response = http::Response::from(response).map(SdkBody::from_body_1_x);
            HttpResponse::try_from(response).map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

/// A reqwest failure in the SDK's terms: a timeout, an I/O failure (connection refused or
/// reset, TLS), which the SDK retries, or anything else.
fn classify(error: reqwest::Error) -> ConnectorError {
    if error.is_timeout() {
        ConnectorError::timeout(error.into())
    } else if error.is_connect() || error.is_request() || error.is_body() {
        ConnectorError::io(error.into())
    } else {
        ConnectorError::other(error.into(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::{TcpListener, TcpSocket};

    /// The client the SDK gets for its usual settings (connect and read timeouts), with a read
    /// timeout short enough for a test.
    fn sdk_client() -> reqwest::Client {
        ReqwestHttpClient::default()
            .client((
                Some(Duration::from_secs(5)),
                Some(Duration::from_millis(200)),
            ))
            .expect("client")
    }

    async fn failure(url: &str) -> ConnectorError {
        let error = sdk_client()
            .get(url)
            .send()
            .await
            .expect_err("the request fails");
        classify(error)
    }

    /// The SDK retries timeouts and I/O failures as transient, and gives up on anything else at
    /// once: each failure must reach it as its kind.
    #[tokio::test]
    async fn failures_reach_the_sdk_as_timeout_io_or_other() {
        // Connects, and no answer comes: the read timeout, a timeout (not I/O).
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let error = failure(&format!("http://{}/", silent.local_addr().unwrap())).await;
        assert!(error.is_timeout() && !error.is_io(), "{error:?}");

        // Refused: the port is bound (no one else can take it) but nobody listens.
        let closed = TcpSocket::new_v4().unwrap();
        closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let error = failure(&format!("http://{}/", closed.local_addr().unwrap())).await;
        assert!(error.is_io() && !error.is_timeout(), "{error:?}");

        // Accepted, then closed before any answer: I/O.
        let hanging_up = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = hanging_up.local_addr().unwrap();
        let server = tokio::spawn(async move {
            loop {
                let (connection, _) = hanging_up.accept().await.unwrap();
                drop(connection);
            }
        });
        let error = failure(&format!("http://{address}/")).await;
        assert!(error.is_io() && !error.is_timeout(), "{error:?}");
        server.abort();

        // A request that cannot be built: neither, so the SDK does not retry it.
        let error = failure("not a url").await;
        assert!(
            error.is_other() && !error.is_io() && !error.is_timeout(),
            "{error:?}"
        );
        drop(silent);
    }
}
