//! `list` reads every saga in the store and keeps those its filter admits, by status
//! name and by type; the status of a saga that has finished (and so left the
//! orchestrator's memory) is read from its log in the store, by this orchestrator or by
//! any other opened on the same store, even one that knows none of the definitions.

use std::sync::Arc;

use keel_effects::Failure;
use keel_orchestrator::{
    Error, Orchestrator, RetryPolicy, SagaDefinition, SagaFilter, SagaId, SagaStatus, SagaType,
    Step, StepAction,
};
use keel_store::{EventStore, MemoryStore};
use serde_json::json;

use crate::common::{Gate, Journal, saga_id, settled, within};

/// Orders (refused for card `bad`) and refunds.
fn sagas() -> [SagaDefinition; 2] {
    let order = SagaDefinition::builder("shop.order")
        .step(
            Step::new("reserve", |_| {
                StepAction::custom("stock.reserve", json!({}))
            })
            .compensate(|_| StepAction::custom("stock.release", json!({}))),
        )
        .step(
            Step::new("charge", |ctx| {
                StepAction::custom("payment.charge", json!({ "card": ctx.input()["card"] }))
            })
            .retry(RetryPolicy::none()),
        )
        .build()
        .expect("a valid saga");
    let refund = SagaDefinition::builder("shop.refund")
        .step(Step::new("refund", |_| {
            StepAction::custom("payment.refund", json!({}))
        }))
        .build()
        .expect("a valid saga");
    [order, refund]
}

/// An orchestrator on `store` whose stock service holds reservations for card `slow`.
async fn orchestrator_on(
    store: Arc<dyn EventStore>,
    journal: &Journal,
    hold: &Gate,
) -> Orchestrator {
    let [order, refund] = sagas();
    let reserve = journal.ok("stock.reserve", json!({}));
    let held = hold.service(journal, "stock.reserve", Ok(json!({})));
    let charge = journal.ok("payment.charge", json!({}));
    let declined = journal.failing("payment.charge", Failure::permanent("card declined"));
    let card = |call: &keel_effects::Call| match &call.intent.kind {
        keel_orchestrator::core::IntentKind::Custom { payload, .. } => payload["card"].clone(),
        _ => json!(null),
    };
    let (orchestrator, _) = Orchestrator::builder(store)
        .saga(order)
        .saga(refund)
        .handler("stock.reserve", move |call: keel_effects::Call| {
            // The reservation carries no card: saga `order-slow` is held by its id.
            if call.instance.as_str() == "order-slow" {
                keel_effects::Handler::call(&held, call)
            } else {
                keel_effects::Handler::call(&reserve, call)
            }
        })
        .handler("payment.charge", move |call: keel_effects::Call| {
            if card(&call) == "bad" {
                keel_effects::Handler::call(&declined, call)
            } else {
                keel_effects::Handler::call(&charge, call)
            }
        })
        .handler("stock.release", journal.ok("stock.release", json!({})))
        .handler("payment.refund", journal.ok("payment.refund", json!({})))
        .start()
        .await
        .expect("the orchestrator starts");
    orchestrator
}

fn ids(summaries: &[keel_orchestrator::SagaSummary]) -> Vec<&str> {
    summaries.iter().map(|s| s.id.as_str()).collect()
}

/// Starts four sagas and lets each come to where it stays: two completed, one
/// compensated, one running (held at the gate).
async fn four_sagas(orchestrator: &Orchestrator, hold: &Gate) -> [SagaId; 4] {
    let started = [
        ("shop.order", "order-good", json!({ "card": "good" })),
        ("shop.order", "order-bad", json!({ "card": "bad" })),
        ("shop.order", "order-slow", json!({ "card": "good" })),
        ("shop.refund", "refund-1", json!({})),
    ];
    for (saga_type, id, input) in &started {
        orchestrator
            .start_saga(saga_type, saga_id(*id), input.clone())
            .await
            .expect("the saga starts");
    }
    hold.arrivals(1).await;
    let ids = started.map(|(_, id, _)| saga_id(id));
    for id in [&ids[0], &ids[1], &ids[3]] {
        settled(orchestrator, id).await;
    }
    ids
}

