//! The same sagas run with their log in PostgreSQL: one completes, one fails and is
//! compensated in reverse order, and one left unfinished by a stopped orchestrator is
//! resumed by a new one connected to the same database, under the same intent id.
//! Needs `KEEL_PG_URL`; without it the test prints `skipped postgres: KEEL_PG_URL not
//! set` and passes. Each run uses a schema and saga ids of its own.

use keel_effects::{Call, Failure, Handler};
use keel_orchestrator::{
    Orchestrator, OrchestratorBuilder, RetryPolicy, SagaDefinition, SagaFilter, SagaStatus, Step,
    StepAction, Transition,
};
use serde_json::json;

use crate::common::stores::{PgSchema, postgres_url};
use crate::common::{Gate, Journal, completion_order, saga_id, settled, transitions, unique};

/// reserve, then {charge, label}, then ship; the charge is declined for card `bad`.
fn fulfilment() -> SagaDefinition {
    let undoable = |name: &'static str, action: &'static str, undo: &'static str| {
        Step::new(name, move |ctx| {
            StepAction::custom(action, json!({ "card": ctx.input()["card"] }))
        })
        .compensate(move |_| StepAction::custom(undo, json!({})))
        .retry(RetryPolicy::none())
    };
    SagaDefinition::builder("shop.fulfilment")
        .step(undoable("reserve", "stock.reserve", "stock.release"))
        .parallel([
            undoable("charge", "payment.charge", "payment.refund"),
            undoable("label", "shipping.label", "shipping.void"),
        ])
        .step(Step::new("ship", |ctx| {
            StepAction::custom("shipping.ship", json!({ "card": ctx.input()["card"] }))
        }))
        .build()
        .expect("a valid saga")
}

fn card(call: &Call) -> serde_json::Value {
    match &call.intent.kind {
        keel_orchestrator::core::IntentKind::Custom { payload, .. } => payload["card"].clone(),
        _ => serde_json::Value::Null,
    }
}

/// The services; `ship` is served by `ship` (a gate that may hold it).
fn services(builder: OrchestratorBuilder, journal: &Journal, ship: &Gate) -> OrchestratorBuilder {
    let charged = journal.ok("payment.charge", json!({ "charge": "ch-1" }));
    let declined = journal.failing("payment.charge", Failure::permanent("card declined"));
    builder
        .saga(fulfilment())
        .handler("stock.reserve", journal.ok("stock.reserve", json!({})))
        .handler("payment.charge", move |call: Call| {
            if card(&call) == "bad" {
                declined.call(call)
            } else {
                charged.call(call)
            }
        })
        .handler("shipping.label", journal.ok("shipping.label", json!({})))
        .handler(
            "shipping.ship",
            ship.service(journal, "shipping.ship", Ok(json!({}))),
        )
        .handler("stock.release", journal.ok("stock.release", json!({})))
        .handler("payment.refund", journal.ok("payment.refund", json!({})))
        .handler("shipping.void", journal.ok("shipping.void", json!({})))
}

#[tokio::test]
async fn sagas_complete_compensate_and_resume_on_postgresql() {
    let Some(url) = postgres_url() else {
        return;
    };
    let schema = PgSchema::new(url);
    let run = unique("pg-");
    let (good, bad, held) = (
        saga_id(format!("{run}-good")),
        saga_id(format!("{run}-bad")),
        saga_id(format!("{run}-held")),
    );

    let (journal, ship) = (Journal::new(), Gate::new());
    let (first, recovered) = services(Orchestrator::builder(schema.open().await), &journal, &ship)
        .start()
        .await
        .unwrap();
    assert_eq!(recovered.resumed, 0, "a new schema holds no sagas");

    // One declined: turned back, the completed steps undone last first.
    first
        .start_saga("shop.fulfilment", bad.clone(), json!({ "card": "bad" }))
        .await
        .unwrap();
    let status = settled(&first, &bad).await;
    assert!(
        matches!(&status, SagaStatus::Compensated { reason } if reason.contains("card declined")),
        "{status:?}"
    );
    let timeline = first.timeline(&bad).await.unwrap();
    let undone: Vec<String> = transitions(&timeline)
        .into_iter()
        .filter_map(|t| match t {
            Transition::StepCompensated { step } => Some(timeline.step_name(step)),
            _ => None,
        })
        .collect();
    let mut expected = completion_order(&timeline);
    expected.reverse();
    assert_eq!(undone, expected);
    assert_eq!(undone.last().map(String::as_str), Some("reserve"));
    assert!(
        !undone.contains(&"charge".to_owned()),
        "the declined charge is not undone"
    );

    // One held at shipping when the orchestrator stops.
    first
        .start_saga("shop.fulfilment", held.clone(), json!({ "card": "good" }))
        .await
        .unwrap();
    ship.arrivals(1).await;
    first.shutdown().await;
    drop(first);

    // A new orchestrator on a new connection resumes it, and runs a new one too.
    let (after, ship_now) = (Journal::new(), Gate::new());
    ship_now.open();
    let (second, recovered) = services(
        Orchestrator::builder(schema.open().await),
        &after,
        &ship_now,
    )
    .start()
    .await
    .unwrap();
    assert_eq!(recovered.resumed, 1, "{recovered:?}");
    assert!(recovered.failed.is_empty(), "{recovered:?}");
    assert_eq!(settled(&second, &held).await, SagaStatus::Completed);
    let (old, new) = (
        journal.calls_to("shipping.ship"),
        after.calls_to("shipping.ship"),
    );
    assert_eq!((old.len(), new.len()), (1, 1));
    assert_eq!(
        new[0].intent, old[0].intent,
        "the same idempotency key after the restart"
    );

    second
        .start_saga("shop.fulfilment", good.clone(), json!({ "card": "good" }))
        .await
        .unwrap();
    assert_eq!(settled(&second, &good).await, SagaStatus::Completed);
    let mut called = after.services_of(&good);
    called[1..3].sort_unstable();
    assert_eq!(
        called,
        [
            "stock.reserve",
            "payment.charge",
            "shipping.label",
            "shipping.ship"
        ]
    );

    // The log in PostgreSQL lists all three, as they ended.
    let listed = second.list(&SagaFilter::default()).await.unwrap();
    let ended: Vec<(&str, &str)> = listed
        .iter()
        .map(|s| (s.id.as_str(), s.status.name()))
        .collect();
    assert_eq!(
        ended,
        [
            (bad.as_str(), "compensated"),
            (good.as_str(), "completed"),
            (held.as_str(), "completed"),
        ]
    );
    second.shutdown().await;
    drop(second);
    schema.drop_schema().await;
}
