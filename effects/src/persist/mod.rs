//! Persistence: the [`EventStore`] trait, an in-memory store, and the handler that
//! carries out `Persist` intents.
//!
//! The durable stores (SQLite, PostgreSQL) implement the same trait in their own module;
//! [`MemoryStore`] is for tests and examples. Every store makes appends idempotent by
//! event id: appending a batch whose events are already stored, in the same stream and
//! order, answers with the earlier result instead of storing them twice. Since envelope
//! ids derive from the intent that produced them, a retried or redelivered persist
//! intent has one visible effect.

mod handler;
mod memory;

use std::future::Future;
use std::pin::Pin;

use keel_core::{Envelope, ExpectedVersion, StreamId};
use serde::{Deserialize, Serialize};

use crate::error::Error;

pub use handler::PersistHandler;
pub use memory::MemoryStore;

/// The future a store method returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// The most events one read returns; callers page with `from`.
pub const READ_LIMIT_MAX: usize = 10_000;

/// An append-only store of event streams.
///
/// Versions number the events of one stream from 1; positions number every event of the
/// store from 1, in commit order. An empty stream is at version 0.
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` to `stream` atomically (all or none) if the stream is at
    /// `expected`; a mismatch is [`Error::VersionConflict`] with the actual version.
    fn append<'a>(
        &'a self,
        stream: &'a StreamId,
        expected: ExpectedVersion,
        events: &'a [Envelope],
    ) -> StoreFuture<'a, Appended>;

    /// Up to `limit` events of `stream` from version `from` (inclusive).
    fn read_stream<'a>(
        &'a self,
        stream: &'a StreamId,
        from: u64,
        limit: usize,
    ) -> StoreFuture<'a, Vec<RecordedEvent>>;

    /// Up to `limit` events of every stream from global position `from` (inclusive), in
    /// commit order.
    fn read_all(&self, from: u64, limit: usize) -> StoreFuture<'_, Vec<RecordedEvent>>;

    /// The version of `stream`: the version of its last event, 0 if it has none.
    fn stream_version<'a>(&'a self, stream: &'a StreamId) -> StoreFuture<'a, u64>;
}

/// An event as stored: where it is and what it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// Its stream.
    pub stream: StreamId,
    /// Its version in the stream, from 1.
    pub version: u64,
    /// Its position in the whole store, from 1.
    pub position: u64,
    /// The event.
    pub envelope: Envelope,
}

/// Where an append put its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appended {
    /// The version of the first event appended (the stream's version + 1 before it).
    pub first_version: u64,
    /// The stream's version after the append.
    pub last_version: u64,
    /// The global position of the first event appended.
    pub first_position: u64,
    /// True when the events were already stored by an earlier, identical append.
    pub deduplicated: bool,
}

/// Checks `expected` against the stream's `actual` version.
pub(crate) fn check_expected(
    stream: &StreamId,
    expected: ExpectedVersion,
    actual: u64,
) -> Result<(), Error> {
    let ok = match expected {
        ExpectedVersion::Any => true,
        ExpectedVersion::NoStream => actual == 0,
        ExpectedVersion::Exact(version) => actual == version,
    };
    if ok {
        return Ok(());
    }
    Err(Error::VersionConflict {
        stream: stream.clone(),
        expected: match expected {
            ExpectedVersion::Any => "any".to_owned(),
            ExpectedVersion::NoStream => "no stream".to_owned(),
            ExpectedVersion::Exact(version) => version.to_string(),
        },
        actual,
    })
}
