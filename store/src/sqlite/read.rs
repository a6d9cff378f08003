//! Reads: a small pool of read-only connections, used on tokio's blocking threads.
//!
//! In WAL mode a reader sees the last commit made before its statement began, and
//! never waits for the writer; each read here is one statement, so one snapshot.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use keel_core::{Intent, StreamId, Timestamp};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::Semaphore;

use super::row::{self, envelope_columns};
use super::{schema, sql_bound, sqlite, storage};
use crate::error::Error;
use crate::index::{InstanceEntry, InstanceQuery};
use crate::{ProjectionState, READ_LIMIT_MAX, RecordedEvent, StoredSnapshot};

const READ_STREAM: &str = concat!(
    "SELECT position, NULL, version, ",
    envelope_columns!(),
    " FROM events WHERE stream = ?1 AND version >= ?2 ORDER BY version LIMIT ?3"
);

const READ_ALL: &str = concat!(
    "SELECT position, stream, version, ",
    envelope_columns!(),
    " FROM events WHERE position >= ?1 ORDER BY position LIMIT ?2"
);

/// The rest of one unfinished stream's events after a version (`?1` stream, `?2`
/// version, `?3` limit, `?4` kind or NULL): the stream a page of
/// [`EventStore::read_unfinished`](crate::EventStore::read_unfinished) stopped in.
pub(crate) const READ_UNFINISHED_REST: &str = concat!(
    "SELECT position, stream, version, ",
    envelope_columns!(),
    " FROM events WHERE stream = ?1 AND version > ?2 AND EXISTS (",
    "SELECT 1 FROM instances AS i WHERE i.stream = ?1 AND i.finished = 0 ",
    "AND (?4 IS NULL OR i.kind = ?4)) ORDER BY version LIMIT ?3"
);

/// The events of the unfinished streams after a stream (`?1`), by stream then version
/// (`?2` limit, `?3` kind or NULL). `CROSS JOIN` makes SQLite walk the partial index of
/// unfinished rows (`instances_unfinished`) in stream order first, then read each
/// one's events through the `events (stream, version)` index: the finished streams'
/// rows and events are not touched, and the walk stops once the page is full.
pub(crate) const READ_UNFINISHED_NEXT: &str = concat!(
    "SELECT e.position, e.stream, e.version, e.id, e.event_type, e.source, e.target, ",
    "e.time_ns, e.correlation_id, e.causation_id, e.subject, e.sequence, ",
    "e.schema_version, e.priority, e.metadata, e.payload ",
    "FROM instances AS i INDEXED BY instances_unfinished CROSS JOIN events AS e ",
    "ON e.stream = i.stream WHERE i.finished = 0 AND i.stream > ?1 ",
    "AND (?3 IS NULL OR i.kind = ?3) ORDER BY i.stream, e.version LIMIT ?2"
);

/// The read-only connections, and a permit per connection so that a read waits for a
/// free one instead of opening more.
#[derive(Debug)]
pub(crate) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl Readers {
    /// Opens `count` read-only connections to the store at `path`.
    pub(crate) fn open(path: &Path, count: usize) -> Result<Self, Error> {
        let idle = (0..count)
            .map(|_| schema::open_reader(path))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            path: path.to_path_buf(),
            idle: Mutex::new(idle),
            permits: Arc::new(Semaphore::new(count)),
        })
    }

    /// Runs `read` on a free connection, on a blocking thread.
    pub(crate) fn run<T, F>(
        self: &Arc<Self>,
        read: F,
    ) -> impl Future<Output = Result<T, Error>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&Reader<'_>) -> Result<T, Error> + Send + 'static,
    {
        let readers = Arc::clone(self);
        async move {
            let permit = Arc::clone(&readers.permits)
                .acquire_owned()
                .await
                .map_err(|e| storage(e.to_string()))?;
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                let connection = readers.take()?;
                let result = read(&Reader(&connection));
                readers.give_back(connection);
                result
            })
            .await
            .map_err(|e| storage(format!("a read task failed: {e}")))?
        }
    }

    fn take(&self) -> Result<Connection, Error> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match idle {
            Some(connection) => Ok(connection),
            // A read that panicked lost its connection but gave its permit back: open a
            // replacement rather than fail every read after it.
            None => schema::open_reader(&self.path),
        }
    }

    fn give_back(&self, connection: Connection) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(connection);
    }
}

/// One read-only connection, lent for one read.
#[derive(Debug)]
pub(crate) struct Reader<'c>(&'c Connection);

