//! An aggregate with its stream version: applied with gap checks, snapshotted, and
//! loaded from stored envelopes.

use serde::{Deserialize, Serialize};

use super::{Aggregate, DomainEvent};
use crate::envelope::{Envelope, Payload};
use crate::error::Error;
use crate::upcast::UpcasterChain;

/// A stored copy of an aggregate's state as it was after the event at `version`.
///
/// Loading the snapshot and applying the events after `version` gives the same state as
/// folding the whole stream, so a long stream need not be read from its start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot<S> {
    /// The stream version of the last event folded into `state`; 0 for an empty stream.
    pub version: u64,
    /// The aggregate's state at that version.
    pub state: S,
}

/// An aggregate together with the stream version of the last event applied to it.
///
/// Stream versions start at 1; version 0 is the empty stream. Stored events must arrive
/// contiguously: the event at version `n + 1` after the one at `n`. Anything else (a
/// gap, a repeat, an event out of order) is an [`Error::VersionGap`], because the state
/// would silently be wrong.
///
/// ```
/// use keel_core::aggregate::{Aggregate, Versioned};
/// # #[derive(Debug, Default, Clone, PartialEq)]
/// # struct Tally(u64);
/// # impl Aggregate for Tally {
/// #     type Command = u64;
/// #     type Event = u64;
/// #     type Rejection = ();
/// #     fn decide_into(&self, c: &u64, e: &mut Vec<u64>) -> Result<(), ()> { e.push(*c); Ok(()) }
/// #     fn apply(&mut self, e: &u64) { self.0 += e; }
/// # }
/// let mut tally = Versioned::<Tally>::default();
/// tally.apply_at(1, &5)?;
/// tally.apply_at(2, &7)?;
/// assert!(tally.apply_at(4, &1).is_err()); // version 3 is missing
/// assert_eq!((tally.state(), tally.version()), (&Tally(12), 2));
///
/// let mut resumed = Versioned::from_snapshot(tally.snapshot());
/// resumed.apply_at(3, &1)?;
/// assert_eq!(resumed.state(), &Tally(13));
/// # Ok::<(), keel_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Versioned<A> {
    state: A,
    version: u64,
}

impl<A> Versioned<A> {
    /// Resumes from a snapshot.
    pub fn from_snapshot(snapshot: Snapshot<A>) -> Self {
        Self {
            state: snapshot.state,
            version: snapshot.version,
        }
    }

    /// The aggregate's state.
    pub const fn state(&self) -> &A {
        &self.state
    }

    /// The stream version of the last event applied; 0 if none was.
    pub const fn version(&self) -> u64 {
        self.version
    }

    /// The aggregate's state, giving up the version.
    pub fn into_state(self) -> A {
        self.state
    }

    /// A snapshot of the current state, to store beside the stream.
    pub fn snapshot(&self) -> Snapshot<A>
    where
        A: Clone,
    {
        Snapshot {
            version: self.version,
            state: self.state.clone(),
        }
    }

    /// The current state as a snapshot, without copying it.
    pub fn into_snapshot(self) -> Snapshot<A> {
        Snapshot {
            version: self.version,
            state: self.state,
        }
    }
}

impl<A: Aggregate> Versioned<A> {
    /// Applies a stored event that has stream version `version`, which must be the next
    /// one; otherwise nothing changes and the error names the version expected.
    pub fn apply_at(&mut self, version: u64, event: &A::Event) -> Result<(), Error> {
        let expected = self.version.saturating_add(1);
        if version != expected || self.version == u64::MAX {
            return Err(Error::VersionGap {
                expected,
                actual: version,
            });
        }
        self.state.apply(event);
        self.version = version;
        Ok(())
    }

    /// Applies a new event, just decided, as the next version; returns that version.
    pub fn apply_next(&mut self, event: &A::Event) -> u64 {
        self.state.apply(event);
        // A stream cannot hold 2^64 events (each takes storage), so this never saturates
        // in practice; saturating keeps the function total.
        self.version = self.version.saturating_add(1);
        self.version
    }

    /// Builds the state from stored envelopes, starting from `snapshot` (or from a fresh
    /// aggregate at version 0) and applying `stored`, the events after it, in order.
    ///
    /// Each payload is lifted by `chain` and decoded with [`decode`]. Fails, without
    /// panicking, on the first envelope that is out of order ([`Error::VersionGap`]),
    /// cannot be lifted ([`Error::Upcast`]) or cannot be decoded
    /// ([`Error::EventDecode`]).
    pub fn load(
        snapshot: Option<Snapshot<A>>,
        chain: &UpcasterChain,
        stored: &[Envelope],
    ) -> Result<Self, Error>
    where
        A: Default,
        A::Event: DomainEvent,
    {
        let mut versioned = snapshot.map_or_else(Self::default, Self::from_snapshot);
        versioned.catch_up(chain, stored)?;
        Ok(versioned)
    }

    /// Applies stored envelopes that follow the current version, as [`load`](Self::load)
    /// does.
    ///
    /// On error the state holds every event before the offending one, and
    /// [`version`](Self::version) says which that was.
    pub fn catch_up(&mut self, chain: &UpcasterChain, stored: &[Envelope]) -> Result<(), Error>
    where
        A::Event: DomainEvent,
    {
        for envelope in stored {
            let expected = self.version.saturating_add(1);
            if envelope.sequence != expected {
                return Err(Error::VersionGap {
                    expected,
                    actual: envelope.sequence,
                });
            }
            let event = decode::<A::Event>(chain, envelope)?;
            self.apply_at(envelope.sequence, &event)?;
        }
        Ok(())
    }
}

