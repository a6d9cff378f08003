//! A projection that follows the store keeps its read model current: it catches up with
//! the events committed before it started, then applies each later commit as it lands,
//! every event exactly once, saving its checkpoint with the read model; stopped and
//! started again, it goes on from its checkpoint. On every backend.

use crate::common::stores;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use keel_core::{Envelope, EventId, EventType, ExpectedVersion, Payload, StreamId, Timestamp};
use keel_store::projection::{Projection, ProjectionRunner};
use keel_store::{EventStore, RecordedEvent};
use serde_json::json;
use stores::Backend;

/// The longest wait for the projection to reach the head.
const REACH_WAIT: Duration = Duration::from_secs(10);
/// How often the test looks at the saved checkpoint while it waits.
const LOOK_EVERY: Duration = Duration::from_millis(10);

/// Counts how often it applied the event at each position.
struct Applied;

impl Projection for Applied {
    type Model = BTreeMap<u64, u32>;

    fn name(&self) -> &str {
        "applied"
    }

    fn apply(&self, model: &mut Self::Model, event: &RecordedEvent) {
        *model.entry(event.position).or_default() += 1;
    }
}

fn event(n: u64) -> Envelope {
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

async fn append(store: &dyn EventStore, batches: u64) {
    for n in 0..batches {
        let events: Vec<Envelope> = (0..1 + n % 3).map(event).collect();
        store
            .append(&StreamId::from("counted"), ExpectedVersion::Any, &events)
            .await
            .expect("an append");
    }
}

/// Waits until the saved checkpoint is the head, then checks that the saved read model
/// applied each position up to it exactly once.
async fn reached_head(runner: &ProjectionRunner<Applied>, store: &dyn EventStore, name: &str) {
    let head = store.head().await.expect("the head");
    let deadline = tokio::time::Instant::now() + REACH_WAIT;
    loop {
        let (checkpoint, model) = runner.load().await.expect("the saved projection");
        if checkpoint == head {
            let want: BTreeMap<u64, u32> = (1..=head).map(|position| (position, 1)).collect();
            assert_eq!(model, want, "[{name}] each event applied once");
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "[{name}] the projection stayed at {checkpoint} for {REACH_WAIT:?}; the head is {head}"
        );
        tokio::time::sleep(LOOK_EVERY).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_following_projection_applies_every_later_commit_exactly_once() {
    for backend in Backend::available().await {
        let test = backend.open().await;
        let name = test.name;
        let store = Arc::clone(&test.store);
        append(store.as_ref(), 5).await;

        let runner = Arc::new(ProjectionRunner::new(Arc::clone(&store), Applied).batch(4));
        let follower = {
            let runner = Arc::clone(&runner);
            tokio::spawn(async move { runner.follow().await })
        };
        reached_head(&runner, store.as_ref(), name).await;
        // Live: commits land while it waits, one at a time and in a burst.
        for _ in 0..3 {
            append(store.as_ref(), 1).await;
            reached_head(&runner, store.as_ref(), name).await;
        }
        append(store.as_ref(), 12).await;
        reached_head(&runner, store.as_ref(), name).await;

        // Stopped, it misses nothing: started again, it goes on from its checkpoint.
        follower.abort();
        assert!(follower.await.is_err_and(|e| e.is_cancelled()), "[{name}]");
        append(store.as_ref(), 4).await;
        let follower = {
            let runner = Arc::clone(&runner);
            tokio::spawn(async move { runner.follow().await })
        };
        reached_head(&runner, store.as_ref(), name).await;
        follower.abort();
        let _ = follower.await;
        drop(runner);
        drop(store);
        test.cleanup().await;
    }
}
