use super::*;
use crate::outcome::Failure;

/// A pump that is switched on, checked every second by a call, and parked after two
/// failed checks in a row; switched off, it finishes.
struct Pump {
    /// Intents its `Flood` event emits, to test the bound.
    flood: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Event {
    On,
    Flood,
    Off,
    /// Off, without cancelling the tick.
    Halt,
    Done(Outcome),
}

impl From<Outcome> for Event {
    fn from(outcome: Outcome) -> Self {
        Self::Done(outcome)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct PumpState {
    checks: u32,
    failures: u32,
    off: bool,
}

impl Reducer for Pump {
    type State = PumpState;
    type Action = Input<Event>;

    fn reduce_into(&self, state: &mut PumpState, action: Input<Event>, intents: &mut Vec<Intent>) {
        let mut out = action.cause.emitter(intents);
        let tick = TimerId::from_static("tick");
        match action.body {
            Event::On => {
                out.emit(IntentKind::ScheduleTimer {
                    timer: tick,
                    due: action.now.plus_millis(1_000),
                });
            }
            Event::Flood => {
                for _ in 0..self.flood {
                    out.emit(custom("pump.noop"));
                }
            }
            Event::Off => {
                state.off = true;
                out.emit(IntentKind::CancelTimer { timer: tick });
            }
            Event::Halt => state.off = true,
            Event::Done(outcome) => match outcome.result {
                OutcomeResult::TimerFired { .. } => {
                    state.checks += 1;
                    out.emit(custom("pump.check"));
                }
                OutcomeResult::Succeeded { .. } => {
                    state.failures = 0;
                    out.emit(IntentKind::ScheduleTimer {
                        timer: tick,
                        due: action.now.plus_millis(1_000),
                    });
                }
                _ => {
                    state.failures += 1;
                    if state.failures < 2 {
                        out.emit(IntentKind::ScheduleTimer {
                            timer: tick,
                            due: action.now.plus_millis(1_000),
                        });
                    }
                }
            },
        }
    }
}

impl Durable for Pump {
    type Event = Event;

    fn kind(&self) -> &str {
        "pump"
    }

    fn status(&self, state: &PumpState) -> Status {
        if state.off {
            Status::Finished
        } else if state.failures >= 2 {
            Status::Parked {
                reason: "two checks failed in a row".into(),
            }
        } else {
            Status::Running
        }
    }

    fn snapshot_every(&self) -> u64 {
        4
    }
}

fn custom(name: &'static str) -> IntentKind {
    IntentKind::Custom {
        name: crate::envelope::EventType::from_static(name),
        payload: serde_json::Value::Null,
    }
}

fn at(millis: i64) -> Timestamp {
    Timestamp::from_unix_millis(millis)
}

fn driver() -> Driver<Pump> {
    Driver::new(Pump { flood: 3 }).expect("`pump` is a valid kind")
}

/// The log as a store would keep it: every record of every batch, by instance.
#[derive(Default)]
struct Log {
    records: BTreeMap<InstanceId, Vec<Envelope>>,
}

impl Log {
    fn commit(&mut self, batch: &Batch) {
        for append in &batch.appends {
            let records = self.records.entry(append.instance.clone()).or_default();
            assert_eq!(
                records.len() as u64,
                append.expected,
                "appends follow the log"
            );
            records.extend(append.records.iter().cloned());
        }
    }

    fn of(&self, id: &InstanceId) -> impl Iterator<Item = (u64, &Envelope)> {
        self.records[id].iter().zip(1..).map(|(e, v)| (v, e))
    }
}

fn timer_set(batch: &Batch) -> (TimerId, IntentId, Timestamp) {
    batch
        .timers
        .iter()
        .find_map(|(_, change)| match change {
            TimerChange::Set { timer, due, intent } => Some((timer.clone(), *intent, *due)),
            TimerChange::Cancel { .. } => None,
        })
        .expect("the batch sets a timer")
}

/// Runs the pump through on, two checks (one failing) and a third check in flight.
fn run_to_a_check_in_flight(driver: &mut Driver<Pump>, log: &mut Log) -> InstanceId {
    let id = InstanceId::from("p-1");
    driver
        .start(&id, PumpState::default(), Event::On, at(0))
        .unwrap();
    let mut batch = driver.take_batch();
    log.commit(&batch);
    for (round, answer) in [(1, Ok(())), (2, Err(())), (3, Ok(()))] {
        let (timer, intent, due) = timer_set(&batch);
        if round == 1 {
            assert_eq!(due, at(1_000));
        }
        assert!(driver.fire(&id, &timer, intent, due).unwrap());
        batch = driver.take_batch();
        log.commit(&batch);
        let (_, check) = batch.perform[0].clone();
        if round == 3 {
            break;
        }
        let result = match answer {
            Ok(()) => OutcomeResult::Succeeded {
                value: serde_json::Value::Null,
            },
            Err(()) => OutcomeResult::Failed(Failure::transient("pump offline")),
        };
        let outcome = Outcome {
            intent: check.id,
            attempts: 1,
            result,
        };
        assert!(driver.outcome(&id, outcome, due.plus_millis(10)).unwrap());
        batch = driver.take_batch();
        log.commit(&batch);
    }
    id
}

#[test]
fn nothing_is_performed_that_its_record_does_not_determine() {
    let mut driver = driver();
    let id = InstanceId::from("p-1");
    driver
        .start(&id, PumpState::default(), Event::On, at(0))
        .unwrap();
    let batch = driver.take_batch();
    assert_eq!(batch.record_count(), 1);
    assert_eq!(batch.appends[0].stream.as_str(), "pump-p-1");
    assert_eq!(batch.appends[0].expected, 0);
    assert!(batch.perform.is_empty());
    let (timer, intent, due) = timer_set(&batch);
    assert_eq!(due, at(1_000));
    // The timer's intent id derives from the record's id: the same on every replay.
    let correlation = CorrelationId::of_name("pump-p-1");
    let record = EventId::record(correlation, 1);
    assert_eq!(intent, IntentId::new(correlation, record.into(), 0));
    assert!(driver.fire(&id, &timer, intent, due).unwrap());
    let batch = driver.take_batch();
    assert_eq!(batch.appends[0].expected, 1);
    assert_eq!(batch.perform.len(), 1, "the check, caused by record 2");
}

#[test]
fn an_outcome_is_reduced_once_and_a_stale_timer_is_ignored() {
    let mut driver = driver();
    let mut log = Log::default();
    let id = run_to_a_check_in_flight(&mut driver, &mut log);
    let check = driver.in_flight(&id).unwrap().next().unwrap().clone();
    let answer = Outcome {
        intent: check.id,
        attempts: 1,
        result: OutcomeResult::Succeeded {
            value: serde_json::Value::Null,
        },
    };
    assert!(driver.outcome(&id, answer.clone(), at(3_100)).unwrap());
    assert!(
        !driver.outcome(&id, answer, at(3_200)).unwrap(),
        "a repeat is ignored"
    );
    let version = driver.version(&id).unwrap();
    let stale = IntentId::new(CorrelationId::from_u128(1), CausationId::from_u128(2), 0);
    let tick = TimerId::from_static("tick");
    assert!(!driver.fire(&id, &tick, stale, at(9_000)).unwrap());
    assert_eq!(driver.version(&id), Some(version), "nothing was recorded");
}

#[test]
fn a_restore_rebuilds_state_in_flight_intents_and_timers_and_resumes_them() {
    let mut live = driver();
    let mut log = Log::default();
    let id = run_to_a_check_in_flight(&mut live, &mut log);
    let mut restored = driver();
    let status = restored.restore(&id, log.of(&id)).unwrap();
    assert_eq!(status, Status::Running);
    assert_eq!(restored.snapshot(&id), live.snapshot(&id));
    assert_eq!(restored.version(&id), live.version(&id));
    restored.resume(Timestamp::UNIX_EPOCH);
    let batch = restored.take_batch();
    assert!(batch.appends.is_empty(), "resuming records nothing");
    let in_flight: Vec<Intent> = live.in_flight(&id).unwrap().cloned().collect();
    let resent: Vec<Intent> = batch.perform.into_iter().map(|(_, i)| i).collect();
    assert_eq!(resent, in_flight, "the same intents, under the same ids");
}

#[test]
fn a_restore_from_a_snapshot_gives_what_a_restore_from_the_start_gives() {
    let mut live = driver();
    let mut log = Log::default();
    let id = run_to_a_check_in_flight(&mut live, &mut log);
    let records: Vec<(u64, &Envelope)> = log.of(&id).collect();
    assert!(records.len() > 4);
    let decoded = Record::<PumpState, Event>::decode(&id, 4, records[3].1).unwrap();
    assert!(
        decoded.snapshot.is_some(),
        "every fourth record carries one"
    );
    let mut from_snapshot = driver();
    from_snapshot
        .restore(&id, records[3..].iter().copied())
        .unwrap();
    assert_eq!(from_snapshot.snapshot(&id), live.snapshot(&id));
    let mut from_the_middle = driver();
    let refused = from_the_middle.restore(&id, records[4..].iter().copied());
    assert!(
        matches!(refused, Err(Error::Diverged { version: 5, .. })),
        "{refused:?}"
    );
    assert_eq!(from_the_middle.len(), 0);
}

#[test]
fn an_instance_is_rebuilt_as_of_a_record_or_a_time() {
    let mut live = driver();
    let mut log = Log::default();
    let id = run_to_a_check_in_flight(&mut live, &mut log);
    let mut driver = driver();
    let first = driver.rebuild(&id, log.of(&id), AsOf::Version(1)).unwrap();
    assert_eq!((first.version, first.instance.state.checks), (1, 0));
    // Records 2 and 3: the first check fired at 1.000 s and answered at 1.010 s.
    let at_1_5 = driver
        .rebuild(&id, log.of(&id), AsOf::Time(at(1_500)))
        .unwrap();
    assert_eq!((at_1_5.version, at_1_5.instance.state.checks), (3, 1));
    let latest = driver.rebuild(&id, log.of(&id), AsOf::Latest).unwrap();
    assert_eq!(Some(latest.instance), live.snapshot(&id));
    assert!(driver.is_empty(), "a rebuild holds nothing");
}

#[test]
fn a_reducer_changed_under_running_instances_is_caught_at_the_first_record_that_differs() {
    let mut live = driver();
    let mut log = Log::default();
    let id = run_to_a_check_in_flight(&mut live, &mut log);
    // A reducer that no longer checks: its timer firings emit nothing.
    let mut changed = Driver::new(Pump { flood: 3 }).unwrap();
    let mut records: Vec<Envelope> = log.records[&id].clone();
    let mut second = Record::<PumpState, Event>::decode(&id, 2, &records[1]).unwrap();
    second.intents = Some(0);
    records[1] = second
        .encode(&id, CorrelationId::of_name("pump-p-1"), 2, records[1].time)
        .unwrap();
    let refused = changed.restore(&id, records.iter().zip(1..).map(|(e, v)| (v, e)));
    assert!(
        matches!(refused, Err(Error::Diverged { version: 2, .. })),
        "{refused:?}"
    );
}

#[test]
fn parking_and_finishing_are_reported_once_and_a_finished_instance_is_dropped() {
    let mut driver = driver();
    let id = InstanceId::from("p-1");
    driver
        .start(&id, PumpState::default(), Event::On, at(0))
        .unwrap();
    let mut batch = driver.take_batch();
    for round in 1..=2 {
        let (timer, intent, due) = timer_set(&batch);
        driver.fire(&id, &timer, intent, due).unwrap();
        let check = driver.take_batch().perform[0].1.id;
        let failed = Outcome {
            intent: check,
            attempts: 1,
            result: OutcomeResult::TimedOut,
        };
        driver.outcome(&id, failed, due.plus_millis(10)).unwrap();
        batch = driver.take_batch();
        if round == 2 {
            let parked = Status::Parked {
                reason: "two checks failed in a row".into(),
            };
            assert_eq!(batch.settled, vec![(id.clone(), parked)]);
        }
    }
    driver.handle(&id, Event::Off, at(5_000)).unwrap();
    let batch = driver.take_batch();
    assert_eq!(batch.settled, vec![(id.clone(), Status::Finished)]);
    assert!(driver.is_empty());
    let refused = driver.handle(&id, Event::On, at(6_000));
    assert!(matches!(refused, Err(Error::UnknownInstance { .. })));
}

#[test]
fn a_finished_instance_takes_no_event_and_is_held_until_its_intents_in_flight_are_answered() {
    for retain in [false, true] {
        let mut driver = driver();
        driver.set_retain_finished(retain);
        let mut log = Log::default();
        let id = InstanceId::from("p-1");
        driver
            .start(&id, PumpState::default(), Event::On, at(0))
            .unwrap();
        let batch = driver.take_batch();
        log.commit(&batch);
        let (timer, intent, due) = timer_set(&batch);
        driver.fire(&id, &timer, intent, due).unwrap();
        let batch = driver.take_batch();
        log.commit(&batch);
        let check = batch.perform[0].1.id;
        // Switched off with the check in flight; its answer comes in the same batch.
        driver.handle(&id, Event::Off, at(1_500)).unwrap();
        let refused = driver.handle(&id, Event::On, at(1_600));
        assert!(matches!(refused, Err(Error::UnknownInstance { .. })));
        let answer = Outcome {
            intent: check,
            attempts: 1,
            result: OutcomeResult::Succeeded {
                value: serde_json::Value::Null,
            },
        };
        assert_eq!(driver.outcome(&id, answer.clone(), at(1_600)), Ok(true));
        let batch = driver.take_batch();
        assert_eq!(
            batch.record_count(),
            2,
            "retain {retain}: the records of `Off` and of the check's answer"
        );
        assert_eq!(batch.settled, vec![(id.clone(), Status::Finished)]);
        // The answer was recorded, not reduced: the pump set no timer for a next check
        // (`Off` cancelled the tick) and made no call.
        let cancel = TimerChange::Cancel { timer };
        assert_eq!(batch.timers, vec![(id.clone(), cancel)]);
        assert!(batch.perform.is_empty(), "{batch:?}");
        log.commit(&batch);
        // Answered, it is over: nothing more is taken, kept in memory or not.
        let refused = driver.outcome(&id, answer, at(1_700));
        assert!(matches!(refused, Err(Error::UnknownInstance { .. })));
        let tick = TimerId::from_static("tick");
        assert!(driver.fire(&id, &tick, intent, at(1_700)).is_err());
        assert!(driver.take_batch().is_empty());
        assert_eq!(driver.status(&id).is_some(), retain);
        // Its log restores to an instance that is over: not held, nothing to resume.
        let mut restored = self::driver();
        assert_eq!(restored.restore(&id, log.of(&id)), Ok(Status::Finished));
        assert!(restored.is_empty());
        restored.resume(Timestamp::UNIX_EPOCH);
        assert!(restored.take_batch().is_empty());
    }
}

#[test]
fn a_restart_performs_again_what_a_finished_instance_left_in_flight() {
    let mut live = driver();
    let mut log = Log::default();
    let id = run_to_a_check_in_flight(&mut live, &mut log);
    let check = live.in_flight(&id).unwrap().next().unwrap().clone();
    live.handle(&id, Event::Off, at(3_500)).unwrap();
    log.commit(&live.take_batch());
    assert_eq!(
        live.status(&id),
        Some(&Status::Finished),
        "held: its check is out"
    );
    for retain in [false, true] {
        let mut restored = driver();
        restored.set_retain_finished(retain);
        assert_eq!(restored.restore(&id, log.of(&id)), Ok(Status::Finished));
        restored.resume(Timestamp::UNIX_EPOCH);
        let batch = restored.take_batch();
        // The check left in flight when it finished is performed again, under its id,
        // and no timer of it armed: the same whether or not finished ones are retained.
        assert_eq!(
            batch.perform,
            vec![(id.clone(), check.clone())],
            "retain {retain}"
        );
        assert!(batch.timers.is_empty(), "retain {retain}: {batch:?}");
        let answer = Outcome {
            intent: check.id,
            attempts: 1,
            result: OutcomeResult::TimedOut,
        };
        assert_eq!(restored.outcome(&id, answer, at(4_000)), Ok(true));
        let batch = restored.take_batch();
        assert_eq!(batch.record_count(), 1);
        assert!(
            batch.settled.is_empty(),
            "it was finished already: {batch:?}"
        );
        assert_eq!(restored.status(&id).is_some(), retain);
    }
}

#[test]
fn finishing_drops_the_pending_timers_and_says_so() {
    let mut driver = driver();
    let mut log = Log::default();
    let id = InstanceId::from("p-1");
    driver
        .start(&id, PumpState::default(), Event::On, at(0))
        .unwrap();
    let batch = driver.take_batch();
    log.commit(&batch);
    let (timer, intent, _) = timer_set(&batch);
    // Halted without cancelling its tick: the driver cancels it.
    driver.handle(&id, Event::Halt, at(500)).unwrap();
    let batch = driver.take_batch();
    log.commit(&batch);
    let cancel = TimerChange::Cancel {
        timer: timer.clone(),
    };
    assert_eq!(batch.timers, vec![(id.clone(), cancel)]);
    assert!(driver.is_empty());
    assert!(driver.fire(&id, &timer, intent, at(1_000)).is_err());
    let mut restored = self::driver();
    restored.set_retain_finished(true);
    assert_eq!(restored.restore(&id, log.of(&id)), Ok(Status::Finished));
    assert_eq!(restored.snapshot(&id).unwrap().timers, vec![]);
}

#[test]
fn a_step_over_the_intent_bound_is_not_recorded_and_the_instance_is_rebuilt_from_its_log() {
    let mut driver = driver();
    driver.set_intents_per_step_max(2);
    let id = InstanceId::from("p-1");
    driver
        .start(&id, PumpState::default(), Event::On, at(0))
        .unwrap();
    let batch = driver.take_batch();
    let refused = driver.handle(&id, Event::Flood, at(1));
    assert_eq!(refused, Err(Error::TooManyIntents { limit: 2 }));
    assert!(driver.take_batch().appends.is_empty());
    let records = &batch.appends[0].records;
    driver
        .restore(&id, records.iter().zip(1..).map(|(e, v)| (v, e)))
        .unwrap();
    assert_eq!(driver.version(&id), Some(1));
}

#[test]
fn ids_and_kinds_are_checked() {
    let mut driver = driver();
    for bad in ["", "has space", "slash/in/it", &"x".repeat(201)] {
        let refused = driver.start(
            &InstanceId::from(bad),
            PumpState::default(),
            Event::On,
            at(0),
        );
        assert!(matches!(refused, Err(Error::InvalidId { .. })), "{bad:?}");
    }
    let id = InstanceId::from("p-1");
    driver
        .start(&id, PumpState::default(), Event::On, at(0))
        .unwrap();
    let again = driver.start(&id, PumpState::default(), Event::On, at(0));
    assert!(matches!(again, Err(Error::InstanceExists { .. })));
    assert_eq!(driver.instance_of(&StreamId::from("pump-p-1")), Some(id));
    assert_eq!(driver.instance_of(&StreamId::from("pumpx-p-1")), None);
    assert_eq!(driver.instance_of(&StreamId::from("saga-p-1")), None);

    struct Named(&'static str);
    impl Reducer for Named {
        type State = u8;
        type Action = Input<Event>;
        fn reduce_into(&self, _: &mut u8, _: Input<Event>, _: &mut Vec<Intent>) {}
    }
    impl Durable for Named {
        type Event = Event;
        fn kind(&self) -> &str {
            self.0
        }
        fn status(&self, _: &u8) -> Status {
            Status::Running
        }
    }
    for bad in ["", "Pump", "pump-x", "pump x"] {
        assert!(
            matches!(Driver::new(Named(bad)), Err(Error::InvalidId { .. })),
            "{bad:?}"
        );
    }
}

#[test]
fn a_state_that_serialises_as_null_restores() {
    struct Maybe;
    impl Reducer for Maybe {
        type State = Option<u8>;
        type Action = Input<Event>;
        fn reduce_into(&self, state: &mut Option<u8>, action: Input<Event>, _: &mut Vec<Intent>) {
            if matches!(action.body, Event::Off) {
                *state = Some(1);
            }
        }
    }
    impl Durable for Maybe {
        type Event = Event;
        fn kind(&self) -> &str {
            "maybe"
        }
        fn status(&self, _: &Option<u8>) -> Status {
            Status::Running
        }
    }
    let mut driver = Driver::new(Maybe).unwrap();
    let id = InstanceId::from("m-1");
    driver.start(&id, None, Event::On, at(0)).unwrap();
    let batch = driver.take_batch();
    let mut restored = Driver::new(Maybe).unwrap();
    let records = &batch.appends[0].records;
    let status = restored.restore(&id, records.iter().zip(1..).map(|(e, v)| (v, e)));
    assert_eq!(status, Ok(Status::Running));
    assert_eq!(restored.state(&id), Some(&None));
}

#[test]
fn records_that_start_an_instance_or_change_where_it_stands_carry_its_mark() {
    use crate::mark::InstanceMark;
    let mut driver = driver();
    let mut log = Log::default();
    let id = run_to_a_check_in_flight(&mut driver, &mut log);
    driver.handle(&id, Event::Off, at(3_500)).unwrap();
    log.commit(&driver.take_batch());
    let answer = Outcome {
        intent: driver.in_flight(&id).unwrap().next().unwrap().id,
        attempts: 1,
        result: OutcomeResult::TimedOut,
    };
    driver.outcome(&id, answer, at(3_600)).unwrap();
    log.commit(&driver.take_batch());
    let marks: Vec<Option<InstanceMark>> = log.records[&id].iter().map(InstanceMark::of).collect();
    let mark = |status, finished| Some(InstanceMark::new("pump", status, finished));
    // Started; two timers and checks (one failing, which is no change of status); the
    // third check in flight; switched off with it out; its answer.
    let mut expected = vec![mark("running", false)];
    expected.extend(std::iter::repeat_n(None, marks.len() - 3));
    expected.extend([mark("finishing", false), mark("finished", true)]);
    assert_eq!(marks, expected);
}

#[test]
fn a_log_of_schema_1_ends_its_instance_at_the_record_that_finished_it() {
    // The first keel with this driver dropped a finished instance with its calls in
    // flight: an upgrade must not perform those calls years later.
    let mut live = driver();
    let mut log = Log::default();
    let id = run_to_a_check_in_flight(&mut live, &mut log);
    live.handle(&id, Event::Off, at(3_500)).unwrap();
    log.commit(&live.take_batch());
    for envelope in log.records.get_mut(&id).unwrap() {
        envelope.schema_version = 1;
    }
    for retain in [false, true] {
        let mut restored = driver();
        restored.set_retain_finished(retain);
        assert_eq!(restored.restore(&id, log.of(&id)), Ok(Status::Finished));
        assert_eq!(restored.status(&id).is_some(), retain);
        restored.resume(Timestamp::UNIX_EPOCH);
        assert!(restored.take_batch().is_empty(), "retain {retain}");
    }
    let rebuilt = driver().rebuild(&id, log.of(&id), AsOf::Latest).unwrap();
    assert!(rebuilt.instance.in_flight.is_empty() && rebuilt.instance.timers.is_empty());
    // A schema this keel does not know is refused, not misread.
    let mut future = log.records[&id][0].clone();
    future.schema_version = RECORD_SCHEMA + 1;
    let refused = driver().restore(&id, [(1, &future)]);
    assert!(
        matches!(refused, Err(Error::RecordDecode { .. })),
        "{refused:?}"
    );
}

/// A reducer that uses the hooks a saga needs: it knows its own call in flight, ignores
/// a stale answer (not recorded), answers itself when asked to fail (a follow-up record),
/// and keeps notes in a format of its own.
mod hooks {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Ask {
        Start,
        /// The answer to attempt `attempt`.
        Answer {
            attempt: u32,
            ok: bool,
        },
        /// Fail the attempt out without calling (as a saga does for a closure's panic).
        GiveUp,
        Timer,
    }

    impl From<Outcome> for Ask {
        fn from(_: Outcome) -> Self {
            Ask::Timer
        }
    }

    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    struct Tries {
        attempt: u32,
        done: bool,
    }

    struct Retrier;

    impl Reducer for Retrier {
        type State = Tries;
        type Action = Input<Ask>;
        fn reduce_into(&self, _: &mut Tries, _: Input<Ask>, _: &mut Vec<Intent>) {
            unreachable!("the driver calls `step`")
        }
    }

    fn call(tries: &Tries, cause: Cause) -> Intent {
        let id = IntentId::stable(cause.correlation, 0);
        let payload = serde_json::json!({ "attempt": tries.attempt });
        let name = crate::envelope::EventType::from_static("try");
        Intent {
            id,
            kind: IntentKind::Custom { name, payload },
        }
    }

    impl Durable for Retrier {
        type Event = Ask;

        fn kind(&self) -> &str {
            "retrier"
        }

        fn status(&self, tries: &Tries) -> Status {
            if tries.done {
                Status::Finished
            } else {
                Status::Running
            }
        }

        fn step(
            &self,
            tries: &mut Tries,
            step: StepInput<'_, Ask>,
            effects: &mut Effects<Ask>,
        ) -> bool {
            let (cause, ask) = (step.cause, step.event);
            match ask {
                Ask::Start | Ask::Answer { ok: false, .. } if !tries.done => {
                    if matches!(ask, Ask::Answer { attempt, .. } if *attempt != tries.attempt) {
                        return false;
                    }
                    tries.attempt += 1;
                    effects.intents.push(call(tries, cause));
                    effects.notes.extend_from_slice(b"\"tried\"");
                    true
                }
                Ask::Answer { attempt, ok: true } if *attempt == tries.attempt && !tries.done => {
                    tries.done = true;
                    effects.notes.extend_from_slice(b"\"done\"");
                    true
                }
                Ask::GiveUp if !tries.done => {
                    let attempt = tries.attempt;
                    effects.then.push(Ask::Answer { attempt, ok: true });
                    false
                }
                _ => false,
            }
        }

        fn tracks_in_flight(&self) -> bool {
            true
        }

        fn in_flight(&self, tries: &Tries, effects: &mut Effects<Ask>) {
            if !tries.done {
                let correlation = self.correlation(&InstanceId::from("r-1"));
                let cause = Cause::new(correlation, CausationId::new(correlation.uuid()));
                effects.intents.push(call(tries, cause));
            }
        }

        fn encode_record(
            &self,
            id: &InstanceId,
            correlation: CorrelationId,
            version: u64,
            now: Timestamp,
            record: &Record<Tries, Ask>,
            notes: &[u8],
            _state: &Tries,
        ) -> Result<Envelope, Error> {
            let mut envelope = record.encode(id, correlation, version, now)?;
            let note = String::from_utf8(notes.to_vec()).unwrap_or_default();
            envelope
                .metadata
                .insert("note".into(), crate::envelope::MetaValue::Text(note));
            Ok(envelope)
        }
    }

    fn note(envelope: &Envelope) -> String {
        match envelope.metadata.get("note") {
            Some(crate::envelope::MetaValue::Text(note)) => note.clone(),
            other => panic!("no note: {other:?}"),
        }
    }

    #[test]
    fn a_reducer_that_tracks_its_calls_skips_stale_steps_and_records_its_own_answers() {
        let mut driver = Driver::new(Retrier).unwrap();
        let mut log = Log::default();
        let id = InstanceId::from("r-1");
        driver
            .start(&id, Tries::default(), Ask::Start, at(0))
            .unwrap();
        let batch = driver.take_batch();
        assert_eq!(batch.perform.len(), 1);
        log.commit(&batch);
        // The driver keeps no copy of what the reducer tracks itself.
        assert_eq!(driver.in_flight(&id).unwrap().count(), 0);
        let failed = Ask::Answer {
            attempt: 1,
            ok: false,
        };
        assert!(driver.handle(&id, failed.clone(), at(1)).unwrap());
        // The same answer again is stale: not recorded, nothing caused.
        assert!(!driver.handle(&id, failed, at(2)).unwrap());
        let batch = driver.take_batch();
        assert_eq!((batch.record_count(), batch.perform.len()), (1, 1));
        log.commit(&batch);
        // Giving up changes nothing itself; its answer is a record of its own, so
        // something was recorded.
        assert!(driver.handle(&id, Ask::GiveUp, at(3)).unwrap());
        let batch = driver.take_batch();
        assert_eq!(batch.record_count(), 1);
        assert_eq!(batch.settled, vec![(id.clone(), Status::Finished)]);
        log.commit(&batch);
        assert!(driver.state(&id).is_none(), "it ended as it finished");
        let notes: Vec<String> = log.records[&id].iter().map(note).collect();
        assert_eq!(notes, ["\"tried\"", "\"tried\"", "\"done\""]);

        // Replayed, the log gives the same instance; resumed before its end, it asks the
        // reducer what is out, under the same id.
        let records = &log.records[&id];
        let mut restored = Driver::new(Retrier).unwrap();
        let log_of = |n: usize| records.iter().take(n).zip(1..).map(|(e, v)| (v, e));
        assert_eq!(restored.restore(&id, log_of(3)), Ok(Status::Finished));
        assert!(restored.is_empty());
        assert_eq!(restored.restore(&id, log_of(2)), Ok(Status::Running));
        assert_eq!(
            restored.state(&id),
            Some(&Tries {
                attempt: 2,
                done: false
            })
        );
        restored.resume(at(10));
        let batch = restored.take_batch();
        assert_eq!(batch.record_count(), 0);
        let sent: Vec<IntentId> = batch.perform.iter().map(|(_, intent)| intent.id).collect();
        let correlation = Retrier.correlation(&id);
        assert_eq!(sent, [IntentId::stable(correlation, 0)]);
    }
}