impl Reader<'_> {
    pub(crate) fn read_stream(
        &self,
        stream: &StreamId,
        from: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let limit = limit.min(READ_LIMIT_MAX);
        if limit == 0 {
            return Ok(Vec::new());
        }
        // The stream's version bounds the count: size the page once instead of growing it.
        let version = self.stream_version(stream)?;
        let capacity = version.saturating_sub(from.max(1)).saturating_add(1);
        let mut statement = self.0.prepare_cached(READ_STREAM).map_err(sqlite)?;
        let mut rows = statement
            .query(params![stream.as_str(), sql_bound(from), limit as i64])
            .map_err(sqlite)?;
        let mut events =
            Vec::with_capacity(usize::try_from(capacity).map_or(limit, |c| c.min(limit)));
        while let Some(row) = rows.next().map_err(sqlite)? {
            events.push(row::decode(row, Some(stream))?);
        }
        Ok(events)
    }

    pub(crate) fn read_all(&self, from: u64, limit: usize) -> Result<Vec<RecordedEvent>, Error> {
        let limit = limit.min(READ_LIMIT_MAX);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let head = self.head()?;
        let capacity = head.saturating_sub(from.max(1)).saturating_add(1);
        let mut statement = self.0.prepare_cached(READ_ALL).map_err(sqlite)?;
        let mut rows = statement
            .query(params![sql_bound(from), limit as i64])
            .map_err(sqlite)?;
        let mut events =
            Vec::with_capacity(usize::try_from(capacity).map_or(limit, |c| c.min(limit)));
        while let Some(row) = rows.next().map_err(sqlite)? {
            events.push(row::decode(row, None)?);
        }
        Ok(events)
    }

    pub(crate) fn instances(&self, query: &InstanceQuery) -> Result<Vec<InstanceEntry>, Error> {
        let limit = query.capped_limit();
        if limit == 0 {
            return Ok(Vec::new());
        }
        // At most 24 shapes of statement, each cached once. Unfinished rows come through
        // their partial index, which is in stream order: a page needs no sort (SQLite
        // would otherwise sort every unfinished row for each page, or scan them all).
        let mut sql = String::from(
            "SELECT stream, kind, status, finished, version, updated_ns, position FROM ",
        );
        match query.finished {
            Some(false) => {
                sql.push_str("instances INDEXED BY instances_unfinished WHERE finished = 0");
            }
            Some(true) => sql.push_str("instances WHERE finished = 1"),
            None => sql.push_str("instances WHERE 1"),
        }
        let mut values: Vec<Value> = Vec::with_capacity(4);
        let filters = [
            ("kind =", query.kind.clone().map(Value::Text)),
            ("status =", query.status.clone().map(Value::Text)),
            (
                "stream >",
                query
                    .after
                    .as_ref()
                    .map(|s| Value::Text(s.as_str().to_owned())),
            ),
        ];
        for (condition, value) in filters {
            if let Some(value) = value {
                values.push(value);
                sql.push_str(&format!(" AND {condition} ?{}", values.len()));
            }
        }
        values.push(Value::Integer(limit as i64));
        sql.push_str(&format!(" ORDER BY stream LIMIT ?{}", values.len()));
        let mut statement = self.0.prepare_cached(&sql).map_err(sqlite)?;
        let mut rows = statement
            .query(rusqlite::params_from_iter(values))
            .map_err(sqlite)?;
        let mut entries = Vec::new();
        while let Some(row) = rows.next().map_err(sqlite)? {
            entries.push(instance_entry(row)?);
        }
        Ok(entries)
    }

    pub(crate) fn read_unfinished(
        &self,
        kind: Option<&str>,
        after: Option<(&str, u64)>,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let limit = limit.min(READ_LIMIT_MAX);
        let mut events = Vec::new();
        if limit == 0 {
            return Ok(events);
        }
        if let Some((stream, version)) = after {
            let mut statement = self
                .0
                .prepare_cached(READ_UNFINISHED_REST)
                .map_err(sqlite)?;
            let params = params![stream, sql_bound(version), limit as i64, kind];
            let mut rows = statement.query(params).map_err(sqlite)?;
            while let Some(row) = rows.next().map_err(sqlite)? {
                events.push(row::decode(row, None)?);
            }
        }
        let left = limit - events.len();
        if left == 0 {
            return Ok(events);
        }
        let last = after.map_or("", |(stream, _)| stream);
        let mut statement = self
            .0
            .prepare_cached(READ_UNFINISHED_NEXT)
            .map_err(sqlite)?;
        let mut rows = statement
            .query(params![last, left as i64, kind])
            .map_err(sqlite)?;
        while let Some(row) = rows.next().map_err(sqlite)? {
            events.push(row::decode(row, None)?);
        }
        Ok(events)
    }

    pub(crate) fn stream_version(&self, stream: &StreamId) -> Result<u64, Error> {
        let version: Option<i64> = self
            .0
            .prepare_cached("SELECT version FROM streams WHERE stream = ?1")
            .and_then(|mut s| s.query_row([stream.as_str()], |row| row.get(0)).optional())
            .map_err(sqlite)?;
        unsigned(version.unwrap_or(0), "stream version")
    }

    pub(crate) fn head(&self) -> Result<u64, Error> {
        schema::head(self.0)
    }

    pub(crate) fn unindexed_head(&self) -> Result<u64, Error> {
        schema::unindexed_head(self.0)
    }

    pub(crate) fn pending_intents(&self, limit: usize) -> Result<Vec<Intent>, Error> {
        let limit = limit.min(READ_LIMIT_MAX);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut statement = self
            .0
            .prepare_cached("SELECT intent FROM outbox ORDER BY seq LIMIT ?1")
            .map_err(sqlite)?;
        let mut rows = statement.query([limit as i64]).map_err(sqlite)?;
        let mut intents = Vec::new();
        while let Some(row) = rows.next().map_err(sqlite)? {
            let text = row
                .get_ref(0)
                .and_then(|v| Ok(v.as_str()?))
                .map_err(sqlite)?;
            let intent = serde_json::from_str(text)
                .map_err(|e| storage(format!("a pending intent does not decode: {e}")))?;
            intents.push(intent);
        }
        Ok(intents)
    }

    pub(crate) fn load_snapshot(&self, stream: &StreamId) -> Result<Option<StoredSnapshot>, Error> {
        let found: Option<(i64, String)> = self
            .0
            .prepare_cached("SELECT version, state FROM snapshots WHERE stream = ?1")
            .and_then(|mut s| {
                s.query_row([stream.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()
            })
            .map_err(sqlite)?;
        let Some((version, state)) = found else {
            return Ok(None);
        };
        Ok(Some(StoredSnapshot {
            stream: stream.clone(),
            version: unsigned(version, "snapshot version")?,
            state: json(&state, "snapshot")?,
        }))
    }

    pub(crate) fn metadata(&self, stream: &StreamId) -> Result<Option<serde_json::Value>, Error> {
        let found: Option<String> = self
            .0
            .prepare_cached("SELECT metadata FROM stream_metadata WHERE stream = ?1")
            .and_then(|mut s| s.query_row([stream.as_str()], |row| row.get(0)).optional())
            .map_err(sqlite)?;
        found.map(|text| json(&text, "stream metadata")).transpose()
    }

    pub(crate) fn load_projection(&self, name: &str) -> Result<Option<ProjectionState>, Error> {
        let found: Option<(i64, String)> = self
            .0
            .prepare_cached("SELECT checkpoint, model FROM projections WHERE name = ?1")
            .and_then(|mut s| {
                s.query_row([name], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()
            })
            .map_err(sqlite)?;
        let Some((checkpoint, model)) = found else {
            return Ok(None);
        };
        Ok(Some(ProjectionState {
            checkpoint: unsigned(checkpoint, "projection checkpoint")?,
            model: json(&model, "projection model")?,
        }))
    }
}

/// A row of `instances`, in the column order `Reader::instances` selects.
fn instance_entry(row: &rusqlite::Row<'_>) -> Result<InstanceEntry, Error> {
    let stream: String = row.get(0).map_err(sqlite)?;
    let finished: i64 = row.get(3).map_err(sqlite)?;
    Ok(InstanceEntry {
        stream: StreamId::from(stream),
        kind: row.get(1).map_err(sqlite)?,
        status: row.get(2).map_err(sqlite)?,
        finished: finished != 0,
        version: unsigned(row.get(4).map_err(sqlite)?, "instance version")?,
        updated: Timestamp::from_unix_nanos(row.get(5).map_err(sqlite)?),
        position: unsigned(row.get(6).map_err(sqlite)?, "instance position")?,
    })
}

fn unsigned(value: i64, what: &str) -> Result<u64, Error> {
    u64::try_from(value).map_err(|_| storage(format!("the stored {what} {value} is below 0")))
}

fn json(text: &str, what: &str) -> Result<serde_json::Value, Error> {
    serde_json::from_str(text)
        .map_err(|e| storage(format!("the stored {what} does not decode: {e}")))
}
