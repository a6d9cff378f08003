//! keel: workflows as pure state machines, with durable effects and sagas that end
//! cleanly.
//!
//! Depend on this one crate; it re-exports the four that make up keel.
//!
//! # Layout
//!
//! - [`core`] (`keel-core`): pure reducers, intents, outcomes and failures, the retry
//!   policy, envelopes, state machines, aggregates. Its items are also re-exported at
//!   the top level.
//! - [`store`] (`keel-store`): the event store: in memory, SQLite, PostgreSQL.
//! - [`effects`] (`keel-effects`): the tokio runtime that carries out intents.
//! - [`orchestrator`] (`keel-orchestrator`): sagas with compensation and recovery.

pub use keel_core as core;
pub use keel_core::*;
pub use keel_effects as effects;
pub use keel_orchestrator as orchestrator;
pub use keel_store as store;

// The README's Rust examples compile and run as doctests, so the README cannot rot.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
