//! The fuzz targets' bodies: each takes raw fuzzer bytes, drives the relay's own code path
//! and asserts what must hold for every input (no panic, a bounded refusal, the id in the
//! `202` is the id the dispatcher delivers under, …). A panic is a finding.
//!
//! Two callers share these functions: the cargo-fuzz binaries in `fuzz/libfuzzer/` (which
//! need libFuzzer and are built by `make fuzz` only) and `tests/corpus_replay.rs`, which
//! replays the committed corpora as ordinary tests in `make test`, without the fuzzing tool.

use aws_lambda_events::sqs::SqsEvent;
use http::{HeaderMap, HeaderValue, header};
use relay_shared::backoff;
use relay_shared::dispatch::Job;
use relay_shared::envelope::{self, ChatIdKey, Routing};
use relay_shared::ingest::{Accepted, Ingest, ItemResult, Rejection};
use relay_shared::queue::Consumer;
use relay_shared::queue::MAX_VISIBILITY as MAX_DELAY;
use relay_shared::queue::memory::MemoryQueue;
use relay_shared::signature::{
    HEADER_WEBHOOK_ID, HEADER_WEBHOOK_SIGNATURE, HEADER_WEBHOOK_TIMESTAMP, MAX_SIGNATURES,
    SecretSet, TOLERANCE_SECS, VerifyError,
};
use serde_json::Value;
use serde_json::value::RawValue;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A fuzz target's body: any bytes in, a panic on a finding.
pub type Target = fn(&[u8]);

/// The fuzz targets, by the name of their corpus directory and cargo-fuzz binary.
pub const TARGETS: [(&str, Target); 5] = [
    ("ingest_event", ingest_event),
    ("ingest_batch", ingest_batch),
    ("signature", signature),
    ("retry_after", retry_after),
    ("sqs_records", sqs_records),
];

/// Secrets made for fuzzing only. The relay under test holds A and B (a rotation in
/// progress); C is a secret it does not know.
pub const SECRET_A: &str = "whsec_ZnV6emluZy1vbmx5LXNlY3JldC1BLTAxMjM0NTY3ODk=";
pub const SECRET_B: &str = "whsec_ZnV6emluZy1vbmx5LXNlY3JldC1CLTAxMjM0NTY3ODk=";
pub const SECRET_C: &str = "whsec_ZnV6emluZy1vbmx5LXNlY3JldC1DLTAxMjM0NTY3ODk=";

/// A `CHAT_ID_KEY` made for fuzzing only (at least 32 characters).
const CHAT_ID_KEY: &str = "fuzzing-only-chat-id-key-0123456789abcdef";

fn chat_ids() -> ChatIdKey {
    ChatIdKey::new(CHAT_ID_KEY).expect("fuzz chat id key")
}

/// A refusal's message is shown to the sender and logged by them: it may name a field and
/// quote a short value, never echo a large part of the payload.
const MAX_MESSAGE_BYTES: usize = 600;

fn relay_secrets() -> SecretSet {
    SecretSet::parse(&format!("{SECRET_A} {SECRET_B}")).expect("fuzz secrets parse")
}

fn single_secret(secret: &str) -> SecretSet {
    SecretSet::parse(secret).expect("fuzz secret parses")
}

/// One current-thread runtime for the whole process: building one per input would dominate.
fn block_on<F: Future>(future: F) -> F::Output {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a current-thread runtime")
        })
        .block_on(future)
}

/// A fresh service per input, so no state leaks from one input into the next (a crash
/// reproduces from its input alone) and memory stays flat however long the run.
fn fresh_ingest() -> (Ingest, Arc<MemoryQueue>) {
    let queue = Arc::new(MemoryQueue::new("fuzz", Duration::from_secs(30)));
    let ingest = Ingest::new(
        relay_secrets(),
        chat_ids(),
        queue.clone(),
        relay_shared::telemetry::Metrics::off(),
    );
    (ingest, queue)
}

/// What a correct sender sends: JSON content type and a signature over the body, now. A body
/// that is not UTF-8 cannot be signed as text; ingest refuses it before the signature check.
fn correctly_signed_headers(body: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let text = String::from_utf8_lossy(body);
    for (name, value) in
        single_secret(SECRET_A).headers("msg_fuzz", relay_shared::clock::unix_seconds(), &text)
    {
        headers.insert(name, HeaderValue::from_str(&value).expect("ASCII header"));
    }
    headers
}

/// The single-route reference: the body as ingest documents it reads it.
fn validated(body: &[u8]) -> Result<Routing, String> {
    let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
    let value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    envelope::validate(&value, body, &chat_ids()).map_err(|v| v.to_string())
}

