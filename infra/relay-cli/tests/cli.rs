//! The `relay` binary driven as a process, as a developer would: `relay receive`, `relay local`
//! and `relay send`, each `relay` on a loopback port the system picked (`--listen 127.0.0.1:0`,
//! the address read back from its `listening on` line).

use relay_tests::personal_data::{
    assert_free_of_personal_data, is_hashed_chat_group, message_event, qr_event, status_event,
};
use relay_tests::{CHAT_ID_KEY, INGEST_SECRET, Process, WEBHOOK_SECRET, signed_headers};
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
    let mut receive_args = vec![
        "receive",
        "--listen",
        "127.0.0.1:0",
        "--secret",
        WEBHOOK_SECRET,
    ];
    receive_args.extend_from_slice(receive_flags);
    let receive = Process::spawn(RELAY, &receive_args, &[]);
    let receive_address = receive.listening_address(WAIT).await;

    let webhook_url = format!("http://{receive_address}/api/webhook/chat-whatsapp");
    let mut local_args = vec!["local", "--listen", "127.0.0.1:0"];
    local_args.extend_from_slice(local_flags);
    let mut env = vec![
        ("WEBHOOK_URL", webhook_url.as_str()),
        ("WEBHOOK_SECRETS", WEBHOOK_SECRET),
        ("INGEST_SECRETS", INGEST_SECRET),
    ];
    env.extend_from_slice(local_env);
    let local = Process::spawn(RELAY, &local_args, &env);
    let local_address = local.listening_address(WAIT).await;
    Stack {
        local,
        receive,
        ingest_url: format!("http://{local_address}/events"),
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
    let path = std::env::temp_dir().join(format!("relay-send-{}.json", std::process::id()));
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
    std::fs::remove_file(&path).unwrap();
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
    let printed = serde_json::from_str::<serde_json::Value>(body)
        .unwrap()
        .to_string();
    // The body is printed after its "verified" line: wait for it rather than race it.
    stack.receive.wait_for(&printed, 1, WAIT).await;
    let lines = stack.receive.lines();
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

    missing_settings_are_named().await;
    chat_id_key_settings_are_checked().await;
    a_port_in_use_is_named().await;
    visibility_timeouts_are_checked().await;
}

