//! A step's first attempt times out but its service is still at work and books the
//! hotel; the retry, under the same idempotency key, is answered `409 key in use`, a
//! permanent refusal. That refusal speaks for the retry only: the first attempt may
//! still apply, so the saga does not end as if nothing happened. It parks, naming the
//! step; when the first attempt's success arrives late, it is recorded, and the saga
//! turns back undoing the booking too. The log and the world agree.
//!
//! Time is tokio's paused clock: the test takes no real time.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_effects::{Call, Failure, TokioClock};
use keel_orchestrator::{
    Orchestrator, RetryPolicy, SagaDefinition, SagaStatus, Step, StepAction, Transition,
};
use keel_store::MemoryStore;
use serde_json::{Value, json};

use crate::common::{Journal, saga_id, settled, transitions};

/// How long the hotel takes to book: far longer than the step's timeout.
const BOOKING_MS: u64 = 500;
const TIMEOUT_MS: u64 = 100;

/// A hotel that deduplicates by idempotency key, like a real payment or booking API:
/// while a key is being worked on, a second request with it is `409 key in use`; once
/// booked, the booking is answered again.
#[derive(Debug, Default)]
struct Hotel {
    working: HashSet<String>,
    booked: HashSet<String>,
}

fn hotel_service(
    hotel: &Arc<Mutex<Hotel>>,
    journal: &Journal,
) -> impl keel_effects::Handler + use<> {
    let (hotel, journal) = (Arc::clone(hotel), journal.clone());
    move |call: Call| {
        journal.note("hotel.book", &call);
        let key = call.idempotency_key();
        let hotel = Arc::clone(&hotel);
        async move {
            {
                let mut state = hotel.lock().expect("no service panicked");
                if state.booked.contains(&key) {
                    return Ok(json!({ "booking": key }));
                }
                if !state.working.insert(key.clone()) {
                    return Err(Failure::permanent("409 Conflict: idempotency key in use"));
                }
            }
            tokio::time::sleep(Duration::from_millis(BOOKING_MS)).await;
            let mut state = hotel.lock().expect("no service panicked");
            state.working.remove(&key);
            state.booked.insert(key.clone());
            Ok::<Value, Failure>(json!({ "booking": key }))
        }
    }
}

fn trip() -> SagaDefinition {
    SagaDefinition::builder("trip.booking")
        .step(
            Step::new("flight", |_| StepAction::custom("flight.book", json!({})))
                .compensate(|_| StepAction::custom("flight.cancel", json!({}))),
        )
        .step(
            Step::new("hotel", |_| StepAction::custom("hotel.book", json!({})))
                .compensate(|ctx| {
                    let booking = ctx.own_result()["booking"].clone();
                    StepAction::custom("hotel.cancel", json!({ "booking": booking }))
                })
                .timeout_ms(TIMEOUT_MS)
                .retry(
                    RetryPolicy::exponential()
                        .attempts(3)
                        .first_delay(Duration::from_millis(10)),
                ),
        )
        .build()
        .expect("a valid saga")
}

#[tokio::test(start_paused = true)]
async fn a_409_after_a_timeout_parks_the_saga_and_the_late_booking_is_undone() {
    let journal = Journal::new();
    let hotel = Arc::new(Mutex::new(Hotel::default()));
    let (orchestrator, _) = Orchestrator::builder(Arc::new(MemoryStore::new()))
        .saga(trip())
        .clock(TokioClock::new())
        .handler(
            "flight.book",
            journal.ok("flight.book", json!({ "seat": "12A" })),
        )
        .handler("flight.cancel", journal.ok("flight.cancel", json!({})))
        .handler("hotel.book", hotel_service(&hotel, &journal))
        .handler("hotel.cancel", journal.ok("hotel.cancel", json!({})))
        .start()
        .await
        .expect("the orchestrator starts");
    let id = saga_id("trip-1");
    orchestrator
        .start_saga("trip.booking", id.clone(), json!({}))
        .await
        .expect("the saga starts");

    // The retry was refused with a 409 while the first attempt was still booking: the
    // saga cannot know whether the hotel is booked, so it parks and names the step.
    let parked = settled(&orchestrator, &id).await;
    let SagaStatus::NeedsIntervention { reason, .. } = &parked else {
        panic!("a 409 after a timeout must not end the saga as if nothing was booked: {parked:?}");
    };
    assert!(
        reason.contains("`hotel`") && reason.contains("409"),
        "the reason names the step and its last answer: {reason}"
    );
    assert_eq!(
        journal.calls_to("flight.cancel").len(),
        0,
        "nothing undone yet"
    );

    // The first attempt books the hotel and answers, late: its success is recorded, and
    // the saga undoes the booking and the flight, last completed first.
    tokio::time::sleep(Duration::from_millis(BOOKING_MS * 2)).await;
    let status = settled(&orchestrator, &id).await;
    assert!(
        matches!(status, SagaStatus::Compensated { .. }),
        "once the late success is in, the saga turns back: {status:?}"
    );
    let booked = hotel.lock().expect("no service panicked").booked.clone();
    assert_eq!(booked.len(), 1, "the hotel booked once under one key");
    let cancels = journal.calls_to("hotel.cancel");
    assert_eq!(cancels.len(), 1, "the booking that happened is cancelled");
    let booking = booked.iter().next().expect("one booking").clone();
    assert_eq!(cancels[0].payload, json!({ "booking": booking }));
    assert_eq!(
        journal
            .services()
            .into_iter()
            .filter(|s| s.ends_with(".cancel"))
            .collect::<Vec<_>>(),
        ["hotel.cancel", "flight.cancel"],
        "undone in reverse order of completion"
    );
    let timeline = orchestrator.timeline(&id).await.expect("a timeline");
    assert!(
        transitions(&timeline).contains(&Transition::Resumed {
            by: "late answer".into()
        }),
        "the timeline shows the late answer resuming the saga"
    );
    orchestrator.shutdown().await;
}
