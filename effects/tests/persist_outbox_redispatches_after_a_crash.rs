//! Intents committed with their events stay pending until the outbox dispatcher has
//! carried them out; a crash between carrying one out and marking it done leaves it
//! pending, so the next dispatcher runs it again under the same intent id, and an intent
//! once marked done never runs again, not even when its append is retried. An intent
//! whose attempt failed transiently stays pending for a later pass; one that failed
//! permanently has its outcome and is done.

use crate::common::stores;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use keel_core::{
    Cause, Envelope, EventId, EventType, ExpectedVersion, Intent, IntentId, IntentKind, Payload,
    StreamId, Timestamp,
};
use keel_effects::persist::outbox::OutboxDispatcher;
use keel_effects::{Call, Failure, InstanceId, Metrics, SharedHandler};
use keel_store::EventStore;
use serde_json::json;
use stores::{Backend, TestStore};

/// How often the handler saw each intent id.
#[derive(Debug, Clone, Default)]
struct Seen(Arc<Mutex<HashMap<IntentId, u32>>>);

impl Seen {
    fn handler(&self) -> SharedHandler {
        let seen = self.clone();
        Arc::new(move |call: Call| {
            *seen
                .0
                .lock()
                .expect("the counter")
                .entry(call.intent.id)
                .or_default() += 1;
            async { Ok::<_, Failure>(json!({ "done": true })) }
        })
    }

    fn count(&self, id: IntentId) -> u32 {
        self.0
            .lock()
            .expect("the counter")
            .get(&id)
            .copied()
            .unwrap_or(0)
    }
}

fn event(cause: u128, index: u32) -> Envelope {
    Envelope::builder(
        EventId::derived(Cause::root(cause).intent_id(0), index),
        EventType::from_static("order.placed"),
        "keel-tests",
        Timestamp::from_unix_millis(1_700_000_000_000),
    )
    .payload(Payload::Json(json!({ "index": index })))
    .build()
    .expect("a valid test envelope")
}

fn intents(cause: u128, count: u32) -> Vec<Intent> {
    (1..=count)
        .map(|position| Intent {
            id: Cause::root(cause).intent_id(position),
            kind: IntentKind::Custom {
                name: EventType::from_static("payment.charge"),
                payload: json!({ "cause": cause as u64, "position": position }),
            },
        })
        .collect()
}

fn ids(intents: &[Intent]) -> Vec<IntentId> {
    intents.iter().map(|i| i.id).collect()
}

async fn pending(store: &dyn EventStore) -> Vec<Intent> {
    store.pending_intents(100).await.expect("pending intents")
}

