//! Event-sourced aggregates.
