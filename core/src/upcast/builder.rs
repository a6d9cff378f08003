//! The builder of an [`UpcasterChain`], where every declaration is checked.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use super::{Lift, UpcastStep, UpcasterChain};
use crate::envelope::EventType;
use crate::error::Error;

/// Declares the current versions and steps of an [`UpcasterChain`]; checked by
/// [`build`](Self::build).
#[derive(Debug, Default)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct UpcasterChainBuilder {
    currents: Vec<(Cow<'static, str>, u32)>,
    steps: Vec<(Cow<'static, str>, u32, UpcastStep)>,
}

impl UpcasterChainBuilder {
    /// Declares the schema version that code reading `event_type` expects (from 1).
    pub fn current(mut self, event_type: impl Into<Cow<'static, str>>, version: u32) -> Self {
        self.currents.push((event_type.into(), version));
        self
    }

    /// Registers the step that lifts `event_type` from `from_version` to
    /// `from_version + 1`.
    pub fn step(
        mut self,
        event_type: impl Into<Cow<'static, str>>,
        from_version: u32,
        step: UpcastStep,
    ) -> Self {
        self.steps.push((event_type.into(), from_version, step));
        self
    }

    /// Checks the declarations and builds the chain.
    ///
    /// Fails with [`Error::InvalidEventType`] for a malformed type name, and with
    /// [`Error::Upcast`] naming the type and version for: a version 0; a type declared
    /// current twice; a step for a type with no current version; a step at or above the
    /// current version; two steps from the same version; a missing step between the
    /// lowest step and the current version.
    pub fn build(self) -> Result<UpcasterChain, Error> {
        let defect = |event_type: &EventType, version: u32, reason: String| Error::Upcast {
            event_type: event_type.to_string(),
            version,
            reason,
        };
        let mut declared: BTreeMap<EventType, (u32, BTreeMap<u32, UpcastStep>)> = BTreeMap::new();
        for (name, version) in self.currents {
            let event_type = EventType::new(name)?;
            if version == 0 {
                let reason = "schema versions start at 1".to_owned();
                return Err(defect(&event_type, version, reason));
            }
            match declared.entry(event_type) {
                Entry::Vacant(slot) => {
                    slot.insert((version, BTreeMap::new()));
                }
                Entry::Occupied(slot) => {
                    let reason = format!(
                        "the current version is declared twice (first as {}): keep one",
                        slot.get().0
                    );
                    return Err(defect(slot.key(), version, reason));
                }
            }
        }
        for (name, from, step) in self.steps {
            let event_type = EventType::new(name)?;
            let Some((current, steps)) = declared.get_mut(&event_type) else {
                let reason = "a step is registered but the type has no current version: declare it with `.current(..)`".to_owned();
                return Err(defect(&event_type, from, reason));
            };
            if from == 0 {
                let reason = "schema versions start at 1".to_owned();
                return Err(defect(&event_type, from, reason));
            }
            if from >= *current {
                let reason = format!(
                    "a step from version {from} would lift past the current version {current}: raise the current version or remove the step"
                );
                return Err(defect(&event_type, from, reason));
            }
            if steps.insert(from, step).is_some() {
                let reason = format!("two steps lift version {from}: keep one");
                return Err(defect(&event_type, from, reason));
            }
        }
        let mut types = BTreeMap::new();
        for (event_type, (current, steps)) in declared {
            let lowest = steps.keys().next().copied().unwrap_or(current);
            if let Some(missing) = (lowest..current).find(|v| !steps.contains_key(v)) {
                let reason = format!(
                    "no step lifts version {missing} to {}, so versions {lowest} to {missing} cannot reach the current version {current}: add that step",
                    missing + 1
                );
                return Err(defect(&event_type, missing, reason));
            }
            let steps = steps.into_values().collect();
            types.insert(
                event_type,
                Lift {
                    current,
                    lowest,
                    steps,
                },
            );
        }
        Ok(UpcasterChain { types })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(err: Error) -> String {
        match err {
            Error::Upcast { reason, .. } => reason,
            other => panic!("expected an upcast error, got {other:?}"),
        }
    }

    #[test]
    fn inconsistent_chains_are_refused_when_built() {
        let lift: UpcastStep = Ok;
        let cases = [
            (
                UpcasterChain::builder().step("order.placed", 1, lift),
                "no current version",
            ),
            (
                UpcasterChain::builder().current("order.placed", 0),
                "start at 1",
            ),
            (
                UpcasterChain::builder()
                    .current("order.placed", 2)
                    .current("order.placed", 3),
                "declared twice",
            ),
            (
                UpcasterChain::builder()
                    .current("order.placed", 2)
                    .step("order.placed", 2, lift),
                "past the current version",
            ),
            (
                UpcasterChain::builder()
                    .current("order.placed", 2)
                    .step("order.placed", 0, lift),
                "start at 1",
            ),
            (
                UpcasterChain::builder()
                    .current("order.placed", 2)
                    .step("order.placed", 1, lift)
                    .step("order.placed", 1, lift),
                "two steps",
            ),
            (
                UpcasterChain::builder()
                    .current("order.placed", 4)
                    .step("order.placed", 1, lift)
                    .step("order.placed", 3, lift),
                "no step lifts version 2 to 3",
            ),
            (
                UpcasterChain::builder()
                    .current("order.placed", 3)
                    .step("order.placed", 1, lift),
                "no step lifts version 2 to 3",
            ),
        ];
        for (builder, expected) in cases {
            let message = reason(builder.build().unwrap_err());
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        }
    }

    #[test]
    fn an_invalid_type_name_is_an_error_not_a_panic() {
        let err = UpcasterChain::builder()
            .current("Order Placed", 1)
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::InvalidEventType { .. }));
    }
}
