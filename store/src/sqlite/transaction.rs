//! One group's transaction: each request applied on its own, undone alone if refused.
//!
//! Appends check event ids the cheap way, through the unique index's constraint; only a
//! failed insert or a version conflict looks further, for an earlier identical append
//! (answered as it was, if its content is the same too) or the reused id (as the memory
//! store names it).
//!
//! Only a request that can be refused after one of its writes completed (an append of
//! several events, whose later id may clash) runs inside a savepoint. Every other
//! request checks before it writes, and SQLite undoes a failed statement by itself, so
//! a refusal leaves nothing to roll back. The savepoint is not free: each page the
//! request touches is first copied to the statement journal, and the `SAVEPOINT` and
//! `RELEASE` statements run besides; for a one-event append that was about a sixth of
//! the writer's instructions (callgrind).

use std::collections::HashSet;

use keel_core::EventId;
use rusqlite::{Connection, ErrorCode, OptionalExtension, Statement, params};

use super::failure::sqlite_with;
use super::row::{EventRow, SAME_CONTENT};
use super::writer::{Answer, Append, Op};
use super::{sql_bound, sql_int, sqlite, storage};
use crate::error::Error;
use crate::repeat::{self, Held};
use crate::{Appended, READ_LIMIT_MAX, Trim, check_expected};

/// The finished instances a purge removes, smallest stream ids first (in the order of
/// the table's key).
const PURGE_CHOOSE: &str = "SELECT stream FROM instances \
     WHERE finished = 1 AND updated_ns < ?1 ORDER BY stream LIMIT ?2";

/// [`PURGE_CHOOSE`] of one kind.
const PURGE_CHOOSE_KIND: &str = "SELECT stream FROM instances \
     WHERE finished = 1 AND kind = ?3 AND updated_ns < ?1 ORDER BY stream LIMIT ?2";

/// The statements of every append, prepared once for the writer thread's life.
///
/// `prepare_cached` hashes the SQL text and moves the statement out of its LRU list and
/// back on each use, and clears its bindings; for a one-event append that was about a
/// tenth of the writer's instructions (callgrind).
pub(crate) struct Statements<'c> {
    insert_event: Statement<'c>,
    stream_version: Statement<'c>,
    set_stream_version: Statement<'c>,
    insert_intent: Statement<'c>,
    set_instance: Statement<'c>,
}

impl<'c> Statements<'c> {
    /// The statements, or SQLite's error: the writer cannot run without them whatever
    /// its class (see `writer`).
    pub(crate) fn prepare(connection: &'c Connection) -> rusqlite::Result<Self> {
        let prepare = |sql: &str| connection.prepare(sql);
        Ok(Self {
            insert_event: prepare(
                "INSERT INTO events (position, stream, version, id, event_type, source, \
                 target, time_ns, correlation_id, causation_id, subject, sequence, \
                 schema_version, priority, metadata, payload) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            )?,
            stream_version: prepare("SELECT version FROM streams WHERE stream = ?1")?,
            set_stream_version: prepare(
                "INSERT INTO streams (stream, version) VALUES (?1, ?2) \
                 ON CONFLICT (stream) DO UPDATE SET version = excluded.version",
            )?,
            insert_intent: prepare(
                "INSERT OR IGNORE INTO outbox (intent_id, intent) VALUES (?1, ?2)",
            )?,
            set_instance: prepare(
                "INSERT INTO instances (stream, kind, status, finished, version, updated_ns, \
                 position) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT (stream) DO UPDATE SET kind = excluded.kind, \
                 status = excluded.status, finished = excluded.finished, \
                 version = excluded.version, updated_ns = excluded.updated_ns, \
                 position = excluded.position",
            )?,
        })
    }
}

/// One group's transaction: the head position as it moves, request by request.
pub(crate) struct Transaction<'t, 'c> {
    connection: &'c Connection,
    statements: &'t mut Statements<'c>,
    head: u64,
    head_at_start: u64,
    /// Whether any event was ever trimmed; if not, no id lookup in `trimmed_ids` is
    /// needed before inserting.
    trimmed_any: bool,
}

/// A request's refusal before or during its writes.
enum Refusal {
    /// Answered to the request; its savepoint is rolled back.
    Error(Error),
    /// A uniqueness constraint failed on an insert: find out which id, then roll back.
    Constraint(rusqlite::Error),
}

impl Refusal {
    /// The refusal as the error it is when it cannot be answered to its request alone.
    fn into_error(self) -> Error {
        match self {
            Self::Error(error) => error,
            Self::Constraint(error) => sqlite(error),
        }
    }
}

impl From<Error> for Refusal {
    fn from(error: Error) -> Self {
        Self::Error(error)
    }
}

impl From<rusqlite::Error> for Refusal {
    fn from(error: rusqlite::Error) -> Self {
        if error.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) {
            Self::Constraint(error)
        } else {
            Self::Error(sqlite(error))
        }
    }
}

