//! The queue contract: one suite of behaviour checks run against the in-process adapter and
//! against moto's SQS server (reset between cases). Where the two differ, the in-process
//! adapter is wrong: moto stands in for SQS.
//!
//! Where moto is more lenient than SQS (it stores what SQS refuses), the rule is tested on the
//! in-process adapter alone, below the contract, each test saying what moto does instead.

use futures::future::BoxFuture;
use relay_shared::queue::memory::{DeadLetter, MemoryQueue};
use relay_shared::queue::sqs::SqsQueue;
use relay_shared::queue::{
    Consumer, MAX_BATCH, MAX_ID_LEN, MAX_MESSAGE_BYTES, MAX_VISIBILITY, MAX_WAIT, NewMessage,
    Producer, Queue, QueueError, ReceivedMessage, Visibility,
};
use relay_tests::MotoServer;
use std::sync::Arc;
use std::time::Duration;

/// DLQ after this many receives, in every case.
const MAX_RECEIVES: u32 = 2;
const VISIBILITY_SECS: u32 = 30;

struct Fixture {
    queue: Arc<dyn Queue>,
    dlq: Arc<dyn Queue>,
}

type Case = fn(&Fixture) -> BoxFuture<'_, ()>;

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        const CASES: &[(&str, Case)] = &[$((stringify!($name), |f| Box::pin($name(f)))),*];
    };
}

cases![
    order_is_kept_within_a_group,
    a_group_with_a_message_in_flight_is_blocked,
    a_repeated_deduplication_id_is_dropped,
    a_received_message_is_invisible_until_released,
    receive_count_grows_with_each_receive,
    a_message_received_too_often_moves_to_the_dlq,
    batches_over_ten_are_refused,
    receives_take_1_to_10_messages_and_wait_at_most_20_seconds,
    a_batch_over_1_mib_in_total_is_refused,
    delete_removes_and_tolerates_a_stale_receipt,
    long_poll_returns_a_message_sent_while_waiting,
    visibility_is_capped_at_12_hours,
];

fn message(group: &str, dedup: &str) -> NewMessage {
    NewMessage {
        body: format!(r#"{{"id":"{dedup}"}}"#),
        group_id: group.to_owned(),
        dedup_id: dedup.to_owned(),
    }
}

async fn receive(queue: &dyn Queue, max: usize) -> Vec<ReceivedMessage> {
    queue.receive(max, Duration::ZERO).await.expect("receive")
}

fn ids(messages: &[ReceivedMessage]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m.dedup_id.clone().unwrap_or_default())
        .collect()
}

