//! The `relay` binary driven as a process, as a developer would: `relay receive`, `relay local`
//! and `relay send` on free loopback ports.

use relay_tests::{INGEST_SECRET, Process, WEBHOOK_SECRET, free_port};
use std::time::Duration;

const RELAY: &str = env!("CARGO_BIN_EXE_relay");
const WAIT: Duration = Duration::from_secs(30);

struct Stack {
    local: Process,
    receive: Process,
    ingest_url: String,
}

/// `relay receive` (with extra flags) and `relay local` delivering to it.
async fn start_stack(receive_flags: &[&str], retry_schedule: &str) -> Stack {
    start_stack_with(receive_flags, &["--retry-schedule", retry_schedule], &[]).await
}

/// The same, with extra `relay local` flags and environment.
async fn start_stack_with(
    receive_flags: &[&str],
    local_flags: &[&str],
    local_env: &[(&str, &str)],
) -> Stack {
    let receive_listen = format!("127.0.0.1:{}", free_port());
    let mut receive_args = vec![
        "receive",
        "--listen",
        &receive_listen,
        "--secret",
        WEBHOOK_SECRET,
    ];
    receive_args.extend_from_slice(receive_flags);
    let receive = Process::spawn(RELAY, &receive_args, &[]);
    receive.wait_for("listening on", 1, WAIT).await;

    let local_listen = format!("127.0.0.1:{}", free_port());
    let webhook_url = format!("http://{receive_listen}/api/webhook/chat-whatsapp");
    let mut local_args = vec!["local", "--listen", &local_listen];
    local_args.extend_from_slice(local_flags);
    let mut env = vec![
        ("WEBHOOK_URL", webhook_url.as_str()),
        ("WEBHOOK_SECRETS", WEBHOOK_SECRET),
        ("INGEST_SECRETS", INGEST_SECRET),
    ];
    env.extend_from_slice(local_env);
    let local = Process::spawn(RELAY, &local_args, &env);
    local.wait_for("listening on", 1, WAIT).await;
    Stack {
        local,
        receive,
        ingest_url: format!("http://{local_listen}/events"),
    }
}

/// `relay send` of a built-in sample to the stack's ingest, signed with the ingest secret.
async fn send_sample(stack: &Stack, event: &str) -> std::process::Output {
    relay_send(&[
        "--url",
        &stack.ingest_url,
        "--secret",
        INGEST_SECRET,
        "--event",
        event,
    ])
    .await
}

async fn relay_send(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(RELAY)
        .arg("send")
        .args(args)
        .output()
        .await
        .expect("run relay send")
}

#[tokio::test]
async fn send_local_receive_delivers_every_event_type_verified() {
    let stack = start_stack(&[], "1,1").await;
    for event in ["status", "qr", "message"] {
        let out = send_sample(&stack, event).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "send {event}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.starts_with("202 ") && stdout.contains(r#""status":"queued""#),
            "{stdout}"
        );
    }
    // A file is sent byte for byte and arrives byte for byte.
    let body = r#"{"event":"status","data":{"connected":false,"reason":"LOGOUT","custom":[1,2]},"timestamp":"2025-12-21T18:22:44.850Z","id":"file-event-1"}"#;
    let path = std::env::temp_dir().join(format!("relay-send-{}.json", free_port()));
    std::fs::write(&path, body).unwrap();
    let out = relay_send(&[
        "--url",
        &stack.ingest_url,
        "--secret",
        INGEST_SECRET,
        "--file",
        path.to_str().unwrap(),
    ])
    .await;
    assert!(out.status.success());

    let verified = stack
        .receive
        .wait_for("verified webhook-id=", 4, WAIT)
        .await;
    for event in ["status", "qr", "message"] {
        assert!(
            verified
                .iter()
                .any(|l| l.contains(&format!("event={event} "))),
            "{verified:?}"
        );
    }
    assert!(
        verified
            .iter()
            .any(|l| l.contains("webhook-id=file-event-1")),
        "{verified:?}"
    );
    let lines = stack.receive.lines();
    let printed = serde_json::from_str::<serde_json::Value>(body)
        .unwrap()
        .to_string();
    assert!(
        lines.iter().any(|l| l.trim() == printed),
        "the receiver printed the body"
    );
    assert!(
        lines.iter().all(|l| !l.contains("iVBORw0KGgo")),
        "the QR code is redacted"
    );
    assert!(!lines.iter().any(|l| l.contains("REJECTED")));

    let local_lines = stack.local.wait_for("outcome=\"delivered\"", 4, WAIT).await;
    assert_eq!(local_lines.len(), 4);
    assert!(
        stack
            .local
            .lines()
            .iter()
            .all(|l| !l.contains("Oi! (sample")),
        "no message content in the logs"
    );
    let status = stack.local.terminate().await;
    assert!(status.success(), "Ctrl-C/SIGTERM exits cleanly: {status:?}");
}

