//! Live updates in the developer binary: the hub `relay local` serves next to ingest, and two
//! commands for scripts and page development: `relay token` (mints a live token with
//! `LIVE_TOKEN_SECRETS`) and `relay live` (subscribes like a page and prints what it sees,
//! against `relay local` or a deployed Event API).

use crate::Failure;
use futures::{SinkExt, StreamExt};
use relay_shared::live::channel::{DEFAULT_NAMESPACE, session_channel};
use relay_shared::live::hub::{self, Hub, HubConfig, HubPublisher, SUBPROTOCOL};
use relay_shared::live::publish::LivePublishing;
use relay_shared::live::token::{MAX_LIFETIME, TokenSecrets, unix_now};
use relay_shared::telemetry::Metrics;
use serde_json::{Value, json};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use relay_shared::config::{LIVE_NAMESPACE, LIVE_TOKEN_SECRETS};

/// `relay local`'s live hub flags.
#[derive(clap::Args)]
pub struct LocalLiveArgs {
    /// Space-separated secrets (32+ characters each) that sign live tokens; without them the
    /// live hub is off
    #[arg(long, env = LIVE_TOKEN_SECRETS, hide_env_values = true)]
    live_token_secrets: Option<String>,
    /// The channel namespace: a session's channel is /<namespace>/<session>
    #[arg(long, env = LIVE_NAMESPACE, default_value = DEFAULT_NAMESPACE)]
    live_namespace: String,
}

/// The local hub and what ingest needs to publish to it.
pub struct LocalLive {
    pub hub: Arc<Hub>,
    pub publishing: LivePublishing,
}

/// The hub for `relay local`, or `None` (and why, printed) when no secrets are set.
pub fn local_hub(args: &LocalLiveArgs, qr_ttl: Duration) -> Result<Option<LocalLive>, Failure> {
    let Some(list) = args
        .live_token_secrets
        .as_deref()
        .filter(|l| !l.trim().is_empty())
    else {
        println!(
            "relay local: live hub off: set {LIVE_TOKEN_SECRETS} (flag --live-token-secrets) to serve /event and /event/realtime"
        );
        return Ok(None);
    };
    let secrets = TokenSecrets::parse(list).map_err(|e| {
        Failure(format!(
            "{LIVE_TOKEN_SECRETS}: {e} (flag --live-token-secrets)"
        ))
    })?;
    if !relay_shared::live::channel::is_valid_segment(&args.live_namespace) {
        return Err(Failure(format!(
            "{LIVE_NAMESPACE}: {:?} is not a channel namespace (1 to 50 alphanumerics and inner dashes)",
            args.live_namespace
        )));
    }
    let hub = Hub::new(
        HubConfig {
            namespace: args.live_namespace.clone(),
            ..HubConfig::default()
        },
        secrets,
    );
    let publishing = LivePublishing::new(
        Arc::new(HubPublisher(Arc::clone(&hub))),
        qr_ttl,
        Metrics::off(),
    );
    Ok(Some(LocalLive { hub, publishing }))
}

/// The hub's routes, to merge into `relay local`'s app.
pub fn routes(live: &LocalLive) -> axum::Router {
    hub::router(Arc::clone(&live.hub))
}

#[derive(clap::Args)]
pub struct TokenArgs {
    /// A session the token may watch (repeat for several)
    #[arg(long = "session", required = true)]
    sessions: Vec<String>,
    /// Seconds the token lives, at most 900
    #[arg(long, default_value_t = 900)]
    ttl: u64,
    /// Who the token is for (the `sub` claim)
    #[arg(long, default_value = "relay-cli")]
    sub: String,
    /// The secrets; the first one signs
    #[arg(long, env = LIVE_TOKEN_SECRETS, hide_env_values = true)]
    live_token_secrets: Option<String>,
}

fn secrets_from(list: Option<&str>) -> Result<TokenSecrets, Failure> {
    let list = list.filter(|l| !l.trim().is_empty()).ok_or_else(|| {
        Failure(format!(
            "{LIVE_TOKEN_SECRETS} is not set (flag --live-token-secrets): the secrets relay local and the app share"
        ))
    })?;
    TokenSecrets::parse(list).map_err(|e| Failure(format!("{LIVE_TOKEN_SECRETS}: {e}")))
}

fn mint(
    secrets: &TokenSecrets,
    sub: &str,
    sessions: &[String],
    ttl: u64,
) -> Result<String, Failure> {
    if ttl == 0 || ttl > MAX_LIFETIME.as_secs() {
        return Err(Failure(format!(
            "--ttl {ttl}: a live token lives 1 to {} seconds",
            MAX_LIFETIME.as_secs()
        )));
    }
    secrets
        .mint(sub, sessions, Duration::from_secs(ttl), unix_now())
        .map_err(|e| Failure(format!("cannot mint the token: {e}")))
}

