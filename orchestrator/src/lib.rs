//! keel's saga orchestrator: steps with compensations, a durable saga log, recovery.
//!
//! # Layout
//!
//! Empty for now: sagas are built in their own issue on top of `keel-core` and
//! `keel-effects`.

pub use keel_core as core;
