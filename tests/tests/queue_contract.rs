//! The queue contract: one suite of behaviour checks run against the in-process adapter and
//! against moto's SQS server (reset between cases). Where the two differ, the in-process
//! adapter is wrong: moto stands in for SQS.

use futures::future::BoxFuture;
use relay_shared::queue::memory::{DeadLetter, MemoryQueue};
use relay_shared::queue::sqs::SqsQueue;
use relay_shared::queue::{
    MAX_VISIBILITY, NewMessage, Producer, Queue, QueueError, ReceivedMessage, Visibility,
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
        first[0].sent_timestamp_ms > 1_600_000_000_000,
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