async fn order_is_kept_within_a_group(f: &Fixture) {
    for (group, id) in [
        ("a", "a1"),
        ("b", "b1"),
        ("a", "a2"),
        ("a", "a3"),
        ("b", "b2"),
    ] {
        f.queue.send(message(group, id)).await.unwrap();
    }
    let got = ids(&receive(&*f.queue, 10).await);
    let of = |prefix: char| {
        got.iter()
            .filter(|id| id.starts_with(prefix))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(of('a'), ["a1", "a2", "a3"], "{got:?}");
    assert_eq!(of('b'), ["b1", "b2"], "{got:?}");
}

async fn a_group_with_a_message_in_flight_is_blocked(f: &Fixture) {
    for (group, id) in [("a", "a1"), ("a", "a2"), ("b", "b1")] {
        f.queue.send(message(group, id)).await.unwrap();
    }
    let first = receive(&*f.queue, 1).await;
    assert_eq!(ids(&first), ["a1"]);
    let next = ids(&receive(&*f.queue, 10).await);
    assert_eq!(next, ["b1"], "a2 waits while a1 is in flight");
    f.queue.delete(&first[0].receipt_handle).await.unwrap();
    assert_eq!(
        ids(&receive(&*f.queue, 10).await),
        ["a2"],
        "a1 deleted: a2 is next"
    );
}

async fn a_repeated_deduplication_id_is_dropped(f: &Fixture) {
    f.queue.send(message("a", "same")).await.unwrap();
    f.queue.send(message("a", "same")).await.unwrap();
    f.queue.send(message("a", "other")).await.unwrap();
    assert_eq!(ids(&receive(&*f.queue, 10).await), ["same", "other"]);
}

async fn a_received_message_is_invisible_until_released(f: &Fixture) {
    f.queue.send(message("a", "m1")).await.unwrap();
    let got = receive(&*f.queue, 10).await;
    assert_eq!(got.len(), 1);
    assert!(
        receive(&*f.queue, 10).await.is_empty(),
        "in flight: invisible"
    );
    f.queue
        .change_visibility(&got[0].receipt_handle, Duration::ZERO)
        .await
        .unwrap();
    let again = receive(&*f.queue, 10).await;
    assert_eq!(ids(&again), ["m1"], "visibility 0: visible at once");
    assert_eq!(again[0].body, got[0].body);
}

async fn receive_count_grows_with_each_receive(f: &Fixture) {
    f.queue.send(message("a", "m1")).await.unwrap();
    let first = receive(&*f.queue, 10).await;
    assert_eq!(first[0].receive_count, 1);
    assert_eq!(first[0].group_id, "a");
    assert!(
        first[0].sent_timestamp_ms > Some(1_600_000_000_000),
        "sent timestamp in unix ms"
    );
    f.queue
        .change_visibility(&first[0].receipt_handle, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(receive(&*f.queue, 10).await[0].receive_count, 2);
}

async fn a_message_received_too_often_moves_to_the_dlq(f: &Fixture) {
    f.queue.send(message("a", "doomed")).await.unwrap();
    f.queue.send(message("a", "next")).await.unwrap();
    for _ in 0..MAX_RECEIVES {
        let got = receive(&*f.queue, 1).await;
        assert_eq!(ids(&got), ["doomed"]);
        f.queue
            .change_visibility(&got[0].receipt_handle, Duration::ZERO)
            .await
            .unwrap();
    }
    let after = ids(&receive(&*f.queue, 10).await);
    assert_eq!(
        after,
        ["next"],
        "received {MAX_RECEIVES} times: moved, and the group moves on"
    );
    let dead = receive(&*f.dlq, 10).await;
    assert_eq!(ids(&dead), ["doomed"]);
    assert_eq!(dead[0].group_id, "a", "the DLQ keeps the group");
}

async fn batches_over_ten_are_refused(f: &Fixture) {
    let eleven: Vec<NewMessage> = (0..11).map(|i| message("a", &format!("m{i}"))).collect();
    let refused = f.queue.send_batch(eleven).await;
    assert!(
        matches!(refused, Err(QueueError::Refused(_))),
        "{refused:?}"
    );
    assert!(matches!(
        f.queue.receive(11, Duration::ZERO).await,
        Err(QueueError::Refused(_))
    ));
    let ten: Vec<NewMessage> = (0..10).map(|i| message("a", &format!("m{i}"))).collect();
    let results = f.queue.send_batch(ten).await.unwrap();
    assert_eq!(results.len(), 10);
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(receive(&*f.queue, 10).await.len(), 10);
}

/// AWS, `ReceiveMessage`: `MaxNumberOfMessages` "Valid values: 1 to 10"; "The maximum long
/// polling wait time is 20 seconds." Refused, not trimmed, by both adapters (the SQS adapter
/// before calling SQS, which refuses them too, as moto does).
async fn receives_take_1_to_10_messages_and_wait_at_most_20_seconds(f: &Fixture) {
    f.queue.send(message("a", "m1")).await.unwrap();
    for (max, wait) in [
        (0, Duration::ZERO),
        (MAX_BATCH + 1, Duration::ZERO),
        (1, MAX_WAIT + Duration::from_secs(1)),
        (1, Duration::MAX),
    ] {
        let refused = f.queue.receive(max, wait).await;
        assert!(
            matches!(&refused, Err(QueueError::Refused(m)) if m.contains("InvalidParameterValue")),
            "{max} messages, {wait:?}: {refused:?}"
        );
    }
    assert_eq!(
        ids(&receive(&*f.queue, 1).await),
        ["m1"],
        "nothing was received by the refused calls"
    );
}

/// AWS, `SendMessageBatch`: "The maximum allowed individual message size and the maximum total
/// payload size (the sum of the individual lengths of all of the batched messages) are both 1
/// MiB 1,048,576 bytes." Ten bodies that fit one by one but not together: the whole request is
/// refused (`BatchRequestTooLong`; moto refuses it too), and nothing of it is stored.
async fn a_batch_over_1_mib_in_total_is_refused(f: &Fixture) {
    let body = "x".repeat(MAX_MESSAGE_BYTES / MAX_BATCH + 1);
    let batch: Vec<NewMessage> = (0..MAX_BATCH)
        .map(|i| NewMessage {
            body: body.clone(),
            group_id: "a".into(),
            dedup_id: format!("m{i}"),
        })
        .collect();
    let refused = f.queue.send_batch(batch).await;
    assert!(
        matches!(&refused, Err(QueueError::MessageRefused(m)) if m.contains("BatchRequestTooLong")),
        "{refused:?}"
    );
    assert!(receive(&*f.queue, 10).await.is_empty(), "nothing stored");
    f.queue
        .send(NewMessage {
            body,
            group_id: "a".into(),
            dedup_id: "alone".into(),
        })
        .await
        .expect("one of them alone fits");
}

async fn delete_removes_and_tolerates_a_stale_receipt(f: &Fixture) {
    f.queue.send(message("a", "m1")).await.unwrap();
    let got = receive(&*f.queue, 10).await;
    f.queue.delete(&got[0].receipt_handle).await.unwrap();
    f.queue
        .delete(&got[0].receipt_handle)
        .await
        .expect("deleting twice is not an error");
    f.queue
        .change_visibility(&got[0].receipt_handle, Duration::ZERO)
        .await
        .expect_err("a deleted message has no visibility to change");
    assert!(receive(&*f.queue, 10).await.is_empty());
}

async fn long_poll_returns_a_message_sent_while_waiting(f: &Fixture) {
    let queue = Arc::clone(&f.queue);
    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        queue.send(message("a", "late")).await.unwrap();
    });
    let got = f.queue.receive(10, Duration::from_secs(5)).await.unwrap();
    sender.await.unwrap();
    assert_eq!(ids(&got), ["late"]);
}

