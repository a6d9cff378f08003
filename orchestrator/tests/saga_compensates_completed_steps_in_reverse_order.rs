//! A step that fails for good turns the saga back: every completed step is undone, the
//! last completed first, one at a time, and the saga ends Compensated with the failure
//! as its reason. A step that never completed (the failed one, or one never started) is
//! not compensated. Run on a SQLite file, with a parallel group in the middle.

use std::sync::Arc;

use keel_effects::{Call, Failure, Handler};
use keel_orchestrator::{
    Orchestrator, OrchestratorBuilder, RetryPolicy, SagaDefinition, SagaStatus, Step, StepAction,
    Transition,
};
use keel_store::EventStore;
use serde_json::json;

use crate::common::stores::SqliteFile;
use crate::common::{Journal, completion_order, saga_id, settled, transitions};

/// reserve, then {charge, label} together, then ship, then notify; each step but notify
/// has an undo.
fn fulfilment() -> SagaDefinition {
    let step = |name: &'static str, action: &'static str, undo: &'static str| {
        Step::new(name, move |ctx| {
            StepAction::custom(action, json!({ "order": ctx.input()["order"] }))
        })
        .compensate(move |ctx| {
            // The undo names what it undoes, from the step's own result.
            StepAction::custom(undo, json!({ "undo": ctx.own_result()["id"] }))
        })
        .retry(RetryPolicy::none())
    };
    SagaDefinition::builder("shop.fulfilment")
        .step(step("reserve", "stock.reserve", "stock.release"))
        .parallel([
            step("charge", "payment.charge", "payment.refund"),
            step("label", "shipping.label", "shipping.void"),
        ])
        .step(step("ship", "shipping.ship", "shipping.recall"))
        .step(Step::new("notify", |_| {
            StepAction::custom("mail.send", json!({}))
        }))
        .build()
        .expect("a valid saga")
}

/// The services; `ship` and `label` fail as asked.
fn orchestrator_with(
    journal: &Journal,
    store: Arc<dyn EventStore>,
    label_fails: bool,
) -> OrchestratorBuilder {
    let label_refuses = journal.failing("shipping.label", Failure::permanent("no such address"));
    let label_prints = journal.ok("shipping.label", json!({ "id": "label-1" }));
    let label = move |call: Call| {
        if label_fails {
            label_refuses.call(call)
        } else {
            label_prints.call(call)
        }
    };
    Orchestrator::builder(store)
        .saga(fulfilment())
        .handler(
            "stock.reserve",
            journal.ok("stock.reserve", json!({ "id": "res-1" })),
        )
        .handler(
            "payment.charge",
            journal.ok("payment.charge", json!({ "id": "ch-1" })),
        )
        .handler("shipping.label", label)
        .handler(
            "shipping.ship",
            journal.failing("shipping.ship", Failure::permanent("the carrier refused")),
        )
        .handler("mail.send", journal.ok("mail.send", json!({})))
        .handler("stock.release", journal.ok("stock.release", json!({})))
        .handler("payment.refund", journal.ok("payment.refund", json!({})))
        .handler("shipping.void", journal.ok("shipping.void", json!({})))
        .handler("shipping.recall", journal.ok("shipping.recall", json!({})))
}

/// The undo service of each step.
fn undo_of(step: &str) -> &'static str {
    match step {
        "reserve" => "stock.release",
        "charge" => "payment.refund",
        "label" => "shipping.void",
        "ship" => "shipping.recall",
        other => panic!("step {other} has no undo"),
    }
}

fn undos(journal: &Journal) -> Vec<&'static str> {
    journal
        .services()
        .into_iter()
        .filter(|s| {
            matches!(
                *s,
                "stock.release" | "payment.refund" | "shipping.void" | "shipping.recall"
            )
        })
        .collect()
}

