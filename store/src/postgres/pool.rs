//! A small, fixed pool of connections, each with the store's statements prepared.
//!
//! A checkout waits for a free connection (a semaphore with one permit per
//! connection, fair in arrival order). A connection that was lost (the server closed
//! it, or an operation on it failed midway and discarded it) is replaced at its next
//! checkout, so after an outage the next call reconnects instead of failing forever.

use std::sync::{Mutex, PoisonError};

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::{Client, NoTls, Statement};

use super::schema::Sql;
use super::{CONNECT_TIMEOUT, LOCK_TIMEOUT_MS, storage, storage_error, unavailable};
use crate::error::Error;

/// Connects one client and spawns the task that drives its connection.
pub(super) async fn connect_client(config: &tokio_postgres::Config) -> Result<Client, Error> {
    let connecting = tokio::time::timeout(CONNECT_TIMEOUT, config.connect(NoTls));
    let (client, connection) = match connecting.await {
        Ok(result) => result.map_err(storage("connect to the server"))?,
        Err(_) => {
            return Err(unavailable(format!(
                "could not connect to the server within {} s: is it running and reachable?",
                CONNECT_TIMEOUT.as_secs()
            )));
        }
    };
    tokio::spawn(async move {
        // The future ends when the client is dropped or the server goes away; a failed
        // call on the client reports the error to its caller, so this is only a trace.
        if let Err(error) = connection.await {
            tracing::debug!(%error, "postgres connection ended");
        }
    });
    Ok(client)
}

/// A client of the pool with the store's statements prepared on it.
pub(super) struct Conn {
    pub(super) client: Client,
    pub(super) statements: Statements,
}

/// The store's prepared statements (see [`Sql`] for their text).
pub(super) struct Statements {
    pub(super) lock_head: Statement,
    pub(super) head: Statement,
    pub(super) unindexed_head: Statement,
    pub(super) find_ids: Statement,
    pub(super) stream_versions: Statement,
    pub(super) write: Statement,
    pub(super) read_stream: Statement,
    pub(super) read_all: Statement,
    pub(super) stream_version: Statement,
    pub(super) pending_intents: Statement,
    pub(super) complete_intents: Statement,
    pub(super) save_snapshot: Statement,
    pub(super) load_snapshot: Statement,
    pub(super) set_metadata: Statement,
    pub(super) metadata: Statement,
    pub(super) trim_bounds: Statement,
    pub(super) first_version_from: Statement,
    pub(super) trim: Statement,
    pub(super) read_unfinished_rest: Statement,
    pub(super) read_unfinished_next: Statement,
    pub(super) purge_finished: Statement,
    pub(super) purge_finished_kind: Statement,
    pub(super) load_projection: Statement,
    pub(super) insert_projection: Statement,
    pub(super) update_projection: Statement,
}

impl Conn {
    /// Connects and prepares, all within [`CONNECT_TIMEOUT`].
    async fn open(config: &tokio_postgres::Config, sql: &Sql) -> Result<Self, Error> {
        match tokio::time::timeout(CONNECT_TIMEOUT, Self::open_unbounded(config, sql)).await {
            Ok(result) => result,
            Err(_) => Err(unavailable(format!(
                "could not connect and prepare statements within {} s: is the server \
                 overloaded or unreachable?",
                CONNECT_TIMEOUT.as_secs()
            ))),
        }
    }

