//! The PostgreSQL event store: one database shared by several processes.
//!
//! ```no_run
//! use keel_store::EventStore;
//! use keel_store::postgres::{PostgresConfig, PostgresStore};
//!
//! # async fn run() -> Result<(), keel_store::Error> {
//! let config = PostgresConfig { schema: "orders".into(), ..PostgresConfig::default() };
//! let store = PostgresStore::connect("postgres://postgres@127.0.0.1:5432/test", config).await?;
//! println!("head: {}", store.head().await?);
//! # Ok(())
//! # }
//! ```
//!
//! # Ordering
//!
//! Positions are not drawn from a sequence: under concurrent writers a sequence hands
//! out numbers in one order and transactions commit in another, so a reader following
//! positions could pass a position whose transaction commits a moment later. Instead
//! every append transaction first locks the one `keel_head` row and takes its
//! positions from it. Writers of every process therefore commit one at a time, in
//! position order: positions are gapless (an aborted append takes none) and each is
//! visible before the next one is handed out. To keep that from limiting throughput,
//! each store has one writer task that commits all appends waiting at that moment in
//! one transaction (group commit; see `append.rs`): the lock is held for one commit per
//! group, not per append.
//!
//! # Durability
//!
//! An append returns after PostgreSQL acknowledged its `COMMIT`, which with the default
//! `synchronous_commit = on` means the commit record is flushed to the server's WAL.
//! A failure before that (a lost connection, a server restart) rolls the whole
//! transaction back: no partial batch is ever visible. If the connection is lost while
//! the `COMMIT` itself is in flight the outcome is unknown to the caller, who gets
//! [`Error::Unavailable`]: retrying the same append is safe, because appends are
//! idempotent by event id (the retry answers `deduplicated: true` if the first one
//! committed).
//!
//! # Live heads: LISTEN/NOTIFY
//!
//! Each append transaction sends `pg_notify('keel_head_<schema>', new head)`;
//! PostgreSQL delivers it to every listener when, and only if, the transaction commits.
//! Each store listens on a dedicated connection, so
//! [`EventStore::watch_head`](crate::EventStore::watch_head) (and the
//! [subscriptions](crate::subscription) built on it) moves when any process
//! commits, within a second even if a notification was missed (a polling fallback).
//! The store's own commits move it at once.
//!
//! # What is stored
//!
//! All in the schema named by [`PostgresConfig::schema`]: `events` (position, stream,
//! version, id, envelope), `streams` (each stream's version, which trimming keeps),
//! `trimmed_event_ids` (so a trimmed event's id is never reused), `outbox` (pending
//! intents only), `snapshots`, `stream_metadata`, `projections`, and the `keel_meta`,
//! `keel_head` and `keel_writer` rows. Envelopes, intents and JSON documents are kept as the text
//! serde_json wrote, not as JSONB, so they come back byte for byte; cast to `jsonb` to
//! query inside them. PostgreSQL text cannot hold NUL characters: a stream id or
//! projection name with one is refused on write ([`Error::Storage`]) and found
//! nowhere on read. A trim locks no row an append writes: however long it runs,
//! appends to its stream and to every other go on meanwhile.
//!
//! # Writer lock
//!
//! [`EventStore::lock_writer`](crate::EventStore::lock_writer) takes a
//! session-level advisory lock (keyed by a keel constant and the schema name) on a
//! connection of its own, kept open by the guard, and records the holder in the
//! `keel_writer` row for a refused locker to name. Dropping the guard unlocks: this
//! store's next `lock_writer` waits for that, other handles and processes see the lock
//! free a moment later. A holder's crash ends its session and so its lock; but so does
//! a lost connection, while the guard lives on: it is a lock, not a fence.
//!
//! # Connections and runtime
//!
//! A store holds [`PostgresConfig::connections`] pooled connections plus one for
//! listening. A connection lost to a server restart or a network failure is replaced
//! at its next use, so after an outage calls fail with [`Error::Unavailable`] until the
//! server is back, then work again. Precisely: a connection is replaced at the first
//! checkout after its driver task saw it close. An operation whose connection the
//! server ends while it runs (a restart, `pg_terminate_backend`) fails with
//! [`Error::Unavailable`], and so may the operations right after it on the same
//! connection, until the close is seen (appends are the exception: they discard their
//! connection on any failure). A connection ended while idle is replaced without a
//! failure if the close was seen before its next use; an operation that comes sooner
//! fails with the server's `57P01`, which was waiting on the socket. Errors that will
//! not pass by themselves (a constraint, a value the database refuses, an error inside
//! the server) are [`Error::Storage`]; `failure` holds the table.
//!
//! The store runs background tasks (the writer, the
//! listener, the connections' drivers) on the tokio runtime that called
//! [`PostgresStore::connect`]; use the store from that runtime.
//!
//! # Layout
//!
//! - `schema`: tables, migrations under an advisory lock, and every statement's SQL.
//!   Migration 3 adds `instances`, the index of instances, filled from the marks the
//!   stored events already carry (none, before marks existed).
//! - `pool`: the connection pool with prepared statements, reconnecting lost ones.
//! - `append`: the writer task and the pure planning of a group of appends.
//! - `failure`: which errors may pass ([`Error::Unavailable`]) and which will not.
//! - `listen`: head notifications, with a polling fallback.
//! - `lock`: the writer lock, on a connection of its own.
//! - `store`: the [`EventStore`](crate::EventStore) implementation.

