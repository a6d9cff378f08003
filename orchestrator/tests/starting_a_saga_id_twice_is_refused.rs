//! A saga id names one saga for good: starting it again is refused with
//! `Error::SagaExists`, whether the saga is still running or has finished, and the
//! refused start does nothing (no step runs with the second input, the log is
//! unchanged). A saga type no definition was registered for is `Error::UnknownSagaType`.

use std::sync::Arc;

use keel_orchestrator::{Error, Orchestrator, SagaDefinition, SagaStatus, Step, StepAction};
use keel_store::{EventStore, MemoryStore};
use serde_json::json;

use crate::common::stores::SqliteFile;
use crate::common::{Gate, Journal, saga_id, settled};

fn order() -> SagaDefinition {
    SagaDefinition::builder("shop.order")
        .step(Step::new("reserve", |ctx| {
            StepAction::custom("stock.reserve", json!({ "sku": ctx.input()["sku"] }))
        }))
        .build()
        .expect("a valid saga")
}

#[tokio::test(start_paused = true)]
async fn a_running_saga_cannot_be_started_again() {
    let (journal, gate) = (Journal::new(), Gate::new());
    let (orchestrator, _) = Orchestrator::builder(Arc::new(MemoryStore::new()))
        .saga(order())
        .handler(
            "stock.reserve",
            gate.service(&journal, "stock.reserve", Ok(json!({}))),
        )
        .start()
        .await
        .unwrap();
    let id = saga_id("order-1");
    orchestrator
        .start_saga("shop.order", id.clone(), json!({ "sku": "book" }))
        .await
        .unwrap();
    gate.arrivals(1).await;

    let again = orchestrator
        .start_saga("shop.order", id.clone(), json!({ "sku": "pen" }))
        .await;
    assert_eq!(
        again,
        Err(Error::SagaExists {
            saga: "order-1".into()
        })
    );

    gate.open();
    assert_eq!(settled(&orchestrator, &id).await, SagaStatus::Completed);
    let calls = journal.calls_to("stock.reserve");
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].payload, json!({ "sku": "book" }));
    orchestrator.shutdown().await;
}

/// Runs saga `order-1` to completion on `store`, then starts it again with another
/// input: refused, and nothing happens.
async fn start_a_finished_saga_again(store: Arc<dyn EventStore>) {
    let journal = Journal::new();
    let (orchestrator, _) = Orchestrator::builder(store)
        .saga(order())
        .handler("stock.reserve", journal.ok("stock.reserve", json!({})))
        .start()
        .await
        .expect("the orchestrator starts");
    let id = saga_id("order-1");
    orchestrator
        .start_saga("shop.order", id.clone(), json!({ "sku": "book" }))
        .await
        .expect("the saga starts");
    assert_eq!(settled(&orchestrator, &id).await, SagaStatus::Completed);
    let before = orchestrator
        .timeline(&id)
        .await
        .expect("the saga is in the store");

    let again = orchestrator
        .start_saga("shop.order", id.clone(), json!({ "sku": "pen" }))
        .await;
    // Let anything the second start set off run its course before looking.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let reserved: Vec<_> = journal
        .calls_to("stock.reserve")
        .into_iter()
        .map(|call| call.payload)
        .collect();
    let after = orchestrator
        .timeline(&id)
        .await
        .expect("the saga is in the store");
    // One comparison, so that a failure shows everything that went wrong.
    assert_eq!(
        (again, reserved, after.summary.records, after.summary.status),
        (
            Err(Error::SagaExists {
                saga: "order-1".into()
            }),
            vec![json!({ "sku": "book" })],
            before.summary.records,
            SagaStatus::Completed,
        ),
        "(the second start's answer, the reservations made, the log's length, its status)"
    );
    orchestrator.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_finished_saga_cannot_be_started_again_in_memory() {
    start_a_finished_saga_again(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn a_finished_saga_cannot_be_started_again_on_sqlite() {
    let file = SqliteFile::new();
    start_a_finished_saga_again(file.open()).await;
}

#[tokio::test(start_paused = true)]
async fn an_unregistered_saga_type_is_refused() {
    let (orchestrator, _) = Orchestrator::builder(Arc::new(MemoryStore::new()))
        .saga(order())
        .start()
        .await
        .unwrap();
    let unknown = orchestrator
        .start_saga("shop.refund", saga_id("refund-1"), json!({}))
        .await;
    assert_eq!(
        unknown,
        Err(Error::UnknownSagaType {
            saga_type: "shop.refund".into()
        })
    );
    let invalid = orchestrator
        .start_saga("Not A Type", saga_id("refund-2"), json!({}))
        .await;
    assert!(
        matches!(
            invalid,
            Err(Error::InvalidName {
                what: "saga type",
                ..
            })
        ),
        "{invalid:?}"
    );
    // Nothing was recorded for either.
    assert!(orchestrator.timeline(&saga_id("refund-1")).await.is_err());
    assert_eq!(orchestrator.live_count().await.unwrap(), 0);
    orchestrator.shutdown().await;
}