/// SQS group and deduplication ids: 1 to 128 ASCII letters, digits or punctuation.
fn assert_sqs_id(what: &str, id: &str) {
    assert!(
        !id.is_empty()
            && id.len() <= relay_shared::queue::MAX_ID_LEN
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c.is_ascii_punctuation()),
        "{what} {id:?} is not a valid SQS id"
    );
}

fn assert_accepted(accepted: &Accepted, raw: &[u8]) {
    let routing = validated(raw)
        .unwrap_or_else(|e| panic!("ingest stored an envelope validation refuses: {e}"));
    assert_eq!(accepted.event_id, routing.event_id);
    assert_eq!(accepted.event_type, routing.event_type);
    assert_eq!(accepted.group_id, routing.group_id);
    assert_sqs_id("group id", &accepted.group_id);
    assert_sqs_id("event id", &accepted.event_id);
    // The dispatcher reads the id back from the stored body: it must be the id ingest
    // answered with, or the receiver's deduplication sees two different events.
    assert_eq!(
        envelope::event_id_of(raw),
        accepted.event_id,
        "the 202's id differs from the webhook-id the dispatcher would deliver under"
    );
}

/// Every refusal of a correctly signed request: a 4xx that is not 401, with an error code
/// and a short message a person can act on.
fn assert_actionable(rejection: &Rejection) {
    let status = rejection.status().as_u16();
    assert!(
        matches!(status, 400 | 413 | 422),
        "a signed request got {status}: {rejection}"
    );
    let body = rejection.body();
    let message = body["message"].as_str().expect("a message");
    assert!(!message.is_empty() && body["error"].is_string());
    assert!(
        message.len() <= MAX_MESSAGE_BYTES,
        "a {}-byte refusal message echoes too much of the payload",
        message.len()
    );
}

/// Target `ingest_event`: the bytes are the body of `POST /events`, correctly signed, so
/// signature, parse, validation and storage all run.
pub fn ingest_event(body: &[u8]) {
    let (ingest, queue) = fresh_ingest();
    match block_on(ingest.accept_event(&correctly_signed_headers(body), body)) {
        Ok(accepted) => {
            assert_accepted(&accepted, body);
            let stored = block_on(queue.receive(1, Duration::ZERO)).expect("in-process receive");
            assert_eq!(stored.len(), 1, "a 202 without a stored message");
            assert_eq!(
                stored[0].body.as_bytes(),
                body,
                "the stored body is the sent body, byte for byte"
            );
        }
        Err(rejection) => {
            assert_actionable(&rejection);
            assert!(queue.is_empty(), "a refused event was stored");
        }
    }
}

/// Target `ingest_batch`: the bytes are the body of `POST /events/batch`, correctly signed.
pub fn ingest_batch(body: &[u8]) {
    let (ingest, queue) = fresh_ingest();
    match block_on(ingest.accept_batch(&correctly_signed_headers(body), body)) {
        Ok(results) => {
            let text = std::str::from_utf8(body).expect("an accepted batch is UTF-8");
            let items: Vec<&RawValue> =
                serde_json::from_str(text).expect("an accepted batch is a JSON array");
            assert_eq!(results.len(), items.len(), "one result per item");
            assert!((1..=relay_shared::queue::MAX_BATCH).contains(&items.len()));
            let mut stored_ids = std::collections::HashSet::new();
            for (item, result) in items.iter().zip(&results) {
                match result {
                    ItemResult::Queued(accepted) => {
                        assert_accepted(accepted, item.get().as_bytes());
                        stored_ids.insert((accepted.group_id.clone(), accepted.event_id.clone()));
                    }
                    ItemResult::Rejected(rejection) => {
                        assert_actionable(rejection);
                        assert_eq!(rejection.status().as_u16(), 422, "{rejection}");
                    }
                }
            }
            // Copies of one event inside a batch are stored once (FIFO deduplication).
            assert_eq!(
                queue.len(),
                stored_ids.len(),
                "stored messages vs queued items"
            );
        }
        Err(rejection) => {
            assert_actionable(&rejection);
            assert!(queue.is_empty(), "a refused batch stored something");
        }
    }
}

