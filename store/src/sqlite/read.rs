//! Reads: a small pool of read-only connections, used on tokio's blocking threads.
//!
//! In WAL mode a reader sees the last commit made before its statement began, and
//! never waits for the writer; each read here is one statement, so one snapshot.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use keel_core::{Intent, StreamId};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::Semaphore;

use super::row::{self, envelope_columns};
use super::{schema, sql_bound, sqlite, storage};
use crate::error::Error;
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

fn unsigned(value: i64, what: &str) -> Result<u64, Error> {
    u64::try_from(value).map_err(|_| storage(format!("the stored {what} {value} is below 0")))
}

fn json(text: &str, what: &str) -> Result<serde_json::Value, Error> {
    serde_json::from_str(text)
        .map_err(|e| storage(format!("the stored {what} does not decode: {e}")))
}