/// SQS takes 0 to 43,200 s in all since the receive: just under 12 h right after a receive is
/// accepted, a second more than 12 h is refused (not trimmed). moto refuses it too ("Total
/// VisibilityTimeout for the message is beyond the limit"); hours of waiting are checked on the
/// in-process queue below, with a paused clock.
async fn visibility_is_capped_at_12_hours(f: &Fixture) {
    f.queue.send(message("a", "m1")).await.unwrap();
    let got = receive(&*f.queue, 10).await;
    let receipt = &got[0].receipt_handle;
    let refused = f
        .queue
        .change_visibility(receipt, MAX_VISIBILITY + Duration::from_secs(1))
        .await;
    assert!(
        matches!(refused, Err(QueueError::Refused(_))),
        "{refused:?}"
    );
    f.queue
        .change_visibility(receipt, MAX_VISIBILITY - Duration::from_secs(60))
        .await
        .expect("a minute short of 12 h, right after the receive");
}

async fn run_all(mut fixture: impl AsyncFnMut() -> Fixture, adapter: &str) {
    for (name, case) in CASES {
        let f = fixture().await;
        eprintln!("{adapter}: {name}");
        case(&f).await;
    }
}

#[tokio::test]
async fn the_in_process_queue_meets_the_contract() {
    run_all(
        async || {
            let dlq = Arc::new(MemoryQueue::new(
                "dlq",
                Duration::from_secs(VISIBILITY_SECS.into()),
            ));
            let queue = MemoryQueue::new("queue", Duration::from_secs(VISIBILITY_SECS.into()))
                .with_dead_letter(DeadLetter {
                    queue: Arc::clone(&dlq),
                    max_receive_count: MAX_RECEIVES,
                });
            Fixture {
                queue: Arc::new(queue),
                dlq,
            }
        },
        "memory",
    )
    .await;
}

