//! A compensation that keeps failing past its retry policy parks the saga as
//! NeedsIntervention, with a reason naming the step. Then an operator decides: `retry`
//! (the service is fixed) undoes it for real and the saga ends Compensated; `skip`
//! counts it as undone and the saga ends Compensated without calling it again;
//! `resolve` closes the saga as it is. Operator commands on a saga that does not need
//! intervention are refused. On a SQLite file.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use keel_effects::{Call, Failure};
use keel_orchestrator::{
    Error, Orchestrator, RetryPolicy, SagaDefinition, SagaFilter, SagaId, SagaStatus, Step,
    StepAction, Transition,
};
use keel_store::EventStore;
use serde_json::json;

use crate::common::stores::SqliteFile;
use crate::common::{Gate, Journal, is_not_allowed, saga_id, settled, transitions};

const UNDO_ATTEMPTS: u16 = 3;

/// reserve (undone by a release that may be broken), then charge (refused).
fn order() -> SagaDefinition {
    SagaDefinition::builder("shop.order")
        .step(
            Step::new("reserve", |_| {
                StepAction::custom("stock.reserve", json!({}))
            })
            .compensate(|_| StepAction::custom("stock.release", json!({})))
            // Short waits: this test runs on the real clock, on a real file.
            .compensation_retry(
                RetryPolicy::exponential()
                    .attempts(u32::from(UNDO_ATTEMPTS))
                    .first_delay(Duration::from_millis(2))
                    .max_delay(Duration::from_millis(10)),
            ),
        )
        .step(
            Step::new("charge", |_| {
                StepAction::custom("payment.charge", json!({}))
            })
            .retry(RetryPolicy::none()),
        )
        .build()
        .expect("a valid saga")
}

/// The stock service's release, failing (transiently) while `broken` is set.
fn release(journal: &Journal, broken: &Arc<AtomicBool>) -> impl keel_effects::Handler + use<> {
    let (journal, broken) = (journal.clone(), Arc::clone(broken));
    move |call: Call| {
        journal.note("stock.release", &call);
        let down = broken.load(Ordering::SeqCst);
        async move {
            if down {
                Err(Failure::transient("the stock service is down"))
            } else {
                Ok(json!({ "released": true }))
            }
        }
    }
}

/// Starts an orchestrator on `store` and a saga that ends parked; returns both.
async fn parked(
    store: Arc<dyn EventStore>,
    journal: &Journal,
    broken: &Arc<AtomicBool>,
    id: &SagaId,
) -> Orchestrator {
    let (orchestrator, _) = Orchestrator::builder(store)
        .saga(order())
        .handler("stock.reserve", journal.ok("stock.reserve", json!({})))
        .handler(
            "payment.charge",
            journal.failing("payment.charge", Failure::permanent("card declined")),
        )
        .handler("stock.release", release(journal, broken))
        .start()
        .await
        .expect("the orchestrator starts");
    orchestrator
        .start_saga("shop.order", id.clone(), json!({}))
        .await
        .expect("the saga starts");
    let status = settled(&orchestrator, id).await;
    let SagaStatus::NeedsIntervention { reason, .. } = &status else {
        panic!("expected the saga parked, got {status:?}");
    };
    assert!(
        reason.contains("compensation of step `reserve`")
            && reason.contains(&format!("after {UNDO_ATTEMPTS} attempts"))
            && reason.contains("the stock service is down"),
        "the reason names the step, the attempts and the failure: {reason}"
    );
    assert_eq!(
        journal.calls_to("stock.release").len(),
        usize::from(UNDO_ATTEMPTS),
        "every attempt the policy allows was made"
    );
    orchestrator
}

#[tokio::test]
async fn retry_after_the_service_is_fixed_ends_the_saga_compensated() {
    let file = SqliteFile::new();
    let (journal, broken) = (Journal::new(), Arc::new(AtomicBool::new(true)));
    let id = saga_id("order-retry");
    let orchestrator = parked(file.open(), &journal, &broken, &id).await;

    // Parked sagas are listed for operators.
    let filter = SagaFilter {
        status: Some("needs_intervention".into()),
        ..SagaFilter::default()
    };
    let listed = orchestrator.list(&filter).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id);

    broken.store(false, Ordering::SeqCst);
    orchestrator.retry(&id).await.unwrap();
    let status = settled(&orchestrator, &id).await;
    assert!(
        matches!(&status, SagaStatus::Compensated { reason } if reason.contains("card declined")),
        "{status:?}"
    );
    assert_eq!(
        journal.calls_to("stock.release").len(),
        usize::from(UNDO_ATTEMPTS) + 1
    );
    let timeline = orchestrator.timeline(&id).await.unwrap();
    let all = transitions(&timeline);
    assert!(
        all.contains(&Transition::Resumed { by: "retry".into() }),
        "{all:?}"
    );
    assert!(
        all.contains(&Transition::StepCompensated { step: 0 }),
        "{all:?}"
    );
    orchestrator.shutdown().await;
}

