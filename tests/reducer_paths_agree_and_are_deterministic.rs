//! Laws of reducers: determinism (byte-identical states and intents, also after a serde
//! round trip of the state) and agreement of the by-value and in-place paths.
//!
//! The reducer here is a small approval workflow written by hand, emitting every intent
//! kind, so the laws are checked on intents that carry envelopes, HTTP requests, timers
//! and custom payloads.

use keel::{
    Cause, Envelope, EventId, EventType, ExpectedVersion, HttpRequest, Input, Intent, IntentKind,
    Payload, Reducer, StreamId, TimerId, Topic,
};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
struct Approval {
    requested: u32,
    approved: u32,
    version: u64,
    log: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Step {
    Request { amount: u32 },
    Approve,
    Reject,
    TimerFired,
}

struct ApprovalFlow;

impl Reducer for ApprovalFlow {
    type State = Approval;
    type Action = Input<Step>;

    fn reduce_into(&self, state: &mut Approval, action: Input<Step>, intents: &mut Vec<Intent>) {
        let mut out = action.cause.emitter(intents);
        match action.body {
            Step::Request { amount } => {
                state.requested += 1;
                out.emit(
                    HttpRequest::post("http://127.0.0.1:9/policy")
                        .json(json!({ "amount": amount, "n": state.requested })),
                );
                out.emit(IntentKind::ScheduleTimer {
                    timer: TimerId::from_static("approval-timeout"),
                    due: action.now.plus_millis(60_000),
                });
            }
            Step::Approve => {
                state.approved += 1;
                let intent = out.cause().intent_id(out.count() as u32);
                let envelope = Envelope::builder(
                    EventId::derived(intent, 0),
                    EventType::from_static("approval.granted"),
                    "approvals",
                    action.now,
                )
                .correlation_id(action.cause.correlation)
                .causation_id(action.cause.causation)
                .sequence(state.version + 1)
                .payload(Payload::Json(json!({ "approved": state.approved })))
                .build()
                .expect("a valid envelope");
                out.emit(IntentKind::Persist {
                    stream: StreamId::from("approval-1"),
                    expected_version: ExpectedVersion::Exact(state.version),
                    events: vec![envelope.clone()],
                });
                state.version += 1;
                out.emit(IntentKind::Notify {
                    topic: Topic::from_static("approval.granted"),
                    envelope: Box::new(envelope),
                });
                out.emit(IntentKind::CancelTimer {
                    timer: TimerId::from_static("approval-timeout"),
                });
            }
            Step::Reject => state.log.push(format!("rejected at {}", action.now)),
            Step::TimerFired => {
                out.emit(IntentKind::Custom {
                    name: EventType::from_static("approval.escalate"),
                    payload: json!({ "pending": state.requested - state.approved.min(state.requested) }),
                });
            }
        }
    }
}

fn action() -> impl Strategy<Value = Input<Step>> {
    let step = prop_oneof![
        any::<u32>().prop_map(|amount| Step::Request { amount }),
        Just(Step::Approve),
        Just(Step::Reject),
        Just(Step::TimerFired),
    ];
    (any::<u128>(), any::<u128>(), any::<i64>(), step).prop_map(
        |(correlation, causation, now, body)| {
            Input::new(
                Cause::new(
                    keel::CorrelationId::from_u128(correlation),
                    keel::CausationId::from_u128(causation),
                ),
                keel::Timestamp::from_unix_nanos(now / 2),
                body,
            )
        },
    )
}

fn run_by_value(actions: &[Input<Step>]) -> (Approval, Vec<Vec<Intent>>) {
    let mut state = Approval::default();
    let mut all = Vec::new();
    for action in actions {
        let (next, intents) = ApprovalFlow.reduce(state, action.clone());
        state = next;
        all.push(intents);
    }
    (state, all)
}

proptest! {
    #[test]
    fn the_same_inputs_give_byte_identical_states_and_intents(actions in prop::collection::vec(action(), 0..24)) {
        let first = run_by_value(&actions);
        let second = run_by_value(&actions);
        prop_assert_eq!(serde_json::to_vec(&first).unwrap(), serde_json::to_vec(&second).unwrap());
    }

    #[test]
    fn a_serde_round_trip_of_the_state_changes_nothing_downstream(
        actions in prop::collection::vec(action(), 1..24),
        split in any::<prop::sample::Index>(),
    ) {
        let at = split.index(actions.len());
        let (state, _) = run_by_value(&actions[..at]);
        let restored: Approval = serde_json::from_slice(&serde_json::to_vec(&state).unwrap()).unwrap();
        let (mut live, mut revived) = (state, restored);
        for action in &actions[at..] {
            let (a, ia) = ApprovalFlow.reduce(live, action.clone());
            let (b, ib) = ApprovalFlow.reduce(revived, action.clone());
            prop_assert_eq!(serde_json::to_vec(&ia).unwrap(), serde_json::to_vec(&ib).unwrap());
            (live, revived) = (a, b);
        }
        prop_assert_eq!(serde_json::to_vec(&live).unwrap(), serde_json::to_vec(&revived).unwrap());
    }

    #[test]
    fn the_in_place_path_agrees_with_the_by_value_path(
        actions in prop::collection::vec(action(), 0..24),
        clear_between in any::<bool>(),
    ) {
        let (expected_state, expected_intents) = run_by_value(&actions);
        let mut state = Approval::default();
        let mut buffer = Vec::new();
        let mut collected = Vec::new();
        for action in &actions {
            if clear_between {
                buffer.clear();
            }
            let start = buffer.len();
            ApprovalFlow.reduce_into(&mut state, action.clone(), &mut buffer);
            collected.push(buffer[start..].to_vec());
        }
        prop_assert_eq!(state, expected_state);
        prop_assert_eq!(collected, expected_intents);
    }

    #[test]
    fn intents_survive_a_serde_round_trip(actions in prop::collection::vec(action(), 0..12)) {
        let (_, intents) = run_by_value(&actions);
        let text = serde_json::to_string(&intents).unwrap();
        prop_assert_eq!(serde_json::from_str::<Vec<Vec<Intent>>>(&text).unwrap(), intents);
    }
}
