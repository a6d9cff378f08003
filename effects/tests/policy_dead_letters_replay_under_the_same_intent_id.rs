//! Replaying a dead letter takes it out of the queue and runs its intent once more,
//! under the same intent id and as attempt 1; a replay that fails again is parked again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use keel_core::{Cause, EventType, Intent, IntentId, IntentKind};
use keel_effects::policy::{DeadLetterQueue, Policies};
use keel_effects::{Call, Error, Failure, InstanceId, Metrics, SharedHandler};
use serde_json::json;

fn call(metrics: &Metrics) -> Call {
    let intent = Intent {
        id: Cause::root(7).intent_id(2),
        kind: IntentKind::Custom {
            name: EventType::from_static("test.effect"),
            payload: json!({}),
        },
    };
    Call::new(intent, InstanceId::from("i"), metrics.clone())
}

/// Fails until `healthy` is set; records the intent id, instance and attempt of every
/// call.
fn recording(
    healthy: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<(IntentId, InstanceId, u32)>>>,
) -> SharedHandler {
    Arc::new(move |call: Call| {
        seen.lock().expect("not poisoned").push((
            call.intent.id,
            call.instance.clone(),
            call.attempt,
        ));
        let healthy = healthy.load(Ordering::SeqCst);
        async move {
            if healthy {
                Ok(json!("charged"))
            } else {
                Err(Failure::transient("503"))
            }
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_replay_runs_the_intent_once_under_its_original_id() {
    let queue = DeadLetterQueue::new(10);
    let healthy = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler = Policies::new()
        .dead_letters(queue.clone())
        .wrap(recording(healthy.clone(), seen.clone()));
    let metrics = Metrics::default();
    let original = call(&metrics);
    assert!(handler.call(original.clone()).await.is_err());
    let id = queue.list()[0].id;

    healthy.store(true, Ordering::SeqCst);
    let replayed = queue.replay(id, &handler, metrics.clone()).await;

    assert_eq!(replayed, Ok(Ok(json!("charged"))));
    assert!(queue.is_empty());
    let seen = seen.lock().expect("not poisoned").clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1], (original.intent.id, InstanceId::from("i"), 1));
    assert_eq!(seen[0], seen[1]);
    assert_eq!(metrics.snapshot().dead_lettered, 1);
}

#[tokio::test(start_paused = true)]
async fn a_replay_that_fails_again_is_parked_again_under_a_new_entry() {
    let queue = DeadLetterQueue::new(10);
    let healthy = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler = Policies::new()
        .dead_letters(queue.clone())
        .wrap(recording(healthy, seen));
    let metrics = Metrics::default();
    assert!(handler.call(call(&metrics)).await.is_err());
    let first = queue.list()[0].clone();

    let replayed = queue.replay(first.id, &handler, metrics.clone()).await;

    assert_eq!(replayed, Ok(Err(Failure::transient("503"))));
    let letters = queue.list();
    assert_eq!(letters.len(), 1);
    assert_ne!(letters[0].id, first.id);
    assert_eq!(letters[0].intent, first.intent);
    assert_eq!(metrics.snapshot().dead_lettered, 2);
}

#[tokio::test(start_paused = true)]
async fn replaying_an_unknown_entry_is_an_error_and_calls_nothing() {
    let queue = DeadLetterQueue::new(10);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler = Policies::new()
        .dead_letters(queue.clone())
        .wrap(recording(Arc::new(AtomicBool::new(true)), seen.clone()));

    let replayed = queue.replay(41, &handler, Metrics::default()).await;

    assert_eq!(replayed, Err(Error::UnknownDeadLetter { id: 41 }));
    assert!(seen.lock().expect("not poisoned").is_empty());
}
