//! Identifiers as newtypes: envelope ids, correlation and causation ids, intent ids,
//! stream ids and timer ids.
//!
//! None of them is made up here: a UUID comes from the caller (the effects runtime draws
//! fresh ones at the edge), and an [`IntentId`] is derived from the ids of the step that
//! produced it, so replaying the same step yields the same id.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::Error;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// Wraps a UUID chosen by the caller.
            pub const fn new(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// Builds the id from a 128-bit integer; handy in tests and benchmarks.
            pub const fn from_u128(value: u128) -> Self {
                Self(Uuid::from_u128(value))
            }

            /// The underlying UUID.
            pub const fn uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self, Error> {
                Uuid::try_parse(s).map(Self).map_err(|_| Error::InvalidId {
                    value: s.to_owned(),
                    reason: "expected a UUID such as 67e55044-10b1-426f-9247-bb680e5fe0c8",
                })
            }
        }
    };
}

uuid_id! {
    /// The unique id of one envelope (an event or a command).
    EventId
}

uuid_id! {
    /// Ties together every envelope and intent of one business transaction: a saga, an
    /// order, a deployment. Propagated unchanged from parent to child.
    CorrelationId
}

uuid_id! {
    /// The id of the envelope or action that directly caused this one.
    CausationId
}

impl EventId {
    /// The id of the `index`-th envelope produced by the intent `intent`, derived without
    /// a random source.
    ///
    /// Reducers that create envelopes (an aggregate's events, a notification) take their
    /// ids from here, so a replay of the same step recreates the same ids. The result is
    /// a version-8 (custom) UUID from a fixed 128-bit mix of the inputs: distinct inputs
    /// collide with negligible probability, and the function never changes between
    /// releases, because stored ids depend on it.
    ///
    /// ```
    /// use keel_core::{Cause, EventId};
    /// let intent = Cause::root(1).intent_id(0);
    /// assert_eq!(EventId::derived(intent, 0), EventId::derived(intent, 0));
    /// assert_ne!(EventId::derived(intent, 0), EventId::derived(intent, 1));
    /// ```
    pub fn derived(intent: IntentId, index: u32) -> Self {
        let words = [
            (intent.correlation.0.as_u128() >> 64) as u64,
            intent.correlation.0.as_u128() as u64,
            (intent.causation.0.as_u128() >> 64) as u64,
            intent.causation.0.as_u128() as u64,
            u64::from(intent.position) << 32 | u64::from(index),
        ];
        // Two independent lanes of a SplitMix64-style absorb-and-mix: cheap, and every
        // input bit reaches every output bit.
        let lane = |seed: u64| {
            words.iter().fold(seed, |h, w| {
                mix64(h ^ w.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            })
        };
        let hi = lane(0x6B65_656C_2D69_6431); // "keel-id1"
        let lo = lane(0x6B65_656C_2D69_6432); // "keel-id2"
        let mut bytes = (u128::from(hi) << 64 | u128::from(lo)).to_be_bytes();
        bytes[6] = (bytes[6] & 0x0F) | 0x80; // version 8: custom
        bytes[8] = (bytes[8] & 0x3F) | 0x80; // RFC 4122 variant
        Self(Uuid::from_bytes(bytes))
    }
}

/// Indices of [`EventId::derived`] that name an instance's records ([`EventId::record`])
/// and its stable intents ([`IntentId::stable`]), kept apart by the top bit.
const STABLE_KEY_BASE: u32 = 0x8000_0000;

impl CorrelationId {
    /// The correlation id of the instance named `name` (`order-42`): a fixed 128-bit
    /// hash of the name, so that every process and every restart derives the same one
    /// without a registry. The hash never changes between releases: stored ids depend
    /// on it.
    ///
    /// ```
    /// use keel_core::CorrelationId;
    /// assert_eq!(CorrelationId::of_name("order-42"), CorrelationId::of_name("order-42"));
    /// assert_ne!(CorrelationId::of_name("order-42"), CorrelationId::of_name("order-43"));
    /// ```
    pub fn of_name(name: &str) -> Self {
        Self::from_u128(hash128(name.as_bytes()))
    }
}

impl EventId {
    /// The id of record `version` (from 1) of the log of the instance correlated by
    /// `correlation`: the same on every replay, so a record written twice (a retried
    /// commit) is recognised as the same record. Versions are taken modulo 2^31 (those
    /// from 2^32 on share one id): a log of two billion records would repeat ids.
    pub fn record(correlation: CorrelationId, version: u64) -> Self {
        let index = u32::try_from(version).unwrap_or(u32::MAX) & !STABLE_KEY_BASE;
        Self::derived(
            IntentId::new(correlation, CausationId::new(correlation.uuid()), 1),
            index,
        )
    }
}

impl IntentId {
    /// The stable intent id `key` (below 2^31; the top bit is ignored) of the instance
    /// correlated by `correlation`: the same for every attempt, every replay and every
    /// process, so the service called sees one idempotency key for one effect however
    /// often it is performed.
    ///
    /// ```
    /// use keel_core::{CorrelationId, IntentId};
    /// let order = CorrelationId::of_name("order-42");
    /// assert_eq!(IntentId::stable(order, 3), IntentId::stable(order, 3));
    /// assert_ne!(IntentId::stable(order, 3), IntentId::stable(order, 4));
    /// ```
    pub fn stable(correlation: CorrelationId, key: u32) -> Self {
        let id = EventId::derived(
            Self::new(correlation, CausationId::new(correlation.uuid()), 0),
            STABLE_KEY_BASE | key,
        );
        Self::new(correlation, id.into(), 0)
    }
}

/// A fixed 128-bit hash of `bytes` (two SplitMix64-style lanes); never to change, since
/// stored correlation ids depend on it.
fn hash128(bytes: &[u8]) -> u128 {
    let lane = |seed: u64| {
        let mut h = seed ^ (bytes.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            h = mix64(h ^ u64::from_le_bytes(word).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        }
        mix64(h)
    };
    (u128::from(lane(0x6B65_656C_2D73_6731)) << 64) | u128::from(lane(0x6B65_656C_2D73_6732))
}

/// The finaliser of SplitMix64: every input bit reaches every output bit.
pub(crate) const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl From<EventId> for CausationId {
    fn from(id: EventId) -> Self {
        Self(id.0)
    }
}

/// The stable id of one intent, derived from the step that produced it.
///
/// A step is identified by the correlation id of its workflow and the causation id of the
/// action being reduced; `position` counts the intents that step emitted, from zero.
/// Reducing the same action again (a replay, a retry after a crash) yields the same ids,
/// which is why an intent id doubles as the idempotency key that the effects runtime and
/// the services it calls use to suppress duplicates.
///
/// The text form, used as the `Idempotency-Key`, is `correlation/causation/position`:
///
/// ```
/// use keel_core::{CausationId, CorrelationId, IntentId};
/// let id = IntentId::new(CorrelationId::from_u128(1), CausationId::from_u128(2), 3);
/// let text = id.to_string();
/// assert_eq!(text, "00000000-0000-0000-0000-000000000001/00000000-0000-0000-0000-000000000002/3");
/// assert_eq!(text.parse::<IntentId>().unwrap(), id);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IntentId {
    /// The workflow this intent belongs to.
    pub correlation: CorrelationId,
    /// The action whose reduction emitted this intent.
    pub causation: CausationId,
    /// The intent's position among those emitted by that reduction, from zero.
    pub position: u32,
}

impl IntentId {
    /// Derives the id of the intent at `position` of the step identified by the other two.
    pub const fn new(correlation: CorrelationId, causation: CausationId, position: u32) -> Self {
        Self {
            correlation,
            causation,
            position,
        }
    }
}

impl fmt::Display for IntentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.correlation, self.causation, self.position
        )
    }
}

