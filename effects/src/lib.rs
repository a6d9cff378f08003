//! keel's effect runtime: carries out the intents that `keel-core` reducers emit.
//!
//! # Layout
//!
//! Empty for now: the runtime (event bus, HTTP, timers, persistence, policies) is built
//! in its own issue on top of `keel-core`'s driver contract.

pub use keel_core as core;
