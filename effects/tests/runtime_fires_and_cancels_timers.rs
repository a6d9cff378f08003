//! Timers are scheduled and cancelled by stable id; a fired timer arrives as an action
//! at its due time. Under tokio's paused clock these tests take no real time.

use crate::common::workflow;

use std::sync::Arc;
use std::time::Duration;

use keel_core::Timestamp;
use keel_effects::TokioClock;
use keel_effects::runtime::Runtime;
use workflow::{Emit, Msg, Workflow, command};

const START_MS: i64 = 1_795_000_000_000;

fn runtime() -> Runtime<Workflow> {
    let clock = TokioClock::starting_at(Timestamp::from_unix_millis(START_MS));
    Runtime::builder(Workflow)
        .clock(Arc::new(clock))
        .build()
        .expect("a valid runtime")
}

#[tokio::test(start_paused = true)]
async fn a_timer_fires_at_its_due_time_and_a_cancelled_one_never_does() {
    let runtime = runtime();
    runtime.spawn("a".into(), Default::default()).unwrap();
    let emits = vec![
        Emit::Timer("reminder", START_MS + 1_000),
        Emit::Timer("deadline", START_MS + 2_000),
        Emit::Cancel("deadline"),
    ];
    runtime
        .send(&"a".into(), command(1, START_MS, emits))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5_000)).await;

    let log = runtime
        .inspect(&"a".into(), |log| log.clone())
        .await
        .unwrap();
    assert_eq!(log.fired, ["reminder"]);
    let fired_at = log.applied.iter().find_map(|input| match &input.body {
        Msg::Outcome(_) => Some(input.now),
        Msg::Command(_) => None,
    });
    assert_eq!(
        fired_at,
        Some(Timestamp::from_unix_millis(START_MS + 1_000))
    );
}

#[tokio::test(start_paused = true)]
async fn scheduling_a_pending_timer_again_moves_it() {
    let runtime = runtime();
    runtime.spawn("a".into(), Default::default()).unwrap();
    runtime
        .send(
            &"a".into(),
            command(1, START_MS, vec![Emit::Timer("t", START_MS + 1_000)]),
        )
        .await
        .unwrap();
    runtime
        .send(
            &"a".into(),
            command(2, START_MS, vec![Emit::Timer("t", START_MS + 3_000)]),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert!(
        runtime
            .inspect(&"a".into(), |log| log.fired.clone())
            .await
            .unwrap()
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(
        runtime
            .inspect(&"a".into(), |log| log.fired.clone())
            .await
            .unwrap(),
        ["t"]
    );
}
