//! The SQLite event store: keel's embedded default, one file, durable, group-committed.
//!
//! [`SqliteStore`] keeps the [`EventStore`] contract in a single SQLite database file.
//!
//! # Durability
//!
//! The file runs in WAL mode with `synchronous=FULL` (the default of
//! [`SqliteConfig::synchronous_full`]): every commit fsyncs the write-ahead log before
//! SQLite reports it done, and a write is acknowledged only after its commit returned.
//! So an acknowledged append survives a crash or a power cut. With
//! `synchronous_full: false` (`synchronous=NORMAL`) a commit is still atomic and
//! survives a process crash, but the last commits before a power cut may be lost.
//!
//! # Group commit
//!
//! A durable commit costs one fsync, and an fsync costs the same for one row as for a
//! thousand (on the reference machine: about 4,400 one-row commits per second, but
//! 227,000 rows per second at 1,000 rows per commit). So every write goes to one writer
//! thread over a bounded channel. The thread takes the first request, drains whatever
//! else is already queued (up to [`SqliteConfig::group_commit_max`] requests), and runs
//! them all in one transaction, each inside its own `SAVEPOINT`: a request that fails
//! (a version conflict, a reused event id) rolls back only its own changes and gets its
//! own error. Then one `COMMIT` (one fsync) makes the whole group durable, the head
//! position moves, and only then is every request answered. Under load the queue refills
//! while a commit runs, so groups grow with the load, and nobody waits for a timer.
//!
//! Reads run on a small pool of read-only connections ([`SqliteConfig::readers`]) on
//! tokio's blocking threads (so they need a tokio runtime); WAL lets them read a
//! consistent snapshot while the writer commits. Positions are assigned by the single
//! writer in commit order, so a reader that sees position `p` sees every position below
//! it.
//!
//! Beyond the fsync, a commit costs the pages it writes to the log: an event dirties
//! about two index pages (its id's and its stream's) besides its share of the table's
//! last page, and SQLite writes each page with two write calls. On the 2-core reference
//! machine a write call costs about 5 µs, so one-event appends to many streams top out
//! near 25,000 events per second even when grouped, while batches to one stream ingest
//! about 200,000 per second. Batch where you can.
//!
//! Several processes may open the same file: each group re-reads the head position
//! under SQLite's write lock, so positions stay contiguous, but a process's
//! [`EventStore::watch_head`] moves only with its own commits.
//!
//! # Failures
//!
//! A failure that may pass is [`Error::Unavailable`]: the file busy or locked past the
//! 5 s busy timeout (another process writing it, a checkpoint), the disk full, an I/O
//! error, a file that cannot be opened, no memory. Trying the same operation again
//! later may succeed; nothing of it was stored. Anything else is [`Error::Storage`]: a
//! constraint, a damaged or foreign file, a row that does not decode, and a writer
//! thread that has stopped, which only reopening the store replaces. The table is in
//! `failure`.
//!
//! # Writer lock
//!
//! [`EventStore::lock_writer`] takes an exclusive OS file lock on `<db>.lock` beside the
//! database (the name with `.lock` appended; created if absent, never removed) and
//! writes the holder into it as JSON, for a refused locker to name. Every handle and
//! process on the host that opens the same file sees it; the operating system releases
//! it when the guard drops or the holding process ends, even by SIGKILL. File locks are
//! only as good as the file system's: keep the store on a local one.
//!
//! # File layout
//!
//! The file is marked as keel's by its SQLite `application_id` (`0x6B65656C`, "keel")
//! and versioned by its `user_version` (see [`SCHEMA_VERSION`]). Opening checks both
//! before writing anything: a file that is not SQLite, or a SQLite database of another
//! application, is [`Error::NotAStore`] and stays untouched; a newer keel schema is
//! [`Error::SchemaTooNew`].
//!
//! | table | holds |
//! | --- | --- |
//! | `keel_meta` | the head position (the last one assigned, kept when events are trimmed); for a file migrated to version 2, the head it had then (`unindexed_head`) |
//! | `events` | one row per stored event: position (the rowid), stream, version, and the envelope's fields as columns; the payload is JSON text or a binary blob |
//! | `trimmed_ids` | the ids, streams, versions and positions of trimmed events, so an id is never reused and a repeated append still deduplicates |
//! | `streams` | each stream's version (which trimming does not lower) |
//! | `stream_metadata` | each stream's metadata document |
//! | `outbox` | pending intents in insertion order, unique by intent id; completing deletes |
//! | `snapshots` | the latest snapshot per stream |
//! | `projections` | each projection's checkpoint and read model |
//! | `instances` | the index of instances: each marked stream's kind, status, finished, and its last marked event's version, time (ns) and position; keyed by stream, with a partial index of the unfinished streams alone |
//!
//! Schema version 2 added `instances`. A version-1 file is migrated when opened, in one
//! transaction: the table is created and filled from the marks its events already
//! carry (none, for a store written before marks existed: its streams stay out of the
//! index until a marked event is appended). An older keel refuses the migrated file
//! with [`Error::SchemaTooNew`].
//!
//! [`EventStore::read_unfinished`] walks a partial index of the unfinished rows of
//! `instances` in stream order from the page's cursor and, for each, reads its own
//! stream's events through the `events (stream, version)` index: finished streams'
//! rows and events are never read, and a page stops once it is full (the query plan is
//! asserted in a test).
//!
//! Envelope fields are columns rather than one JSON document: ids take 16 bytes instead
//! of 36 characters, a column read costs less than finding and parsing the field in
//! JSON, and the columns can be queried; only the payload stays JSON. The price is that
//! a field added to the envelope needs a schema version (the row codec stops compiling
//! until it is stored).
//!
//! ```no_run
//! use keel_store::EventStore;
//! use keel_store::sqlite::{SqliteConfig, SqliteStore};
//! # async fn demo() -> Result<(), keel_store::Error> {
//! let store = SqliteStore::open("orders.keel", SqliteConfig::default())?;
//! let version = store.stream_version(&"order-42".into()).await?;
//! # let _ = version;
//! # Ok(())
//! # }
//! ```