/// Decodes a stored envelope into a domain event, lifting its payload through `chain`
/// first.
///
/// Fails with [`Error::Upcast`] if the stored schema version cannot be lifted, and with
/// [`Error::EventDecode`] naming the type and stream version if the payload is binary,
/// does not match the event's serde form, or decodes to an event of another type.
pub fn decode<E: DomainEvent>(chain: &UpcasterChain, stored: &Envelope) -> Result<E, Error> {
    let refuse = |reason: String| Error::EventDecode {
        event_type: stored.event_type.to_string(),
        version: stored.sequence,
        reason,
    };
    let Payload::Json(payload) = &stored.payload else {
        return Err(refuse(
            "the payload is binary, but aggregate events are stored as JSON".into(),
        ));
    };
    let (payload, _) = chain.upcast_ref(&stored.event_type, stored.schema_version, payload)?;
    let event = E::deserialize(&*payload).map_err(|e| refuse(e.to_string()))?;
    let decoded_type = event.event_type();
    if decoded_type != stored.event_type {
        return Err(refuse(format!(
            "the payload decodes as a `{decoded_type}` event: the stored type and the payload disagree"
        )));
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::envelope::EventType;
    use crate::id::EventId;
    use crate::time::Timestamp;

    /// Sums what it is told; `event_type` is `tally.added`.
    #[derive(Debug, Default, Clone, PartialEq)]
    struct Tally(u64);

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Added {
        amount: u64,
    }

    impl DomainEvent for Added {
        const SCHEMA_VERSION: u32 = 2;

        fn event_type(&self) -> EventType {
            EventType::from_static("tally.added")
        }
    }

    impl Aggregate for Tally {
        type Command = u64;
        type Event = Added;
        type Rejection = ();

        fn decide_into(&self, amount: &u64, events: &mut Vec<Added>) -> Result<(), ()> {
            events.push(Added { amount: *amount });
            Ok(())
        }

        fn apply(&mut self, event: &Added) {
            self.0 += event.amount;
        }
    }

    /// Version 1 called the field `n`.
    fn rename_n(mut v: serde_json::Value) -> Result<serde_json::Value, String> {
        let n = v.get_mut("n").ok_or("no `n`")?.take();
        Ok(json!({ "amount": n }))
    }

    fn chain() -> UpcasterChain {
        UpcasterChain::builder()
            .current("tally.added", 2)
            .step("tally.added", 1, rename_n)
            .build()
            .unwrap()
    }

    fn stored(sequence: u64, schema_version: u32, payload: Payload) -> Envelope {
        let event_type = EventType::from_static("tally.added");
        Envelope::builder(
            EventId::from_u128(sequence.into()),
            event_type,
            "test",
            Timestamp::UNIX_EPOCH,
        )
        .sequence(sequence)
        .schema_version(schema_version)
        .payload(payload)
        .build()
        .unwrap()
    }

    #[test]
    fn stored_events_of_old_and_new_schemas_load_into_one_state() {
        let events = [
            stored(1, 1, Payload::Json(json!({ "n": 2 }))),
            stored(2, 2, Payload::Json(json!({ "amount": 3 }))),
        ];
        let tally = Versioned::<Tally>::load(None, &chain(), &events).unwrap();
        assert_eq!((tally.state(), tally.version()), (&Tally(5), 2));
    }

    #[test]
    fn loading_from_a_snapshot_reads_only_the_events_after_it() {
        let snapshot = Snapshot {
            version: 1,
            state: Tally(2),
        };
        let events = [stored(2, 2, Payload::Json(json!({ "amount": 3 })))];
        let tally = Versioned::<Tally>::load(Some(snapshot), &chain(), &events).unwrap();
        assert_eq!(
            tally.into_snapshot(),
            Snapshot {
                version: 2,
                state: Tally(5)
            }
        );
        let replayed = [stored(1, 2, Payload::Json(json!({ "amount": 2 })))];
        let snapshot = Snapshot {
            version: 1,
            state: Tally(2),
        };
        let err = Versioned::<Tally>::load(Some(snapshot), &chain(), &replayed).unwrap_err();
        assert_eq!(
            err,
            Error::VersionGap {
                expected: 2,
                actual: 1
            }
        );
    }

    #[test]
    fn a_failed_catch_up_keeps_the_events_before_the_bad_one() {
        let events = [
            stored(1, 2, Payload::Json(json!({ "amount": 1 }))),
            stored(2, 2, Payload::Binary(vec![1])),
        ];
        let mut tally = Versioned::<Tally>::default();
        let err = tally.catch_up(&chain(), &events).unwrap_err();
        assert!(
            matches!(err, Error::EventDecode { version: 2, .. }),
            "{err:?}"
        );
        assert_eq!(tally.version(), 1);
    }

    #[test]
    fn a_payload_of_another_type_is_a_decode_error() {
        let mut envelope = stored(1, 2, Payload::Json(json!({ "amount": 1 })));
        envelope.event_type = EventType::from_static("tally.removed");
        let err = decode::<Added>(&chain(), &envelope).unwrap_err();
        assert!(matches!(err, Error::EventDecode { .. }), "{err:?}");
    }

    #[test]
    fn a_version_that_cannot_be_lifted_is_an_upcast_error() {
        let envelope = stored(1, 3, Payload::Json(json!({ "amount": 1 })));
        let err = decode::<Added>(&chain(), &envelope).unwrap_err();
        assert!(matches!(err, Error::Upcast { version: 3, .. }), "{err:?}");
    }
}
