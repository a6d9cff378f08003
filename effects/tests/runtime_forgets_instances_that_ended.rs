//! An instance that ends (stopped, faulted, or panicked in its reducer) leaves the
//! runtime's registry at once: its id can be spawned again, and the registry holds what
//! runs, not every instance that came and went. What one that ended on its own left
//! (its state, the intents it handed back, its fault) is in the next shutdown's report,
//! within a bound.

use crate::common::workflow;

use std::time::Duration;

use keel_core::{Input, Intent, Reducer};
use keel_effects::InstanceId;
use keel_effects::runtime::{HandBackReason, Runtime, RuntimeConfig};
use workflow::{Emit, Log, Msg, Workflow, command};

const GRACE: Duration = Duration::from_secs(1);

/// Spawns instance `id` with an empty log and sends it `action`.
async fn start<R>(runtime: &Runtime<R>, id: &InstanceId, action: Input<Msg>)
where
    R: Reducer<State = Log, Action = Input<Msg>> + Send + Sync + 'static,
{
    runtime.spawn(id.clone(), Log::default()).expect("spawned");
    runtime.send(id, action).await.expect("sent");
}

/// Lets the instance tasks run until `runtime` hosts `expected` instances, at most a
/// thousand turns of the (paused) clock.
async fn settle<R>(runtime: &Runtime<R>, expected: usize)
where
    R: Reducer<State = Log, Action = Input<Msg>> + Send + Sync + 'static,
{
    for _ in 0..1_000 {
        if runtime.instance_count() == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let left = runtime.instance_count();
    assert_eq!(left, expected, "the instances did not end");
}

/// The test workflow, except that a command emitting nothing panics.
struct Fragile;

impl Reducer for Fragile {
    type State = Log;
    type Action = Input<Msg>;

    fn reduce_into(&self, log: &mut Log, action: Input<Msg>, intents: &mut Vec<Intent>) {
        if matches!(&action.body, Msg::Command(emits) if emits.is_empty()) {
            panic!("the reducer broke (on purpose)");
        }
        Workflow.reduce_into(log, action, intents);
    }
}

/// A runtime whose steps may emit one intent each, keeping 100 reports of ended ones.
fn strict() -> Runtime<Workflow> {
    Runtime::builder(Workflow)
        .config(RuntimeConfig {
            intents_per_step_max: 1,
            ended_reports_max: 100,
            ..RuntimeConfig::default()
        })
        .build()
        .expect("a valid runtime")
}

/// A command with a timer that will not fire during the test.
fn later(causation: u128) -> Input<Msg> {
    command(causation, 0, vec![Emit::Timer("later", i64::MAX / 2)])
}

/// Two intents in one step: over the bound of [`strict`], a fault that ends the instance.
fn over_the_bound(causation: u128) -> Input<Msg> {
    let timers = vec![
        Emit::Timer("a", i64::MAX / 2),
        Emit::Timer("b", i64::MAX / 2),
    ];
    command(causation, 0, timers)
}

#[tokio::test(start_paused = true)]
async fn a_stopped_instance_hands_back_its_state_and_its_id_can_be_spawned_again() {
    let runtime = Runtime::builder(Workflow).build().expect("a valid runtime");
    let id = InstanceId::from("a");
    start(&runtime, &id, later(1)).await;
    assert_eq!(runtime.instance_count(), 1);

    let report = runtime.stop(&id, GRACE).await.expect("stopped");
    assert_eq!(runtime.instance_count(), 0);
    assert_eq!(report.instances.len(), 1);
    assert_eq!(report.instances[0].1.applied.len(), 1);
    assert_eq!(report.handed_back[0].reason, HandBackReason::TimerPending);
    assert!(report.faults.is_empty());
    assert!(runtime.send(&id, later(2)).await.is_err(), "it is gone");

    start(&runtime, &id, command(3, 0, vec![])).await;
    let applied = runtime.inspect(&id, |log| log.applied.len()).await;
    assert_eq!(applied, Ok(1), "a fresh instance");
    assert_eq!(runtime.shutdown(GRACE).await.instances.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_instance_that_faults_ends_and_its_id_can_be_spawned_again() {
    let runtime = strict();
    let id = InstanceId::from("a");
    start(&runtime, &id, over_the_bound(1)).await;
    settle(&runtime, 0).await;

    start(&runtime, &id, later(2)).await;
    let report = runtime.shutdown(GRACE).await;
    let faults = &report.faults;
    assert_eq!(faults.len(), 1, "{faults:?}");
    assert!(faults[0].1.contains("intents in one step"), "{faults:?}");
    let reasons: Vec<HandBackReason> = report.handed_back.iter().map(|b| b.reason).collect();
    assert_eq!(
        reasons,
        [
            HandBackReason::StepOverLimit,
            HandBackReason::StepOverLimit,
            HandBackReason::TimerPending
        ]
    );
    // The faulted instance's last state, and the fresh one's.
    let applied: Vec<usize> = report
        .instances
        .iter()
        .map(|(_, log)| log.applied.len())
        .collect();
    assert_eq!(applied, [1, 1]);
}

#[tokio::test(start_paused = true)]
async fn an_instance_whose_reducer_panics_ends_and_its_id_can_be_spawned_again() {
    let runtime = Runtime::builder(Fragile).build().expect("a valid runtime");
    let id = InstanceId::from("a");
    start(&runtime, &id, command(1, 0, vec![])).await;
    settle(&runtime, 0).await;

    start(&runtime, &id, later(2)).await;
    let report = runtime.shutdown(GRACE).await;
    let faults = &report.faults;
    assert_eq!(faults.len(), 1, "{faults:?}");
    assert!(faults[0].1.contains("panicked"), "{faults:?}");
    assert_eq!(
        report.instances.len(),
        1,
        "only the fresh instance has a state"
    );
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_instances_that_came_and_went_leave_the_registry_empty() {
    const INSTANCES: u128 = 10_000;
    let runtime = strict();
    for n in 0..INSTANCES {
        let id = InstanceId::from(format!("instance-{n}"));
        if n % 2 == 0 {
            start(&runtime, &id, later(n)).await;
            runtime.stop(&id, GRACE).await.expect("stopped");
        } else {
            start(&runtime, &id, over_the_bound(n)).await;
        }
    }
    settle(&runtime, 0).await;

    let report = runtime.shutdown(GRACE).await;
    // Of the 5,000 reports of instances that faulted, the newest 100 are kept.
    assert_eq!(report.faults.len(), 100);
    assert_eq!(report.faults[99].0, InstanceId::from("instance-9999"));
}