#[tokio::test]
async fn a_receiver_failing_twice_gets_the_event_on_the_third_attempt() {
    let stack = start_stack(&["--fail-with", "500", "--fail-times", "2"], "1,1,1").await;
    let out = send_sample(&stack, "message").await;
    assert!(out.status.success());
    let attempts = stack
        .receive
        .wait_for("verified webhook-id=", 3, WAIT)
        .await;
    assert!(
        attempts[0].ends_with("-> 500") && attempts[1].ends_with("-> 500"),
        "{attempts:?}"
    );
    assert!(attempts[2].ends_with("-> 204"), "{attempts:?}");
    let id = |line: &str| {
        line.split_whitespace()
            .find(|w| w.starts_with("webhook-id="))
            .map(str::to_owned)
    };
    assert_eq!(
        id(&attempts[0]),
        id(&attempts[2]),
        "every attempt carries the same webhook-id"
    );
    let local = stack.local.wait_for("attempt=3", 1, WAIT).await;
    assert!(local[0].contains("outcome=\"delivered\""), "{local:?}");
}

#[tokio::test]
async fn bad_flags_and_settings_exit_non_zero_with_one_line() {
    let cases: [(&[&str], &str); 6] = [
        (&["local", "--bogus"], "unexpected argument '--bogus'"),
        (&["local", "--listen", "nowhere"], "invalid value 'nowhere'"),
        (
            &["send", "--secret", "hunter2"],
            "--secret: secret #1 does not start with whsec_",
        ),
        (
            &["send", "--event", "typing", "--secret", INGEST_SECRET],
            "unknown event \"typing\"",
        ),
        (
            &["receive", "--secret", WEBHOOK_SECRET, "--fail-with", "700"],
            "not an HTTP status code",
        ),
        (
            &[
                "send",
                "--url",
                "http://127.0.0.1:9/events",
                "--secret",
                INGEST_SECRET,
            ],
            "cannot reach http://127.0.0.1:9/events",
        ),
    ];
    for (args, expected) in cases {
        let out = tokio::process::Command::new(RELAY)
            .args(args)
            .env_remove("INGEST_SECRETS")
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(stderr.contains(expected), "{args:?}: {stderr:?}");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{args:?}: one line, no panic trace: {stderr:?}"
        );
        assert!(!stderr.contains("panicked"));
    }

    // Missing settings: one line each, naming variable and flag.
    let out = tokio::process::Command::new(RELAY)
        .args(["local", "--listen", "127.0.0.1:0"])
        .env_clear()
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.trim_end().lines().count(), 3, "{stderr}");
    assert!(
        stderr.contains("INGEST_SECRETS: not set") && stderr.contains("(flag --ingest-secrets)"),
        "{stderr}"
    );

    // A port in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let out = tokio::process::Command::new(RELAY)
        .args(["receive", "--listen", &address, "--secret", WEBHOOK_SECRET])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("cannot listen on {address}")),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1);
}

#[tokio::test]
async fn the_local_stack_runs_against_a_real_sqs_endpoint() {
    let moto = relay_tests::MotoServer::start().await;
    let queues = moto.create_fifo_with_dlq("cli-sqs", 3, 30).await;
    let stack = start_stack_with(
        &[],
        &[],
        &[
            ("QUEUE_URL", &queues.queue_url),
            ("AWS_ENDPOINT_URL_SQS", &moto.endpoint),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ],
    )
    .await;
    let banner = stack.local.wait_for("queue:", 1, WAIT).await;
    assert!(banner[0].contains(&queues.queue_url), "{banner:?}");
    for event in ["status", "message"] {
        let out = send_sample(&stack, event).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    stack
        .receive
        .wait_for("verified webhook-id=", 2, WAIT)
        .await;
    stack.local.wait_for("outcome=\"delivered\"", 2, WAIT).await;
    // Delivered messages were deleted from the SQS queue.
    let deadline = std::time::Instant::now() + WAIT;
    while queues.depth(&queues.queue_url).await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "delivered messages are deleted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_event_parked_in_the_dlq_is_delivered_after_relay_redrive() {
    // Two attempts (schedule "0"), both failed: the event lands in the local DLQ.
    let stack = start_stack(&["--fail-with", "503", "--fail-times", "2"], "0").await;
    let out = send_sample(&stack, "status").await;
    assert!(out.status.success());
    stack.receive.wait_for("-> 503", 2, WAIT).await;
    stack
        .local
        .wait_for("outcome=\"dead-letter\"", 1, WAIT)
        .await;
    let base = stack.ingest_url.trim_end_matches("/events").to_owned();
    let depths = |body: String| serde_json::from_str::<serde_json::Value>(&body).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        // The queue moves it on its next receive; the poller receives every second.
        let body = reqwest::get(format!("{base}/local/queue"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if depths(body.clone())["dlq"]["messages"] == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never reached the DLQ: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = tokio::process::Command::new(RELAY)
        .args(["redrive", "--url", &base])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"moved":1}"#
    );
    let lines = stack.receive.wait_for("-> 204", 1, WAIT).await;
    let failed = stack.receive.wait_for("-> 503", 2, WAIT).await;
    let id = |line: &str| {
        line.split_whitespace()
            .find(|w| w.starts_with("webhook-id="))
            .map(str::to_owned)
    };
    assert_eq!(
        id(&lines[0]),
        id(&failed[0]),
        "the redriven copy keeps its webhook-id"
    );
}
