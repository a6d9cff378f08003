//! Any aggregate as a [`Reducer`]: accepted commands become one `Persist` intent.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::{Deserialize, Serialize};

use super::{Aggregate, DomainEvent, Versioned};
use crate::envelope::{Envelope, EventType, Payload, Priority};
use crate::error::Error;
use crate::id::{EventId, StreamId};
use crate::intent::{ExpectedVersion, Intent, IntentKind};
use crate::reducer::{Input, Reducer};

/// Runs an [`Aggregate`] as a [`Reducer`] over commands.
///
/// Each action is an [`Input`] holding a command. The adapter decides it against the
/// aggregate in the [`AggregateState`], and then:
///
/// - **accepted with events**: applies them, and emits one
///   [`IntentKind::Persist`] that appends them to the state's stream, expecting the
///   stream at the version the decision was made against (`NoStream` when it was
///   empty). Each event travels as an [`Envelope`] whose id derives from the intent's id
///   and the event's position ([`EventId::derived`]), whose time is the input's `now`,
///   whose correlation and causation ids are the input's cause, whose subject is the
///   stream and whose sequence is the event's stream version. A replay of the same input
///   therefore emits the very same envelopes.
/// - **accepted with no events** (an idempotent repeat): emits nothing.
/// - **rejected**: records the [`Refusal::Rejected`] and emits nothing.
/// - **an event that cannot be stored** (it fails to serialise to JSON, or declares
///   schema version 0): records [`Refusal::Unstorable`], applies nothing and emits
///   nothing. Applying events that can never be persisted would let the live state run
///   ahead of the stream for good, so the whole decision is dropped instead.
///
/// The state is updated when the intent is emitted, before the append is known to have
/// succeeded. If the append fails its version check (another writer got there first),
/// the driver must reload the state from the store before the next command.
///
/// ```
/// use keel_core::aggregate::{Aggregate, AggregateReducer, AggregateState, DomainEvent};
/// use keel_core::{Cause, EventType, ExpectedVersion, Input, IntentKind, Reducer, StreamId, Timestamp};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Default, Serialize)]
/// struct Counter(u64);
///
/// #[derive(Debug, Serialize, Deserialize)]
/// struct Added(u64);
///
/// impl DomainEvent for Added {
///     fn event_type(&self) -> EventType {
///         EventType::from_static("counter.added")
///     }
/// }
///
/// impl Aggregate for Counter {
///     type Command = u64;
///     type Event = Added;
///     type Rejection = &'static str;
///
///     fn decide_into(&self, n: &u64, events: &mut Vec<Added>) -> Result<(), &'static str> {
///         if *n == 0 {
///             return Err("adding zero changes nothing");
///         }
///         events.push(Added(*n));
///         Ok(())
///     }
///
///     fn apply(&mut self, event: &Added) {
///         self.0 += event.0;
///     }
/// }
///
/// let reducer = AggregateReducer::<Counter>::new("counter-service")?;
/// let state = AggregateState::new(StreamId::from_static("counter-1"));
/// let now = Timestamp::from_unix_millis(1_700_000_000_000);
///
/// let (state, intents) = reducer.reduce(state, Input::new(Cause::root(1), now, 5));
/// assert_eq!((state.aggregate().0, state.version()), (5, 1));
/// let IntentKind::Persist { expected_version, events, .. } = &intents[0].kind else {
///     unreachable!("an accepted command emits one Persist");
/// };
/// assert_eq!(*expected_version, ExpectedVersion::NoStream);
/// assert_eq!(events[0].sequence, 1);
///
/// let (state, intents) = reducer.reduce(state, Input::new(Cause::root(2), now, 0));
/// assert_eq!(state.rejection(), Some(&"adding zero changes nothing"));
/// assert!(intents.is_empty());
/// # Ok::<(), keel_core::Error>(())
/// ```
pub struct AggregateReducer<A> {
    source: String,
    // `fn() -> A`: the adapter holds no `A`, so it is `Send` and `Sync` whatever `A` is.
    aggregate: PhantomData<fn() -> A>,
}

impl<A> AggregateReducer<A> {
    /// An adapter whose envelopes name `source` as their producer (a service name or
    /// URI reference); fails if it is empty.
    pub fn new(source: impl Into<String>) -> Result<Self, Error> {
        let source = source.into();
        if source.is_empty() {
            return Err(Error::InvalidField {
                field: "source",
                reason: "it is empty; name the producing service".into(),
            });
        }
        Ok(Self {
            source,
            aggregate: PhantomData,
        })
    }

