//! A saga runs its steps one after another, each step's action built from the saga's
//! input and the results of the steps before it; it ends Completed, and its timeline
//! (read from the store) names every step and shows each one started and completed, in
//! order.

use std::sync::Arc;

use keel_orchestrator::id::step_intent_id;
use keel_orchestrator::{
    Orchestrator, Phase, SagaDefinition, SagaEvent, SagaStatus, Step, StepAction, Transition,
};
use keel_store::MemoryStore;
use serde_json::json;

use crate::common::{Journal, saga_id, settled, transitions};

fn order_saga() -> SagaDefinition {
    SagaDefinition::builder("shop.order")
        .step(Step::new("reserve", |ctx| {
            StepAction::custom("stock.reserve", json!({ "sku": ctx.input()["sku"] }))
        }))
        .step(Step::new("charge", |ctx| {
            StepAction::custom(
                "payment.charge",
                json!({
                    "cents": ctx.input()["cents"],
                    "reservation": ctx.result("reserve")["reservation"],
                }),
            )
        }))
        .step(Step::new("ship", |ctx| {
            StepAction::custom(
                "shipping.ship",
                json!({
                    "reservation": ctx.result("reserve")["reservation"],
                    "charge": ctx.result("charge")["charge"],
                }),
            )
        }))
        .build()
        .expect("a valid saga")
}

#[tokio::test(start_paused = true)]
async fn steps_run_in_order_each_seeing_the_results_before_it() {
    let journal = Journal::new();
    let (orchestrator, recovered) = Orchestrator::builder(Arc::new(MemoryStore::new()))
        .saga(order_saga())
        .handler(
            "stock.reserve",
            journal.ok("stock.reserve", json!({ "reservation": "r-1" })),
        )
        .handler(
            "payment.charge",
            journal.ok("payment.charge", json!({ "charge": "ch-1" })),
        )
        .handler(
            "shipping.ship",
            journal.ok("shipping.ship", json!({ "parcel": "p-1" })),
        )
        .start()
        .await
        .unwrap();
    assert_eq!(recovered.resumed, 0);

    let id = saga_id("order-1");
    orchestrator
        .start_saga(
            "shop.order",
            id.clone(),
            json!({ "sku": "book", "cents": 1200 }),
        )
        .await
        .unwrap();
    assert_eq!(settled(&orchestrator, &id).await, SagaStatus::Completed);

    let calls = journal.all();
    let services: Vec<_> = calls.iter().map(|c| c.service).collect();
    assert_eq!(
        services,
        ["stock.reserve", "payment.charge", "shipping.ship"]
    );
    assert_eq!(calls[0].payload, json!({ "sku": "book" }));
    assert_eq!(
        calls[1].payload,
        json!({ "cents": 1200, "reservation": "r-1" })
    );
    assert_eq!(
        calls[2].payload,
        json!({ "reservation": "r-1", "charge": "ch-1" })
    );
    for (step, call) in calls.iter().enumerate() {
        assert_eq!(call.saga, "order-1", "each call names its saga");
        let expected = step_intent_id(id.correlation(), step as u16, Phase::Action);
        assert_eq!(
            call.intent,
            expected.to_string(),
            "the step's stable intent id"
        );
    }
    assert_eq!(
        orchestrator.live_count().await.unwrap(),
        0,
        "a finished saga is let go"
    );
    orchestrator.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_timeline_shows_each_step_started_and_completed_in_order() {
    let journal = Journal::new();
    let (orchestrator, _) = Orchestrator::builder(Arc::new(MemoryStore::new()))
        .saga(order_saga())
        .handler(
            "stock.reserve",
            journal.ok("stock.reserve", json!({ "reservation": "r-1" })),
        )
        .handler(
            "payment.charge",
            journal.ok("payment.charge", json!({ "charge": "ch-1" })),
        )
        .handler(
            "shipping.ship",
            journal.ok("shipping.ship", json!({ "parcel": "p-1" })),
        )
        .start()
        .await
        .unwrap();
    let id = saga_id("order-2");
    orchestrator
        .start_saga(
            "shop.order",
            id.clone(),
            json!({ "sku": "pen", "cents": 300 }),
        )
        .await
        .unwrap();
    settled(&orchestrator, &id).await;

    let timeline = orchestrator.timeline(&id).await.unwrap();
    assert_eq!(timeline.steps, ["reserve", "charge", "ship"]);
    assert_eq!(timeline.summary.id, id);
    assert_eq!(timeline.summary.saga_type.as_str(), "shop.order");
    assert_eq!(timeline.summary.status, SagaStatus::Completed);
    assert_eq!(timeline.summary.records, timeline.entries.len() as u64);

    // One record for the start and one per answer; versions count from 1.
    let versions: Vec<u64> = timeline.entries.iter().map(|e| e.version).collect();
    assert_eq!(versions, [1, 2, 3, 4]);
    assert!(matches!(
        &timeline.entries[0].event,
        SagaEvent::Started { input, .. } if input["sku"] == "pen"
    ));
    for (step, entry) in timeline.entries[1..].iter().enumerate() {
        assert!(
            matches!(
                &entry.event,
                SagaEvent::Answered { step: s, phase: Phase::Action, attempt: 1, .. } if usize::from(*s) == step
            ),
            "record {} answers step {step}: {:?}",
            entry.version,
            entry.event
        );
    }
    let statuses: Vec<&str> = timeline.entries.iter().map(|e| e.status.name()).collect();
    assert_eq!(statuses, ["running", "running", "running", "completed"]);

    assert_eq!(
        transitions(&timeline),
        [
            Transition::Started,
            Transition::StepStarted {
                step: 0,
                attempt: 1
            },
            Transition::StepCompleted { step: 0 },
            Transition::StepStarted {
                step: 1,
                attempt: 1
            },
            Transition::StepCompleted { step: 1 },
            Transition::StepStarted {
                step: 2,
                attempt: 1
            },
            Transition::StepCompleted { step: 2 },
            Transition::Completed,
        ]
    );
    // The times are the (paused) clock's, never going back.
    assert!(
        timeline
            .entries
            .windows(2)
            .all(|pair| pair[0].time <= pair[1].time)
    );
    orchestrator.shutdown().await;
}