mod failure;
mod lock;
mod read;
mod row;
mod schema;
#[cfg(test)]
mod tests;
mod transaction;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use keel_core::{Envelope, ExpectedVersion, Intent, IntentId, StreamId, Timestamp};
use tokio::sync::{mpsc, oneshot, watch};

use super::index::{InstanceEntry, InstanceQuery};
use super::{
    Appended, EventStore, LockHolder, ProjectionState, RecordedEvent, StoreFuture, StoredSnapshot,
    Trim, WriterLock, check_append,
};
use crate::error::Error;
use failure::{sqlite, storage};
use read::Readers;
use writer::{Answer, Op, Request, WriterThread};

pub use schema::SCHEMA_VERSION;

/// The most readers a store opens.
const READERS_MAX: usize = 64;
/// The most requests one group commit may fold together.
const GROUP_COMMIT_MAX: usize = 65_536;

/// How a [`SqliteStore`] is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteConfig {
    /// `PRAGMA synchronous=FULL` (true, the default): an acknowledged write survives a
    /// power cut. `false` sets `NORMAL`: still atomic and safe from a process crash, but
    /// the last commits before a power cut may be lost.
    pub synchronous_full: bool,
    /// The most write requests folded into one transaction (default 1024, at most
    /// 65,536). The writer's queue holds twice as many before callers wait.
    pub group_commit_max: usize,
    /// How many read-only connections serve reads concurrently (default 2, 1 to 64).
    pub readers: usize,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            synchronous_full: true,
            group_commit_max: 1024,
            readers: 2,
        }
    }
}

impl SqliteConfig {
    fn check(&self) -> Result<(), Error> {
        if !(1..=GROUP_COMMIT_MAX).contains(&self.group_commit_max) {
            return Err(Error::InvalidConfig {
                setting: "group_commit_max",
                reason: format!(
                    "{} is out of range: use 1 to {GROUP_COMMIT_MAX} requests per commit",
                    self.group_commit_max
                ),
            });
        }
        if !(1..=READERS_MAX).contains(&self.readers) {
            return Err(Error::InvalidConfig {
                setting: "readers",
                reason: format!(
                    "{} is out of range: use 1 to {READERS_MAX} read connections",
                    self.readers
                ),
            });
        }
        Ok(())
    }
}