#[tokio::test]
async fn a_failing_step_undoes_the_completed_steps_last_completed_first() {
    let file = SqliteFile::new();
    let journal = Journal::new();
    let (orchestrator, _) = orchestrator_with(&journal, file.open(), false)
        .start()
        .await
        .unwrap();
    let id = saga_id("order-7");
    orchestrator
        .start_saga("shop.fulfilment", id.clone(), json!({ "order": 7 }))
        .await
        .unwrap();

    let status = settled(&orchestrator, &id).await;
    let SagaStatus::Compensated { reason } = &status else {
        panic!("expected the saga compensated, got {status:?}");
    };
    assert!(
        reason.contains("`ship`") && reason.contains("the carrier refused"),
        "the reason names the failed step and why: {reason}"
    );

    // Which of charge and label completed first is up to the services; the undo order
    // must be the exact reverse of whatever the timeline recorded.
    let timeline = orchestrator.timeline(&id).await.unwrap();
    let completed = completion_order(&timeline);
    assert_eq!(completed.len(), 3, "{completed:?}");
    assert_eq!(completed[0], "reserve");
    let expected: Vec<&str> = completed.iter().rev().map(|s| undo_of(s)).collect();
    assert_eq!(undos(&journal), expected);
    assert_eq!(
        expected.last(),
        Some(&"stock.release"),
        "the first step is undone last"
    );

    // Each undo was built from its own step's result.
    let release = journal.calls_to("stock.release");
    assert_eq!(release.len(), 1);
    assert_eq!(release[0].payload, json!({ "undo": "res-1" }));
    assert_eq!(
        journal.calls_to("payment.refund")[0].payload,
        json!({ "undo": "ch-1" })
    );
    // The failed step is not undone, and the step after it never ran.
    assert!(journal.calls_to("shipping.recall").is_empty());
    assert!(journal.calls_to("mail.send").is_empty());
    // The undos went out one at a time: each only after the previous one was answered.
    let index = |name: &str| timeline.steps.iter().position(|s| s == name).unwrap() as u16;
    let undoing: Vec<Transition> = transitions(&timeline)
        .into_iter()
        .filter(|t| {
            matches!(
                t,
                Transition::CompensationStarted { .. }
                    | Transition::StepCompensated { .. }
                    | Transition::Compensated
            )
        })
        .collect();
    let mut expected_undoing: Vec<Transition> = completed
        .iter()
        .rev()
        .flat_map(|name| {
            let step = index(name);
            [
                Transition::CompensationStarted { step, attempt: 1 },
                Transition::StepCompensated { step },
            ]
        })
        .collect();
    expected_undoing.push(Transition::Compensated);
    assert_eq!(undoing, expected_undoing);

    orchestrator.shutdown().await;
    drop(orchestrator);
    // The end is durable: a store opened again on the file reads it.
    let reopened = file.open();
    let again = keel_orchestrator::query::timeline(reopened.as_ref(), &id)
        .await
        .unwrap();
    assert_eq!(again.summary.status, status);
}

#[tokio::test]
async fn a_failure_inside_a_parallel_group_undoes_its_completed_sibling_before_the_earlier_steps() {
    let file = SqliteFile::new();
    let journal = Journal::new();
    let (orchestrator, _) = orchestrator_with(&journal, file.open(), true)
        .start()
        .await
        .unwrap();
    let id = saga_id("order-8");
    orchestrator
        .start_saga("shop.fulfilment", id.clone(), json!({ "order": 8 }))
        .await
        .unwrap();

    let status = settled(&orchestrator, &id).await;
    assert!(
        matches!(&status, SagaStatus::Compensated { reason } if reason.contains("`label`")),
        "{status:?}"
    );
    // label failed while charge completed: charge is undone first, then reserve; label
    // itself (nothing happened) and ship (never started) are not.
    assert_eq!(undos(&journal), ["payment.refund", "stock.release"]);
    assert!(journal.calls_to("shipping.ship").is_empty());
    orchestrator.shutdown().await;
}
