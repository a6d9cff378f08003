//! A subscription hands over every event exactly once and in position order: first the
//! events committed before it started (catching up), then those committed while it runs
//! (live), with no gap and no repeat where one phase turns into the other; from position
//! 1 as from the middle of the log, on every backend, while several writers append at
//! once; on PostgreSQL also when another process commits.

use crate::common::stores;

use std::sync::Arc;
use std::time::Duration;

use keel_core::{Envelope, EventId, EventType, ExpectedVersion, Payload, StreamId, Timestamp};
use keel_store::subscription::Subscription;
use keel_store::{EventStore, RecordedEvent};
use serde_json::json;
use stores::{Backend, TestStore};

/// The longest wait for one event that should arrive.
const EVENT_WAIT: Duration = Duration::from_secs(5);
/// How long a subscription must stay quiet to count as having nothing more.
const QUIET: Duration = Duration::from_millis(200);
/// Events committed before the subscriptions start.
const BEFORE: usize = 30;
/// Where the second subscription starts: inside the third batch of the backlog.
const MIDDLE: u64 = 17;
/// Writers appending while the subscriptions run, and batches each.
const WRITERS: usize = 3;
const BATCHES_PER_WRITER: usize = 15;

fn event(n: usize) -> Envelope {
    Envelope::builder(
        EventId::new(uuid::Uuid::new_v4()),
        EventType::from_static("test.counted"),
        "keel-tests",
        Timestamp::from_unix_millis(1_700_000_000_000),
    )
    .payload(Payload::Json(json!({ "n": n })))
    .build()
    .expect("a valid test envelope")
}

