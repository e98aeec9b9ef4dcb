//! `relay local`'s live hub, `relay token` and `relay live` driven as processes: a page's view
//! of the relay from a terminal.

use relay_tests::personal_data::{QR_DATA, qr_event};
use relay_tests::{INGEST_SECRET, Process, WEBHOOK_SECRET, signed_headers};
use std::time::Duration;

const RELAY: &str = env!("CARGO_BIN_EXE_relay");
const WAIT: Duration = Duration::from_secs(30);
const LIVE_SECRET: &str = "cli-live-secret-0123456789abcdef-0123456789";

async fn relay(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = tokio::process::Command::new(RELAY);
    command.args(args).env_remove("LIVE_TOKEN_SECRETS");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().await.expect("run relay")
}

#[tokio::test]
async fn relay_live_prints_what_a_page_sees_and_relay_token_signs_for_it() {
    let local = Process::spawn(
        RELAY,
        &["local", "--listen", "127.0.0.1:0"],
        &[
            // Nobody listens there (binding port 9 takes root): delivery retries, the live path
            // does not wait for it.
            ("WEBHOOK_URL", "http://127.0.0.1:9/x"),
            ("WEBHOOK_SECRETS", WEBHOOK_SECRET),
            ("INGEST_SECRETS", INGEST_SECRET),
            ("LIVE_TOKEN_SECRETS", LIVE_SECRET),
        ],
    );
    let listen = local.listening_address(WAIT).await;
    local.wait_for("live hub on", 1, WAIT).await;

    let live = Process::spawn(
        RELAY,
        &[
            "live",
            "--session",
            "default",
            "--url",
            &format!("http://{listen}/event"),
            "--count",
            "1",
        ],
        &[("LIVE_TOKEN_SECRETS", LIVE_SECRET)],
    );
    live.wait_for("subscribed to /relay/default", 1, WAIT).await;
    let body = qr_event();
    let response = reqwest::Client::new()
        .post(format!("http://{listen}/events"))
        .headers(signed_headers(INGEST_SECRET, "msg_qr", &body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let printed = live.wait_for(r#""type":"qr""#, 1, WAIT).await;
    assert!(printed[0].contains("<redacted: "), "{}", printed[0]);
    assert!(
        !live.lines().iter().any(|l| l.contains(QR_DATA)),
        "the QR code is not printed by default"
    );

    // relay token: a token for another session is refused by the hub, with the reason.
    let token = relay(
        &["token", "--session", "sales", "--ttl", "60"],
        &[("LIVE_TOKEN_SECRETS", LIVE_SECRET)],
    )
    .await;
    assert!(token.status.success());
    let token = String::from_utf8(token.stdout).unwrap();
    let refused = relay(
        &[
            "live",
            "--session",
            "default",
            "--url",
            &format!("ws://{listen}/event/realtime"),
            "--token",
            token.trim(),
        ],
        &[],
    )
    .await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("refused: the token does not allow this session"),
        "{stderr}"
    );
    let status = local.terminate().await;
    assert!(
        status.success(),
        "SIGTERM stops relay local cleanly: {status:?}"
    );
}

#[tokio::test]
async fn relay_token_says_what_is_wrong() {
    let no_secret = relay(&["token", "--session", "default"], &[]).await;
    assert!(!no_secret.status.success());
    assert!(String::from_utf8_lossy(&no_secret.stderr).contains("LIVE_TOKEN_SECRETS is not set"));
    let too_long = relay(
        &["token", "--session", "default", "--ttl", "901"],
        &[("LIVE_TOKEN_SECRETS", LIVE_SECRET)],
    )
    .await;
    assert!(!too_long.status.success());
    assert!(String::from_utf8_lossy(&too_long.stderr).contains("1 to 900 seconds"));
    let short = relay(
        &["token", "--session", "default"],
        &[("LIVE_TOKEN_SECRETS", "short")],
    )
    .await;
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 32"));
}

/// A hub whose `connection_ack` promises a keep-alive every 500 ms and then sends none (its
/// keep-alive period is an hour): a dead connection, as `relay live` sees one.
async fn silent_hub() -> String {
    use relay_shared::live::hub::{self, Hub, HubConfig};
    use relay_shared::live::token::TokenSecrets;
    let hub = Hub::new(
        HubConfig {
            keep_alive: Duration::from_secs(3600),
            connection_timeout: Duration::from_millis(500),
            ..HubConfig::default()
        },
        TokenSecrets::parse(LIVE_SECRET).unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, hub::router(hub)).await });
    format!("ws://{address}/event/realtime")
}

#[tokio::test]
async fn relay_live_exits_when_nothing_arrives_within_connection_timeout_ms() {
    let url = silent_hub().await;
    let live = tokio::time::timeout(
        WAIT,
        relay(
            &["live", "--session", "default", "--url", &url],
            &[("LIVE_TOKEN_SECRETS", LIVE_SECRET)],
        ),
    )
    .await
    .expect("relay live gives up on a silent connection");
    assert!(!live.status.success());
    let stderr = String::from_utf8_lossy(&live.stderr);
    assert!(stderr.contains("subscribed to /relay/default"), "{stderr}");
    assert!(
        stderr.contains("nothing from") && stderr.contains("for 500 ms, not even a keep-alive"),
        "{stderr}"
    );
}

#[tokio::test]
async fn relay_live_gives_up_on_a_server_that_never_completes_the_handshake() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let url = format!("ws://{address}/event/realtime");
    let live = tokio::time::timeout(
        WAIT,
        relay(
            &[
                "live",
                "--session",
                "default",
                "--url",
                &url,
                "--connect-timeout",
                "1",
            ],
            &[("LIVE_TOKEN_SECRETS", LIVE_SECRET)],
        ),
    )
    .await
    .expect("relay live gives up on the handshake");
    assert!(!live.status.success());
    let stderr = String::from_utf8_lossy(&live.stderr);
    assert!(
        stderr.contains("did not complete the WebSocket handshake within 1 s"),
        "{stderr}"
    );
}
