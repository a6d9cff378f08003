//! Sagas that had not finished when their orchestrator stopped are resumed by the next
//! one started on the same store: the `Recovered` report counts them, the step that was
//! out is sent again under the same intent id (its idempotency key), and the sagas
//! complete. Finished sagas are left alone. On a SQLite file, reopened as a restarted
//! process would.

use std::collections::BTreeMap;

use keel_effects::Call;
use keel_orchestrator::{
    Orchestrator, SagaDefinition, SagaFilter, SagaStatus, Step, StepAction, Transition,
};
use serde_json::json;

use crate::common::stores::SqliteFile;
use crate::common::{Gate, Journal, saga_id, settled, transitions};

const STUCK: usize = 3;
/// Finished sagas beside `order-done`.
const FINISHED_BESIDE: usize = 6;

/// reserve, then ship (the service that hangs), then notify.
fn order() -> SagaDefinition {
    SagaDefinition::builder("shop.order")
        .step(Step::new("reserve", |ctx| {
            StepAction::custom("stock.reserve", json!({ "hang": ctx.input()["hang"] }))
        }))
        .step(Step::new("ship", |ctx| {
            StepAction::custom("shipping.ship", json!({ "hang": ctx.input()["hang"] }))
        }))
        .step(Step::new("notify", |_| {
            StepAction::custom("mail.send", json!({}))
        }))
        .build()
        .expect("a valid saga")
}

/// The intent id each saga's `ship` step was called with, by saga.
fn ship_intents(journal: &Journal) -> BTreeMap<String, Vec<String>> {
    let mut intents: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for call in journal.calls_to("shipping.ship") {
        intents.entry(call.saga).or_default().push(call.intent);
    }
    intents
}

#[tokio::test]
async fn a_new_orchestrator_on_the_same_file_finishes_what_the_old_one_left() {
    let file = SqliteFile::new();

    // Before: the shipping service hangs for sagas that ask it to (it never answers).
    let before = Journal::new();
    let hang = Gate::new();
    let hanging = hang.service(&before, "shipping.ship", Ok(json!({})));
    let ships = before.ok("shipping.ship", json!({ "parcel": "p" }));
    let ship = move |call: Call| {
        let hangs = matches!(
            &call.intent.kind,
            keel_orchestrator::core::IntentKind::Custom { payload, .. } if payload["hang"] == true
        );
        if hangs {
            keel_effects::Handler::call(&hanging, call)
        } else {
            keel_effects::Handler::call(&ships, call)
        }
    };
    let (first, recovered) = Orchestrator::builder(file.open())
        .saga(order())
        .handler("stock.reserve", before.ok("stock.reserve", json!({})))
        .handler("shipping.ship", ship)
        .handler("mail.send", before.ok("mail.send", json!({})))
        .start()
        .await
        .unwrap();
    assert_eq!(recovered.resumed, 0, "a new file holds no sagas");

    let done = saga_id("order-done");
    first
        .start_saga("shop.order", done.clone(), json!({ "hang": false }))
        .await
        .unwrap();
    assert_eq!(settled(&first, &done).await, SagaStatus::Completed);
    // A history of finished sagas beside the stuck ones, long enough for recovery to
    // go through the store's index (see `keel_store::index::recover_through_index`).
    for n in 0..FINISHED_BESIDE {
        let id = saga_id(format!("order-done-{n}"));
        let input = json!({ "hang": false });
        first
            .start_saga("shop.order", id.clone(), input)
            .await
            .unwrap();
        assert_eq!(settled(&first, &id).await, SagaStatus::Completed);
    }
    let stuck: Vec<_> = (0..STUCK).map(|n| saga_id(format!("order-{n}"))).collect();
    for id in &stuck {
        first
            .start_saga("shop.order", id.clone(), json!({ "hang": true }))
            .await
            .unwrap();
    }
    // The shipments of the stuck sagas 0..STUCK are out, and stay out.
    hang.arrivals(STUCK).await;
    // Recovery reads the logs of the unfinished sagas, all of them, and no other.
    let records_unfinished: u64 = first
        .list(&SagaFilter::default())
        .await
        .unwrap()
        .iter()
        .filter(|summary| summary.status != SagaStatus::Completed)
        .map(|summary| summary.records)
        .sum();
    assert_eq!(first.live_count().await.unwrap(), STUCK);
    first.shutdown().await;
    drop(first);

    // After: a new orchestrator on the file reopened, with a shipping service that works.
    let after = Journal::new();
    let (second, recovered) = Orchestrator::builder(file.open())
        .saga(order())
        .handler("stock.reserve", after.ok("stock.reserve", json!({})))
        .handler(
            "shipping.ship",
            after.ok("shipping.ship", json!({ "parcel": "p" })),
        )
        .handler("mail.send", after.ok("mail.send", json!({})))
        .start()
        .await
        .unwrap();
    assert_eq!(recovered.resumed, STUCK, "{recovered:?}");
    assert!(recovered.failed.is_empty(), "{recovered:?}");
    assert_eq!(
        recovered.records, records_unfinished,
        "the unfinished sagas' records were read, and the finished one's were not"
    );

    for id in &stuck {
        assert_eq!(settled(&second, id).await, SagaStatus::Completed, "{id}");
        let timeline = second.timeline(id).await.unwrap();
        assert!(
            transitions(&timeline).contains(&Transition::Recovered { steps: vec![1] }),
            "the log says {id}'s shipment was in flight at the restart"
        );
    }
    // Only the step that was out was sent again, each under the id it had before; the
    // finished saga was not touched.
    let (sent_before, sent_after) = (ship_intents(&before), ship_intents(&after));
    assert_eq!(sent_after.len(), STUCK, "{sent_after:?}");
    for id in &stuck {
        let (old, new) = (&sent_before[id.as_str()], &sent_after[id.as_str()]);
        assert_eq!(old.len(), 1);
        assert_eq!(new, old, "saga {id}'s shipment keeps its intent id");
    }
    assert!(
        after.calls_to("stock.reserve").is_empty(),
        "completed steps are not redone"
    );
    assert!(!sent_after.contains_key(done.as_str()));
    assert_eq!(after.calls_to("mail.send").len(), STUCK);
    assert_eq!(second.live_count().await.unwrap(), 0);
    second.shutdown().await;
}