mod append;
mod failure;
mod listen;
mod lock;
mod pool;
mod schema;
mod store;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

use self::failure::{describe_error, storage, storage_error, unavailable};
use self::pool::Pool;
use self::schema::{SchemaName, Sql};
use crate::error::Error;

/// How long [`PostgresStore::connect`] (and each reconnection) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The most pooled connections a store may open.
pub const CONNECTIONS_MAX: usize = 64;

/// How long a connection may be idle before TCP keepalive probes check the server
/// is still there (then every third of it, 3 times): a vanished server is noticed
/// within about 30 s.
const KEEPALIVES_IDLE: Duration = Duration::from_secs(15);

/// tokio-postgres's default for `keepalives_idle`.
const KEEPALIVES_IDLE_DEFAULT: Duration = Duration::from_secs(2 * 60 * 60);

/// How long a statement waits for a row lock (another process's append or trim)
/// before failing: a stuck peer becomes an error, not a hang.
const LOCK_TIMEOUT_MS: u32 = 30_000;

/// How to set up a [`PostgresStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// The PostgreSQL schema holding the store's tables, created if absent: 1 to 63 of
    /// `a-z`, `0-9` and `_`, not starting with a digit. Default `keel`. Stores in
    /// different schemas of one database are independent.
    pub schema: String,
    /// How many pooled connections the store keeps (1 to [`CONNECTIONS_MAX`]); the
    /// listener uses one more. Default 4.
    pub connections: usize,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            schema: "keel".to_owned(),
            connections: 4,
        }
    }
}

