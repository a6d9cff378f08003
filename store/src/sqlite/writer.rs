//! The writer thread: every write of the store, group-committed.
//!
//! One thread owns the write connection. It takes the first queued request, drains
//! whatever else is queued (up to the group limits), applies each request in one
//! transaction, commits once, publishes the new head, and only then answers. A
//! request's own failure (a version conflict, a reused event id, a projection conflict)
//! undoes that request alone (see `transaction`) and touches nobody else; a failure of
//! the transaction itself (the commit, an I/O error) fails every request of the group,
//! and none of them is stored.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use keel_core::{Envelope, ExpectedVersion, Intent, StreamId};
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot, watch};

use super::row::EventRow;
use super::transaction::{Statements, Transaction};
use super::{sql_int, storage};
use crate::error::Error;
use crate::index::last_mark;
use crate::{Appended, ProjectionState, StoredSnapshot, Trim};

/// A group stops draining the queue once it holds this many events, so that one group
/// of large batches does not hold up the acknowledgement of the requests in it.
const GROUP_EVENTS_MAX: usize = 65_536;

/// A write for the writer thread, and where its answer goes.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) op: Op,
    pub(crate) reply: oneshot::Sender<Result<Answer, Error>>,
}

/// The writes, encoded by the caller so that the writer thread only binds columns.
#[derive(Debug)]
pub(crate) enum Op {
    Append(Append),
    CompleteIntents {
        ids: Vec<String>,
    },
    SaveSnapshot {
        stream: String,
        version: i64,
        state: String,
    },
    SetMetadata {
        stream: String,
        metadata: String,
    },
    Trim {
        stream: String,
        trim: Trim,
    },
    SaveProjection {
        name: String,
        expected: u64,
        checkpoint: i64,
        model: String,
    },
    PurgeFinished {
        kind: Option<String>,
        before_ns: i64,
        limit: usize,
    },
}

/// An append, ready to bind.
#[derive(Debug)]
pub(crate) struct Append {
    pub(crate) stream: StreamId,
    pub(crate) expected: ExpectedVersion,
    pub(crate) events: Vec<EventRow>,
    /// Each intent's id as text (the outbox key) and the intent as JSON.
    pub(crate) intents: Vec<(String, String)>,
    /// The index row the append sets, from its last marked event.
    pub(crate) mark: Option<MarkRow>,
}

/// What an append's last marked event writes to `instances`.
#[derive(Debug)]
pub(crate) struct MarkRow {
    /// The event's offset in the batch: its version and position follow from it.
    pub(crate) offset: i64,
    pub(crate) kind: String,
    pub(crate) status: String,
    pub(crate) finished: bool,
    pub(crate) time_ns: i64,
}

/// What a write came to.
#[derive(Debug)]
pub(crate) enum Answer {
    Appended(Appended),
    Done,
    Removed(u64),
}

impl Op {
    pub(crate) fn append(
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[Envelope],
        intents: &[Intent],
    ) -> Result<Self, Error> {
        let rows = events
            .iter()
            .map(EventRow::encode)
            .collect::<Result<_, _>>()?;
        let intents = intents
            .iter()
            .map(|intent| {
                let json = serde_json::to_string(intent).map_err(|e| {
                    storage(format!("intent {} does not serialise: {e}", intent.id))
                })?;
                Ok((intent.id.to_string(), json))
            })
            .collect::<Result<_, Error>>()?;
        let mark = last_mark(events).map(|(offset, mark)| MarkRow {
            // Below APPEND_EVENTS_MAX, checked before: it fits.
            offset: offset as i64,
            kind: mark.kind,
            status: mark.status,
            finished: mark.finished,
            time_ns: events[offset].time.unix_nanos(),
        });
        Ok(Self::Append(Append {
            stream: stream.clone(),
            expected,
            events: rows,
            intents,
            mark,
        }))
    }

    pub(crate) fn save_snapshot(snapshot: &StoredSnapshot) -> Result<Self, Error> {
        Ok(Self::SaveSnapshot {
            stream: snapshot.stream.as_str().to_owned(),
            version: sql_int(snapshot.version, "snapshot version")?,
            state: serde_json::to_string(&snapshot.state).map_err(storage)?,
        })
    }

    pub(crate) fn set_metadata(
        stream: &StreamId,
        metadata: &serde_json::Value,
    ) -> Result<Self, Error> {
        Ok(Self::SetMetadata {
            stream: stream.as_str().to_owned(),
            metadata: serde_json::to_string(metadata).map_err(storage)?,
        })
    }

    pub(crate) fn save_projection(
        name: &str,
        expected: u64,
        state: &ProjectionState,
    ) -> Result<Self, Error> {
        Ok(Self::SaveProjection {
            name: name.to_owned(),
            expected,
            checkpoint: sql_int(state.checkpoint, "projection checkpoint")?,
            model: serde_json::to_string(&state.model).map_err(storage)?,
        })
    }

