//! Cancelling a running saga turns it back: the step in flight is awaited, then every
//! completed step is undone, last first, and the saga ends Compensated with the
//! cancellation as its reason; nothing after the cancellation starts. Past its pivot a
//! saga can only go forward: cancelling it is refused with `Error::NotAllowed`.

use std::sync::Arc;

use keel_orchestrator::{Orchestrator, SagaDefinition, SagaStatus, Step, StepAction, Transition};
use keel_store::MemoryStore;
use serde_json::json;

use crate::common::{Gate, Journal, is_not_allowed, logged_status, saga_id, settled};

/// book the flight, book the hotel, pay (held at a gate), send the tickets.
fn trip(pay_is_pivot: bool) -> SagaDefinition {
    let pay = Step::new("pay", |_| StepAction::custom("payment.capture", json!({})))
        .compensate(|_| StepAction::custom("payment.refund", json!({})));
    let pay = if pay_is_pivot { pay.pivot() } else { pay };
    SagaDefinition::builder("travel.trip")
        .step(
            Step::new("flight", |_| StepAction::custom("flight.book", json!({})))
                .compensate(|_| StepAction::custom("flight.cancel", json!({}))),
        )
        .step(
            Step::new("hotel", |_| StepAction::custom("hotel.book", json!({})))
                .compensate(|_| StepAction::custom("hotel.cancel", json!({}))),
        )
        .step(pay)
        .step(Step::new("tickets", |_| {
            StepAction::custom("mail.tickets", json!({}))
        }))
        .build()
        .expect("a valid saga")
}

fn orchestrator(
    journal: &Journal,
    pay: &Gate,
    pay_is_pivot: bool,
    tickets: &Gate,
) -> keel_orchestrator::OrchestratorBuilder {
    Orchestrator::builder(Arc::new(MemoryStore::new()))
        .saga(trip(pay_is_pivot))
        .handler("flight.book", journal.ok("flight.book", json!({})))
        .handler("hotel.book", journal.ok("hotel.book", json!({})))
        .handler(
            "payment.capture",
            pay.service(journal, "payment.capture", Ok(json!({}))),
        )
        .handler(
            "mail.tickets",
            tickets.service(journal, "mail.tickets", Ok(json!({}))),
        )
        .handler("flight.cancel", journal.ok("flight.cancel", json!({})))
        .handler("hotel.cancel", journal.ok("hotel.cancel", json!({})))
        .handler("payment.refund", journal.ok("payment.refund", json!({})))
}

#[tokio::test(start_paused = true)]
async fn cancelling_awaits_the_step_in_flight_then_undoes_every_completed_step() {
    let (journal, pay, tickets) = (Journal::new(), Gate::new(), Gate::new());
    tickets.open();
    let (orchestrator, _) = orchestrator(&journal, &pay, false, &tickets)
        .start()
        .await
        .unwrap();
    let id = saga_id("trip-1");
    orchestrator
        .start_saga("travel.trip", id.clone(), json!({}))
        .await
        .unwrap();
    pay.arrivals(1).await;

    orchestrator
        .cancel(&id, "the traveller changed plans")
        .await
        .unwrap();
    // The payment is still out: the saga waits for its answer before undoing anything.
    let status = logged_status(&orchestrator, &id).await;
    assert!(
        matches!(&status, SagaStatus::Compensating { reason } if reason.contains("the traveller changed plans")),
        "{status:?}"
    );
    assert_eq!(
        journal.services(),
        ["flight.book", "hotel.book", "payment.capture"]
    );

    // The payment went through after all: it is undone too, first.
    pay.open();
    let status = settled(&orchestrator, &id).await;
    assert_eq!(
        status,
        SagaStatus::Compensated {
            reason: "cancelled: the traveller changed plans".into()
        }
    );
    assert_eq!(
        journal.services(),
        [
            "flight.book",
            "hotel.book",
            "payment.capture",
            "payment.refund",
            "hotel.cancel",
            "flight.cancel",
        ]
    );
    // A second cancellation finds nothing to cancel.
    assert!(orchestrator.cancel(&id, "again").await.is_err());
    orchestrator.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn cancelling_past_the_pivot_is_refused_and_the_saga_completes() {
    let (journal, pay, tickets) = (Journal::new(), Gate::new(), Gate::new());
    pay.open();
    let (orchestrator, _) = orchestrator(&journal, &pay, true, &tickets)
        .start()
        .await
        .unwrap();
    let id = saga_id("trip-2");
    orchestrator
        .start_saga("travel.trip", id.clone(), json!({}))
        .await
        .unwrap();
    // The pivot (pay) has completed; the tickets are being sent.
    tickets.arrivals(1).await;

    let refused = orchestrator.cancel(&id, "too late").await.unwrap_err();
    assert!(is_not_allowed(&refused, "cancel"), "{refused:?}");
    assert!(refused.to_string().contains("pivot"), "{refused}");
    assert_eq!(logged_status(&orchestrator, &id).await, SagaStatus::Running);

    tickets.open();
    assert_eq!(settled(&orchestrator, &id).await, SagaStatus::Completed);
    let undos: Vec<_> = journal
        .services()
        .into_iter()
        .filter(|s| s.ends_with(".cancel") || s.ends_with(".refund"))
        .collect();
    assert!(
        undos.is_empty(),
        "nothing is undone past the pivot: {undos:?}"
    );
    orchestrator.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_pivot_that_completes_after_a_cancellation_carries_the_saga_forward() {
    let (journal, pay, tickets) = (Journal::new(), Gate::new(), Gate::new());
    tickets.open();
    let (orchestrator, _) = orchestrator(&journal, &pay, true, &tickets)
        .start()
        .await
        .unwrap();
    let id = saga_id("trip-3");
    orchestrator
        .start_saga("travel.trip", id.clone(), json!({}))
        .await
        .unwrap();
    pay.arrivals(1).await;
    // Not past the pivot yet: the cancellation is accepted.
    orchestrator.cancel(&id, "changed plans").await.unwrap();

    // But the pivot's effect happened: there is no going back from it.
    pay.open();
    assert_eq!(settled(&orchestrator, &id).await, SagaStatus::Completed);
    assert_eq!(
        journal.services(),
        [
            "flight.book",
            "hotel.book",
            "payment.capture",
            "mail.tickets"
        ]
    );
    let timeline = orchestrator.timeline(&id).await.unwrap();
    assert!(
        crate::common::transitions(&timeline).contains(&Transition::Resumed {
            by: "the pivot completed".into()
        }),
        "the timeline says why the saga went forward again"
    );
    orchestrator.shutdown().await;
}
