//! With a store-backed outbox, the runtime commits each step's intents before it
//! performs any of them, and marks each done once its outcome has been reduced. What a
//! crash (here: a shutdown that abandons a hanging effect and a pending timer) leaves
//! pending, a new runtime on the same store carries out again, under the same intent
//! ids, for the instance that emitted it. A step whose intents cannot be committed is
//! never performed.

use crate::common::{stores, workflow};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_core::{IntentId, IntentKind, OutcomeResult, Timestamp};
use keel_effects::runtime::{HandBackReason, OUTBOX_ENTRY_NAME, Runtime, RuntimeConfig};
use keel_effects::{Call, Failure, HandlerFuture, SharedHandler, TokioClock};
use keel_store::{EventStore, MemoryStore};
use serde_json::json;
use stores::{Backend, TestStore};
use workflow::{Emit, Log, Msg, Workflow, command, effect};

const START_MS: i64 = 1_795_000_000_000;
const LATER_MS: i64 = START_MS + 3_600_000;

fn runtime(
    store: &Arc<dyn EventStore>,
    handler: SharedHandler,
    start_ms: i64,
) -> Runtime<Workflow> {
    Runtime::builder(Workflow)
        .clock(Arc::new(TokioClock::starting_at(
            Timestamp::from_unix_millis(start_ms),
        )))
        .custom(effect(), handler)
        .outbox(Arc::clone(store))
        .build()
        .expect("a valid runtime")
}

async fn pending_ids(store: &dyn EventStore) -> Vec<IntentId> {
    let pending = store.pending_intents(100).await.expect("pending intents");
    assert!(pending.iter().all(|intent| matches!(
        &intent.kind,
        IntentKind::Custom { name, .. } if name.as_str() == OUTBOX_ENTRY_NAME
    )));
    pending.into_iter().map(|intent| intent.id).collect()
}

/// The first run's handler: answers whether its own intent was pending in the store
/// when it was called; tag 2 then hangs, like an effect cut off by a crash.
fn first_run(store: Arc<dyn EventStore>, calls: Arc<Mutex<Vec<IntentId>>>) -> SharedHandler {
    Arc::new(move |call: Call| -> HandlerFuture {
        let (store, calls) = (Arc::clone(&store), Arc::clone(&calls));
        Box::pin(async move {
            calls.lock().expect("the call log").push(call.intent.id);
            let pending = store
                .pending_intents(100)
                .await
                .map_err(|e| Failure::transient(e.to_string()))?;
            let recorded = pending.iter().any(|intent| intent.id == call.intent.id);
            if matches!(&call.intent.kind, IntentKind::Custom { payload, .. } if payload["tag"] == 2)
            {
                std::future::pending::<()>().await;
            }
            Ok(json!({ "recorded": recorded }))
        })
    })
}

