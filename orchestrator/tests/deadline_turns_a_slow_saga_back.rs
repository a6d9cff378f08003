//! A saga still running when its deadline passes is turned back. A step that never
//! answers has to time out first; since it may have taken effect, the saga does not
//! guess: it parks, naming the step, and once an operator says it did nothing, the
//! completed steps are undone and the saga ends Compensated, the deadline its reason.
//! Time is tokio's paused clock, read through `TokioClock`: the test takes no real time.

use std::sync::Arc;
use std::time::Duration;

use keel_effects::TokioClock;
use keel_orchestrator::{
    Orchestrator, RetryPolicy, SagaDefinition, SagaStatus, Step, StepAction, Transition,
};
use keel_store::MemoryStore;
use serde_json::json;

use crate::common::{Journal, logged_status, saga_id, settled, transitions};

const DEADLINE_MS: u64 = 1_000;
const STEP_TIMEOUT_MS: u64 = 5_000;

/// reserve, then a quote from a service that never answers, then book.
fn booking(step_timeout: bool) -> SagaDefinition {
    let quote = Step::new("quote", |_| StepAction::custom("quotes.ask", json!({})))
        .retry(RetryPolicy::none());
    let quote = if step_timeout {
        quote.timeout_ms(STEP_TIMEOUT_MS)
    } else {
        quote
    };
    SagaDefinition::builder("travel.booking")
        .step(
            Step::new("reserve", |_| {
                StepAction::custom("seats.reserve", json!({}))
            })
            .compensate(|_| StepAction::custom("seats.release", json!({}))),
        )
        .step(quote)
        .step(Step::new("book", |_| {
            StepAction::custom("seats.book", json!({}))
        }))
        .deadline_ms(DEADLINE_MS)
        .build()
        .expect("a valid saga")
}

fn orchestrator(journal: &Journal, step_timeout: bool) -> keel_orchestrator::OrchestratorBuilder {
    Orchestrator::builder(Arc::new(MemoryStore::new()))
        .saga(booking(step_timeout))
        .clock(TokioClock::new())
        .handler("seats.reserve", journal.ok("seats.reserve", json!({})))
        .handler("quotes.ask", journal.silent("quotes.ask"))
        .handler("seats.book", journal.ok("seats.book", json!({})))
        .handler("seats.release", journal.ok("seats.release", json!({})))
}

#[tokio::test(start_paused = true)]
async fn the_deadline_turns_the_saga_back_while_a_step_hangs() {
    let journal = Journal::new();
    let (orchestrator, _) = orchestrator(&journal, false).start().await.unwrap();
    let id = saga_id("booking-1");
    let wall = std::time::Instant::now();
    orchestrator
        .start_saga("travel.booking", id.clone(), json!({}))
        .await
        .unwrap();

    // Just before the deadline: still running.
    tokio::time::sleep(Duration::from_millis(DEADLINE_MS - 10)).await;
    assert_eq!(logged_status(&orchestrator, &id).await, SagaStatus::Running);

    tokio::time::sleep(Duration::from_millis(20)).await;
    let status = logged_status(&orchestrator, &id).await;
    assert_eq!(
        status,
        SagaStatus::Compensating {
            reason: format!("its deadline of {DEADLINE_MS} ms passed")
        }
    );
    // The deadline fired on the paused clock: no real second went by, yet the
    // timeline's times are a deadline apart.
    assert!(wall.elapsed() < Duration::from_millis(DEADLINE_MS));
    let timeline = orchestrator.timeline(&id).await.unwrap();
    let first = timeline.entries.first().unwrap().time;
    let last = timeline.entries.last().unwrap().time;
    assert!(
        last.millis_since(first) >= DEADLINE_MS,
        "{first:?} .. {last:?}"
    );
    // The hanging step is still awaited: nothing is undone behind its back, and the
    // step after it never starts.
    assert_eq!(journal.services(), ["seats.reserve", "quotes.ask"]);
    orchestrator.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn after_the_hanging_step_times_out_the_saga_parks_then_compensates_when_skipped() {
    let journal = Journal::new();
    let (orchestrator, _) = orchestrator(&journal, true).start().await.unwrap();
    let id = saga_id("booking-2");
    orchestrator
        .start_saga("travel.booking", id.clone(), json!({}))
        .await
        .unwrap();

    let status = settled(&orchestrator, &id).await;
    let SagaStatus::NeedsIntervention { reason, .. } = &status else {
        panic!("expected the saga parked for an operator, got {status:?}");
    };
    assert!(
        reason.contains("`quote`") && reason.contains("may have taken effect"),
        "{reason}"
    );
    let timeline = orchestrator.timeline(&id).await.unwrap();
    let all = transitions(&timeline);
    let compensating = all
        .iter()
        .position(
            |t| matches!(t, Transition::Compensating { reason } if reason.contains("deadline")),
        )
        .expect("the deadline turned the saga back");
    let timed_out = all
        .iter()
        .position(|t| matches!(t, Transition::StepFailed { step: 1, reason, .. } if reason.contains("no answer within")))
        .expect("the hanging step timed out");
    assert!(compensating < timed_out, "the deadline came first: {all:?}");
    assert!(
        journal.calls_to("seats.release").is_empty(),
        "nothing undone yet"
    );

    // The operator checked: the quote did nothing. The reservation is released.
    orchestrator.skip(&id).await.unwrap();
    let status = settled(&orchestrator, &id).await;
    assert_eq!(
        status,
        SagaStatus::Compensated {
            reason: format!("its deadline of {DEADLINE_MS} ms passed")
        }
    );
    assert_eq!(
        journal.services(),
        ["seats.reserve", "quotes.ask", "seats.release"]
    );
    orchestrator.shutdown().await;
}
