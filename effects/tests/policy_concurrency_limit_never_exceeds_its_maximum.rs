//! The concurrency limit never lets more than `max` calls run the handler at once; the
//! others queue, and one that queues longer than `wait_ms_max` fails as unavailable.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use keel_core::{Cause, EventType, Intent, IntentKind};
use keel_effects::policy::ConcurrencyLimitLayer;
use keel_effects::{Call, FailureKind, InstanceId, Layer, Metrics, SharedHandler};
use serde_json::json;
use tokio::time::Instant;

fn call(position: u32) -> Call {
    let intent = Intent {
        id: Cause::root(1).intent_id(position),
        kind: IntentKind::Custom {
            name: EventType::from_static("test.effect"),
            payload: json!({}),
        },
    };
    Call::new(intent, InstanceId::from("i"), Metrics::default())
}

/// Takes `latency_ms`, tracking how many calls are inside it now and at most.
fn slow(latency_ms: u64, inside: Arc<AtomicU32>, most: Arc<AtomicU32>) -> SharedHandler {
    Arc::new(move |_call: Call| {
        let inside = inside.clone();
        let most = most.clone();
        async move {
            let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(latency_ms)).await;
            inside.fetch_sub(1, Ordering::SeqCst);
            Ok(json!("done"))
        }
    })
}

#[tokio::test(start_paused = true)]
async fn ten_calls_through_a_limit_of_two_run_two_at_a_time() {
    let inside = Arc::new(AtomicU32::new(0));
    let most = Arc::new(AtomicU32::new(0));
    let handler = ConcurrencyLimitLayer::new(2).layer(slow(100, inside.clone(), most.clone()));
    let start = Instant::now();

    let tasks: Vec<_> = (0..10)
        .map(|position| tokio::spawn(handler.call(call(position))))
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("the call task ran"), Ok(json!("done")));
    }

    assert_eq!(most.load(Ordering::SeqCst), 2);
    assert_eq!(inside.load(Ordering::SeqCst), 0);
    assert_eq!(start.elapsed(), Duration::from_millis(500));
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_waits_too_long_for_a_slot_fails_as_unavailable() {
    let inside = Arc::new(AtomicU32::new(0));
    let most = Arc::new(AtomicU32::new(0));
    let layer = ConcurrencyLimitLayer::new(1).wait_ms_max(50);
    let handler = layer.layer(slow(1_000, inside.clone(), most.clone()));

    let holder = tokio::spawn(handler.call(call(0)));
    tokio::task::yield_now().await; // let the holder take the slot
    let start = Instant::now();
    let failure = handler.call(call(1)).await.expect_err("no slot in time");

    assert_eq!(failure.kind, FailureKind::Unavailable);
    assert_eq!(start.elapsed(), Duration::from_millis(50));
    assert_eq!(holder.await.expect("the holder ran"), Ok(json!("done")));
    assert_eq!(most.load(Ordering::SeqCst), 1);
}