/// `relay token`: prints a token, nothing else (for `$(relay token --session default)`).
pub fn token(args: TokenArgs) -> Result<ExitCode, Failure> {
    let secrets = secrets_from(args.live_token_secrets.as_deref())?;
    println!("{}", mint(&secrets, &args.sub, &args.sessions, args.ttl)?);
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct LiveArgs {
    /// The session to watch
    #[arg(long)]
    session: String,
    /// The realtime endpoint (ws://…/event/realtime), or the HTTP one (http(s)://…/event),
    /// from which it is derived as a page's client does
    #[arg(long, default_value = "ws://127.0.0.1:9000/event/realtime")]
    url: String,
    /// The channel namespace
    #[arg(long, env = LIVE_NAMESPACE, default_value = DEFAULT_NAMESPACE)]
    namespace: String,
    /// A token to use (else one is minted with LIVE_TOKEN_SECRETS)
    #[arg(long, env = "LIVE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The secrets to mint a token with
    #[arg(long, env = LIVE_TOKEN_SECRETS, hide_env_values = true)]
    live_token_secrets: Option<String>,
    /// Stop after this many events (default: until Ctrl-C)
    #[arg(long)]
    count: Option<u64>,
    /// Print QR codes as they are (by default they are redacted: they are login credentials)
    #[arg(long)]
    show_qr: bool,
    /// Seconds to wait for the connection, and then for its connection_ack
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    connect_timeout: u64,
}

/// `connectionTimeoutMs` when an ack names none: AppSync's value.
const DEFAULT_CONNECTION_TIMEOUT_MS: u64 = 300_000;

/// The realtime URL and the host the authorization header names, from what the user gave.
/// AppSync: the HTTP endpoint is `https://<id>.appsync-api.<region>.amazonaws.com/event`,
/// the realtime one `wss://<id>.appsync-realtime-api.<region>.amazonaws.com/event/realtime`.
fn endpoints(url: &str) -> Result<(String, String), Failure> {
    let bad = || {
        Failure(format!(
            "--url {url:?}: expected ws(s)://host/event/realtime or http(s)://host/event"
        ))
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    let (host, path) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
    let ws_scheme = match scheme {
        "ws" | "http" => "ws",
        "wss" | "https" => "wss",
        _ => return Err(bad()),
    };
    let path = path.trim_end_matches('/');
    let path = if path.ends_with("realtime") {
        path.to_owned()
    } else {
        format!("{path}/realtime")
    };
    let realtime_host = host.replace(".appsync-api.", ".appsync-realtime-api.");
    let http_host = host.replace(".appsync-realtime-api.", ".appsync-api.");
    Ok((format!("{ws_scheme}://{realtime_host}/{path}"), http_host))
}

fn redact(mut payload: Value) -> Value {
    if let Some(qr) = payload.pointer_mut("/envelope/data/qr") {
        let length = qr.as_str().map_or(0, str::len);
        *qr = Value::from(format!("<redacted: {length} characters>"));
    }
    payload
}

/// The token `relay live` presents: `--token`, else one minted with the live token secrets.
fn live_token(args: &LiveArgs) -> Result<String, Failure> {
    match args.token.clone().filter(|t| !t.trim().is_empty()) {
        Some(token) => Ok(token),
        None => {
            let secrets = secrets_from(args.live_token_secrets.as_deref())?;
            mint(
                &secrets,
                "relay-live",
                std::slice::from_ref(&args.session),
                MAX_LIFETIME.as_secs(),
            )
        }
    }
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens the realtime connection, authorised in the subprotocol header as a page does, within
/// `timeout` (a server that accepts and never answers would otherwise hold it forever).
async fn connect(url: &str, auth: &Value, timeout: Duration) -> Result<Socket, Failure> {
    use base64::Engine;
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(auth.to_string());
    let mut request = url
        .into_client_request()
        .map_err(|e| Failure(format!("--url {url}: {e}")))?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(&format!("{SUBPROTOCOL}, header-{header}"))
            .map_err(|e| Failure(e.to_string()))?,
    );
    let (socket, _) = tokio::time::timeout(timeout, tokio_tungstenite::connect_async(request))
        .await
        .map_err(|_| {
            Failure(format!(
                "{url} did not complete the WebSocket handshake within {} s (--connect-timeout); is it the relay's live endpoint?",
                timeout.as_secs()
            ))
        })?
        .map_err(|e| {
            Failure(format!(
                "cannot connect to {url}: {e}; is `relay local` running with {LIVE_TOKEN_SECRETS}?"
            ))
        })?;
    Ok(socket)
}

/// The text of the next frame; `None` for frames without text; an error once the
/// connection ends.
fn text_of(
    message: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    url: &str,
) -> Result<Option<Utf8Bytes>, Failure> {
    match message {
        Some(Ok(Message::Text(text))) => Ok(Some(text)),
        Some(Ok(Message::Close(frame))) => Err(Failure(format!(
            "the server closed the connection{}",
            frame
                .map(|f| format!(": {} {}", u16::from(f.code), f.reason))
                .unwrap_or_default()
        ))),
        Some(Ok(_)) => Ok(None),
        Some(Err(e)) => Err(Failure(format!("{url}: {e}"))),
        None => Err(Failure("the server closed the connection".into())),
    }
}

/// `relay live`: connect, subscribe to the session's channel, print each event as one JSON
/// line on stdout (status lines go to stderr). As AppSync asks of its clients, a connection
/// that stays silent (not even `ka`) for the ack's `connectionTimeoutMs` is dead: the command
/// says so and exits non-zero, so a script can start it again.
pub async fn live(args: LiveArgs) -> Result<ExitCode, Failure> {
    let token = live_token(&args)?;
    let (url, host) = endpoints(&args.url)?;
    let auth = json!({"Authorization": token, "host": host});
    let connect_timeout = Duration::from_secs(args.connect_timeout);
    let mut socket = connect(&url, &auth, connect_timeout).await?;
    let send = |m: Value| Message::Text(m.to_string().into());
    socket
        .send(send(json!({"type": "connection_init"})))
        .await
        .map_err(|e| Failure(format!("{url}: {e}")))?;
    let channel = session_channel(&args.namespace, &args.session);
    let mut seen = 0u64;
    // Until the ack: the connect timeout; then the ack's connectionTimeoutMs. Any frame
    // restarts it.
    let mut silence = connect_timeout;
    let mut acked = false;
    loop {
        let message = tokio::select! {
            m = tokio::time::timeout(silence, socket.next()) => match m {
                Ok(m) => m,
                Err(_) if acked => return Err(Failure(format!(
                    "nothing from {url} for {} ms, not even a keep-alive (the connectionTimeoutMs of its connection_ack): the connection is dead; run relay live again",
                    silence.as_millis()
                ))),
                Err(_) => return Err(Failure(format!(
                    "no connection_ack from {url} within {} s (--connect-timeout)",
                    silence.as_secs()
                ))),
            },
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        };
        let Some(text) = text_of(message, &url)? else {
            continue;
        };
        let Ok(message) = serde_json::from_str::<Value>(text.as_str()) else {
            continue;
        };
        let errors = || {
            message["errors"][0]["message"]
                .as_str()
                .unwrap_or("no reason given")
                .to_owned()
        };
        match message["type"].as_str() {
            Some("connection_ack") => {
                acked = true;
                // Events puts it at the top; the GraphQL flavour under `payload`.
                let ms = message["connectionTimeoutMs"]
                    .as_u64()
                    .or_else(|| message["payload"]["connectionTimeoutMs"].as_u64())
                    .filter(|ms| *ms > 0)
                    .unwrap_or(DEFAULT_CONNECTION_TIMEOUT_MS);
                silence = Duration::from_millis(ms);
                let subscribe = json!({"type": "subscribe", "id": "relay-live-1", "channel": channel, "authorization": auth});
                socket
                    .send(send(subscribe))
                    .await
                    .map_err(|e| Failure(format!("{url}: {e}")))?;
            }
            Some("connection_error") => {
                return Err(Failure(format!("connection refused: {}", errors())));
            }
            Some("subscribe_success") => eprintln!("relay live: subscribed to {channel}"),
            Some("subscribe_error") => {
                return Err(Failure(format!(
                    "subscription to {channel} refused: {}",
                    errors()
                )));
            }
            Some("data") => {
                let event = message["event"]
                    .as_str()
                    .and_then(|e| serde_json::from_str::<Value>(e).ok())
                    .unwrap_or(Value::Null);
                let event = if args.show_qr { event } else { redact(event) };
                println!("{event}");
                seen += 1;
                if args.count.is_some_and(|count| seen >= count) {
                    return Ok(ExitCode::SUCCESS);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(url: &str) -> (String, String) {
        endpoints(url).unwrap_or_else(|f| panic!("{}", f.0))
    }

    #[test]
    fn endpoints_are_derived_as_a_page_client_does() {
        assert_eq!(
            ok("http://127.0.0.1:9000/event"),
            (
                "ws://127.0.0.1:9000/event/realtime".into(),
                "127.0.0.1:9000".into()
            )
        );
        assert_eq!(
            ok("wss://abc.appsync-realtime-api.eu-west-1.amazonaws.com/event/realtime"),
            (
                "wss://abc.appsync-realtime-api.eu-west-1.amazonaws.com/event/realtime".into(),
                "abc.appsync-api.eu-west-1.amazonaws.com".into()
            )
        );
        assert_eq!(
            ok("https://abc.appsync-api.eu-west-1.amazonaws.com/event").0,
            "wss://abc.appsync-realtime-api.eu-west-1.amazonaws.com/event/realtime"
        );
        assert!(endpoints("ftp://x/event").is_err());
        assert!(endpoints("nonsense").is_err());
    }

    #[test]
    fn qr_codes_are_redacted_unless_asked() {
        let payload = json!({"id": "e", "envelope": {"event": "qr", "data": {"qr": "secret-code", "available": true}}});
        let shown = redact(payload).to_string();
        assert!(!shown.contains("secret-code"));
        assert!(shown.contains("<redacted: 11 characters>"));
    }
}