/// An event store in a PostgreSQL database, shared by every process connected to it.
///
/// Cloning is cheap and shares the connections. See the [module docs](self) for the
/// ordering, durability and notification guarantees.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: Arc<Pool>,
    head: Arc<watch::Sender<u64>>,
    /// Appends for the writer task, which ends when this sender is dropped.
    writer: mpsc::Sender<append::Request>,
    listener: AbortHandle,
    schema: SchemaName,
    /// For the writer lock's own connection, and for messages.
    pg: tokio_postgres::Config,
    location: String,
    sql: Sql,
    releasing: lock::Releasing,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user@host:port/database`, no
    /// TLS), creates or migrates the store's schema, and starts listening for the
    /// commits of other processes.
    ///
    /// Fails with [`Error::InvalidConfig`] for a bad schema name or connection count,
    /// [`Error::Storage`] when the URL does not parse or the server refuses the login,
    /// [`Error::Unavailable`] when the server cannot be reached within
    /// [`CONNECT_TIMEOUT`], [`Error::NotAStore`] when the schema holds tables of
    /// something else, and [`Error::SchemaTooNew`] when a newer keel migrated it.
    pub async fn connect(url: &str, config: PostgresConfig) -> Result<Self, Error> {
        let schema = SchemaName::parse(&config.schema)?;
        if !(1..=CONNECTIONS_MAX).contains(&config.connections) {
            return Err(Error::InvalidConfig {
                setting: "connections",
                reason: format!(
                    "{} pooled connections: use 1 to {CONNECTIONS_MAX}",
                    config.connections
                ),
            });
        }
        let mut pg: tokio_postgres::Config = url.parse().map_err(|e| Error::Storage {
            backend: "postgres",
            reason: format!(
                "the connection URL does not parse ({}): write it as \
                 postgres://user[:password]@host[:port]/database",
                describe_error(&e)
            ),
        })?;
        pg.connect_timeout(CONNECT_TIMEOUT);
        // A server that vanished without closing the connection (a crashed host, a cut
        // network) is noticed by TCP keepalives; their 2 h default would leave calls
        // hanging that long. A URL that sets its own keeps it.
        if pg.get_keepalives_idle() == KEEPALIVES_IDLE_DEFAULT {
            pg.keepalives_idle(KEEPALIVES_IDLE);
        }
        if pg.get_keepalives_interval().is_none() {
            pg.keepalives_interval(KEEPALIVES_IDLE / 3);
        }
        if pg.get_keepalives_retries().is_none() {
            pg.keepalives_retries(3);
        }
        if pg.get_application_name().is_none() {
            pg.application_name(format!("keel:{}", schema.as_str()));
        }
        let location = describe_location(&pg, &schema);
        let opening = Self::open(pg, schema, config.connections, &location);
        match tokio::time::timeout(CONNECT_TIMEOUT, opening).await {
            Ok(result) => result,
            Err(_) => Err(unavailable(format!(
                "could not connect to {location} and migrate it within {} s: is the server \
                 up and reachable, and no other process stuck migrating it?",
                CONNECT_TIMEOUT.as_secs()
            ))),
        }
    }

    async fn open(
        pg: tokio_postgres::Config,
        schema: SchemaName,
        connections: usize,
        location: &str,
    ) -> Result<Self, Error> {
        let mut client = pool::connect_client(&pg).await?;
        schema::migrate(&mut client, &schema, location).await?;
        drop(client);
        let sql = Sql::new(&schema);
        let pool = Arc::new(Pool::open(pg.clone(), sql.clone(), connections).await?);
        let head_now = {
            let mut checkout = pool.checkout().await?;
            let conn = checkout.conn();
            let row = conn
                .client
                .query_one(&conn.statements.head, &[])
                .await
                .map_err(storage("read the head"))?;
            from_i64(row.get(0), "head position")?
        };
        let head = Arc::new(watch::Sender::new(head_now));
        let (writer, queue) = mpsc::channel(append::QUEUE_REQUESTS_MAX);
        tokio::spawn(append::run_writer(
            Arc::clone(&pool),
            Arc::clone(&head),
            schema.channel(),
            queue,
        ));
        let listener = listen::spawn(
            pg.clone(),
            schema.channel(),
            sql.head.clone(),
            Arc::clone(&head),
        );
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                head,
                writer,
                listener,
                schema,
                pg,
                location: location.to_owned(),
                sql,
                releasing: lock::Releasing::default(),
            }),
        })
    }

    /// Drops the store's schema and everything in it, and stops listening (for tests).
    /// The store is unusable afterwards.
    pub async fn drop_schema(&self) -> Result<(), Error> {
        self.inner.listener.abort();
        let mut checkout = self.inner.pool.checkout().await?;
        checkout
            .conn()
            .client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                self.inner.schema.quoted()
            ))
            .await
            .map_err(storage("drop the schema"))
    }
}

/// Moves the head watch forward to `position` (never back), waking watchers if it moved.
fn advance_head(head: &watch::Sender<u64>, position: u64) {
    head.send_if_modified(|current| {
        let moved = position > *current;
        if moved {
            *current = position;
        }
        moved
    });
}

fn location_error(location: &str, reason: String) -> Error {
    Error::NotAStore {
        location: location.to_owned(),
        reason,
    }
}

/// The database a connection URL names, for messages and headers:
/// `postgres://user@host:port/database`, never the password (nor any other option);
/// `None` when the URL does not parse.
///
/// ```
/// use keel_store::postgres::describe_url;
/// let url = "postgres://app:s3cr3t@db.internal:5433/orders";
/// assert_eq!(describe_url(url).as_deref(), Some("postgres://app@db.internal:5433/orders"));
/// assert_eq!(describe_url("postgres://app:s3cr3t@db.internal:port/orders"), None);
/// ```
pub fn describe_url(url: &str) -> Option<String> {
    url.parse().ok().map(|pg| describe_address(&pg))
}

/// The store's address for messages, without the password.
fn describe_location(pg: &tokio_postgres::Config, schema: &SchemaName) -> String {
    format!("{} schema {}", describe_address(pg), schema.as_str())
}

/// The database's address, without the password: what [`describe_url`] shows.
fn describe_address(pg: &tokio_postgres::Config) -> String {
    let host = match pg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    format!(
        "postgres://{}@{host}:{}/{}",
        pg.get_user().unwrap_or(""),
        pg.get_ports().first().copied().unwrap_or(5432),
        pg.get_dbname().unwrap_or("")
    )
}

/// A version or position for a column; the database holds `bigint`.
fn to_i64(value: u64) -> Result<i64, Error> {
    i64::try_from(value).map_err(|_| Error::Storage {
        backend: "postgres",
        reason: format!("{value} does not fit a PostgreSQL bigint"),
    })
}

/// A bound for a comparison: values past `i64::MAX` compare like `i64::MAX`.
fn clamp_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn from_i64(value: i64, what: &str) -> Result<u64, Error> {
    u64::try_from(value).map_err(|_| Error::Storage {
        backend: "postgres",
        reason: format!("the stored {what} is negative ({value}): the store is damaged"),
    })
}

#[cfg(test)]
mod testing;