    async fn open_unbounded(config: &tokio_postgres::Config, sql: &Sql) -> Result<Self, Error> {
        let client = connect_client(config).await?;
        // Bound every wait for a row lock (another process's append or trim), so a
        // stuck peer surfaces as an error instead of a hang.
        client
            .batch_execute(&format!("SET lock_timeout = {LOCK_TIMEOUT_MS}"))
            .await
            .map_err(storage("configure the connection"))?;
        let prepare = async |text: &str| {
            client
                .prepare(text)
                .await
                .map_err(|e| storage_error("prepare a statement", &e))
        };
        let statements = Statements {
            lock_head: prepare(&sql.lock_head).await?,
            head: prepare(&sql.head).await?,
            unindexed_head: prepare(&sql.unindexed_head).await?,
            find_ids: prepare(&sql.find_ids).await?,
            stream_versions: prepare(&sql.stream_versions).await?,
            write: prepare(&sql.write).await?,
            read_stream: prepare(&sql.read_stream).await?,
            read_all: prepare(&sql.read_all).await?,
            stream_version: prepare(&sql.stream_version).await?,
            pending_intents: prepare(&sql.pending_intents).await?,
            complete_intents: prepare(&sql.complete_intents).await?,
            save_snapshot: prepare(&sql.save_snapshot).await?,
            load_snapshot: prepare(&sql.load_snapshot).await?,
            set_metadata: prepare(&sql.set_metadata).await?,
            metadata: prepare(&sql.metadata).await?,
            trim_bounds: prepare(&sql.trim_bounds).await?,
            first_version_from: prepare(&sql.first_version_from).await?,
            trim: prepare(&sql.trim).await?,
            read_unfinished_rest: prepare(&sql.read_unfinished_rest).await?,
            read_unfinished_next: prepare(&sql.read_unfinished_next).await?,
            purge_finished: prepare(&sql.purge_finished).await?,
            purge_finished_kind: prepare(&sql.purge_finished_kind).await?,
            load_projection: prepare(&sql.load_projection).await?,
            insert_projection: prepare(&sql.insert_projection).await?,
            update_projection: prepare(&sql.update_projection).await?,
        };
        Ok(Self { client, statements })
    }
}

/// A fixed number of connection slots; an empty slot is filled at its next checkout.
pub(super) struct Pool {
    config: tokio_postgres::Config,
    sql: Sql,
    /// Idle slots. Invariant: as many entries as the semaphore has free permits, since
    /// every checkout takes one of each and gives both back together.
    idle: Mutex<Vec<Option<Conn>>>,
    permits: Semaphore,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("available", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// Opens `size` connections now, so a bad configuration fails at `connect`.
    pub(super) async fn open(
        config: tokio_postgres::Config,
        sql: Sql,
        size: usize,
    ) -> Result<Self, Error> {
        let mut idle = Vec::with_capacity(size);
        for _ in 0..size {
            idle.push(Some(Conn::open(&config, &sql).await?));
        }
        Ok(Self {
            config,
            sql,
            idle: Mutex::new(idle),
            permits: Semaphore::new(size),
        })
    }

    /// A connection, waiting for one to be free; reconnects a lost one.
    pub(super) async fn checkout(&self) -> Result<Checkout<'_>, Error> {
        let permit = self.permits.acquire().await.map_err(|_| Error::ShutDown)?;
        let slot = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            // The invariant on `idle` guarantees a slot for every permit; an empty list
            // would be a bug, reported as a storage error rather than a panic.
            .ok_or_else(|| Error::Storage {
                backend: "postgres",
                reason: "the connection pool lost track of a connection (a bug in keel)".to_owned(),
            })?;
        let mut checkout = Checkout {
            pool: self,
            conn: None,
            _permit: permit,
        };
        checkout.conn = match slot {
            Some(conn) if !conn.client.is_closed() => Some(conn),
            _ => Some(Conn::open(&self.config, &self.sql).await?),
        };
        Ok(checkout)
    }
}

/// A checked-out connection; goes back to the pool when dropped.
pub(super) struct Checkout<'a> {
    pool: &'a Pool,
    conn: Option<Conn>,
    _permit: SemaphorePermit<'a>,
}

impl Checkout<'_> {
    pub(super) fn conn(&mut self) -> &mut Conn {
        // Set in `checkout` and taken only by `discard`, which consumes `self`.
        self.conn.as_mut().expect("a checkout holds its connection")
    }

    /// Closes the connection instead of reusing it (its state is in doubt); the slot
    /// reconnects at its next checkout.
    pub(super) fn discard(mut self) {
        self.conn = None;
    }
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        // Runs before `_permit` is released, keeping the invariant on `idle`.
        self.pool
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(self.conn.take());
    }
}
