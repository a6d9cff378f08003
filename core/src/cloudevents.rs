//! CloudEvents.