/// Polls `look` on instance `a` until it holds, a bounded number of times.
async fn until(runtime: &Runtime<Workflow>, look: fn(&Log) -> bool) -> Log {
    for _ in 0..500 {
        let log = runtime
            .inspect(&"a".into(), Clone::clone)
            .await
            .expect("the instance runs");
        if look(&log) {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the instance never got there");
}

fn outcomes(log: &Log) -> Vec<(IntentId, OutcomeResult)> {
    log.applied
        .iter()
        .filter_map(|input| match &input.body {
            Msg::Outcome(outcome) => Some((outcome.intent, outcome.result.clone())),
            Msg::Command(_) => None,
        })
        .collect()
}

async fn check(mut test: TestStore) -> TestStore {
    let name = test.name;
    let calls = Arc::new(Mutex::new(Vec::new()));
    let first = runtime(
        &test.store,
        first_run(Arc::clone(&test.store), Arc::clone(&calls)),
        START_MS,
    );
    first.spawn("a".into(), Log::default()).expect("spawned");
    let emits = vec![
        Emit::Effect(1),
        Emit::Effect(2),
        Emit::Timer("reminder", LATER_MS),
        Emit::Timer("dropped", LATER_MS),
        Emit::Cancel("dropped"),
    ];
    first
        .send(&"a".into(), command(7, START_MS, emits))
        .await
        .expect("sent");
    let log = until(&first, |log| log.succeeded == 1).await;
    let cause = log.applied[0].cause;
    let [effect_1, effect_2, reminder] = [0, 1, 2].map(|position| cause.intent_id(position));

    assert_eq!(
        outcomes(&log),
        [(
            effect_1,
            OutcomeResult::Succeeded {
                value: json!({ "recorded": true })
            }
        )],
        "[{name}] the effect found its intent committed before it ran"
    );
    assert_eq!(
        pending_ids(test.store.as_ref()).await,
        [effect_2, reminder],
        "[{name}] pending: the hanging effect and the timer; done: the finished effect and the cancelled timer"
    );

    // The crash: the hanging effect and the pending timer are abandoned.
    let report = first.shutdown(Duration::from_millis(50)).await;
    let reasons: Vec<(IntentId, HandBackReason)> = report
        .handed_back
        .iter()
        .map(|back| (back.intent.id, back.reason))
        .collect();
    assert_eq!(
        reasons,
        [
            (reminder, HandBackReason::TimerPending),
            (effect_2, HandBackReason::Aborted)
        ]
    );
    drop(first);
    test.restart().await;
    assert_eq!(
        pending_ids(test.store.as_ref()).await,
        [effect_2, reminder],
        "[{name}] still pending after the restart"
    );

    // A new runtime, an hour later, with the instance restored from nothing: the
    // pending intents come back to it under the same ids, and the timer is due.
    let second = runtime(
        &test.store,
        Arc::new(|_call: Call| async { Ok::<_, Failure>(json!("again")) }),
        LATER_MS,
    );
    let recovery = second.recover_outbox().await.expect("a recovery");
    assert_eq!(
        (recovery.dispatched, recovery.orphaned),
        (0, 2),
        "[{name}] no instance runs yet: both stay pending"
    );
    second.spawn("a".into(), Log::default()).expect("spawned");
    let recovery = second.recover_outbox().await.expect("a recovery");
    assert_eq!(
        (recovery.dispatched, recovery.orphaned, recovery.foreign),
        (2, 0, 0),
        "[{name}] both sent to their instance"
    );
    let log = until(&second, |log| log.succeeded == 1 && log.fired.len() == 1).await;
    let mut recovered: Vec<IntentId> = outcomes(&log).into_iter().map(|(id, _)| id).collect();
    recovered.sort_unstable();
    let mut expected = vec![effect_2, reminder];
    expected.sort_unstable();
    assert_eq!(
        recovered, expected,
        "[{name}] one outcome each, under the ids of the first run"
    );
    let report = second.shutdown(Duration::from_secs(1)).await;
    assert!(report.handed_back.is_empty());
    assert!(
        pending_ids(test.store.as_ref()).await.is_empty(),
        "[{name}] all done once their outcomes were reduced"
    );
    drop(second);
    test
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intents_are_committed_before_they_run_and_recovered_after_a_crash() {
    for backend in Backend::available().await {
        let test = check(backend.open().await).await;
        test.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_whose_intents_cannot_be_committed_performs_none_of_them() {
    // More intents than one append may carry: the store refuses the commit.
    let emitted = keel_store::APPEND_EVENTS_MAX + 1;
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let calls = Arc::new(Mutex::new(Vec::new()));
    let runtime = Runtime::builder(Workflow)
        .config(RuntimeConfig {
            intents_per_step_max: emitted,
            ..RuntimeConfig::default()
        })
        .custom(effect(), first_run(Arc::clone(&store), Arc::clone(&calls)))
        .outbox(Arc::clone(&store))
        .build()
        .expect("a valid runtime");
    runtime.spawn("a".into(), Log::default()).expect("spawned");
    let emits = (0..emitted).map(|_| Emit::Effect(1)).collect();
    runtime
        .send(&"a".into(), command(1, START_MS, emits))
        .await
        .expect("sent");
    let report = runtime.shutdown(Duration::from_secs(1)).await;
    assert!(
        calls.lock().expect("the call log").is_empty(),
        "nothing ran"
    );
    assert_eq!(report.handed_back.len(), emitted);
    assert!(
        report
            .handed_back
            .iter()
            .all(|back| back.reason == HandBackReason::NotRecorded)
    );
    assert_eq!(report.faults.len(), 1);
    assert!(store.pending_intents(10).await.expect("pending").is_empty());
}