impl FromStr for IntentId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let invalid = || Error::InvalidId {
            value: s.to_owned(),
            reason: "expected `correlation-uuid/causation-uuid/position`",
        };
        let mut parts = s.split('/');
        let (Some(correlation), Some(causation), Some(position), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        Ok(Self {
            correlation: correlation.parse().map_err(|_| invalid())?,
            causation: causation.parse().map_err(|_| invalid())?,
            position: position.parse().map_err(|_| invalid())?,
        })
    }
}

/// The id of a reducer instance, unique among the instances of its reducer: `order-42`.
///
/// Shared (`Arc<str>`): the driver and the runtime hand it to every call an instance makes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceId(Arc<str>);

impl InstanceId {
    /// Wraps a name.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self(name.into())
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as shared text, without copying it.
    pub fn shared(&self) -> Arc<str> {
        Arc::clone(&self.0)
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for InstanceId {
    fn from(name: &str) -> Self {
        Self::new(name)
    }
}

impl From<String> for InstanceId {
    fn from(name: String) -> Self {
        Self::new(name)
    }
}

macro_rules! name_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Holds a `Cow<'static, str>`, so a name written as a literal costs no allocation:
        /// reducers in hot loops can emit it freely.
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Cow<'static, str>);

        impl $name {
            /// A name known at compile time; no allocation.
            pub const fn from_static(name: &'static str) -> Self {
                Self(Cow::Borrowed(name))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<&'static str> for $name {
            fn from(name: &'static str) -> Self {
                Self::from_static(name)
            }
        }

        impl From<String> for $name {
            fn from(name: String) -> Self {
                Self(Cow::Owned(name))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_id! {
    /// The name of an event stream in the store, chosen by the user: `order-42`.
    StreamId
}

name_id! {
    /// A timer's stable name within one reducer instance: `payment-timeout`.
    ///
    /// Scheduling a timer with a name that is already pending replaces it; cancelling
    /// by name is idempotent.
    TimerId
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_derived_from_a_name_are_pinned() {
        // Stored logs hold these ids: the derivations must never change.
        let order = CorrelationId::of_name("order-42");
        assert_eq!(order.to_string(), "dd33964c-7ff1-1644-965c-20f35f036397");
        assert_eq!(
            IntentId::stable(order, 3).to_string(),
            "dd33964c-7ff1-1644-965c-20f35f036397/2811b62f-acc4-896f-9e4f-dfe900502279/0"
        );
        assert_eq!(
            EventId::record(order, 3).to_string(),
            "31fc20ce-66d8-8bca-8325-829deee88ab7"
        );
        assert_ne!(EventId::record(order, 1), EventId::record(order, 2));
        assert_ne!(CorrelationId::of_name(""), CorrelationId::of_name("\0"));
    }

    #[test]
    fn intent_id_text_round_trips() {
        let id = IntentId::new(CorrelationId::from_u128(7), CausationId::from_u128(9), 42);
        assert_eq!(id.to_string().parse::<IntentId>(), Ok(id));
    }

    #[test]
    fn intent_id_rejects_text_with_missing_or_extra_parts() {
        for bad in [
            "",
            "a/b",
            "a/b/c/d",
            "00000000-0000-0000-0000-000000000001/x/1",
        ] {
            assert!(
                matches!(bad.parse::<IntentId>(), Err(Error::InvalidId { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn derived_event_ids_are_stable_and_spread() {
        let intent = IntentId::new(CorrelationId::from_u128(1), CausationId::from_u128(2), 3);
        let id = EventId::derived(intent, 4);
        // Pinned: stored ids depend on this function never changing.
        assert_eq!(id.to_string(), "d5220f50-b188-8f09-a17f-6ee589ce79e3");
        assert_eq!(id.uuid().get_version_num(), 8);
        let mut seen = std::collections::HashSet::new();
        for causation in 0..64_u128 {
            for index in 0..64 {
                let intent = IntentId::new(
                    CorrelationId::from_u128(1),
                    CausationId::from_u128(causation),
                    0,
                );
                assert!(seen.insert(EventId::derived(intent, index)));
            }
        }
    }

    #[test]
    fn static_and_owned_names_compare_equal() {
        assert_eq!(TimerId::from("tick"), TimerId::from(String::from("tick")));
    }
}
