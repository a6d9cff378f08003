//! keel's event store: the [`EventStore`] contract, its backends, and what is built on
//! it: subscriptions, the store's transactional outbox, an index of workflow instances,
//! aggregate loading and checkpointed projections.
//!
//! The store is a crate of its own so that what only reads or steers a store (the `keel`
//! CLI) builds without an HTTP client, TLS or hyper (it still builds the orchestrator,
//! whose bus and runtime it uses to steer sagas). Carrying out the
//! intents a store holds is keel-effects' work (`PersistHandler`, `OutboxDispatcher`).
//!
//! SQLite and PostgreSQL are cargo features of this crate (`sqlite`, `postgres`, both on
//! by default), not crates of their own: the backend-agnostic contract tests below run
//! against every backend from one behaviour test binary (`store/tests/main.rs`), and a
//! crate per backend would need a test binary of its own (CI's disk is tight).
//!
//! # The contract every backend keeps
//!
//! - **Appends are atomic and ordered.** [`EventStore::append`] stores all of a batch or
//!   none, if the stream is at the expected version ([`Error::VersionConflict`] carries
//!   the actual one). Versions number a stream's events from 1; positions number every
//!   event of the store from 1, in commit order, and an event becomes visible to readers
//!   only after every event with a smaller position is visible, so a reader that follows
//!   positions never skips one.
//! - **Appends are idempotent by event id.** A batch whose events are already stored,
//!   in the same stream and order and with the same content, answers with the earlier
//!   result; the same place with other content is [`Error::EventConflict`], an event id
//!   stored anywhere else [`Error::DuplicateEventId`]. "The same content" is equal as
//!   stored (the payload as serde_json writes it); a trimmed event's content is gone, so
//!   its repeat is judged by place alone. Envelope ids derive from the intent that made
//!   them, so a retried persist intent has one visible effect.
//! - **The outbox commits with the events.** [`EventStore::append_with_intents`] stores
//!   intents in the same transaction as the events that caused them. They stay pending
//!   until [`EventStore::complete_intents`]; after a crash, [`EventStore::pending_intents`]
//!   returns them again, under the same ids (keel-effects' `OutboxDispatcher` carries
//!   them out).
//! - **Projections commit their checkpoint with their read model.**
//!   [`EventStore::save_projection`] stores both in one transaction, and only if the
//!   checkpoint is still the one the projection started from (see [`projection`]).
//! - **The index of instances commits with the events.** An event marked with an
//!   [`InstanceMark`] (three metadata entries: kind, status, finished) sets its
//!   stream's [`InstanceEntry`] in the transaction of its append: the last marked event
//!   of an append counts, an append without marks leaves the row alone, and a refused or
//!   deduplicated append changes none. So recovery reads the unfinished instances
//!   ([`EventStore::read_unfinished`]) rather than all history, listing pages the rows
//!   ([`EventStore::instances`]), and retention removes old finished instances
//!   ([`EventStore::purge_finished`]) without letting a version go back or an event id
//!   be used again. Events stored before the index (SQLite schema 1, PostgreSQL 2)
//!   carry no marks, so their streams have no row until a marked event is appended:
//!   a caller that must see them reads [`EventStore::read_all`] once (see [`index`]).
//! - **Acknowledged means durable** for the durable backends: an append returns only
//!   after its transaction is on disk.
//!
//! # Layout
//!
//! - [`EventStore`] (this file): the contract, the records it stores ([`RecordedEvent`],
//!   [`StoredSnapshot`], [`ProjectionState`]), its bounds and the checks every backend
//!   applies before touching storage.
//! - [`error`]: [`Error`], what a store answers instead, and
//!   [`Error::is_unavailable`], whether trying again may help.
//! - [`index`]: the index of instances: [`InstanceMark`] (what a writer puts on an
//!   event), [`InstanceEntry`] (a stream's row) and [`InstanceQuery`] (a page of rows).
//! - [`MemoryStore`]: in memory, for tests and examples.
//! - [`sqlite`]: the embedded default (feature `sqlite`, on by default).
//! - [`postgres`]: the shared store for several processes (feature `postgres`, on by
//!   default).
//! - [`aggregate`]: loading aggregates (snapshot + later events, upcast on read).
//! - [`subscription`]: catch up from a position, then follow live commits.
//! - [`projection`]: checkpointed read models, applied exactly once, rebuildable.
//! - `repeat`: the rule every backend applies to an append of stored event ids.
//! - [`WriterLock`] and [`LockHolder`]: the single-writer lock
//!   ([`EventStore::lock_writer`]).
//! - `testing`: every backend opened fresh for a test (feature `testing`, off by
//!   default), for this crate's behaviour tests and keel-effects'.

