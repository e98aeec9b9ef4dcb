//! Test support shared by the integration and end-to-end suites, one module per role:
//! [`MotoServer`] (a real SQS-protocol server, moto, started per test on a free loopback port;
//! it serves Secrets Manager too), [`VerifyingReceiver`] (a real HTTP receiver that verifies
//! deliveries with the public `standardwebhooks` crate), [`signed_headers`] (what a sender
//! sends), [`Process`] (the relay's binaries, their output collected), [`live_page`] (a page's
//! WebSocket client for the live channel, and the authorizer requests AppSync sends) and [`personal_data`]
//! (fixtures and the check that logs hold none of them). This file keeps the shared secrets
//! and small helpers; [`router`] sends requests through an axum router in process.
//!
//! Nothing here skips: a missing moto is a test failure that says how to install it.

pub mod live_page;
mod moto;
pub mod personal_data;
mod process;
mod receiver;
pub mod router;
mod signing;

pub use moto::{FifoQueues, MotoServer, sdk_config_at};
pub use process::Process;
pub use receiver::{Delivery, Script, VerifyingReceiver};
pub use signing::{signed_headers, signed_headers_at};

use std::path::PathBuf;

/// Secrets used across the tests (24+ random-looking bytes, as the relay requires).
pub const INGEST_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const WEBHOOK_SECRET: &str = "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24tdGVzdHM=";
/// The key that names chats in group ids (`CHAT_ID_KEY`, 32+ characters).
pub const CHAT_ID_KEY: &str = "test-chat-id-key-never-in-any-log-0123";

/// [`CHAT_ID_KEY`], parsed.
pub fn chat_id_key() -> relay_shared::envelope::ChatIdKey {
    relay_shared::envelope::ChatIdKey::new(CHAT_ID_KEY).expect("test chat id key")
}

/// The repository root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The project's Python (`.venv`), with the PyPI `standardwebhooks` library for interop tests.
pub fn venv_python() -> PathBuf {
    let python = repo_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} not found: run `make tools` (scripts/tools.sh installs the pinned Python tools, standardwebhooks included)",
        python.display()
    );
    python
}

/// Now, as an envelope `timestamp` (a `qr` must be fresh to be delivered).
pub fn rfc3339_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("RFC 3339 formats any time")
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free port")
}
