//! A stream that is a log, not an aggregate, is trimmed before a global position as
//! Redis trims with `XTRIM MINID`: `Trim::BeforePosition(p)` removes that stream's
//! events whose position is below `p`, and nothing else. Its version stays, so appends
//! go on numbering from it; `read_all` and subscriptions skip the trimmed positions;
//! trimmed ids stay taken; a durable store still shows the trim after a restart. On
//! every backend.

use crate::common::stores;

use std::sync::Arc;

use keel_core::{Envelope, EventId, EventType, ExpectedVersion, Payload, StreamId, Timestamp};
use keel_store::Error;
use keel_store::subscription::Subscription;
use keel_store::{EventStore, RecordedEvent, Trim};
use serde_json::json;
use stores::Backend;

fn event(n: u64) -> Envelope {
    Envelope::builder(
        EventId::new(uuid::Uuid::new_v4()),
        EventType::from_static("test.logged"),
        "keel-tests",
        Timestamp::from_unix_millis(1_700_000_000_000),
    )
    .payload(Payload::Json(json!({ "n": n })))
    .build()
    .expect("a valid test envelope")
}

fn positions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.position).collect()
}

fn versions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.version).collect()
}

/// Appends one batch of `count` events to `stream`, whatever its version.
async fn append(store: &dyn EventStore, stream: &StreamId, count: u64) -> Vec<Envelope> {
    let events: Vec<Envelope> = (0..count).map(event).collect();
    store
        .append(stream, ExpectedVersion::Any, &events)
        .await
        .expect("an append");
    events
}

/// Two streams interleaved: `log` at positions 1, 3, 4, 6 (versions 1 to 4) and
/// `other` at positions 2 and 5.
async fn interleaved(store: &dyn EventStore, log: &StreamId, other: &StreamId) -> Vec<Envelope> {
    let mut logged = append(store, log, 1).await;
    append(store, other, 1).await;
    logged.extend(append(store, log, 2).await);
    append(store, other, 1).await;
    logged.extend(append(store, log, 1).await);
    logged
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimming_before_a_position_removes_only_that_streams_older_events() {
    for backend in Backend::available().await {
        let mut test = backend.open().await;
        let name = test.name;
        let (log, other) = (StreamId::from("log"), StreamId::from("other"));
        interleaved(test.store.as_ref(), &log, &other).await;

        // Positions 1 and 3 are the log's below 4; position 2 below it is another's.
        let removed = test.store.trim(&log, Trim::BeforePosition(4)).await;
        assert_eq!(removed.ok(), Some(2), "[{name}] two of the log's events go");

        for pass in ["before", "after"] {
            let store = test.store.as_ref();
            let what = format!("[{name}] {pass} a restart");
            assert_eq!(store.stream_version(&log).await.ok(), Some(4), "{what}");
            let left = store.read_stream(&log, 1, 10).await.expect("read_stream");
            assert_eq!(
                (versions(&left), positions(&left)),
                (vec![3, 4], vec![4, 6]),
                "{what}: the log keeps its events from position 4 on"
            );
            let untouched = store.read_stream(&other, 1, 10).await.expect("other");
            assert_eq!(versions(&untouched), [1, 2], "{what}: other streams stay");
            let all = store.read_all(1, 10).await.expect("read_all");
            assert_eq!(positions(&all), [2, 4, 5, 6], "{what}: read_all skips");
            assert_eq!(store.head().await.ok(), Some(6), "{what}: the head stays");

            let mut subscription = Subscription::new(Arc::clone(&test.store), 1);
            let mut delivered = Vec::new();
            while let Some(event) = subscription.try_next().await.expect("a subscription") {
                delivered.push(event.position);
            }
            assert_eq!(delivered, [2, 4, 5, 6], "{what}: a subscription skips");
            drop(subscription);

            // A durable store must show the trim after it is opened again.
            test.restart().await;
        }

        // Nothing more lies below 4, nothing at all below 1, and a stream that never
        // had an event has nothing to trim.
        let store = test.store.as_ref();
        for (stream, before) in [(&log, 4), (&log, 0), (&other, 1)] {
            let removed = store.trim(stream, Trim::BeforePosition(before)).await;
            assert_eq!(removed.ok(), Some(0), "[{name}] {stream} before {before}");
        }
        let nowhere = StreamId::from("nowhere");
        let removed = store.trim(&nowhere, Trim::BeforePosition(99)).await;
        assert_eq!(removed.ok(), Some(0), "[{name}] a stream with no events");
        assert_eq!(store.stream_version(&nowhere).await.ok(), Some(0));
        test.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimming_past_the_head_empties_the_stream_but_keeps_its_version_and_ids() {
    for backend in Backend::available().await {
        let test = backend.open().await;
        let name = test.name;
        let store = test.store.as_ref();
        let (log, other) = (StreamId::from("log"), StreamId::from("other"));
        let logged = interleaved(store, &log, &other).await;

        let removed = store.trim(&log, Trim::BeforePosition(u64::MAX)).await;
        assert_eq!(
            removed.ok(),
            Some(4),
            "[{name}] every event of the log goes"
        );
        let left = store.read_stream(&log, 1, 10).await.expect("read_stream");
        assert!(left.is_empty(), "[{name}] the log is empty: {left:?}");
        assert_eq!(store.stream_version(&log).await.ok(), Some(4), "[{name}]");
        let all = store.read_all(1, 10).await.expect("read_all");
        assert_eq!(positions(&all), [2, 5], "[{name}] only the other stream");

        // Appends go on from the version the log had, at the next position.
        let next = store
            .append(&log, ExpectedVersion::Exact(4), &[event(9)])
            .await
            .expect("an append after the trim");
        assert_eq!(
            (next.first_version, next.first_position),
            (5, 7),
            "[{name}] numbering goes on"
        );
        // The trimmed batch repeated is the same append, answered as before ...
        let again = store
            .append(&log, ExpectedVersion::NoStream, &logged[1..3])
            .await
            .expect("a repeated append");
        assert!(again.deduplicated, "[{name}] {again:?}");
        assert_eq!((again.first_version, again.first_position), (2, 3));
        // ... and a trimmed id cannot be used again elsewhere.
        let error = store
            .append(&other, ExpectedVersion::Any, &logged[..1])
            .await
            .expect_err("a reused id");
        assert!(
            matches!(error, Error::DuplicateEventId { .. }),
            "[{name}] {error:?}"
        );
        test.cleanup().await;
    }
}
