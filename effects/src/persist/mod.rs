//! Persist intents and the store's outbox, carried out: the effects that keel-store's
//! [`EventStore`](keel_store::EventStore) only records.
//!
//! The store itself (the contract, its backends, subscriptions, projections) is the
//! `keel-store` crate; this folder holds what performs intents against it.
//!
//! # Layout
//!
//! - [`PersistHandler`]: carries out `Persist` intents against a store.
//! - [`outbox`]: the dispatcher that carries out the intents a store holds pending
//!   ([`EventStore::append_with_intents`](keel_store::EventStore::append_with_intents))
//!   and marks them done.

mod handler;
pub mod outbox;

pub use handler::PersistHandler;