/// SQS's range, and room for one attempt and its settling within a batch's deadline.
async fn visibility_timeouts_are_checked() {
    for (value, expected) in [
        ("0", "invalid value '0'"),
        ("43201", "invalid value '43201'"),
        (
            "24",
            "--visibility-timeout 24 s is too short: a batch must be settled before its messages are visible again, and one attempt needs the delivery timeout + 20 s; give more than 25 s",
        ),
    ] {
        let stderr =
            stderr_of_failing(local_with_secrets().args(["--visibility-timeout", value])).await;
        assert!(stderr.contains(expected), "{value}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    }
}

/// Runs `relay` as set up; it must fail. Returns what it wrote to stderr.
async fn stderr_of_failing(command: &mut tokio::process::Command) -> String {
    let out = command.output().await.unwrap();
    assert!(!out.status.success(), "{command:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `relay local` with an empty environment but the two secrets and the webhook URL.
fn local_with_secrets() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(RELAY);
    command
        .args(["local", "--listen", "127.0.0.1:0"])
        .env_clear()
        .env("INGEST_SECRETS", INGEST_SECRET)
        .env("WEBHOOK_SECRETS", WEBHOOK_SECRET)
        .env("WEBHOOK_URL", "http://127.0.0.1:9/hook");
    command
}

/// Missing settings: one line each, naming variable and flag.
async fn missing_settings_are_named() {
    let stderr = stderr_of_failing(
        tokio::process::Command::new(RELAY)
            .args(["local", "--listen", "127.0.0.1:0"])
            .env_clear(),
    )
    .await;
    assert_eq!(stderr.trim_end().lines().count(), 3, "{stderr}");
    assert!(
        stderr.contains("INGEST_SECRETS: not set") && stderr.contains("(flag --ingest-secrets)"),
        "{stderr}"
    );
}

async fn chat_id_key_settings_are_checked() {
    // A real queue outlives the process: its chats need a stable key.
    let stderr = stderr_of_failing(
        local_with_secrets().args(["--queue-url", "http://127.0.0.1:9/000000000000/q.fifo"]),
    )
    .await;
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("CHAT_ID_KEY: not set; required with QUEUE_URL")
            && stderr.contains("(flag --chat-id-key)"),
        "{stderr}"
    );
    // A short key is named, never echoed.
    let stderr =
        stderr_of_failing(local_with_secrets().args(["--chat-id-key", "tiny-s3cret"])).await;
    assert!(
        stderr.contains("CHAT_ID_KEY: is 11 characters long") && !stderr.contains("tiny-s3cret"),
        "{stderr}"
    );
}

async fn a_port_in_use_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let stderr = stderr_of_failing(tokio::process::Command::new(RELAY).args([
        "receive",
        "--listen",
        &address,
        "--secret",
        WEBHOOK_SECRET,
    ]))
    .await;
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
            ("CHAT_ID_KEY", CHAT_ID_KEY),
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

#[tokio::test]
async fn relay_redrive_quotes_a_failed_answer_in_one_short_line() {
    // Not a relay: answers 500 with a megabyte.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|| async {
        (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "e".repeat(1024 * 1024),
        )
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    let out = tokio::process::Command::new(RELAY)
        .args(["redrive", "--url", &format!("http://{address}")])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("answered 500"), "{stderr}");
    assert!(
        stderr.contains(&format!("{}…", "e".repeat(300))),
        "{stderr}"
    );
    assert!(stderr.len() < 600, "{} bytes", stderr.len());
}

#[tokio::test]
async fn relay_local_prints_the_webhook_url_without_its_query_or_credentials() {
    // Nobody listens there (binding port 9 takes root), so the reachability warning names the
    // URL too.
    let url = "http://user:secret-password@127.0.0.1:9/api/hook?token=secret-token";
    let local = Process::spawn(
        RELAY,
        &["local", "--listen", "127.0.0.1:0"],
        &[
            ("WEBHOOK_URL", url),
            ("WEBHOOK_SECRETS", WEBHOOK_SECRET),
            ("INGEST_SECRETS", INGEST_SECRET),
        ],
    );
    let warning = local.wait_for("is not reachable now", 1, WAIT).await;
    let shown = url
        .replace("user:secret-password@", "")
        .replace("?token=secret-token", "");
    assert!(warning[0].contains(&shown), "{}", warning[0]);
    let banner = local.wait_for("delivering to", 1, WAIT).await;
    assert!(banner[0].contains(&shown), "{}", banner[0]);
    let lines = local.terminate_with_output().await.1;
    assert!(
        !lines.iter().any(|l| l.contains("secret-")),
        "{}",
        lines.join("\n")
    );
}

/// `relay local` with every log at TRACE (dependencies too): QR, status and message events,
/// accepted and refused, a failed attempt and its retry, and not one line of its output holds
/// a phone number, message text, QR code, secret, the chat id key or a signature.
/// Posts every kind of event with personal data in it (accepted, refused, in a batch) to
/// ingest; returns how many must be delivered.
async fn post_every_kind(ingest_url: &str) -> usize {
    let http = reqwest::Client::new();
    let post = |path: &'static str, body: String, secret: &'static str| {
        let url = ingest_url.replace("/events", path);
        let request = http
            .post(url)
            .headers(signed_headers(secret, "req-trace", &body))
            .body(body);
        async move {
            request
                .send()
                .await
                .expect("ingest answers")
                .status()
                .as_u16()
        }
    };
    let accepted = [
        qr_event(),
        status_event(),
        message_event("incoming"),
        message_event("outgoing"),
    ];
    for body in &accepted {
        assert_eq!(
            post("/events", body.clone(), INGEST_SECRET).await,
            202,
            "{body}"
        );
    }
    assert_eq!(
        post("/events", message_event("sideways"), INGEST_SECRET).await,
        422
    );
    assert_eq!(
        post("/events", message_event("incoming"), WEBHOOK_SECRET).await,
        401
    );
    let batch = format!(
        "[{},{}]",
        message_event("incoming").replace("3EB0-incoming", "3EB0-batch"),
        status_event().replace(r#""connected":true"#, r#""connected":"5511987654321""#)
    );
    assert_eq!(post("/events/batch", batch, INGEST_SECRET).await, 207);
    accepted.len() + 1
}

/// Message events are logged with their group, which names the chat by its keyed hash.
fn check_message_groups_are_hashed(lines: &[String]) {
    let groups: Vec<&str> = lines
        .iter()
        .filter(|l| l.contains("event_type=\"message\"") || l.contains("event_type=message"))
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("group=")))
        .collect();
    assert!(
        !groups.is_empty(),
        "message events are logged with their group"
    );
    assert!(
        groups
            .iter()
            .all(|g| is_hashed_chat_group(g.trim_matches('"'))),
        "{groups:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("random key")),
        "CHAT_ID_KEY was given"
    );
}