#[tokio::test(start_paused = true)]
async fn list_filters_by_status_and_by_type() {
    let (journal, hold) = (Journal::new(), Gate::new());
    let orchestrator = orchestrator_on(Arc::new(MemoryStore::new()), &journal, &hold).await;
    four_sagas(&orchestrator, &hold).await;

    let list = |status: Option<&str>, saga_type: Option<&str>| SagaFilter {
        status: status.map(str::to_owned),
        saga_type: saga_type.map(|t| SagaType::new(t).unwrap()),
    };
    let all = orchestrator.list(&SagaFilter::default()).await.unwrap();
    assert_eq!(
        ids(&all),
        ["order-bad", "order-good", "order-slow", "refund-1"]
    );
    let statuses: Vec<&str> = all.iter().map(|s| s.status.name()).collect();
    assert_eq!(
        statuses,
        ["compensated", "completed", "running", "completed"]
    );

    let completed = orchestrator
        .list(&list(Some("completed"), None))
        .await
        .unwrap();
    assert_eq!(ids(&completed), ["order-good", "refund-1"]);
    let orders = orchestrator
        .list(&list(None, Some("shop.order")))
        .await
        .unwrap();
    assert_eq!(ids(&orders), ["order-bad", "order-good", "order-slow"]);
    assert!(orders.iter().all(|s| s.saga_type.as_str() == "shop.order"));
    let completed_orders = orchestrator
        .list(&list(Some("completed"), Some("shop.order")))
        .await
        .unwrap();
    assert_eq!(ids(&completed_orders), ["order-good"]);
    let running = orchestrator
        .list(&list(Some("running"), None))
        .await
        .unwrap();
    assert_eq!(ids(&running), ["order-slow"]);
    let compensated = orchestrator
        .list(&list(Some("compensated"), None))
        .await
        .unwrap();
    assert_eq!(ids(&compensated), ["order-bad"]);
    assert!(
        matches!(&compensated[0].status, SagaStatus::Compensated { reason } if reason.contains("card declined"))
    );
    assert!(
        orchestrator
            .list(&list(Some("needs_intervention"), None))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        orchestrator
            .list(&list(None, Some("shop.other")))
            .await
            .unwrap()
            .is_empty()
    );

    // The summaries count each saga's records and say when it started and changed.
    let good = &completed_orders[0];
    let timeline = orchestrator.timeline(&good.id).await.unwrap();
    assert_eq!(good.records, timeline.entries.len() as u64);
    assert!(good.started_at <= good.updated_at);
    orchestrator.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_status_of_a_finished_saga_is_read_from_the_store() {
    let store = MemoryStore::new();
    let (journal, hold) = (Journal::new(), Gate::new());
    let orchestrator = orchestrator_on(Arc::new(store.clone()), &journal, &hold).await;
    let [good, bad, slow, refund] = four_sagas(&orchestrator, &hold).await;

    // Finished sagas leave memory: only the running one is held.
    assert_eq!(orchestrator.live_count().await.unwrap(), 1);
    let status = |id: SagaId| {
        let orchestrator = &orchestrator;
        async move {
            within(&format!("the status of {id}"), orchestrator.status(&id))
                .await
                .unwrap()
        }
    };
    assert_eq!(status(good.clone()).await, SagaStatus::Completed);
    assert!(matches!(
        status(bad.clone()).await,
        SagaStatus::Compensated { .. }
    ));
    assert_eq!(status(refund.clone()).await, SagaStatus::Completed);
    assert_eq!(status(slow.clone()).await, SagaStatus::Running);
    let unknown = orchestrator.status(&saga_id("order-none")).await;
    assert!(
        matches!(unknown, Err(Error::UnknownSaga { .. })),
        "{unknown:?}"
    );
    orchestrator.shutdown().await;
    drop(orchestrator);

    // Another orchestrator on the same store, knowing no saga type, reads them too; the
    // running saga, whose type it does not know, is reported and left as it is.
    let (reader, recovered) = Orchestrator::builder(Arc::new(store))
        .start()
        .await
        .unwrap();
    assert_eq!(recovered.resumed, 0);
    assert!(
        recovered
            .failed
            .iter()
            .any(|(id, e)| *id == slow && matches!(e, Error::UnknownSagaType { .. })),
        "{recovered:?}"
    );
    let read = |id: SagaId| {
        let reader = &reader;
        async move {
            within(&format!("the status of {id}"), reader.status(&id))
                .await
                .unwrap()
        }
    };
    assert_eq!(read(good).await, SagaStatus::Completed);
    assert!(matches!(read(bad).await, SagaStatus::Compensated { .. }));
    assert_eq!(read(slow).await, SagaStatus::Running);
    assert_eq!(reader.list(&SagaFilter::default()).await.unwrap().len(), 4);
    reader.shutdown().await;
}