/// Appends `batches` batches of 1..=3 events to `stream`, pausing briefly between them
/// so that commits interleave with the subscriptions' reads.
async fn write(store: Arc<dyn EventStore>, stream: StreamId, batches: usize, pause: Duration) {
    let mut version = 0;
    for n in 0..batches {
        let events: Vec<Envelope> = (0..1 + n % 3).map(|i| event(n * 10 + i)).collect();
        let appended = store
            .append(&stream, ExpectedVersion::Exact(version), &events)
            .await
            .expect("the writer owns its stream");
        version = appended.last_version;
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
}

/// Takes `count` events from the subscription, each within [`EVENT_WAIT`].
async fn take(mut subscription: Subscription, count: usize) -> (Subscription, Vec<RecordedEvent>) {
    let mut events = Vec::with_capacity(count);
    while events.len() < count {
        match tokio::time::timeout(EVENT_WAIT, subscription.next()).await {
            Ok(Ok(event)) => events.push(event),
            Ok(Err(error)) => panic!(
                "the subscription failed after {} events: {error}",
                events.len()
            ),
            Err(_) => panic!(
                "the subscription stalled after {} of {count} events, at position {}",
                events.len(),
                subscription.position()
            ),
        }
    }
    (subscription, events)
}

/// Reads every event from `from` on, in pages.
async fn read_everything(store: &dyn EventStore, from: u64) -> Vec<RecordedEvent> {
    let mut events: Vec<RecordedEvent> = Vec::new();
    let mut next = from;
    loop {
        let page = store.read_all(next, 500).await.expect("read_all");
        let Some(last) = page.last() else {
            return events;
        };
        next = last.position + 1;
        events.extend(page);
    }
}

async fn check(test: &TestStore) {
    let store = Arc::clone(&test.store);
    let name = test.name;
    let backlog = StreamId::from("backlog");
    for n in 0..BEFORE / 3 {
        let events: Vec<Envelope> = (0..3).map(|i| event(1_000 + n * 3 + i)).collect();
        store
            .append(&backlog, ExpectedVersion::Any, &events)
            .await
            .expect("the backlog");
    }
    let live: usize = (0..BATCHES_PER_WRITER).map(|n| 1 + n % 3).sum::<usize>() * WRITERS;
    let total = BEFORE + live;

    // Both subscriptions start before the writers, and read while they write.
    let from_start = tokio::spawn(take(Subscription::new(Arc::clone(&store), 1), total));
    let from_middle = tokio::spawn(take(
        Subscription::new(Arc::clone(&store), MIDDLE),
        total - (MIDDLE as usize - 1),
    ));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let pause = Duration::from_millis(w as u64);
            tokio::spawn(write(
                Arc::clone(&store),
                StreamId::from(format!("live-{w}")),
                BATCHES_PER_WRITER,
                pause,
            ))
        })
        .collect();
    for writer in writers {
        writer.await.expect("a writer");
    }
    let (mut start_sub, start_events) = from_start.await.expect("the subscription from 1");
    let (mut middle_sub, middle_events) =
        from_middle.await.expect("the subscription from the middle");

    let committed = read_everything(store.as_ref(), 1).await;
    assert_eq!(committed.len(), total, "[{name}] every append is stored");
    let positions: Vec<u64> = committed.iter().map(|e| e.position).collect();
    assert_eq!(
        positions,
        (1..=total as u64).collect::<Vec<_>>(),
        "[{name}] positions number every event from 1"
    );
    assert_eq!(
        start_events, committed,
        "[{name}] from position 1: each event once, in order"
    );
    assert_eq!(
        middle_events,
        committed[MIDDLE as usize - 1..],
        "[{name}] from position {MIDDLE}: each event once, in order"
    );

    // Nothing is handed over twice: both are now quiet ...
    for subscription in [&mut start_sub, &mut middle_sub] {
        if let Ok(extra) = tokio::time::timeout(QUIET, subscription.next()).await {
            panic!("[{name}] an event beyond the last commit: {extra:?}");
        }
    }
    // ... and still live: the next commit reaches both.
    let last = store
        .append(
            &StreamId::from("late"),
            ExpectedVersion::NoStream,
            &[event(9_999)],
        )
        .await
        .expect("a late append");
    for subscription in [&mut start_sub, &mut middle_sub] {
        let next = tokio::time::timeout(EVENT_WAIT, subscription.next())
            .await
            .unwrap_or_else(|_| panic!("[{name}] the late event never arrived"))
            .expect("the late event");
        assert_eq!(
            next.position, last.first_position,
            "[{name}] the late event, right after the rest"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_catches_up_then_follows_live_with_each_event_once() {
    for backend in Backend::available().await {
        let test = backend.open().await;
        check(&test).await;
        test.cleanup().await;
    }
}

/// PostgreSQL is the store shared by several processes: a subscription follows the
/// commits another process makes (here a second store on the same schema, with
/// connections of its own), not only its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_subscription_follows_the_commits_of_another_process() {
    let Some(postgres) = Backend::postgres().await else {
        return;
    };
    let test = postgres.open().await;
    let other_process = test.reopen().await;
    let batches = 20;
    let total: usize = (0..batches).map(|n| 1 + n % 3).sum();
    let subscription = tokio::spawn(take(Subscription::new(Arc::clone(&test.store), 1), total));
    write(
        other_process,
        StreamId::from("elsewhere"),
        batches,
        Duration::from_millis(2),
    )
    .await;
    let (_, events) = subscription.await.expect("the subscription");
    assert_eq!(events, read_everything(test.store.as_ref(), 1).await);
    test.cleanup().await;
}

/// The live head (`watch_head`) only moves forward: after two appends whose answers are
/// awaited in the other order it still reaches the head, so a subscription waiting at
/// the head is woken by the next commit and never sees the head move back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_head_never_moves_back_when_appends_finish_out_of_order() {
    for backend in Backend::available().await {
        let test = backend.open().await;
        let name = test.name;
        let (older, newer) = ([event(1)], [event(2)]);
        let (a, b) = (StreamId::from("a"), StreamId::from("b"));
        let first = test.store.append(&a, ExpectedVersion::NoStream, &older);
        let second = test.store.append(&b, ExpectedVersion::NoStream, &newer);
        second.await.expect("the second append");
        first.await.expect("the first append");
        let head = test.store.head().await.expect("head");
        let mut live = test.store.watch_head();
        let reached = tokio::time::timeout(EVENT_WAIT, live.wait_for(|h| *h == head))
            .await
            .is_ok_and(|changed| changed.is_ok());
        let now = *live.borrow();
        assert!(
            reached,
            "[{name}] the live head stays at {now}, the head is {head}"
        );
        test.cleanup().await;
    }
}