    /// The source stamped on every envelope.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The envelope that stores `event` at `sequence`, or why it cannot be stored.
    fn envelope<E: DomainEvent, C, R>(
        &self,
        stream: &StreamId,
        action: &Input<C>,
        id: EventId,
        sequence: u64,
        event: &E,
    ) -> Result<Envelope, Refusal<R>> {
        let event_type = event.event_type();
        let schema_version = event.schema_version();
        let payload = if schema_version == 0 {
            Err("it declares schema version 0; versions start at 1".to_owned())
        } else {
            serde_json::to_value(event).map_err(|e| e.to_string())
        };
        let payload = match payload {
            Ok(payload) => payload,
            Err(reason) => return Err(Refusal::Unstorable { event_type, reason }),
        };
        Ok(Envelope {
            id,
            event_type,
            source: self.source.clone(),
            target: None,
            time: action.now,
            correlation_id: action.cause.correlation,
            causation_id: Some(action.cause.causation),
            subject: Some(stream.as_str().to_owned()),
            sequence,
            schema_version,
            priority: Priority::Normal,
            metadata: BTreeMap::new(),
            payload: Payload::Json(payload),
        })
    }
}

// Written by hand so that neither needs `A: Debug` or `A: Clone`: the adapter holds no `A`.
impl<A> fmt::Debug for AggregateReducer<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AggregateReducer")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl<A> Clone for AggregateReducer<A> {
    fn clone(&self) -> Self {
        Self {
            source: self.source.clone(),
            aggregate: PhantomData,
        }
    }
}

impl<A> Reducer for AggregateReducer<A>
where
    A: Aggregate,
    A::Event: DomainEvent,
{
    type State = AggregateState<A>;
    type Action = Input<A::Command>;

    fn reduce_into(
        &self,
        state: &mut Self::State,
        action: Self::Action,
        intents: &mut Vec<Intent>,
    ) {
        // A fresh `Vec` allocates nothing until an event is pushed, so a rejection costs
        // no allocation; an accepted command allocates its envelopes anyway.
        let mut events = Vec::new();
        if let Err(rejection) = state.current.state().decide_into(&action.body, &mut events) {
            state.refusal = Some(Refusal::Rejected(rejection));
            return;
        }
        state.refusal = None;
        if events.is_empty() {
            return;
        }
        // The Persist intent is the first and only one this step emits.
        let intent_id = action.cause.intent_id(0);
        let base = state.current.version();
        let envelopes = events
            .iter()
            .enumerate()
            .map(|(index, event)| {
                // Bounded by the events one decision produced, far below 2^32.
                let index = u32::try_from(index).unwrap_or(u32::MAX);
                let sequence = base.saturating_add(u64::from(index) + 1);
                let id = EventId::derived(intent_id, index);
                self.envelope(&state.stream, &action, id, sequence, event)
            })
            .collect::<Result<Vec<_>, _>>();
        let envelopes = match envelopes {
            Ok(envelopes) => envelopes,
            Err(refusal) => {
                state.refusal = Some(refusal);
                return;
            }
        };
        for event in &events {
            state.current.apply_next(event);
        }
        let expected_version = match base {
            0 => ExpectedVersion::NoStream,
            version => ExpectedVersion::Exact(version),
        };
        let emitted = action.cause.emitter(intents).emit(IntentKind::Persist {
            stream: state.stream.clone(),
            expected_version,
            events: envelopes,
        });
        debug_assert_eq!(emitted, intent_id, "envelope ids derive from this intent");
    }
}

/// Why the last command changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal<R> {
    /// The aggregate rejected the command: the domain's own answer, for the caller.
    Rejected(R),
    /// The aggregate accepted the command, but one of its events cannot be stored: a
    /// defect in the event type (say, a map with non-string keys), not in the command.
    Unstorable {
        /// The type of the event that could not be stored.
        event_type: EventType,
        /// What serialising it reported.
        reason: String,
    },
}

/// The state of an [`AggregateReducer`]: the aggregate, its stream and version, and why
/// the last command was refused, if it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(
    serialize = "A: Serialize, A::Rejection: Serialize",
    deserialize = "A: Deserialize<'de>, A::Rejection: Deserialize<'de>"
))]
pub struct AggregateState<A: Aggregate> {
    stream: StreamId,
    current: Versioned<A>,
    refusal: Option<Refusal<A::Rejection>>,
}

impl<A: Aggregate> AggregateState<A> {
    /// A new aggregate with an empty stream named `stream`.
    pub fn new(stream: StreamId) -> Self
    where
        A: Default,
    {
        Self::resume(stream, Versioned::default())
    }

    /// An aggregate loaded from its stream (see [`Versioned::load`]).
    pub fn resume(stream: StreamId, current: Versioned<A>) -> Self {
        Self {
            stream,
            current,
            refusal: None,
        }
    }

    /// The stream the aggregate's events are appended to.
    pub const fn stream(&self) -> &StreamId {
        &self.stream
    }

    /// The aggregate.
    pub const fn aggregate(&self) -> &A {
        self.current.state()
    }

    /// The aggregate with its stream version.
    pub const fn versioned(&self) -> &Versioned<A> {
        &self.current
    }

    /// The stream version of the last event applied; 0 for an empty stream.
    pub const fn version(&self) -> u64 {
        self.current.version()
    }

