//! Opening the file: telling a keel store from anything else, creating the schema,
//! and setting the connection pragmas.
//!
//! Nothing is written before the file is known to be a keel store or an empty
//! database: a foreign database keeps its journal mode, its header and its tables.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};

use super::failure::sqlite_with;
use super::{sqlite, storage};
use crate::error::Error;

/// The version of the file layout this build writes and reads.
///
/// Stored in the file's `user_version`; a file with a larger one is refused with
/// [`Error::SchemaTooNew`] rather than misread.
///
/// - 1: the first layout.
/// - 2: adds `instances`, the index of instances (see [`crate::index`]); a version-1
///   file is migrated when opened, its marks indexed.
pub const SCHEMA_VERSION: u32 = 2;

/// SQLite's `application_id` of a keel store: "keel" in ASCII.
pub(crate) const APPLICATION_ID: i32 = 0x6B65_656C;

/// How long a connection waits for another one's lock (another process on the same
/// file, or a checkpoint) before the operation fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The tables of schema version 1, as keel wrote them before the index; a new file gets
/// these and [`INSTANCES`], in one transaction with the version stamp.
pub(crate) const SCHEMA_V1: &str = "
CREATE TABLE keel_meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO keel_meta (key, value) VALUES ('head', 0);

CREATE TABLE events (
    position       INTEGER PRIMARY KEY,
    stream         TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    id             BLOB    NOT NULL UNIQUE,
    event_type     TEXT    NOT NULL,
    source         TEXT    NOT NULL,
    target         TEXT,
    time_ns        INTEGER NOT NULL,
    correlation_id BLOB    NOT NULL,
    causation_id   BLOB,
    subject        TEXT,
    sequence       INTEGER NOT NULL,
    schema_version INTEGER NOT NULL,
    priority       TEXT    NOT NULL,
    metadata       TEXT,
    payload        BLOB    NOT NULL,
    UNIQUE (stream, version)
);

