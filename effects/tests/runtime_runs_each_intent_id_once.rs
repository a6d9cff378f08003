//! A handler never executes the same intent id twice within a runtime: a repeated step
//! (a redelivered action with the same cause) is answered from the recorded outcome.

use crate::common::workflow;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use keel_effects::runtime::Runtime;
use keel_effects::{Call, HandlerResult};
use serde_json::json;
use workflow::{Emit, Workflow, command, effect};

#[tokio::test(start_paused = true)]
async fn a_redelivered_action_has_one_visible_effect() {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let handler = move |_call: Call| {
        let counter = Arc::clone(&counter);
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            HandlerResult::Ok(json!("done"))
        }
    };
    let runtime = Runtime::builder(Workflow)
        .custom(effect(), Arc::new(handler))
        .build()
        .unwrap();
    runtime.spawn("a".into(), Default::default()).unwrap();
    runtime.spawn("b".into(), Default::default()).unwrap();
    // The same step delivered three times: twice to one instance (one while the first
    // is still running), once to another instance.
    for instance in ["a", "a", "b"] {
        runtime
            .send(&instance.into(), command(7, 0, vec![Emit::Effect(1)]))
            .await
            .unwrap();
    }
    let report = runtime.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the effect ran more than once"
    );
    let succeeded: u32 = report.instances.iter().map(|(_, log)| log.succeeded).sum();
    assert_eq!(succeeded, 3, "every delivery still gets its outcome");
    let metrics = runtime.metrics();
    assert_eq!((metrics.started, metrics.deduplicated), (1, 2));
}

#[tokio::test(start_paused = true)]
async fn distinct_steps_run_their_effects_separately() {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let handler = move |_call: Call| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { HandlerResult::Ok(json!(null)) }
    };
    let runtime = Runtime::builder(Workflow)
        .custom(effect(), Arc::new(handler))
        .build()
        .unwrap();
    runtime.spawn("a".into(), Default::default()).unwrap();
    for causation in 1..=3 {
        runtime
            .send(&"a".into(), command(causation, 0, vec![Emit::Effect(1)]))
            .await
            .unwrap();
    }
    runtime.shutdown(Duration::from_secs(5)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}