/// An event store in one SQLite file; cheap to clone (clones share the connections and
/// the writer thread).
///
/// Dropping the last clone closes the queue, lets the writer thread finish the requests
/// already queued, and waits for it to close the file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    // Declared before `writer` on purpose: fields drop in declaration order, so the
    // queue closes first and the writer thread, seeing it closed, finishes and exits
    // before `WriterThread`'s drop joins it.
    requests: mpsc::Sender<Request>,
    readers: Arc<Readers>,
    head: Arc<watch::Sender<u64>>,
    commits: Arc<AtomicU64>,
    #[expect(
        dead_code,
        reason = "held only for its drop, which joins the writer thread"
    )]
    writer: WriterThread,
}

impl SqliteStore {
    /// Opens the store at `path`, creating the file and its schema if absent.
    ///
    /// Synchronous: it opens the connections, checks (or creates) the schema, and starts
    /// the writer thread. A file that is not a keel store is [`Error::NotAStore`] and is
    /// left untouched; a newer keel schema is [`Error::SchemaTooNew`].
    pub fn open(path: impl AsRef<Path>, config: SqliteConfig) -> Result<Self, Error> {
        config.check()?;
        let path = path.as_ref().to_path_buf();
        let connection = schema::open_writer(&path, config.synchronous_full)?;
        let head = schema::head(&connection)?;
        let readers = Arc::new(Readers::open(&path, config.readers)?);
        let head = Arc::new(watch::Sender::new(head));
        let (requests, queue) = mpsc::channel(config.group_commit_max * 2);
        let commits = Arc::new(AtomicU64::new(0));
        let writer = WriterThread::spawn(
            connection,
            queue,
            Arc::clone(&head),
            Arc::clone(&commits),
            config.group_commit_max,
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                requests,
                readers,
                head,
                commits,
                writer,
            }),
        })
    }

    /// The path of the store's file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// How many write transactions (each one fsync) this handle's writer has committed
    /// since the store was opened. With group commit, concurrent writes share them, so
    /// this grows more slowly than the writes acknowledged: the ratio is the group size.
    pub fn commits(&self) -> u64 {
        self.inner.commits.load(Ordering::Relaxed)
    }

    /// Sends `op` to the writer thread and waits for its answer, given after the commit.
    async fn write(&self, op: Op) -> Result<Answer, Error> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .requests
            .send(Request { op, reply })
            .await
            .map_err(|_| writer::stopped())?;
        answer.await.map_err(|_| writer::stopped())?
    }
}