#[tokio::test]
async fn skip_counts_the_compensation_as_done_without_calling_it_again() {
    let file = SqliteFile::new();
    let (journal, broken) = (Journal::new(), Arc::new(AtomicBool::new(true)));
    let id = saga_id("order-skip");
    let orchestrator = parked(file.open(), &journal, &broken, &id).await;

    orchestrator.skip(&id).await.unwrap();
    let status = settled(&orchestrator, &id).await;
    assert!(
        matches!(status, SagaStatus::Compensated { .. }),
        "{status:?}"
    );
    assert_eq!(
        journal.calls_to("stock.release").len(),
        usize::from(UNDO_ATTEMPTS),
        "a skipped compensation is not attempted again"
    );
    let timeline = orchestrator.timeline(&id).await.unwrap();
    let all = transitions(&timeline);
    assert!(
        all.contains(&Transition::Resumed { by: "skip".into() }),
        "{all:?}"
    );
    assert!(
        !all.contains(&Transition::StepCompensated { step: 0 }),
        "{all:?}"
    );
    orchestrator.shutdown().await;
}

#[tokio::test]
async fn resolve_closes_the_saga_as_it_is_with_the_operators_note() {
    let file = SqliteFile::new();
    let (journal, broken) = (Journal::new(), Arc::new(AtomicBool::new(true)));
    let id = saga_id("order-resolve");
    let orchestrator = parked(file.open(), &journal, &broken, &id).await;

    orchestrator
        .resolve(&id, "released by hand in the warehouse")
        .await
        .unwrap();
    let status = settled(&orchestrator, &id).await;
    assert_eq!(
        status,
        SagaStatus::Resolved {
            note: "released by hand in the warehouse".into()
        }
    );
    assert_eq!(
        journal.calls_to("stock.release").len(),
        usize::from(UNDO_ATTEMPTS)
    );
    // Closed for good: a later retry changes nothing.
    assert!(orchestrator.retry(&id).await.is_err());
    let timeline = orchestrator.timeline(&id).await.unwrap();
    assert_eq!(timeline.summary.status, status);
    orchestrator.shutdown().await;
}

#[tokio::test]
async fn operator_commands_on_a_running_saga_are_refused() {
    let file = SqliteFile::new();
    let (journal, gate) = (Journal::new(), Gate::new());
    let (orchestrator, _) = Orchestrator::builder(file.open())
        .saga(order())
        .handler(
            "stock.reserve",
            gate.service(&journal, "stock.reserve", Ok(json!({}))),
        )
        .handler("payment.charge", journal.ok("payment.charge", json!({})))
        .handler("stock.release", journal.ok("stock.release", json!({})))
        .start()
        .await
        .unwrap();
    let id = saga_id("order-running");
    orchestrator
        .start_saga("shop.order", id.clone(), json!({}))
        .await
        .unwrap();
    gate.arrivals(1).await;

    for (request, refused) in [
        ("retry", orchestrator.retry(&id).await),
        ("skip", orchestrator.skip(&id).await),
        (
            "resolve",
            orchestrator.resolve(&id, "nothing to resolve").await,
        ),
    ] {
        let error = refused.expect_err(request);
        assert!(is_not_allowed(&error, request), "{request}: {error:?}");
        assert!(error.to_string().contains("running"), "{error}");
    }
    // An unknown saga is not operated on either.
    let unknown = orchestrator.retry(&saga_id("no-such-order")).await;
    assert!(
        matches!(unknown, Err(Error::UnknownSaga { .. })),
        "{unknown:?}"
    );

    // The refusals left no trace: the saga goes on and completes.
    gate.open();
    assert_eq!(settled(&orchestrator, &id).await, SagaStatus::Completed);
    let timeline = orchestrator.timeline(&id).await.unwrap();
    assert!(
        !transitions(&timeline)
            .iter()
            .any(|t| matches!(t, Transition::Resumed { .. } | Transition::Resolved { .. }))
    );
    orchestrator.shutdown().await;
}