pub mod aggregate;
pub mod error;
pub mod index;
mod lock;
mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod projection;
mod repeat;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod subscription;
#[cfg(feature = "testing")]
pub mod testing;

use std::future::Future;
use std::pin::Pin;

use keel_core::{Envelope, ExpectedVersion, Intent, IntentId, StreamId, Timestamp};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use error::Error;
pub use index::{InstanceEntry, InstanceMark, InstanceQuery};
pub use lock::{LockHolder, WriterLock};
pub use memory::MemoryStore;

/// The future a store method returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// The most events (or intents) one read returns; callers page with `from`.
pub const READ_LIMIT_MAX: usize = 10_000;

/// The most events one append may carry.
pub const APPEND_EVENTS_MAX: usize = 10_000;

/// An append-only store of event streams, with an outbox, snapshots and projections.
///
/// See the [module docs](self) for the guarantees every implementation keeps.
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` to `stream` atomically if the stream is at `expected`.
    fn append<'a>(
        &'a self,
        stream: &'a StreamId,
        expected: ExpectedVersion,
        events: &'a [Envelope],
    ) -> StoreFuture<'a, Appended> {
        self.append_with_intents(stream, expected, events, &[])
    }

    /// Appends `events` and records `intents` as pending, in one transaction. Intents
    /// already recorded (same id) are left as they are.
    fn append_with_intents<'a>(
        &'a self,
        stream: &'a StreamId,
        expected: ExpectedVersion,
        events: &'a [Envelope],
        intents: &'a [Intent],
    ) -> StoreFuture<'a, Appended>;

    /// Up to `limit` events of `stream` from version `from` (inclusive), in order.
    fn read_stream<'a>(
        &'a self,
        stream: &'a StreamId,
        from: u64,
        limit: usize,
    ) -> StoreFuture<'a, Vec<RecordedEvent>>;

    /// Up to `limit` events of every stream from global position `from` (inclusive), in
    /// commit order. Positions of trimmed events are skipped.
    fn read_all(&self, from: u64, limit: usize) -> StoreFuture<'_, Vec<RecordedEvent>>;

    /// The version of `stream`: the version of its last event, 0 if it never had one.
    /// Trimming does not lower it.
    fn stream_version<'a>(&'a self, stream: &'a StreamId) -> StoreFuture<'a, u64>;

    /// The position of the last committed event, 0 for an empty store.
    fn head(&self) -> StoreFuture<'_, u64>;

    /// Follows the head position: changes after each commit (for live subscriptions).
    fn watch_head(&self) -> watch::Receiver<u64>;

    /// Up to `limit` pending intents, oldest first.
    fn pending_intents(&self, limit: usize) -> StoreFuture<'_, Vec<Intent>>;

    /// Marks intents done; unknown or already-done ids are ignored.
    fn complete_intents<'a>(&'a self, ids: &'a [IntentId]) -> StoreFuture<'a, ()>;

    /// Saves the snapshot of a stream, replacing an older one.
    fn save_snapshot<'a>(&'a self, snapshot: &'a StoredSnapshot) -> StoreFuture<'a, ()>;

    /// The latest snapshot of `stream`, if any.
    fn load_snapshot<'a>(&'a self, stream: &'a StreamId)
    -> StoreFuture<'a, Option<StoredSnapshot>>;

    /// Sets the metadata document of `stream` (it need not have events yet).
    fn set_metadata<'a>(
        &'a self,
        stream: &'a StreamId,
        metadata: &'a serde_json::Value,
    ) -> StoreFuture<'a, ()>;

    /// The metadata document of `stream`, if one was set.
    fn metadata<'a>(&'a self, stream: &'a StreamId) -> StoreFuture<'a, Option<serde_json::Value>>;

    /// Removes old events of `stream` (for streams that are logs, not aggregates);
    /// returns how many were removed. The stream's version does not change.
    fn trim<'a>(&'a self, stream: &'a StreamId, trim: Trim) -> StoreFuture<'a, u64>;

    /// Rows of the index of instances (see [`index`]) that pass `query`'s filters, ordered
    /// by stream (byte order), after `query.after`, at most `query.limit` (capped at
    /// [`READ_LIMIT_MAX`]).
    ///
    /// What every backend guarantees: a row is exactly what the last marked event of
    /// its stream says (kind, status, finished, and that event's version, time and
    /// position), as of one committed state of the store. The index changes only in the
    /// transaction of an append that stores marked events (its last marked one counts),
    /// and in [`EventStore::purge_finished`]; a refused or deduplicated append changes
    /// no row. Streams whose events carry no mark (all of a store written before the
    /// index) have no row.
    fn instances<'a>(&'a self, query: &'a InstanceQuery) -> StoreFuture<'a, Vec<InstanceEntry>>;

    /// Up to `limit` events (capped at [`READ_LIMIT_MAX`]) of the streams whose index
    /// row says they are not finished (and are of `kind`, if given), ordered by stream
    /// (byte order) and, within a stream, by version, after `after` (a stream and a
    /// version: the last event of the previous page; `None` for the first page). What
    /// recovery reads instead of [`EventStore::read_all`]: every unfinished instance's
    /// whole log, one instance after the other, in pages.
    ///
    /// What every backend guarantees: each event of a page is one committed event of a
    /// stream that was unfinished when it was read; streams with no row (no marked
    /// event) are not unfinished and never returned. A page may take two reads (the
    /// rest of the cursor's stream, then the streams after it), so pages agree with
    /// one another only while nothing is appended meanwhile, as during a recovery,
    /// which holds the writer lock. The durable
    /// backends walk the unfinished rows of the index in stream order and read each
    /// one's events through the `(stream, version)` index: a page costs what it returns,
    /// and the events of finished streams are not read at all. (Paging by position
    /// instead would make every page merge all unfinished streams.)
    fn read_unfinished<'a>(
        &'a self,
        kind: Option<&'a str>,
        after: Option<(&'a StreamId, u64)>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<RecordedEvent>>;

    /// The head the store had when it began keeping its index of instances: events up
    /// to this position may carry no mark (an older keel wrote them), so their streams
    /// may be missing from the index. 0 for a store that kept the index from its first
    /// event. While it is above 0, a reader that must see every instance (recovery,
    /// listing) reads the whole history with [`EventStore::read_all`] instead.
    fn unindexed_head(&self) -> StoreFuture<'_, u64>;

    /// Retention: removes up to `limit` (capped at [`READ_LIMIT_MAX`]) finished
    /// instances (of `kind`, if given) whose index row was last updated before
    /// `updated_before`; returns how many it removed.
    ///
    /// What every backend guarantees, for each instance removed, in one transaction:
    ///
    /// - the events it still holds are removed and their ids stay taken: an append
    ///   carrying one is refused with [`Error::DuplicateEventId`], even at the same
    ///   place (their content is gone, so a repeat cannot be told from a writer
    ///   starting the instance again under the same derived ids); ids an earlier
    ///   [`EventStore::trim`] removed stay as the trim left them. Their positions are
    ///   skipped by [`EventStore::read_all`]. (A writer whose append landed without
    ///   its answer, and who tries again after the instance was purged, is refused
    ///   too: keep retention far longer than an outage.) The empty stream id is not
    ///   for instances: purged ids are kept under it;
    /// - its snapshot, its stream metadata and its index row are removed;
    /// - its stream's version stays (the `streams` row is kept): a writer appending
    ///   with [`ExpectedVersion::NoStream`] or `Exact(0)` to a purged stream gets
    ///   [`Error::VersionConflict`], and numbering goes on from the old version.
    ///
    /// The smallest stream ids (byte order) go first when more than `limit` qualify;
    /// PostgreSQL skips a row that an append is changing at that moment, rather than
    /// wait for it (a later purge takes it). An instance that an append marks
    /// unfinished meanwhile is kept; events appended to a finished stream while it is
    /// being purged may be kept without their earlier history.
    fn purge_finished<'a>(
        &'a self,
        kind: Option<&'a str>,
        updated_before: Timestamp,
        limit: usize,
    ) -> StoreFuture<'a, u64>;

    /// The checkpoint and read model of projection `name`, if it has saved one.
    fn load_projection<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<ProjectionState>>;

    /// Saves the read model and checkpoint of projection `name` in one transaction, if
    /// its stored checkpoint is still `expected` (0 when none is stored); otherwise
    /// [`Error::ProjectionConflict`].
    fn save_projection<'a>(
        &'a self,
        name: &'a str,
        expected: u64,
        state: &'a ProjectionState,
    ) -> StoreFuture<'a, ()>;

    /// Takes the store's single-writer lock for `holder`, held until the returned guard
    /// is dropped. An orchestrator takes it at start, so that two of them never drive
    /// the same store.
    ///
    /// What every backend guarantees:
    ///
    /// - **One holder at a time.** While a [`WriterLock`] of the store is held, another
    ///   `lock_writer` on it fails with [`Error::StoreLocked`], which names the holder
    ///   (its pid, host and since when) once it has recorded itself, from any handle or
    ///   process that opens the same store: the same SQLite file, or the same
    ///   PostgreSQL database and schema; for [`MemoryStore`], the same instance or its
    ///   clones.
    /// - **Only lockers are excluded.** Reads, appends and every other method work as
    ///   before, from any handle, whoever holds the lock: the `keel` CLI can inspect
    ///   and repair a store an orchestrator is running on.
    /// - **A dead holder holds nothing.** Dropping the guard releases the lock, and so
    ///   does the end of the holding process, however it ends (SIGKILL included): the
    ///   operating system drops its file lock, PostgreSQL ends its session. What the
    ///   holder recorded of itself is overwritten by the next one.
    ///
    /// It is a lock, not a fence: it does not stop a writer that never asked for it,
    /// and on PostgreSQL it lasts as long as the connection holding it (see the
    /// backend's docs).
    fn lock_writer<'a>(&'a self, holder: &'a LockHolder) -> StoreFuture<'a, WriterLock>;
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
    /// The global position of the first event appended (for an empty batch: the head
    /// position + 1 at the time).
    pub first_position: u64,
    /// True when the events were already stored by an earlier, identical append.
    pub deduplicated: bool,
}

/// A snapshot of an aggregate's state at a version of its stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredSnapshot {
    /// The stream.
    pub stream: StreamId,
    /// The version of the last event folded into `state`.
    pub version: u64,
    /// The state, as JSON.
    pub state: serde_json::Value,
}

/// What to remove from a stream, like Redis `XTRIM` (`MAXLEN` and `MINID`).
///
/// Whichever variant, a trim removes a prefix of the stream's remaining events and
/// nothing else: the stream's version stays, so appends go on numbering from it, and the
/// trimmed positions are skipped by [`EventStore::read_all`] and subscriptions. The
/// prefix is taken from the stream as it was when the trim began: events appended while
/// it runs (a backend may let appends go on meanwhile) are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Trim {
    /// Keep only the last `n` events.
    KeepLast(u64),
    /// Remove events with a version below this one.
    BeforeVersion(u64),
    /// Remove events with a global position below this one: trimming several log
    /// streams to one point of the store's history (say, the checkpoint every projection
    /// has passed) needs no per-stream version.
    BeforePosition(u64),
}

/// A projection's checkpoint and read model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectionState {
    /// The position of the last event applied (0 before the first).
    pub checkpoint: u64,
    /// The read model, as JSON.
    pub model: serde_json::Value,
}

/// Checks `expected` against the stream's `actual` version.
pub fn check_expected(
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

/// Checks the bounds every backend applies to an append before touching storage.
pub fn check_append(events: &[Envelope], intents: &[Intent]) -> Result<(), Error> {
    if events.len() > APPEND_EVENTS_MAX || intents.len() > APPEND_EVENTS_MAX {
        return Err(Error::BatchTooLarge {
            capacity: APPEND_EVENTS_MAX,
        });
    }
    let limits = keel_core::cloudevents::DecodeLimits::default();
    for event in events {
        event.validate()?;
        let size_bytes = match &event.payload {
            keel_core::Payload::Json(value) => {
                serde_json::to_vec(value).map_or(usize::MAX, |bytes| bytes.len())
            }
            keel_core::Payload::Binary(bytes) => bytes.len(),
        };
        if size_bytes > limits.payload_bytes_max {
            return Err(Error::Core(keel_core::Error::TooLarge {
                field: "data",
                size_bytes,
                limit_bytes: limits.payload_bytes_max,
            }));
        }
    }
    Ok(())
}
