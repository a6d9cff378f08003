//! A [`Machine`] on the durable driver: [`DurableMachine`].

use std::fmt::Debug;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::compiled::{Machine, MachineState};
use super::reduce::emit_all;
use crate::driver::{Durable, Status};
use crate::intent::Intent;
use crate::outcome::Outcome;
use crate::reducer::{Input, Reducer};

/// What a machine instance on the driver is fed: its start, an event, or what became
/// of one of its intents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MachineInput<E> {
    /// The instance is created: the initial state's entry effects are emitted, once.
    /// Start an instance with this ([`Driver::start`](crate::driver::Driver::start)),
    /// in [`DurableMachine::initial_state`]; sent again, it changes nothing.
    Start,
    /// An event for the machine.
    Event(E),
    /// What became of an intent of the instance (a timer that fired, a call's answer);
    /// [`DurableMachine::on_outcome`] says which event, if any, it is to the machine.
    Outcome(Outcome),
}

/// A machine instance as the driver keeps it: the machine's state, and whether the
/// instance was started (so that a [`MachineInput::Start`] sent again, when the
/// machine is back in its initial state, does not run the entry effects twice).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DurableMachineState<S, C = ()> {
    /// The machine's state and context.
    pub machine: MachineState<S, C>,
    /// Whether [`MachineInput::Start`] was reduced.
    pub started: bool,
}

impl<E> From<Outcome> for MachineInput<E> {
    fn from(outcome: Outcome) -> Self {
        Self::Outcome(outcome)
    }
}

/// Runs a declarative [`Machine`] durably: each instance's log is kept by the driver,
/// its timers and calls are intents performed after their record is committed, and a
/// restart rebuilds it by replay. An instance finishes when it enters a terminal state.
///
/// Outcomes reach the machine as events through a mapping the caller gives (a timer
/// `tick` firing is `Signal::Tick`, say); an outcome it maps to nothing is recorded and
/// changes nothing.
///
/// ```
/// use keel_core::driver::{Driver, Status, TimerChange};
/// use keel_core::machine::{DurableMachine, Effect, Machine, MachineInput};
/// use keel_core::{OutcomeResult, Timestamp};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
/// enum Door { Open, Closed }
/// #[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
/// enum Push { Close }
///
/// let door = Machine::builder("door", Door::Open)
///     .state(Door::Open, |s| {
///         s.on_entry(Effect::timer_after("auto", 5_000)).on(Push::Close).to(Door::Closed)
///     })
///     .terminal(Door::Closed)
///     .build()
///     .unwrap();
/// let on_outcome = |outcome: &keel_core::Outcome| match outcome.result {
///     OutcomeResult::TimerFired { .. } => Some(Push::Close),
///     _ => None,
/// };
/// let mut driver = Driver::new(DurableMachine::new(door, "door", on_outcome)).unwrap();
/// let id = "front".into();
/// let open = driver.reducer().initial_state(());
/// driver.start(&id, open, MachineInput::Start, Timestamp::UNIX_EPOCH).unwrap();
/// let batch = driver.take_batch();
/// let TimerChange::Set { timer, due, intent } = &batch.timers[0].1 else { panic!() };
/// assert!(driver.fire(&id, timer, *intent, *due).unwrap());
/// assert_eq!(driver.take_batch().settled, vec![(id, Status::Finished)]);
/// ```
pub struct DurableMachine<S, E, C = ()> {
    machine: Machine<S, E, C>,
    kind: String,
    on_outcome: fn(&Outcome) -> Option<E>,
}

impl<S, E, C> DurableMachine<S, E, C> {
    /// `machine` under the driver kind `kind` (its streams are `{kind}-{id}`; see
    /// [`Durable::kind`]), with `on_outcome` turning outcomes into events.
    pub fn new(
        machine: Machine<S, E, C>,
        kind: impl Into<String>,
        on_outcome: fn(&Outcome) -> Option<E>,
    ) -> Self {
        Self {
            machine,
            kind: kind.into(),
            on_outcome,
        }
    }

    /// The machine it runs.
    pub fn machine(&self) -> &Machine<S, E, C> {
        &self.machine
    }

    /// A new instance's state: the machine's initial state with `context`, not started.
    pub fn initial_state(&self, context: C) -> DurableMachineState<S, C>
    where
        S: Copy + Eq + Debug + 'static,
        E: Copy + Eq + Debug + 'static,
    {
        DurableMachineState {
            machine: self.machine.initial_state(context),
            started: false,
        }
    }

    /// The event `outcome` is to the machine, if any.
    pub fn on_outcome(&self, outcome: &Outcome) -> Option<E> {
        (self.on_outcome)(outcome)
    }
}