    /// Whether the request can be refused after one of its writes completed, and so
    /// needs a savepoint: only an append of several events, whose second or later id
    /// may clash once the first row is in. Every other refusal (a version or
    /// projection conflict, an id found stored, the single insert's own constraint)
    /// comes before the request's first write.
    pub(crate) fn refusable_after_writing(&self) -> bool {
        matches!(self, Self::Append(append) if append.events.len() > 1)
    }

    fn events(&self) -> usize {
        match self {
            Self::Append(append) => append.events.len(),
            _ => 1,
        }
    }
}

impl Answer {
    pub(crate) fn appended(self) -> Result<Appended, Error> {
        match self {
            Self::Appended(appended) => Ok(appended),
            other => Err(mismatch(&other)),
        }
    }

    pub(crate) fn done(self) -> Result<(), Error> {
        match self {
            Self::Done => Ok(()),
            other => Err(mismatch(&other)),
        }
    }

    pub(crate) fn removed(self) -> Result<u64, Error> {
        match self {
            Self::Removed(count) => Ok(count),
            other => Err(mismatch(&other)),
        }
    }
}

fn mismatch(answer: &Answer) -> Error {
    storage(format!(
        "the writer answered {answer:?} to another kind of request (a keel bug)"
    ))
}

/// The error every call meets once the writer thread is gone.
///
/// [`Error::Storage`], not [`Error::Unavailable`]: the thread ends only when the store
/// is dropped or it panicked, and nothing starts it again, so trying the same call
/// again on this handle can never succeed; only reopening the store can.
pub(crate) fn stopped() -> Error {
    storage("the writer thread has stopped; reopen the store")
}

/// The writer thread's handle; dropping it waits for the thread to finish the queued
/// requests and close the file (the queue must be closed first, see `Inner`).
#[derive(Debug)]
pub(crate) struct WriterThread(Option<JoinHandle<()>>);

impl WriterThread {
    pub(crate) fn spawn(
        connection: Connection,
        queue: mpsc::Receiver<Request>,
        head: Arc<watch::Sender<u64>>,
        commits: Arc<AtomicU64>,
        group_max: usize,
    ) -> Result<Self, Error> {
        let writer = Writer {
            connection,
            head,
            commits,
            group_max,
        };
        let handle = std::thread::Builder::new()
            .name("keel-sqlite-writer".to_owned())
            .spawn(move || writer.run(queue))
            .map_err(|e| storage(format!("cannot start the writer thread: {e}")))?;
        Ok(Self(Some(handle)))
    }
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            // A panic on the writer thread already failed its requests; nothing to add.
            let _ = handle.join();
        }
    }
}

struct Writer {
    connection: Connection,
    head: Arc<watch::Sender<u64>>,
    /// Transactions committed, for [`SqliteStore::commits`](super::SqliteStore::commits).
    commits: Arc<AtomicU64>,
    group_max: usize,
}

impl Writer {
    fn run(self, mut queue: mpsc::Receiver<Request>) {
        let mut statements = match Statements::prepare(&self.connection) {
            Ok(statements) => statements,
            Err(error) => {
                // The writer has no statements and never prepares them again: every
                // request would fail the same way, however passing the cause (an I/O
                // error, no memory) was. So it is `Storage`, like a stopped writer.
                let error = storage(format!(
                    "the writer thread could not prepare its statements ({error}); reopen \
                     the store"
                ));
                while let Some(request) = queue.blocking_recv() {
                    let _ = request.reply.send(Err(error.clone()));
                }
                return;
            }
        };
        let mut group = Vec::with_capacity(self.group_max.min(1024));
        // `None` once every sender is gone and the queue is drained: the store was dropped.
        while let Some(first) = queue.blocking_recv() {
            let mut events = first.op.events();
            group.push(first);
            while group.len() < self.group_max && events < GROUP_EVENTS_MAX {
                let Ok(next) = queue.try_recv() else { break };
                events += next.op.events();
                group.push(next);
            }
            let answers = self.commit(&mut statements, &group);
            for (request, answer) in group.drain(..).zip(answers) {
                // The caller may have stopped waiting; its write stands regardless.
                let _ = request.reply.send(answer);
            }
        }
    }

    /// Runs `group` in one transaction; one answer per request, in order.
    fn commit<'c>(
        &'c self,
        statements: &mut Statements<'c>,
        group: &[Request],
    ) -> Vec<Result<Answer, Error>> {
        let fail_all = |error: Error| group.iter().map(|_| Err(error.clone())).collect();
        let mut transaction = match Transaction::begin(&self.connection, statements) {
            Ok(transaction) => transaction,
            Err(error) => return fail_all(error),
        };
        let mut answers = Vec::with_capacity(group.len());
        for request in group {
            match transaction.apply_isolated(&request.op) {
                Ok(answer) => answers.push(answer),
                Err(fatal) => {
                    transaction.abort();
                    return fail_all(fatal);
                }
            }
        }
        match transaction.commit() {
            Ok(head) => {
                self.commits.fetch_add(1, Ordering::Relaxed);
                self.head.send_if_modified(|current| {
                    let moved = *current != head;
                    *current = head;
                    moved
                });
                answers
            }
            Err(error) => fail_all(error),
        }
    }
}