impl<'t, 'c> Transaction<'t, 'c> {
    pub(crate) fn begin(
        connection: &'c Connection,
        statements: &'t mut Statements<'c>,
    ) -> Result<Self, Error> {
        // IMMEDIATE takes the write lock now, so the head read below cannot go stale
        // (another process writing the same file waits for it, or we wait for it).
        connection
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(sqlite)?;
        let read = || -> Result<(u64, bool), Error> {
            let head = super::schema::head(connection)?;
            let trimmed_any: bool = connection
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM trimmed_ids)")
                .and_then(|mut s| s.query_row([], |row| row.get(0)))
                .map_err(sqlite)?;
            Ok((head, trimmed_any))
        };
        match read() {
            Ok((head, trimmed_any)) => Ok(Self {
                connection,
                statements,
                head,
                head_at_start: head,
                trimmed_any,
            }),
            Err(error) => {
                let _ = connection.execute_batch("ROLLBACK");
                Err(error)
            }
        }
    }

    /// Applies `op` so that a refusal undoes all of it and nothing else: inside its own
    /// savepoint if it needs one (see the module docs). The outer error is fatal to the
    /// group.
    pub(crate) fn apply_isolated(&mut self, op: &Op) -> Result<Result<Answer, Error>, Error> {
        let savepoint = op.refusable_after_writing();
        if savepoint {
            self.execute("SAVEPOINT request")?;
        }
        let head = self.head;
        let changes = self.connection.total_changes();
        let refusal = match self.apply(op) {
            Ok(answer) => {
                if savepoint {
                    self.execute("RELEASE request")?;
                }
                return Ok(Ok(answer));
            }
            Err(refusal) => refusal,
        };
        self.head = head;
        if self.connection.is_autocommit() {
            // SQLite rolled the whole transaction back (a full disk, an I/O error, a
            // busy database, no memory): the group fails, and with the class of the
            // error that did it, so a full disk stays worth trying again. Checked before
            // the savepoint statements, which would only fail with "no such savepoint".
            return Err(rolled_back(refusal.into_error()));
        }
        if savepoint {
            self.execute("ROLLBACK TO request")?;
            self.execute("RELEASE request")?;
        } else if self.connection.total_changes() != changes {
            // A statement of the request completed before another failed, and without
            // a savepoint its rows cannot be taken back alone. Only an I/O-like failure
            // gets here (the request's own refusals come before its writes); the
            // group is dropped rather than commit half a request.
            return Err(refusal.into_error());
        }
        Ok(match (refusal, op) {
            (Refusal::Error(error), _) => Err(error),
            (Refusal::Constraint(error), Op::Append(append)) => self.explain(append, &error),
            (Refusal::Constraint(error), _) => Err(sqlite(error)),
        })
    }

    fn apply(&mut self, op: &Op) -> Result<Answer, Refusal> {
        match op {
            Op::Append(append) => self.append(append),
            Op::CompleteIntents { ids } => {
                let mut statement = self
                    .connection
                    .prepare_cached("DELETE FROM outbox WHERE intent_id = ?1")?;
                for id in ids {
                    statement.execute([id])?;
                }
                Ok(Answer::Done)
            }
            Op::SaveSnapshot {
                stream,
                version,
                state,
            } => {
                self.connection
                    .prepare_cached(
                        "INSERT INTO snapshots (stream, version, state) VALUES (?1, ?2, ?3) \
                         ON CONFLICT (stream) DO UPDATE SET version = excluded.version, \
                         state = excluded.state",
                    )?
                    .execute(params![stream, version, state])?;
                Ok(Answer::Done)
            }
            Op::SetMetadata { stream, metadata } => {
                self.connection
                    .prepare_cached(
                        "INSERT INTO stream_metadata (stream, metadata) VALUES (?1, ?2) \
                         ON CONFLICT (stream) DO UPDATE SET metadata = excluded.metadata",
                    )?
                    .execute(params![stream, metadata])?;
                Ok(Answer::Done)
            }
            Op::Trim { stream, trim } => self.trim(stream, *trim),
            Op::PurgeFinished {
                kind,
                before_ns,
                limit,
            } => self.purge_finished(kind.as_deref(), *before_ns, *limit),
            Op::SaveProjection {
                name,
                expected,
                checkpoint,
                model,
            } => {
                let actual: Option<i64> = self
                    .connection
                    .prepare_cached("SELECT checkpoint FROM projections WHERE name = ?1")?
                    .query_row([name], |row| row.get(0))
                    .optional()?;
                let actual = unsigned(actual.unwrap_or(0))?;
                if actual != *expected {
                    return Err(Refusal::Error(Error::ProjectionConflict {
                        name: name.clone(),
                        expected: *expected,
                        actual,
                    }));
                }
                self.connection
                    .prepare_cached(
                        "INSERT INTO projections (name, checkpoint, model) VALUES (?1, ?2, ?3) \
                         ON CONFLICT (name) DO UPDATE SET checkpoint = excluded.checkpoint, \
                         model = excluded.model",
                    )?
                    .execute(params![name, checkpoint, model])?;
                Ok(Answer::Done)
            }
        }
    }

    /// Appends, checking ids the cheap way: the insert's unique constraint. Only a
    /// version conflict or a failed insert looks for an earlier identical append (see
    /// [`Self::explain`]); once events were trimmed, their ids have no row for the
    /// constraint to trip on, so every id is looked up first.
    fn append(&mut self, append: &Append) -> Result<Answer, Refusal> {
        if self.trimmed_any
            && let Some(earlier) = self.earlier_append(append)?
        {
            return Ok(Answer::Appended(earlier));
        }
        let version = self.version(append.stream.as_str())?;
        if let Err(conflict) = check_expected(&append.stream, append.expected, version) {
            // A repeat of an earlier append is answered as before, whatever the stream's
            // version is now (the memory store checks for repeats first).
            return match self.earlier_append(append)? {
                Some(earlier) => Ok(Answer::Appended(earlier)),
                None => Err(Refusal::Error(conflict)),
            };
        }
        if self.trimmed_any {
            for row in &append.events {
                if self.locate(&row.id)?.is_some() {
                    return Err(Refusal::Error(self.duplicate(append, &"a stored id")));
                }
            }
        }
        let first_position = self.head + 1;
        let count = append.events.len() as u64;
        // Refused here, before the first write, if out of range: positions and versions
        // below these bounds then fit too.
        let last_position = sql_int(self.head + count, "position")?;
        let last_version = sql_int(version + count, "version")?;
        let (first_position_sql, first_version_sql) = (
            last_position - count as i64 + 1,
            last_version - count as i64 + 1,
        );
        if !append.events.is_empty() {
            let insert = &mut self.statements.insert_event;
            for (offset, row) in (0_i64..).zip(&append.events) {
                let place: [&dyn rusqlite::ToSql; 3] = [
                    &(first_position_sql + offset),
                    &append.stream.as_str(),
                    &(first_version_sql + offset),
                ];
                let columns = place.into_iter().chain(row.envelope_params());
                insert.execute(rusqlite::params_from_iter(columns))?;
            }
            self.statements
                .set_stream_version
                .execute(params![append.stream.as_str(), last_version])?;
            // One upsert per marked append, whatever the batch's size: only the last
            // marked event counts. It cannot be refused (no constraint it could break),
            // so it needs no savepoint of its own.
            if let Some(mark) = &append.mark {
                self.statements.set_instance.execute(params![
                    append.stream.as_str(),
                    mark.kind,
                    mark.status,
                    mark.finished,
                    first_version_sql + mark.offset,
                    mark.time_ns,
                    first_position_sql + mark.offset,
                ])?;
            }
        }
        for (id, intent) in &append.intents {
            self.statements.insert_intent.execute([id, intent])?;
        }
        self.head += count;
        Ok(Answer::Appended(Appended {
            first_version: version + 1,
            last_version: version + count,
            first_position,
            deduplicated: false,
        }))
    }

    /// Why the insert of `append` broke a unique constraint, asked after its savepoint
    /// was rolled back: it repeats an earlier append (answered as that one was), or it
    /// reuses an id.
    fn explain(&self, append: &Append, cause: &rusqlite::Error) -> Result<Answer, Error> {
        match self.earlier_append(append)? {
            Some(earlier) => Ok(Answer::Appended(earlier)),
            None => Err(self.duplicate(append, cause)),
        }
    }

    /// If `append`'s events are stored already, in its stream at consecutive versions
    /// and with its content, that append's result (see
    /// [`repeat`](crate::repeat)). Only this path reads content back.
    fn earlier_append(&self, append: &Append) -> Result<Option<Appended>, Error> {
        let stream = append.stream.as_str();
        let held = append.events.iter().map(|row| {
            let held = match self.locate(&row.id)? {
                None => None,
                Some(found) => {
                    let in_stream = found.stream == stream;
                    Some(Held {
                        in_stream,
                        version: found.version,
                        position: found.position,
                        same_content: if in_stream {
                            self.same_content(row)?
                        } else {
                            None
                        },
                    })
                }
            };
            Ok((row.event_id(), held))
        });
        repeat::earlier_append(&append.stream, held)
    }

    /// Whether the stored event of `row`'s id has `row`'s columns; `None` if it has no
    /// row in `events` (it was trimmed).
    fn same_content(&self, row: &EventRow) -> Result<Option<bool>, Error> {
        self.connection
            .prepare_cached(SAME_CONTENT)
            .and_then(|mut s| {
                s.query_row(rusqlite::params_from_iter(row.envelope_params()), |r| {
                    r.get(0)
                })
                .optional()
            })
            .map_err(sqlite)
    }

    /// Names the reused id of `append` (none of whose rows is stored), as the memory
    /// store would: the first of its ids stored before, else the first repeated in it.
    fn duplicate(&self, append: &Append, cause: &dyn std::fmt::Display) -> Error {
        let duplicate = |id: EventId| Error::DuplicateEventId { id: id.to_string() };
        for row in &append.events {
            match self.locate(&row.id) {
                Ok(Some(_)) => return duplicate(row.event_id()),
                Ok(None) => {}
                Err(error) => return error,
            }
        }
        let mut seen = HashSet::new();
        if let Some(row) = append.events.iter().find(|row| !seen.insert(row.id)) {
            return duplicate(row.event_id());
        }
        storage(format!(
            "an append to stream `{}` failed ({cause}) though no event id repeats: the store may be damaged",
            append.stream
        ))
    }

    /// Where an event id is stored, trimmed or not.
    fn locate(&self, id: &[u8; 16]) -> Result<Option<Located>, Error> {
        let found: Option<(String, i64, i64)> = self
            .connection
            .prepare_cached(
                "SELECT stream, version, position FROM events WHERE id = ?1 \
                 UNION ALL SELECT stream, version, position FROM trimmed_ids WHERE id = ?1",
            )
            .and_then(|mut s| {
                s.query_row([&id[..]], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
                    .optional()
            })
            .map_err(sqlite)?;
        found
            .map(|(stream, version, position)| {
                Ok(Located {
                    stream,
                    version: unsigned(version)?,
                    position: unsigned(position)?,
                })
            })
            .transpose()
    }

    fn version(&mut self, stream: &str) -> Result<u64, Error> {
        let version: Option<i64> = self
            .statements
            .stream_version
            .query_row([stream], |row| row.get(0))
            .optional()
            .map_err(sqlite)?;
        unsigned(version.unwrap_or(0))
    }

    /// Removes the events `trim` selects, keeping their ids in `trimmed_ids`.
    fn trim(&mut self, stream: &str, trim: Trim) -> Result<Answer, Refusal> {
        let version = self.version(stream)?;
        let below = match trim {
            Trim::KeepLast(keep) => version.saturating_sub(keep).saturating_add(1),
            Trim::BeforeVersion(before) => before,
            // Within a stream positions grow with versions, so the events below a
            // position are those below the version of its first event at or after it
            // (all of them if there is none); one version bound serves every variant.
            Trim::BeforePosition(position) => {
                let first_at: Option<i64> = self
                    .connection
                    .prepare_cached(
                        "SELECT min(version) FROM events WHERE stream = ?1 AND position >= ?2",
                    )?
                    .query_row(params![stream, sql_bound(position)], |row| row.get(0))?;
                match first_at {
                    Some(first_at) => unsigned(first_at)?,
                    None => version.saturating_add(1),
                }
            }
        };
        let below = sql_bound(below);
        self.connection
            .prepare_cached(
                "INSERT INTO trimmed_ids (id, stream, version, position) \
                 SELECT id, stream, version, position FROM events \
                 WHERE stream = ?1 AND version < ?2",
            )?
            .execute(params![stream, below])?;
        let removed = self
            .connection
            .prepare_cached("DELETE FROM events WHERE stream = ?1 AND version < ?2")?
            .execute(params![stream, below])?;
        if removed > 0 {
            self.trimmed_any = true;
        }
        Ok(Answer::Removed(removed as u64))
    }

    /// Removes up to `limit` finished instances updated before `before_ns`: their
    /// events (ids kept in `trimmed_ids`, as a trim keeps them), snapshot, metadata and
    /// index row. Their `streams` rows stay, so versions never go back.
    fn purge_finished(
        &mut self,
        kind: Option<&str>,
        before_ns: i64,
        limit: usize,
    ) -> Result<Answer, Refusal> {
        let limit = limit.min(READ_LIMIT_MAX) as i64;
        let streams: Vec<String> = {
            let (sql, kind) = match kind {
                Some(kind) => (PURGE_CHOOSE_KIND, Some(kind)),
                None => (PURGE_CHOOSE, None),
            };
            let mut statement = self.connection.prepare_cached(sql)?;
            let mut rows = match kind {
                Some(kind) => statement.query(params![before_ns, limit, kind]),
                None => statement.query(params![before_ns, limit]),
            }?;
            let mut streams = Vec::new();
            while let Some(row) = rows.next()? {
                streams.push(row.get(0)?);
            }
            streams
        };
        for stream in &streams {
            self.connection
                .prepare_cached(
                    "INSERT INTO trimmed_ids (id, stream, version, position) \
                     SELECT id, '', version, position FROM events WHERE stream = ?1",
                )?
                .execute([stream])?;
            let removed = self
                .connection
                .prepare_cached("DELETE FROM events WHERE stream = ?1")?
                .execute([stream])?;
            if removed > 0 {
                self.trimmed_any = true;
            }
            for sql in [
                "DELETE FROM snapshots WHERE stream = ?1",
                "DELETE FROM stream_metadata WHERE stream = ?1",
                "DELETE FROM instances WHERE stream = ?1",
            ] {
                self.connection.prepare_cached(sql)?.execute([stream])?;
            }
        }
        Ok(Answer::Removed(streams.len() as u64))
    }

    /// Stores the head and commits; the head after the commit.
    pub(crate) fn commit(self) -> Result<u64, Error> {
        let result = (|| {
            if self.head != self.head_at_start {
                self.connection
                    .prepare_cached("UPDATE keel_meta SET value = ?1 WHERE key = 'head'")?
                    .execute([sql_bound(self.head)])?;
            }
            self.connection.execute_batch("COMMIT")
        })();
        match result {
            Ok(()) => Ok(self.head),
            Err(error) => {
                self.abort();
                Err(sqlite_with(
                    error.sqlite_error_code(),
                    format!("the commit failed, nothing of it is stored: {error}"),
                ))
            }
        }
    }

    /// Rolls the whole transaction back (if SQLite has not already).
    pub(crate) fn abort(&self) {
        if !self.connection.is_autocommit() {
            let _ = self.connection.execute_batch("ROLLBACK");
        }
    }

    fn execute(&self, sql: &str) -> Result<(), Error> {
        let result = self
            .connection
            .prepare_cached(sql)
            .and_then(|mut s| s.execute([]));
        match result {
            // SQLite rolls the whole transaction back on some errors (a full disk, an
            // I/O error); a savepoint statement then fails, and so does the group.
            Ok(_) if !self.connection.is_autocommit() => Ok(()),
            Ok(_) => Err(storage("the transaction was rolled back by SQLite")),
            Err(error) => Err(sqlite(error)),
        }
    }
}

/// The error of a group whose transaction SQLite rolled back because of `cause`: of
/// `cause`'s class, so that a full disk stays worth trying again, and saying what
/// became of the group.
fn rolled_back(cause: Error) -> Error {
    let unavailable = cause.is_unavailable();
    let cause = match cause {
        Error::Unavailable { reason, .. } | Error::Storage { reason, .. } => reason,
        // A refusal of keel's own does not end a transaction: SQLite did, for a reason
        // it did not report to this request.
        other => format!("after the request was refused ({other})"),
    };
    let reason = format!("SQLite rolled the transaction back, nothing of it is stored: {cause}");
    if unavailable {
        Error::Unavailable {
            backend: "sqlite",
            reason,
        }
    } else {
        storage(reason)
    }
}

struct Located {
    stream: String,
    version: u64,
    position: u64,
}

fn unsigned(value: i64) -> Result<u64, Error> {
    u64::try_from(value)
        .map_err(|_| storage(format!("a stored version or position is {value}, below 0")))
}