/// Target `signature`: `SecretSet::verify_at` with fuzzed headers, body and clock. The input
/// is text, one field a line, so seeds are readable and mutations stay meaningful:
///
/// ```text
/// <now: unix seconds>
/// <webhook-id>
/// <webhook-timestamp>   "@<offset>" means now + offset
/// <webhook-signature>   "$A" "$B" "$C" become the correct v1 signature with that secret
/// <body: the rest, any bytes>
/// ```
///
/// A header line that is `-`, missing, or not a valid header value leaves the header out.
/// The outcome is checked against the scheme itself: accepted exactly when every header is
/// there, the timestamp is within 5 minutes of now, the body is UTF-8 and one listed `v1`
/// signature is the HMAC of a secret the relay holds.
pub fn signature(data: &[u8]) {
    let mut lines = data.splitn(5, |b| *b == b'\n');
    let now: i64 = lines
        .next()
        .and_then(|l| std::str::from_utf8(l).ok())
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(1_700_000_000);
    let id_line = lines.next();
    let timestamp_line = lines.next().map(|line| match line.strip_prefix(b"@") {
        Some(offset) => std::str::from_utf8(offset)
            .ok()
            .and_then(|o| o.trim().parse::<i64>().ok())
            .and_then(|o| now.checked_add(o))
            .map_or_else(|| line.to_vec(), |t| t.to_string().into_bytes()),
        None => line.to_vec(),
    });
    let signature_line = lines.next();
    let body = lines.next().unwrap_or_default();

    let mut headers = HeaderMap::new();
    put(&mut headers, HEADER_WEBHOOK_ID, id_line);
    put(
        &mut headers,
        HEADER_WEBHOOK_TIMESTAMP,
        timestamp_line.as_deref(),
    );
    // The signing input as a sender would compute it from the headers it sends.
    let id = text_header(&headers, HEADER_WEBHOOK_ID)
        .unwrap_or("")
        .to_owned();
    let timestamp = timestamp_of(&headers).unwrap_or(0);
    let body_text = String::from_utf8_lossy(body);
    let [a, b, c] = [SECRET_A, SECRET_B, SECRET_C]
        .map(|secret| single_secret(secret).sign(&id, timestamp, &body_text));
    let signature_line = signature_line.map(|line| {
        let mut line = line.to_vec();
        for (token, correct) in [(b"$A", &a), (b"$B", &b), (b"$C", &c)] {
            line = replace(&line, token, correct.as_bytes());
        }
        line
    });
    put(
        &mut headers,
        HEADER_WEBHOOK_SIGNATURE,
        signature_line.as_deref(),
    );

    let expected = expected_verification(&headers, body, now, &[a, b]);
    let actual = relay_secrets().verify_at(body, &headers, now);
    assert_eq!(actual, expected, "verify_at at now={now}");
}

/// Inserts a header built from a fuzzed line; `-`, absent or invalid leaves it out.
fn put(headers: &mut HeaderMap, name: &'static str, line: Option<&[u8]>) {
    if let Some(value) = line
        .filter(|l| *l != b"-")
        .and_then(|l| HeaderValue::from_bytes(l).ok())
    {
        headers.insert(name, value);
    }
}

fn text_header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn timestamp_of(headers: &HeaderMap) -> Option<i64> {
    text_header(headers, HEADER_WEBHOOK_TIMESTAMP).and_then(|t| t.trim().parse().ok())
}