CREATE TABLE trimmed_ids (
    id       BLOB PRIMARY KEY,
    stream   TEXT    NOT NULL,
    version  INTEGER NOT NULL,
    position INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE streams (
    stream  TEXT PRIMARY KEY,
    version INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE stream_metadata (
    stream   TEXT PRIMARY KEY,
    metadata TEXT NOT NULL
);

CREATE TABLE outbox (
    seq       INTEGER PRIMARY KEY,
    intent_id TEXT NOT NULL UNIQUE,
    intent    TEXT NOT NULL
);

CREATE TABLE snapshots (
    stream  TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    state   TEXT    NOT NULL
);

CREATE TABLE projections (
    name       TEXT PRIMARY KEY,
    checkpoint INTEGER NOT NULL,
    model      TEXT    NOT NULL
);
";

/// The index of instances (schema version 2): one row per stream whose events carry an
/// [`InstanceMark`](crate::InstanceMark), from its last marked event, in stream order
/// (the key), which serves listing pages. One partial index holds the unfinished
/// streams only, in stream order: what recovery walks. Nothing else is indexed: each
/// index costs the single writer a b-tree change per start and per end of every
/// instance (with two more, 3-step sagas ran a quarter slower), and listing by kind or
/// status is an operator's query, which may filter the rows it passes.
const INSTANCES: &str = "
CREATE TABLE instances (
    stream     TEXT    PRIMARY KEY,
    kind       TEXT    NOT NULL,
    status     TEXT    NOT NULL,
    finished   INTEGER NOT NULL,
    version    INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL,
    position   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX instances_unfinished ON instances (stream) WHERE finished = 0;
";

/// Migration from version 1: the index, filled from the marks already stored (the last
/// marked event of each stream; SQLite takes a bare column's value from the row that
/// `max()` picked; the end as a JSON boolean or as the text `true` or `false`, as
/// `InstanceMark::of` reads it). Stores written before marks existed have none, so
/// their index starts empty, and `unindexed_head` keeps the head from before the index,
/// so that readers know the events up to there may be unmarked.
pub(crate) const MIGRATE_1_TO_2: &str = "
INSERT OR REPLACE INTO keel_meta (key, value)
SELECT 'unindexed_head', value FROM keel_meta WHERE key = 'head';
INSERT INTO instances (stream, kind, status, finished, version, updated_ns, position)
SELECT stream, json_extract(metadata, '$.keelkind'), json_extract(metadata, '$.keelstatus'),
       json_extract(metadata, '$.keelfinished') IN (1, 'true'), version, time_ns, max(position)
FROM events
WHERE metadata IS NOT NULL
  AND json_type(metadata, '$.keelkind') = 'text'
  AND json_type(metadata, '$.keelstatus') = 'text'
  AND (json_type(metadata, '$.keelfinished') IN ('true', 'false')
       OR json_extract(metadata, '$.keelfinished') IN ('true', 'false'))
GROUP BY stream;
";

/// The tables every keel store has (version 1 on).
const TABLES: [&str; 8] = [
    "keel_meta",
    "events",
    "trimmed_ids",
    "streams",
    "stream_metadata",
    "outbox",
    "snapshots",
    "projections",
];

/// What the file turned out to be.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// An empty database: a new or zero-length file.
    Empty,
    /// A keel store of this build's schema.
    Current,
    /// A keel store of an older schema this build migrates.
    Older(u32),
}

/// Every connection reads the file with `read()` calls, never through a memory map: with
/// a map, an I/O error on the file (a failing disk, a full or vanished network mount, a
/// file truncated behind SQLite's back) arrives as SIGBUS and kills the whole process,
/// where a read call fails with an error the store reports as [`Error::Unavailable`]. The
/// page caches keep hot pages in memory either way; a map would only save copying them.
const NO_MMAP: &str = "PRAGMA mmap_size = 0;";

/// `PRAGMA synchronous` reads `FULL` as 2: each commit fsyncs the WAL.
pub(crate) const SYNCHRONOUS_FULL: i64 = 2;
/// `PRAGMA synchronous` reads `NORMAL` as 1.
const SYNCHRONOUS_NORMAL: i64 = 1;

/// Opens the write connection: checks the file, creates the schema if the database is
/// empty, then switches to WAL and sets the pragmas.
pub(crate) fn open_writer(path: &Path, synchronous_full: bool) -> Result<Connection, Error> {
    let mut connection = Connection::open(path).map_err(|e| open_error(path, e))?;
    connection.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
    match inspect(&connection, path)? {
        Found::Empty => create(&mut connection, path)?,
        Found::Older(_) => migrate(&mut connection, path)?,
        Found::Current => {}
    }
    // Only now, with the file known to be keel's, change its journal mode.
    let mode: String = connection
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(|e| open_error(path, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(storage(format!(
            "`{}` cannot use WAL mode (it stays in `{mode}`); put it on a local file system",
            path.display()
        )));
    }
    let (synchronous, level) = if synchronous_full {
        ("FULL", SYNCHRONOUS_FULL)
    } else {
        ("NORMAL", SYNCHRONOUS_NORMAL)
    };
    connection
        .pragma_update(None, "synchronous", synchronous)
        .map_err(sqlite)?;
    // SQLite ignores a pragma it does not know without an error; read it back, so that
    // a store never claims a durability its connection does not have.
    let set: i64 = connection
        .pragma_query_value(None, "synchronous", |row| row.get(0))
        .map_err(sqlite)?;
    if set != level {
        return Err(storage(format!(
            "SQLite kept synchronous={set} when asked for {synchronous} ({level})"
        )));
    }
    // A 64 MiB page cache keeps the hot index pages of a large store in memory; the WAL
    // is truncated back to 64 MiB after a checkpoint, so one huge batch does not leave a
    // huge file behind.
    connection
        .execute_batch("PRAGMA cache_size = -65536; PRAGMA journal_size_limit = 67108864;")
        .and_then(|()| connection.execute_batch(NO_MMAP))
        .map_err(sqlite)?;
    connection.set_prepared_statement_cache_capacity(64);
    Ok(connection)
}

/// Opens a read-only connection to a store the writer has already opened.
pub(crate) fn open_reader(path: &Path) -> Result<Connection, Error> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let connection = Connection::open_with_flags(path, flags).map_err(|e| open_error(path, e))?;
    connection.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
    connection
        .execute_batch("PRAGMA cache_size = -32768;")
        .and_then(|()| connection.execute_batch(NO_MMAP))
        .map_err(sqlite)?;
    connection.set_prepared_statement_cache_capacity(32);
    Ok(connection)
}

/// The head position stored in the file.
pub(crate) fn head(connection: &Connection) -> Result<u64, Error> {
    let head: i64 = connection
        .prepare_cached("SELECT value FROM keel_meta WHERE key = 'head'")
        .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
        .map_err(sqlite)?;
    u64::try_from(head).map_err(|_| storage(format!("the stored head {head} is below 0")))
}

/// The head the file had when it was migrated to the index of instances; 0 if it was
/// created with the index.
pub(crate) fn unindexed_head(connection: &Connection) -> Result<u64, Error> {
    let head: Option<i64> = connection
        .prepare_cached("SELECT value FROM keel_meta WHERE key = 'unindexed_head'")
        .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
        .optional()
        .map_err(sqlite)?;
    let head = head.unwrap_or(0);
    u64::try_from(head).map_err(|_| storage(format!("the stored unindexed head {head} is below 0")))
}

/// Tells what the file is, writing nothing.
fn inspect(connection: &Connection, path: &Path) -> Result<Found, Error> {
    let not_a_store = |reason: String| Error::NotAStore {
        location: path.display().to_string(),
        reason,
    };
    // The first read of the header: a file that is not SQLite fails here.
    let application_id: i32 = connection
        .pragma_query_value(None, "application_id", |row| row.get(0))
        .map_err(|e| open_error(path, e))?;
    let version: i64 = connection
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|e| open_error(path, e))?;
    let tables = table_names(connection).map_err(|e| open_error(path, e))?;
    if application_id != APPLICATION_ID {
        if application_id == 0 && version == 0 && tables.is_empty() {
            return Ok(Found::Empty);
        }
        return Err(not_a_store(format!(
            "it is a SQLite database of another application (application_id {application_id:#x}, {} tables); keel never changes a database it did not create",
            tables.len()
        )));
    }
    let found = u32::try_from(version).map_err(|_| {
        not_a_store(format!(
            "its schema version {version} is not one keel writes"
        ))
    })?;
    if found > SCHEMA_VERSION {
        return Err(Error::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == 0 {
        // Version 1 is the first; an older stamp with keel's id was never written.
        return Err(not_a_store(format!(
            "its schema version {found} is not one keel writes"
        )));
    }
    let since_2 = (found >= 2).then_some("instances");
    if let Some(missing) = TABLES
        .iter()
        .copied()
        .chain(since_2)
        .find(|table| !tables.iter().any(|t| t == table))
    {
        return Err(not_a_store(format!(
            "it is marked as a keel store but has no `{missing}` table: it is damaged"
        )));
    }
    if found < SCHEMA_VERSION {
        return Ok(Found::Older(found));
    }
    Ok(Found::Current)
}

/// Creates the schema in one transaction, re-checking inside it that the database is
/// still empty (another process may have created it meanwhile).
fn create(connection: &mut Connection, path: &Path) -> Result<(), Error> {
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| open_error(path, e))?;
    match inspect(&transaction, path)? {
        Found::Current => return Ok(()),
        Found::Older(_) => {
            // An older keel created it meanwhile: migrate what it made.
            drop(transaction);
            return migrate(connection, path);
        }
        Found::Empty => {}
    }
    transaction.execute_batch(SCHEMA_V1).map_err(sqlite)?;
    transaction.execute_batch(INSTANCES).map_err(sqlite)?;
    transaction
        .pragma_update(None, "application_id", APPLICATION_ID)
        .map_err(sqlite)?;
    transaction
        .pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(sqlite)?;
    transaction.commit().map_err(sqlite)
}

/// Brings an older store to [`SCHEMA_VERSION`] in one transaction, re-checking inside
/// it (another process may have migrated it meanwhile). A failure leaves the file as
/// it was.
fn migrate(connection: &mut Connection, path: &Path) -> Result<(), Error> {
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| open_error(path, e))?;
    let from = match inspect(&transaction, path)? {
        Found::Older(from) => from,
        // Migrated meanwhile, or emptied (which `inspect` before this never saw).
        Found::Current | Found::Empty => return Ok(()),
    };
    debug_assert_eq!(from, 1, "version 1 is the only one older than 2");
    transaction
        .execute_batch(INSTANCES)
        .and_then(|()| transaction.execute_batch(MIGRATE_1_TO_2))
        .map_err(sqlite)?;
    transaction
        .pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(sqlite)?;
    transaction.commit().map_err(sqlite)
}

/// `sqlite_master`'s table names.
fn table_names(connection: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut statement =
        connection.prepare("SELECT name FROM sqlite_master WHERE type = 'table'")?;
    let names = statement.query_map([], |row| row.get(0))?;
    names.collect()
}

/// An open or header-read failure: a file that is not a database, or a damaged one, is
/// not a store; anything else is classed like every SQLite failure (see
/// `failure::is_transient`): a file that cannot be opened, or is busy, is unavailable.
fn open_error(path: &Path, error: rusqlite::Error) -> Error {
    match error.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => Error::NotAStore {
            location: path.display().to_string(),
            reason: format!("{error}"),
        },
        code => sqlite_with(code, format!("cannot open `{}`: {error}", path.display())),
    }
}
