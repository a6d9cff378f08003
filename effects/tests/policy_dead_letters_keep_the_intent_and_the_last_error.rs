//! An intent whose effect fails for good is parked as a dead letter with the intent,
//! its instance, the last error, the number of attempts and the time; the failure still
//! goes back to the caller unchanged.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use keel_core::{Cause, EventType, Intent, IntentKind, Timestamp};
use keel_effects::policy::{DeadLetterQueue, Policies, RetryPolicy};
use keel_effects::{Call, Failure, InstanceId, Metrics, SharedHandler, TokioClock};
use serde_json::json;

fn intent() -> Intent {
    Intent {
        id: Cause::root(1).intent_id(0),
        kind: IntentKind::Custom {
            name: EventType::from_static("test.effect"),
            payload: json!({ "sku": "book-1" }),
        },
    }
}

/// Always fails, naming the attempt and with the kind `failure` makes.
fn failing(calls: Arc<AtomicU32>, failure: fn(String) -> Failure) -> SharedHandler {
    Arc::new(move |call: Call| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move { Err(failure(format!("attempt {} failed", call.attempt))) }
    })
}

fn policies(queue: &DeadLetterQueue) -> Policies {
    Policies::new()
        .dead_letters(queue.clone())
        .clock(Arc::new(TokioClock::starting_at(
            Timestamp::from_unix_millis(1_000_000),
        )))
        .retry(
            RetryPolicy::default()
                .attempts(3)
                .first_delay(Duration::from_millis(100))
                .jitter(0.0),
        )
}

#[tokio::test(start_paused = true)]
async fn a_retried_failure_is_parked_once_with_the_last_error_and_all_attempts() {
    let queue = DeadLetterQueue::new(10);
    let calls = Arc::new(AtomicU32::new(0));
    let handler = policies(&queue).wrap(failing(calls.clone(), Failure::transient));
    let metrics = Metrics::default();

    let result = handler
        .call(Call::new(
            intent(),
            InstanceId::from("order-42"),
            metrics.clone(),
        ))
        .await;

    let last = Failure::transient("attempt 3 failed");
    assert_eq!(result, Err(last.clone()));
    let letters = queue.list();
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(*letter.intent, intent());
    assert_eq!(letter.instance, InstanceId::from("order-42"));
    assert_eq!(letter.error, last);
    assert_eq!(letter.attempts, 3);
    assert_eq!(
        letter.at,
        Timestamp::from_unix_millis(1_000_000 + 100 + 200)
    );
    assert_eq!(queue.get(letter.id).as_ref(), Some(letter));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let counted = metrics.snapshot();
    assert_eq!((counted.retried, counted.dead_lettered), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn a_permanent_failure_is_parked_after_its_single_attempt() {
    let queue = DeadLetterQueue::new(10);
    let calls = Arc::new(AtomicU32::new(0));
    let handler = policies(&queue).wrap(failing(calls.clone(), Failure::permanent));
    let metrics = Metrics::default();

    let result = handler
        .call(Call::new(intent(), InstanceId::from("i"), metrics.clone()))
        .await;

    assert_eq!(result, Err(Failure::permanent("attempt 1 failed")));
    let letters = queue.list();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].attempts, 1);
    assert_eq!(letters[0].at, Timestamp::from_unix_millis(1_000_000));
    let counted = metrics.snapshot();
    assert_eq!((counted.retried, counted.dead_lettered), (0, 1));
}

#[tokio::test(start_paused = true)]
async fn a_success_leaves_no_dead_letter() {
    let queue = DeadLetterQueue::new(10);
    let handler = policies(&queue).wrap(Arc::new(|_call: Call| async { Ok(json!("ok")) }));
    let metrics = Metrics::default();

    let result = handler
        .call(Call::new(intent(), InstanceId::from("i"), metrics.clone()))
        .await;

    assert_eq!(result, Ok(json!("ok")));
    assert!(queue.is_empty());
    assert_eq!(metrics.snapshot().dead_lettered, 0);
}