#[tokio::test]
async fn moto_sqs_meets_the_contract() {
    let moto = MotoServer::start().await;
    let moto = &moto;
    run_all(
        async || {
            moto.reset().await;
            let queues = moto
                .create_fifo_with_dlq("contract", MAX_RECEIVES, VISIBILITY_SECS)
                .await;
            Fixture {
                queue: Arc::new(SqsQueue::new(queues.client.clone(), &queues.queue_url)),
                dlq: Arc::new(SqsQueue::new(queues.client.clone(), &queues.dlq_url)),
            }
        },
        "moto",
    )
    .await;
}

/// AWS, `ChangeMessageVisibility`: the 12 hours count from the receive, and "If you attempt to
/// set the VisibilityTimeout to an amount more than the maximum time left, Amazon SQS returns
/// an error. It will not automatically recalculate and increase the timeout to the maximum time
/// remaining." The in-process queue enforces it to the second, so the dispatcher's cap is
/// tested against the real rule over hours (a paused clock) as well as on moto.
#[tokio::test(start_paused = true)]
async fn the_in_process_queue_counts_the_12_hours_from_the_receive() {
    let queue = MemoryQueue::new("strict", Duration::from_secs(30));
    queue.send(message("a", "m1")).await.unwrap();
    let got = receive(&queue, 1).await;
    let receipt = &got[0].receipt_handle;
    let hour = Duration::from_secs(3600);
    queue.change_visibility(receipt, 6 * hour).await.unwrap();
    tokio::time::advance(5 * hour).await;
    // 5 h gone: 7 h more would make 12 h; 7 h and a second is refused, not trimmed.
    let refused = queue
        .change_visibility(receipt, 7 * hour + Duration::from_secs(1))
        .await;
    assert!(
        matches!(&refused, Err(QueueError::Refused(m)) if m.contains("43200")),
        "{refused:?}"
    );
    queue.change_visibility(receipt, 7 * hour).await.unwrap();
    // A new receive starts a new 12 hours.
    queue
        .change_visibility(receipt, Duration::ZERO)
        .await
        .unwrap();
    let again = receive(&queue, 1).await;
    queue
        .change_visibility(&again[0].receipt_handle, MAX_VISIBILITY)
        .await
        .unwrap();
}

fn in_process(visibility: Duration) -> MemoryQueue {
    MemoryQueue::new("strict", visibility)
}

/// AWS (Knowledge Center, `sqs-receipt-handle-error`): "For FIFO queues, a receipt handle
/// expires after a visibility timeout period. [...] If you try to delete the message outside
/// of the visibility timeout period, then you see an error [...] Reason: The receipt handle has
/// expired." In-process only: moto (5.2.5) deletes the message with any receipt handle it ever
/// had, expired or not.
#[tokio::test(start_paused = true)]
async fn the_in_process_queue_refuses_to_delete_with_an_expired_receipt_handle() {
    let visibility = Duration::from_secs(30);
    let queue = in_process(visibility);
    queue.send(message("a", "m1")).await.unwrap();
    let first = receive(&queue, 1).await;
    tokio::time::advance(visibility).await;
    let expired = |r: &Result<(), QueueError>| matches!(r, Err(QueueError::Refused(m)) if m.contains("The receipt handle has expired"));
    let refused = queue.delete(&first[0].receipt_handle).await;
    assert!(expired(&refused), "visibility ran out: {refused:?}");
    assert_eq!(queue.len(), 1, "the message stays");

    let second = receive(&queue, 1).await;
    assert_eq!(ids(&second), ["m1"]);
    let refused = queue.delete(&first[0].receipt_handle).await;
    assert!(
        expired(&refused),
        "a newer receive replaced it: {refused:?}"
    );
    queue
        .change_visibility(&second[0].receipt_handle, Duration::ZERO)
        .await
        .unwrap();
    let refused = queue.delete(&second[0].receipt_handle).await;
    assert!(expired(&refused), "made visible again: {refused:?}");

    let third = receive(&queue, 1).await;
    queue
        .delete(&third[0].receipt_handle)
        .await
        .expect("in flight: deleted");
    assert!(queue.is_empty());
    assert!(
        matches!(
            queue.delete("not-a-receipt-handle").await,
            Err(QueueError::Refused(m)) if m.contains("ReceiptHandleIsInvalid")
        ),
        "a handle this queue never handed out"
    );
}