#[tokio::test]
async fn the_local_stack_logs_no_personal_data_even_at_trace() {
    let stack = start_stack_with(
        &["--fail-with", "500", "--fail-times", "1"],
        &["--retry-schedule", "0,0"],
        &[("RUST_LOG", "trace"), ("CHAT_ID_KEY", CHAT_ID_KEY)],
    )
    .await;
    let delivered = post_every_kind(&stack.ingest_url).await;
    stack
        .local
        .wait_for("outcome=\"delivered\"", delivered, WAIT)
        .await;
    stack.local.wait_for("outcome=\"retry\"", 1, WAIT).await;
    let lines = stack.local.lines();
    let status = stack.local.terminate().await;
    assert!(status.success(), "{status:?}");

    assert!(
        lines.iter().any(|l| l.contains("TRACE")),
        "dependencies logged at TRACE too"
    );
    check_message_groups_are_hashed(&lines);
    assert_free_of_personal_data(&lines.join("\n"), "relay local's output");
}

#[tokio::test]
async fn without_chat_id_key_the_local_stack_says_it_makes_one_per_run() {
    // Empty is unset (whatever the developer's shell exports).
    let stack = start_stack_with(&[], &["--retry-schedule", "1"], &[("CHAT_ID_KEY", "")]).await;
    let note = stack.local.wait_for("CHAT_ID_KEY", 1, WAIT).await;
    assert_eq!(
        note,
        [
            "relay local: CHAT_ID_KEY not set: chats are named by a random key made for this run (fine for the in-process queue, which is lost on restart too)"
        ]
    );
    // Events still flow.
    let out = send_sample(&stack, "message").await;
    assert!(out.status.success());
    stack
        .receive
        .wait_for("verified webhook-id=", 1, WAIT)
        .await;
}

/// The in-process queue is lost on exit: Ctrl-C/SIGTERM says how much goes with it.
#[tokio::test]
async fn stopping_the_local_stack_says_how_many_events_it_drops() {
    // Every attempt fails and waits an hour: nothing can be delivered before the stop.
    let stack = start_stack(&["--fail-with", "500", "--fail-times", "1000"], "3600").await;
    for event in ["status", "qr", "message"] {
        assert!(send_sample(&stack, event).await.status.success());
    }
    // status and message each failed once; qr is held behind status in its group.
    stack.receive.wait_for("-> 500", 2, WAIT).await;
    let (status, lines) = stack.local.terminate_with_output().await;
    assert!(status.success(), "{status:?}");
    let last = lines
        .iter()
        .find(|l| l.contains("stopped;"))
        .unwrap_or_else(|| panic!("no closing line: {lines:#?}"));
    assert!(
        last.contains(
            "dropped with the in-process queue: 3 event(s) (2 waiting for a retry or in flight)"
        ),
        "{last}"
    );
}