    /// Why the last command changed nothing; `None` if it was accepted (or none came).
    pub const fn refusal(&self) -> Option<&Refusal<A::Rejection>> {
        self.refusal.as_ref()
    }

    /// The aggregate's rejection of the last command, if it rejected it.
    pub fn rejection(&self) -> Option<&A::Rejection> {
        match &self.refusal {
            Some(Refusal::Rejected(rejection)) => Some(rejection),
            _ => None,
        }
    }

    /// Takes the refusal of the last command, leaving `None`, for a driver that reports
    /// it once.
    pub fn take_refusal(&mut self) -> Option<Refusal<A::Rejection>> {
        self.refusal.take()
    }
}

#[cfg(test)]
mod tests {
    use serde::Serializer;

    use super::*;
    use crate::reducer::Cause;
    use crate::time::Timestamp;

    /// Keeps a list of amounts.
    #[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
    struct Ledger(Vec<u32>);

    #[derive(Debug, Serialize, Deserialize)]
    struct Entered {
        #[serde(serialize_with = "refuse_the_poison")]
        amount: u32,
    }

    /// Stands for a `Serialize` impl that can fail, such as a map with non-string keys.
    fn refuse_the_poison<S: Serializer>(amount: &u32, s: S) -> Result<S::Ok, S::Error> {
        if *amount == u32::MAX {
            return Err(serde::ser::Error::custom(
                "the poison amount cannot be written",
            ));
        }
        s.serialize_u32(*amount)
    }

    impl DomainEvent for Entered {
        fn event_type(&self) -> EventType {
            EventType::from_static("ledger.entered")
        }
    }

    impl Aggregate for Ledger {
        type Command = Vec<u32>;
        type Event = Entered;
        type Rejection = String;

        fn decide_into(
            &self,
            lines: &Self::Command,
            events: &mut Vec<Entered>,
        ) -> Result<(), String> {
            if lines.is_empty() {
                return Err("nothing to enter".into());
            }
            for line in lines {
                events.push(Entered { amount: *line });
            }
            Ok(())
        }

        fn apply(&mut self, event: &Entered) {
            self.0.push(event.amount);
        }
    }

    fn enter(
        state: AggregateState<Ledger>,
        id: u128,
        lines: &[u32],
    ) -> (AggregateState<Ledger>, Vec<Intent>) {
        let reducer = AggregateReducer::<Ledger>::new("ledger").unwrap();
        let input = Input::new(
            Cause::root(id),
            Timestamp::from_unix_millis(7),
            lines.to_vec(),
        );
        reducer.reduce(state, input)
    }

    #[test]
    fn an_accepted_command_persists_its_events_as_derived_envelopes() {
        let state = AggregateState::new(StreamId::from_static("ledger-1"));
        let (state, _) = enter(state, 1, &[10]);
        let (state, intents) = enter(state, 2, &[20, 30]);
        assert_eq!(
            (state.aggregate(), state.version()),
            (&Ledger(vec![10, 20, 30]), 3)
        );
        let [intent] = intents.as_slice() else {
            panic!("{intents:?}")
        };
        let IntentKind::Persist {
            stream,
            expected_version,
            events,
        } = &intent.kind
        else {
            panic!("{intent:?}")
        };
        assert_eq!(
            (stream.as_str(), *expected_version),
            ("ledger-1", ExpectedVersion::Exact(1))
        );
        let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
        assert_eq!(sequences, [2, 3]);
        assert_eq!(events[1].id, EventId::derived(intent.id, 1));
        assert_eq!(events[1].causation_id, Some(Cause::root(2).causation));
        assert_eq!(events[1].subject.as_deref(), Some("ledger-1"));
        assert_eq!(events[1].time, Timestamp::from_unix_millis(7));
        assert!(events.iter().all(|e| e.validate().is_ok()));
    }

    #[test]
    fn an_unstorable_event_drops_the_whole_decision() {
        let state = AggregateState::new(StreamId::from_static("ledger-1"));
        let (state, intents) = enter(state, 1, &[10, u32::MAX]);
        assert!(intents.is_empty());
        assert_eq!(state.version(), 0);
        assert!(
            matches!(state.refusal(), Some(Refusal::Unstorable { .. })),
            "{state:?}"
        );
        assert_eq!(state.rejection(), None);
    }

    #[test]
    fn an_accepted_command_clears_the_last_refusal() {
        let state = AggregateState::new(StreamId::from_static("ledger-1"));
        let (state, _) = enter(state, 1, &[]);
        assert_eq!(
            state.rejection().map(String::as_str),
            Some("nothing to enter")
        );
        let (mut state, _) = enter(state, 2, &[1]);
        assert_eq!(state.take_refusal(), None);
    }

    #[test]
    fn an_empty_source_is_refused() {
        assert!(AggregateReducer::<Ledger>::new("").is_err());
    }
}