async fn check(mut test: TestStore) -> TestStore {
    let name = test.name;
    let seen = Seen::default();
    let (orders, invoices) = (StreamId::from("order-1"), StreamId::from("invoice-1"));

    // Committed with their events, intents are pending.
    let first_events = [event(1, 0), event(1, 1)];
    let first = intents(1, 2);
    test.store
        .append_with_intents(&orders, ExpectedVersion::NoStream, &first_events, &first)
        .await
        .expect("the first append");
    assert_eq!(
        pending(test.store.as_ref()).await,
        first,
        "[{name}] pending after the commit"
    );

    // A dispatcher carries each out once and marks it done.
    let dispatcher =
        OutboxDispatcher::new(Arc::clone(&test.store), seen.handler(), Metrics::default());
    let dispatched = dispatcher.dispatch_pending().await.expect("a dispatch");
    assert_eq!(
        dispatched.iter().map(|d| d.intent.id).collect::<Vec<_>>(),
        ids(&first),
        "[{name}] each pending intent, oldest first"
    );
    assert!(dispatched.iter().all(|d| d.result.is_ok()));
    assert!(
        pending(test.store.as_ref()).await.is_empty(),
        "[{name}] done after dispatch"
    );
    drop(dispatcher);

    // The next batch's intents are carried out, but the process dies before marking
    // them all done: the first was marked, the second ran without being marked, the
    // third never ran.
    let second = intents(2, 3);
    test.store
        .append_with_intents(
            &invoices,
            ExpectedVersion::NoStream,
            &[event(2, 0)],
            &second,
        )
        .await
        .expect("the second append");
    let before_crash = pending(test.store.as_ref()).await;
    assert_eq!(before_crash, second, "[{name}] the second batch is pending");
    let handler = seen.handler();
    for intent in &before_crash[..2] {
        let result = handler
            .call(Call::new(
                intent.clone(),
                InstanceId::from("outbox"),
                Metrics::default(),
            ))
            .await;
        assert!(result.is_ok());
    }
    test.store
        .complete_intents(&[before_crash[0].id])
        .await
        .expect("marking the first done");

    // The crash: every handle on the store goes; a new process opens it again.
    test.restart().await;
    let after_crash = pending(test.store.as_ref()).await;
    assert_eq!(
        after_crash,
        second[1..],
        "[{name}] after the crash, what was not marked done is pending, under the same ids"
    );

    let dispatcher =
        OutboxDispatcher::new(Arc::clone(&test.store), seen.handler(), Metrics::default());
    let dispatched = dispatcher
        .dispatch_pending()
        .await
        .expect("the dispatch after the crash");
    assert_eq!(
        dispatched.iter().map(|d| d.intent.id).collect::<Vec<_>>(),
        ids(&second[1..]),
        "[{name}] the second dispatcher runs what is pending"
    );
    assert!(
        pending(test.store.as_ref()).await.is_empty(),
        "[{name}] all done"
    );
    assert!(
        dispatcher
            .dispatch_pending()
            .await
            .expect("an idle dispatch")
            .is_empty(),
        "[{name}] nothing runs twice once done"
    );

    // Retrying the first append is answered from the store and brings back none of
    // its intents, which are done.
    let retried = test
        .store
        .append_with_intents(&orders, ExpectedVersion::NoStream, &first_events, &first)
        .await
        .expect("a retried append");
    assert!(retried.deduplicated, "[{name}] the retry is recognised");
    assert!(
        pending(test.store.as_ref()).await.is_empty(),
        "[{name}] a retried append does not bring back done intents"
    );
    test.restart().await;
    assert!(
        pending(test.store.as_ref()).await.is_empty(),
        "[{name}] still done after reopening"
    );

    // Each id ran at least once; only the one that ran without being marked ran twice.
    let counts: Vec<u32> = first
        .iter()
        .chain(&second)
        .map(|i| seen.count(i.id))
        .collect();
    assert_eq!(
        counts,
        [1, 1, 1, 2, 1],
        "[{name}] runs per intent: a1 a2 b1 b2 b3"
    );
    test
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_redispatches_what_a_crash_left_pending_and_nothing_done() {
    for backend in Backend::available().await {
        let test = check(backend.open().await).await;
        test.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_leaves_the_intent_pending_for_a_later_pass() {
    for backend in Backend::available().await {
        let test = backend.open().await;
        let name = test.name;
        let batch = intents(3, 3);
        test.store
            .append_with_intents(
                &StreamId::from("order-3"),
                ExpectedVersion::NoStream,
                &[event(3, 0)],
                &batch,
            )
            .await
            .expect("the append");

        // Position 1 is refused for good, position 2 meets a service that is down, 3 runs.
        let down: SharedHandler = Arc::new(|call: Call| async move {
            match &call.intent.kind {
                IntentKind::Custom { payload, .. } if payload["position"] == 1 => {
                    Err(Failure::permanent("card declined"))
                }
                IntentKind::Custom { payload, .. } if payload["position"] == 2 => {
                    Err(Failure::transient("the payment service answered 503"))
                }
                _ => Ok(json!({ "done": true })),
            }
        });
        let dispatched = OutboxDispatcher::new(Arc::clone(&test.store), down, Metrics::default())
            .dispatch_pending()
            .await
            .expect("a dispatch");
        assert_eq!(
            dispatched.iter().map(|d| d.intent.id).collect::<Vec<_>>(),
            ids(&batch),
            "[{name}] each tried once in the pass, the transient one not again"
        );
        assert_eq!(
            pending(test.store.as_ref()).await,
            batch[1..2],
            "[{name}] only the transient failure is left pending"
        );

        // The service is back: the next pass carries it out and marks it done.
        let seen = Seen::default();
        let dispatched =
            OutboxDispatcher::new(Arc::clone(&test.store), seen.handler(), Metrics::default())
                .dispatch_pending()
                .await
                .expect("the next pass");
        assert_eq!(dispatched.len(), 1, "[{name}]");
        assert_eq!(seen.count(batch[1].id), 1, "[{name}] under the same id");
        assert!(pending(test.store.as_ref()).await.is_empty(), "[{name}]");
        test.cleanup().await;
    }
}