/// AWS, `SendMessage`: the ids are 1 to 128 "alphanumeric characters and punctuation"; the body
/// is at least one character, each one of "#x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD
/// | #x10000 to #x10FFFF" ("Amazon SQS rejects the message and returns an
/// InvalidMessageContents error"). In-process only: moto (5.2.5) stores every one of these
/// messages (a 129-character deduplication id, a group id with a space, a body with U+FFFF, an
/// empty body), where SQS refuses them.
#[tokio::test]
async fn the_in_process_queue_refuses_ids_and_bodies_sqs_refuses() {
    let queue = in_process(Duration::from_secs(30));
    let with = |group: &str, dedup: &str, body: &str| NewMessage {
        body: body.to_owned(),
        group_id: group.to_owned(),
        dedup_id: dedup.to_owned(),
    };
    let longest = "d".repeat(MAX_ID_LEN);
    let too_long = "d".repeat(MAX_ID_LEN + 1);
    for (what, refused) in [
        (
            "a 129-character deduplication id",
            with("a", &too_long, "{}"),
        ),
        ("a 129-character group id", with(&too_long, "d1", "{}")),
        ("an empty deduplication id", with("a", "", "{}")),
        ("a group id with a space", with("chat a", "d1", "{}")),
        (
            "a group id with a non-ASCII letter",
            with("sessão", "d1", "{}"),
        ),
        (
            "a body with U+FFFF",
            with("a", "d1", "{\"x\":\"\u{FFFF}\"}"),
        ),
        ("a body with U+0000", with("a", "d1", "\u{0}")),
        ("an empty body", with("a", "d1", "")),
    ] {
        let result = queue.send(refused).await;
        assert!(
            matches!(result, Err(QueueError::MessageRefused(_))),
            "{what}: {result:?}"
        );
    }
    assert!(queue.is_empty(), "nothing refused was stored");

    let punctuation = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
    for (what, accepted) in [
        (
            "a 128-character deduplication id",
            with("a", &longest, "{}"),
        ),
        (
            "punctuation in both ids",
            with(punctuation, punctuation, "{}"),
        ),
        (
            "tab, newline, CR, U+FFFD and an astral character",
            with("b", "d2", "\t\n\r\u{FFFD}\u{1F600}"),
        ),
    ] {
        queue
            .send(accepted)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    assert_eq!(queue.len(), 3);

    let batch = queue
        .send_batch(vec![with("a", "ok", "{}"), with("a b", "bad", "{}")])
        .await
        .expect("an entry's refusal is that entry's, not the batch's");
    assert!(batch[0].is_ok());
    assert!(matches!(batch[1], Err(QueueError::MessageRefused(_))));
}

/// With `DeduplicationScope: messageGroup` (template.yaml, and the moto fixture), a
/// deduplication id counts within its group: the same id in two groups is two messages. AWS,
/// `CreateQueue`: `DeduplicationScope` "Specifies whether message deduplication occurs at the
/// message group or queue level." In-process only: moto (5.2.5) accepts the attribute but
/// deduplicates across the whole queue (see the next test, which checks that it still does).
#[tokio::test]
async fn the_in_process_queue_deduplicates_within_a_group() {
    let queue = in_process(Duration::from_secs(30));
    queue.send(message("a", "same")).await.unwrap();
    queue.send(message("b", "same")).await.unwrap();
    queue.send(message("a", "same")).await.unwrap();
    let got = receive(&queue, 10).await;
    let groups: Vec<&str> = got.iter().map(|m| m.group_id.as_str()).collect();
    assert_eq!(groups, ["a", "b"], "one per group: {got:?}");
}

/// Why the case above is not in the contract: moto ignores `DeduplicationScope`. The fixture
/// does set it (read back here); if moto starts honouring it, this fails, and the case moves into
/// the contract, run against both adapters.
#[tokio::test]
async fn moto_still_deduplicates_across_groups() {
    use aws_sdk_sqs::types::QueueAttributeName;
    let moto = MotoServer::start().await;
    let queues = moto
        .create_fifo_with_dlq("scope", MAX_RECEIVES, VISIBILITY_SECS)
        .await;
    for url in [&queues.queue_url, &queues.dlq_url] {
        let attributes = queues
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .expect("get queue attributes");
        let read =
            |name: QueueAttributeName| attributes.attributes().and_then(|a| a.get(&name)).cloned();
        assert_eq!(
            read(QueueAttributeName::DeduplicationScope).as_deref(),
            Some("messageGroup"),
            "{url}"
        );
        assert_eq!(
            read(QueueAttributeName::FifoThroughputLimit).as_deref(),
            Some("perMessageGroupId"),
            "{url}"
        );
    }
    let queue = SqsQueue::new(queues.client.clone(), &queues.queue_url);
    queue.send(message("a", "same")).await.unwrap();
    queue.send(message("b", "same")).await.unwrap();
    let got = receive(&queue, 10).await;
    let groups: Vec<&str> = got.iter().map(|m| m.group_id.as_str()).collect();
    assert_eq!(
        groups,
        ["a"],
        "moto now keeps the same deduplication id in two groups apart: move \
         the_in_process_queue_deduplicates_within_a_group into the contract (CASES)"
    );
}

/// AWS, `SendMessage`: a repeated deduplication id is dropped "during the 5-minute
/// deduplication interval", which goes on after the first copy was deleted; after it, the id
/// stores a new message. Hours of waiting need a paused clock, so in-process only.
#[tokio::test(start_paused = true)]
async fn the_in_process_queue_forgets_a_deduplication_id_after_5_minutes() {
    let queue = in_process(Duration::from_secs(30));
    queue.send(message("a", "same")).await.unwrap();
    let first = receive(&queue, 1).await;
    queue.delete(&first[0].receipt_handle).await.unwrap();

    tokio::time::advance(Duration::from_secs(5 * 60 - 1)).await;
    queue.send(message("a", "same")).await.unwrap();
    assert!(
        receive(&queue, 10).await.is_empty(),
        "4:59 later, deleted or not: still a duplicate"
    );

    tokio::time::advance(Duration::from_secs(2)).await;
    queue.send(message("a", "same")).await.unwrap();
    assert_eq!(
        ids(&receive(&queue, 10).await),
        ["same"],
        "5:01 later: stored again"
    );
}

/// A visibility change far over the limit is refused like any other over it, and the queue
/// goes on working: the check runs before any arithmetic that could overflow (and panic with
/// the queue's lock held, poisoning it for every later call).
#[tokio::test]
async fn the_in_process_queue_refuses_an_endless_visibility_timeout_and_keeps_working() {
    let queue = in_process(Duration::from_secs(30));
    queue.send(message("a", "m1")).await.unwrap();
    let got = receive(&queue, 1).await;
    let refused = queue
        .change_visibility(&got[0].receipt_handle, Duration::MAX)
        .await;
    assert!(
        matches!(&refused, Err(QueueError::Refused(m)) if m.contains("43200")),
        "{refused:?}"
    );
    queue
        .delete(&got[0].receipt_handle)
        .await
        .expect("the queue still works");
    assert!(queue.is_empty());
}

/// AWS, `CreateQueue`, `VisibilityTimeout`: "Valid values: An integer from 0 to 43,200 (12
/// hours)." A queue SQS would not create is not created in-process either.
#[test]
#[should_panic(expected = "0 to 43200 s")]
fn the_in_process_queue_takes_a_visibility_timeout_of_at_most_12_hours() {
    let _ = in_process(MAX_VISIBILITY + Duration::from_secs(1));
}

/// `relay local --queue-url` gives each batch the queue's own visibility timeout as its
/// deadline: the SQS adapter reads it from the queue.
#[tokio::test]
async fn the_sqs_adapter_reads_the_queues_visibility_timeout() {
    let moto = MotoServer::start().await;
    let queues = moto
        .create_fifo_with_dlq("visibility", MAX_RECEIVES, VISIBILITY_SECS)
        .await;
    let queue = SqsQueue::new(queues.client.clone(), &queues.queue_url);
    assert_eq!(
        queue.visibility_timeout().await.unwrap(),
        Duration::from_secs(u64::from(VISIBILITY_SECS))
    );
    let missing = SqsQueue::new(
        queues.client.clone(),
        format!("{}/000000000000/missing.fifo", moto.endpoint),
    );
    assert!(missing.visibility_timeout().await.is_err());
}