impl<S, E, C> Debug for DurableMachine<S, E, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableMachine")
            .field("machine", &self.machine.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl<S, E, C> Reducer for DurableMachine<S, E, C>
where
    S: Copy + Eq + Debug + 'static,
    E: Copy + Eq + Debug + 'static,
{
    type State = DurableMachineState<S, C>;
    type Action = Input<MachineInput<E>>;

    fn reduce_into(
        &self,
        state: &mut DurableMachineState<S, C>,
        action: Input<MachineInput<E>>,
        intents: &mut Vec<Intent>,
    ) {
        let event = match action.body {
            MachineInput::Start => {
                // Once, and only into the initial state (a hand-built state that is
                // elsewhere is not entered).
                if !state.started && state.machine.state == self.machine.initial() {
                    let mut out = action.cause.emitter(intents);
                    let initial = &self.machine.states[self.machine.initial];
                    emit_all(&mut out, &initial.entry, action.now);
                }
                state.started = true;
                return;
            }
            MachineInput::Event(event) => event,
            MachineInput::Outcome(outcome) => match (self.on_outcome)(&outcome) {
                Some(event) => event,
                None => return,
            },
        };
        let input = Input::new(action.cause, action.now, event);
        self.machine.reduce_into(&mut state.machine, input, intents);
    }
}

impl<S, E, C> Durable for DurableMachine<S, E, C>
where
    S: Copy + Eq + Debug + Serialize + DeserializeOwned + 'static,
    E: Copy + Eq + Debug + Serialize + DeserializeOwned + 'static,
    C: Clone + Serialize + DeserializeOwned,
{
    type Event = MachineInput<E>;

    fn kind(&self) -> &str {
        &self.kind
    }

    fn status(&self, state: &DurableMachineState<S, C>) -> Status {
        if self.machine.is_terminal(state.machine.state) {
            Status::Finished
        } else {
            Status::Running
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{Light, Road, Signal, traffic_light};
    use super::*;
    use crate::driver::{Batch, Driver, TimerChange};
    use crate::envelope::Envelope;
    use crate::id::{InstanceId, IntentId, TimerId};
    use crate::outcome::OutcomeResult;
    use crate::time::Timestamp;

    fn tick(outcome: &Outcome) -> Option<Signal> {
        matches!(outcome.result, OutcomeResult::TimerFired { .. }).then_some(Signal::Tick)
    }

    fn light() -> Driver<DurableMachine<Light, Signal, Road>> {
        Driver::new(DurableMachine::new(traffic_light(), "traffic_light", tick)).unwrap()
    }

    fn armed(batch: &Batch) -> Vec<(TimerId, Timestamp, IntentId)> {
        let changes = batch.timers.iter().filter_map(|(_, change)| match change {
            TimerChange::Set { timer, due, intent } => Some((timer.clone(), *due, *intent)),
            TimerChange::Cancel { .. } => None,
        });
        changes.collect()
    }

    #[test]
    fn a_machine_runs_on_the_driver_and_a_restart_rearms_its_timer() {
        let mut live = light();
        let mut log: Vec<Envelope> = Vec::new();
        let id = InstanceId::from("crossing-1");
        let red = live.reducer().initial_state(Road::default());
        live.start(&id, red, MachineInput::Start, Timestamp::UNIX_EPOCH)
            .unwrap();
        let batch = live.take_batch();
        log.extend(batch.appends[0].records.iter().cloned());
        // Red's entry arms its tick, as the machine's own start would.
        let [(timer, due, intent)] = &armed(&batch)[..] else {
            panic!("{batch:?}")
        };
        let (due, intent) = (*due, *intent);
        assert_eq!(due, Timestamp::from_unix_millis(30_000));
        assert!(live.fire(&id, timer, intent, due).unwrap());
        let batch = live.take_batch();
        log.extend(batch.appends[0].records.iter().cloned());
        assert_eq!(live.state(&id).map(|s| s.machine.state), Some(Light::Green));
        let [(_, green_due, _)] = &armed(&batch)[..] else {
            panic!("{batch:?}")
        };
        let green_due = *green_due;

        // A crash: the log alone rebuilds it, and resuming arms Green's tick again.
        let mut restored = light();
        let records = log.iter().zip(1..).map(|(e, v)| (v, e));
        assert_eq!(restored.restore(&id, records), Ok(Status::Running));
        assert_eq!(restored.state(&id), live.state(&id));
        restored.resume(Timestamp::UNIX_EPOCH);
        let resumed = restored.take_batch();
        assert_eq!(
            armed(&resumed),
            armed(&batch),
            "the same timer, due at {green_due}"
        );

        // A power cut ends it.
        restored
            .handle(&id, MachineInput::Event(Signal::PowerCut), green_due)
            .unwrap();
        let batch = restored.take_batch();
        assert_eq!(batch.settled, vec![(id.clone(), Status::Finished)]);
        assert!(restored.is_empty());
    }

    #[test]
    fn start_enters_the_initial_state_once_and_unmapped_outcomes_change_nothing() {
        let machine = DurableMachine::new(traffic_light(), "traffic_light", tick);
        let cause = crate::reducer::Cause::root(1);
        let now = Timestamp::UNIX_EPOCH;
        let start = || Input::new(cause, now, MachineInput::Start);
        let fresh = machine.initial_state(Road::default());
        let (started, intents) = crate::reducer::reduce(&machine, fresh.clone(), start());
        assert_eq!(
            (started.started, intents.len()),
            (true, 1),
            "Red arms its tick"
        );
        // Back in Red later, a second Start changes nothing: no second entry.
        let (again, intents) = crate::reducer::reduce(&machine, started.clone(), start());
        assert_eq!((again, intents.len()), (started.clone(), 0));
        // A state elsewhere is not entered either.
        let mut green = fresh;
        green.machine.state = Light::Green;
        let (_, intents) = crate::reducer::reduce(&machine, green, start());
        assert!(intents.is_empty());
        let answer = Outcome {
            intent: IntentId::stable(cause.correlation, 7),
            attempts: 1,
            result: OutcomeResult::TimedOut,
        };
        let input = Input::new(cause, now, MachineInput::Outcome(answer));
        let (after, intents) = crate::reducer::reduce(&machine, started.clone(), input);
        assert_eq!((after, intents.len()), (started, 0));
    }
}