fn replace(haystack: &[u8], token: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while !rest.is_empty() {
        if rest.starts_with(token) {
            out.extend_from_slice(with);
            rest = &rest[token.len()..];
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
    out
}

/// Standard Webhooks verification written out plainly, in wide integers so no timestamp can
/// overflow it: the reference `verify_at` must agree with on every input.
fn expected_verification(
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
    accepted_signatures: &[String],
) -> Result<(), VerifyError> {
    let present = |name: &'static str| match headers.get(name) {
        None => Err(VerifyError::MissingHeader(name)),
        Some(v) => v.to_str().map_err(|_| VerifyError::BadHeader(name)),
    };
    present(HEADER_WEBHOOK_ID)?;
    let signatures = present(HEADER_WEBHOOK_SIGNATURE)?;
    present(HEADER_WEBHOOK_TIMESTAMP)?;
    let timestamp =
        timestamp_of(headers).ok_or(VerifyError::BadHeader(HEADER_WEBHOOK_TIMESTAMP))?;
    let age = i128::from(now) - i128::from(timestamp);
    if age > i128::from(TOLERANCE_SECS) {
        return Err(VerifyError::Stale);
    }
    if -age > i128::from(TOLERANCE_SECS) {
        return Err(VerifyError::Future);
    }
    std::str::from_utf8(body).map_err(|_| VerifyError::NotUtf8)?;
    // Each listed v1 signature costs an HMAC comparison: the list is bounded.
    let listed = signatures
        .split(' ')
        .filter(|s| {
            s.split_once(',')
                .is_some_and(|(version, _)| version == "v1")
        })
        .count();
    if listed > MAX_SIGNATURES {
        return Err(VerifyError::TooManySignatures);
    }
    // A single-secret signature is exactly "v1,<canonical base64>": the only listed entry
    // that can decode to the expected tag.
    let matched = signatures
        .split(' ')
        .any(|s| accepted_signatures.iter().any(|a| a == s));
    if matched {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// Target `retry_after`: `parse_retry_after` with a fuzzed clock. Text input: the first line
/// is now in unix seconds (negative: before 1970), the rest is the header value.
///
/// The oracle is what RFC 9110 §10.2.3 (`Retry-After = HTTP-date / delay-seconds`) says of
/// every value, as properties rather than a second copy of the parser; the exact answers to
/// the RFC's own forms are the table in this file's tests.
pub fn retry_after(data: &[u8]) {
    let (first, value) = match data.iter().position(|b| *b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&b""[..], data),
    };
    let secs: i64 = std::str::from_utf8(first)
        .ok()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(1_800_000_000);
    let offset = Duration::from_secs(secs.unsigned_abs());
    let Some(now) = (if secs >= 0 {
        UNIX_EPOCH.checked_add(offset)
    } else {
        UNIX_EPOCH.checked_sub(offset)
    }) else {
        return; // No clock reads such a time.
    };
    let value = String::from_utf8_lossy(value);
    check_retry_after(&value, now);
}

/// The properties of `parse_retry_after(value, now)`.
fn check_retry_after(value: &str, now: SystemTime) {
    let parsed = backoff::parse_retry_after(value, now);
    // Never longer than the longest delay SQS can hold a message for.
    if let Some(delay) = parsed {
        assert!(delay <= MAX_DELAY, "{value:?} gave {delay:?}");
    }
    // The whitespace around a field value is not part of it.
    let trimmed = value.trim();
    assert_eq!(
        backoff::parse_retry_after(trimmed, now),
        parsed,
        "{value:?} vs {trimmed:?}"
    );
    let delay_seconds = !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit());
    if delay_seconds {
        // delay-seconds (1*DIGIT) is always understood, whatever its size, and is relative:
        // the clock does not change it, and one more digit never waits less.
        let delay = parsed.unwrap_or_else(|| panic!("delay-seconds {value:?} refused"));
        assert_eq!(
            backoff::parse_retry_after(trimmed, UNIX_EPOCH),
            parsed,
            "{value:?} depends on the clock"
        );
        let longer = backoff::parse_retry_after(&format!("{trimmed}9"), now);
        assert!(longer >= parsed, "{trimmed}9 waits less than {trimmed}");
        if let Ok(secs) = trimmed.parse::<u64>()
            && secs <= MAX_DELAY.as_secs()
        {
            assert_eq!(delay, Duration::from_secs(secs), "{value:?}");
        } else {
            assert_eq!(delay, MAX_DELAY, "{value:?} is past the cap");
        }
    } else if let Ok(date) = httpdate::parse_http_date(trimmed) {
        // An HTTP-date is a point in time: a past one means now, a future one is that far ahead
        // (up to the cap).
        let delay = parsed.unwrap_or_else(|| panic!("HTTP-date {value:?} refused"));
        match date.duration_since(now) {
            Err(_) => assert_eq!(delay, Duration::ZERO, "{value:?} is in the past"),
            Ok(ahead) => assert_eq!(delay, ahead.min(MAX_DELAY), "{value:?} is ahead"),
        }
    } else {
        assert_eq!(
            parsed, None,
            "{value:?} is neither delay-seconds nor an HTTP-date"
        );
    }
}

/// Target `sqs_records`: the bytes are a Lambda SQS event as the dispatcher receives it; each
/// record becomes a job (parsing a record never fails by contract) that keeps the record's ids,
/// body and attributes, or their documented defaults.
pub fn sqs_records(data: &[u8]) {
    let Ok(event) = serde_json::from_slice::<SqsEvent>(data) else {
        return; // Lambda's runtime refuses the invocation before the handler runs.
    };
    for record in event.records {
        let expected = format!("{:?}", expected_job(&record));
        let job = Job::from_record(record);
        assert_eq!(format!("{job:?}"), expected);
    }
}

/// What the dispatcher's job must hold for `record`, named and laid out as `Job` is so the two
/// compare through `Debug` (a job has no other view outside the dispatcher).
fn expected_job(record: &aws_lambda_events::sqs::SqsMessage) -> expected::Job {
    use relay_shared::queue::attr;
    let attribute = |name: &str| record.attributes.get(name).cloned();
    let message_id = record.message_id.clone().unwrap_or_default();
    let body = record.body.clone();
    let raw = body.as_deref().unwrap_or_default().as_bytes();
    expected::Job {
        receipt_handle: record.receipt_handle.clone().unwrap_or_default(),
        // No group attribute: the message is a group of its own, holding nothing else back.
        group: attribute(attr::GROUP_ID).unwrap_or_else(|| message_id.clone()),
        dedup_id: attribute(attr::DEDUP_ID),
        // The webhook-id is read from the body (the id ingest answered with), never from the
        // record's attributes, so a redriven copy keeps it.
        event_id: envelope::event_id_of(raw),
        event_type: envelope::probe(raw).0,
        // A missing or garbled count is a first receive.
        receive_count: attribute(attr::RECEIVE_COUNT)
            .and_then(|n| n.parse().ok())
            .unwrap_or(1),
        // 0 or garbage is no time SQS stamps: unknown, never 1970.
        sent_timestamp_ms: attribute(attr::SENT_TIMESTAMP)
            .and_then(|t| t.parse().ok())
            .filter(|&ms| ms > 0),
        message_id,
        body,
    }
}

mod expected {
    /// `relay_shared::dispatch::Job`'s fields, in its order, for its `Debug` text.
    #[derive(Debug)]
    #[allow(dead_code)] // Read through `Debug` only.
    pub struct Job {
        pub message_id: String,
        pub receipt_handle: String,
        pub body: Option<String>,
        pub group: String,
        pub dedup_id: Option<String>,
        pub event_id: String,
        pub event_type: Option<relay_shared::envelope::EventType>,
        pub receive_count: u32,
        pub sent_timestamp_ms: Option<u64>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1994-11-06T08:49:37Z, RFC 9110's example date.
    const RFC_DATE: u64 = 784_111_777;

    fn at(unix: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(unix)
    }

    /// RFC 9110 §10.2.3 and §5.6.7: delay-seconds, and the three HTTP-date forms a recipient
    /// must accept, with the answers they must get; then what is neither.
    #[test]
    fn retry_after_answers_rfc_9110s_forms() {
        let minute_before = at(RFC_DATE - 60);
        let s = Duration::from_secs;
        let cases: [(&str, SystemTime, Option<Duration>); 22] = [
            ("120", minute_before, Some(s(120))),
            ("0", minute_before, Some(s(0))),
            (" 120\t", minute_before, Some(s(120))),
            ("0000120", minute_before, Some(s(120))),
            ("43200", minute_before, Some(MAX_DELAY)),
            ("43201", minute_before, Some(MAX_DELAY)),
            ("99999999999999999999999", minute_before, Some(MAX_DELAY)),
            // IMF-fixdate, obsolete RFC 850 and ANSI C asctime() forms of one instant.
            ("Sun, 06 Nov 1994 08:49:37 GMT", minute_before, Some(s(60))),
            ("Sunday, 06-Nov-94 08:49:37 GMT", minute_before, Some(s(60))),
            ("Sun Nov  6 08:49:37 1994", minute_before, Some(s(60))),
            // RFC 9110's own Retry-After example, two minutes ahead of now.
            (
                "Fri, 31 Dec 1999 23:59:59 GMT",
                at(946_684_799 - 120),
                Some(s(120)),
            ),
            // Now, or past: retry at once.
            ("Sun, 06 Nov 1994 08:49:37 GMT", at(RFC_DATE), Some(s(0))),
            (
                "Sun, 06 Nov 1994 08:49:37 GMT",
                at(RFC_DATE + 3600),
                Some(s(0)),
            ),
            // Far ahead: capped.
            (
                "Sun, 06 Nov 1994 08:49:37 GMT",
                at(RFC_DATE - 86_400),
                Some(MAX_DELAY),
            ),
            // Neither delay-seconds nor an HTTP-date.
            ("", minute_before, None),
            ("-1", minute_before, None),
            ("+120", minute_before, None),
            ("1.5", minute_before, None),
            ("120s", minute_before, None),
            ("1 20", minute_before, None),
            ("Sun, 06 Nov 1994 08:49:37", minute_before, None),
            ("tomorrow", minute_before, None),
        ];
        for (value, now, expected) in cases {
            assert_eq!(
                backoff::parse_retry_after(value, now),
                expected,
                "{value:?}"
            );
            check_retry_after(value, now);
        }
    }
}