impl EventStore for SqliteStore {
    fn append_with_intents<'a>(
        &'a self,
        stream: &'a StreamId,
        expected: ExpectedVersion,
        events: &'a [Envelope],
        intents: &'a [Intent],
    ) -> StoreFuture<'a, Appended> {
        Box::pin(async move {
            check_append(events, intents)?;
            let op = Op::append(stream, expected, events, intents)?;
            self.write(op).await?.appended()
        })
    }

    fn read_stream<'a>(
        &'a self,
        stream: &'a StreamId,
        from: u64,
        limit: usize,
    ) -> StoreFuture<'a, Vec<RecordedEvent>> {
        let stream = stream.clone();
        Box::pin(
            self.inner
                .readers
                .run(move |reader| reader.read_stream(&stream, from, limit)),
        )
    }

    fn read_all(&self, from: u64, limit: usize) -> StoreFuture<'_, Vec<RecordedEvent>> {
        Box::pin(
            self.inner
                .readers
                .run(move |reader| reader.read_all(from, limit)),
        )
    }

    fn stream_version<'a>(&'a self, stream: &'a StreamId) -> StoreFuture<'a, u64> {
        let stream = stream.clone();
        Box::pin(
            self.inner
                .readers
                .run(move |reader| reader.stream_version(&stream)),
        )
    }

    fn head(&self) -> StoreFuture<'_, u64> {
        Box::pin(self.inner.readers.run(|reader| reader.head()))
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.inner.head.subscribe()
    }

    fn pending_intents(&self, limit: usize) -> StoreFuture<'_, Vec<Intent>> {
        Box::pin(
            self.inner
                .readers
                .run(move |reader| reader.pending_intents(limit)),
        )
    }

    fn complete_intents<'a>(&'a self, ids: &'a [IntentId]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if ids.is_empty() {
                return Ok(());
            }
            let ids = ids.iter().map(ToString::to_string).collect();
            self.write(Op::CompleteIntents { ids }).await?.done()
        })
    }

    fn save_snapshot<'a>(&'a self, snapshot: &'a StoredSnapshot) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let op = Op::save_snapshot(snapshot)?;
            self.write(op).await?.done()
        })
    }

    fn load_snapshot<'a>(
        &'a self,
        stream: &'a StreamId,
    ) -> StoreFuture<'a, Option<StoredSnapshot>> {
        let stream = stream.clone();
        Box::pin(
            self.inner
                .readers
                .run(move |reader| reader.load_snapshot(&stream)),
        )
    }

    fn set_metadata<'a>(
        &'a self,
        stream: &'a StreamId,
        metadata: &'a serde_json::Value,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let op = Op::set_metadata(stream, metadata)?;
            self.write(op).await?.done()
        })
    }

    fn metadata<'a>(&'a self, stream: &'a StreamId) -> StoreFuture<'a, Option<serde_json::Value>> {
        let stream = stream.clone();
        Box::pin(
            self.inner
                .readers
                .run(move |reader| reader.metadata(&stream)),
        )
    }

    fn trim<'a>(&'a self, stream: &'a StreamId, trim: Trim) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let op = Op::Trim {
                stream: stream.as_str().to_owned(),
                trim,
            };
            self.write(op).await?.removed()
        })
    }

    fn instances<'a>(&'a self, query: &'a InstanceQuery) -> StoreFuture<'a, Vec<InstanceEntry>> {
        let query = query.clone();
        Box::pin(
            self.inner
                .readers
                .run(move |reader| reader.instances(&query)),
        )
    }

    fn read_unfinished<'a>(
        &'a self,
        kind: Option<&'a str>,
        after: Option<(&'a StreamId, u64)>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<RecordedEvent>> {
        let kind = kind.map(str::to_owned);
        let after = after.map(|(stream, version)| (stream.as_str().to_owned(), version));
        Box::pin(self.inner.readers.run(move |reader| {
            let after = after.as_ref().map(|(s, v)| (s.as_str(), *v));
            reader.read_unfinished(kind.as_deref(), after, limit)
        }))
    }

    fn unindexed_head(&self) -> StoreFuture<'_, u64> {
        Box::pin(self.inner.readers.run(|reader| reader.unindexed_head()))
    }

    fn purge_finished<'a>(
        &'a self,
        kind: Option<&'a str>,
        updated_before: Timestamp,
        limit: usize,
    ) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let op = Op::PurgeFinished {
                kind: kind.map(str::to_owned),
                before_ns: updated_before.unix_nanos(),
                limit,
            };
            self.write(op).await?.removed()
        })
    }

    fn load_projection<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<ProjectionState>> {
        let name = name.to_owned();
        Box::pin(
            self.inner
                .readers
                .run(move |reader| reader.load_projection(&name)),
        )
    }

    fn save_projection<'a>(
        &'a self,
        name: &'a str,
        expected: u64,
        state: &'a ProjectionState,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let op = Op::save_projection(name, expected, state)?;
            self.write(op).await?.done()
        })
    }

    fn lock_writer<'a>(&'a self, holder: &'a LockHolder) -> StoreFuture<'a, WriterLock> {
        // A few system calls, taken once at start: not worth a blocking thread.
        Box::pin(std::future::ready(lock::lock(self.path(), holder)))
    }
}

/// `value` as SQLite's signed integer; versions, positions and checkpoints stay far
/// below 2^63, so a larger one is refused rather than wrapped.
fn sql_int(value: u64, what: &str) -> Result<i64, Error> {
    i64::try_from(value).map_err(|_| storage(format!("{what} {value} exceeds 2^63 - 1")))
}

/// `value` as a bound in a query: anything past SQLite's range means "past the end".
fn sql_bound(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
