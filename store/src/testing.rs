//! Every event store backend, opened fresh for a test: in memory, SQLite (a temporary
//! file) and PostgreSQL (a schema of its own, only when `KEEL_PG_URL` is set). Feature
//! `testing`, off by default.
//!
//! Loop over [`Backend::available`] to run a test against every backend this build has.
//! Without `KEEL_PG_URL` the PostgreSQL runs are skipped with one line on stderr, except
//! in CI (`CI=true`), which must always exercise PostgreSQL and fails instead.
//!
//! It is a module of the library, not a file of `tests/`, so that keel-effects' tests
//! (the outbox dispatcher and the runtime's outbox, against every backend) open the
//! stores through the same code as the store's own, and so that its `sqlite` and
//! `postgres` checks see this crate's features rather than the including crate's.

use std::path::PathBuf;
use std::sync::Arc;

use crate::{EventStore, MemoryStore};

/// The environment variable naming the PostgreSQL server: `postgres://user@host/db`.
pub const PG_URL_VAR: &str = "KEEL_PG_URL";

/// How long connecting to PostgreSQL may take before the server counts as unreachable.
#[cfg(feature = "postgres")]
const PG_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// One event store implementation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// [`MemoryStore`].
    Memory,
    /// `SqliteStore` on a temporary file.
    Sqlite,
    /// `PostgresStore` on a schema of its own in the server at this URL.
    Postgres(String),
}

impl Backend {
    /// Every backend this run can exercise. Prints `skipped postgres: …` when PostgreSQL
    /// is not configured (or unreachable outside CI); panics in CI instead.
    pub async fn available() -> Vec<Self> {
        let mut backends = vec![Self::Memory];
        if let Some(sqlite) = Self::sqlite() {
            backends.push(sqlite);
        }
        if let Some(postgres) = Self::postgres().await {
            backends.push(postgres);
        }
        backends
    }

    /// SQLite, when this build has the backend.
    pub fn sqlite() -> Option<Self> {
        sqlite_backend()
    }

    /// PostgreSQL, if `KEEL_PG_URL` names a reachable server; prints why not otherwise,
    /// or panics in CI.
    pub async fn postgres() -> Option<Self> {
        let in_ci = std::env::var("CI").is_ok_and(|value| value == "true");
        let Ok(url) = std::env::var(PG_URL_VAR) else {
            assert!(
                !in_ci,
                "CI must exercise PostgreSQL: set {PG_URL_VAR} (e.g. postgres://postgres@127.0.0.1:5432/test)"
            );
            say_skipped(&format!("skipped postgres: {PG_URL_VAR} not set"));
            return None;
        };
        match postgres_reachable(&url).await {
            Ok(()) => Some(Self::Postgres(url)),
            Err(reason) => {
                // The URL may hold a password: name the variable, not its value.
                assert!(
                    !in_ci,
                    "CI must exercise PostgreSQL, but {PG_URL_VAR} is unreachable: {reason}"
                );
                say_skipped(&format!(
                    "skipped postgres: {PG_URL_VAR} is unreachable: {reason}"
                ));
                None
            }
        }
    }

    /// A short name for messages: `memory`, `sqlite`, `postgres`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Sqlite => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    /// A new, empty store of this backend.
    pub async fn open(&self) -> TestStore {
        let id = uuid::Uuid::new_v4().simple();
        let place = match self {
            Self::Memory => Place::Memory(MemoryStore::new()),
            Self::Sqlite => Place::Sqlite(std::env::temp_dir().join(format!("keel-t-{id}.db"))),
            Self::Postgres(url) => Place::Postgres {
                url: url.clone(),
                schema: format!("keel_t_{id}"),
            },
        };
        let store = place.connect().await;
        TestStore {
            name: self.name(),
            store,
            place,
            cleaned: false,
        }
    }
}

/// A store opened for one test, removed again by [`TestStore::cleanup`] (or, if the test
/// panicked first, when dropped).
pub struct TestStore {
    /// The backend's name, for messages.
    pub name: &'static str,
    /// The store.
    pub store: Arc<dyn EventStore>,
    place: Place,
    cleaned: bool,
}

impl std::fmt::Debug for TestStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestStore")
            .field("name", &self.name)
            .field("place", &self.place)
            .finish_non_exhaustive()
    }
}

impl TestStore {
    /// A new handle on the same data, as a process restarted after a crash would open
    /// it: the SQLite file opened again, a new PostgreSQL connection. The memory store
    /// cannot outlive its process, so it hands back the same instance.
    pub async fn reopen(&self) -> Arc<dyn EventStore> {
        self.place.connect().await
    }

    /// Simulates a crash and a restart: every handle this test store holds is dropped
    /// first, then the store is opened again ([`TestStore::reopen`]). Clones of the old
    /// handle held elsewhere must be dropped by the caller beforehand.
    pub async fn restart(&mut self) {
        self.store = Arc::new(MemoryStore::new());
        self.store = self.place.connect().await;
    }

    /// The SQLite file, for tests that hand it to a child process.
    pub fn sqlite_path(&self) -> Option<&std::path::Path> {
        match &self.place {
            Place::Sqlite(path) => Some(path),
            _ => None,
        }
    }

    /// Closes the store and removes its temporary file or schema.
    pub async fn cleanup(mut self) {
        self.cleaned = true;
        self.store = Arc::new(MemoryStore::new());
        self.place.remove().await;
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        match &self.place {
            _ if self.cleaned => return,
            Place::Memory(_) => return,
            Place::Sqlite(path) => return remove_sqlite(path),
            Place::Postgres { .. } => {}
        }
        // A test that panicked before `cleanup`: remove what it left, from a thread of
        // its own because dropping may happen inside a runtime that must not block on
        // another.
        let place = self.place.clone();
        let removed = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for cleaning up");
            runtime.block_on(place.remove());
        })
        .join();
        if removed.is_err() {
            eprintln!("could not clean up after the {} store", self.name);
        }
    }
}

/// Where a test store keeps its data.
#[derive(Debug, Clone)]
enum Place {
    Memory(MemoryStore),
    Sqlite(PathBuf),
    Postgres { url: String, schema: String },
}

impl Place {
    async fn connect(&self) -> Arc<dyn EventStore> {
        match self {
            Self::Memory(store) => Arc::new(store.clone()),
            Self::Sqlite(path) => open_sqlite(path),
            Self::Postgres { url, schema } => connect_postgres(url, schema).await,
        }
    }

    async fn remove(&self) {
        match self {
            Self::Memory(_) => {}
            Self::Sqlite(path) => remove_sqlite(path),
            Self::Postgres { url, schema } => drop_postgres(url, schema).await,
        }
    }
}

/// Removes a SQLite database file, its journal files and its writer lock file, ignoring
/// those already gone.
pub fn remove_sqlite(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm", "-journal", ".lock"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(file));
    }
}

// ---- SQLite -------------------------------------------------------------------------

#[cfg(feature = "sqlite")]
fn sqlite_backend() -> Option<Backend> {
    Some(Backend::Sqlite)
}

#[cfg(not(feature = "sqlite"))]
fn sqlite_backend() -> Option<Backend> {
    None
}

/// Opens (creating if need be) the SQLite store at `path` with the default settings.
#[cfg(feature = "sqlite")]
pub fn open_sqlite(path: &std::path::Path) -> Arc<dyn EventStore> {
    use crate::sqlite::{SqliteConfig, SqliteStore};
    match SqliteStore::open(path, SqliteConfig::default()) {
        Ok(store) => Arc::new(store),
        Err(error) => panic!("opening the SQLite store at {}: {error}", path.display()),
    }
}

/// Panics: this build has no SQLite backend.
#[cfg(not(feature = "sqlite"))]
pub fn open_sqlite(path: &std::path::Path) -> Arc<dyn EventStore> {
    panic!(
        "this build has no SQLite backend; cannot open {}",
        path.display()
    )
}

// ---- PostgreSQL ---------------------------------------------------------------------

#[cfg(feature = "postgres")]
async fn postgres_reachable(url: &str) -> Result<(), String> {
    let connect = tokio_postgres::connect(url, tokio_postgres::NoTls);
    match tokio::time::timeout(PG_CONNECT_TIMEOUT, connect).await {
        Err(_) => Err(format!("no answer within {PG_CONNECT_TIMEOUT:?}")),
        Ok(Err(error)) => Err(match std::error::Error::source(&error) {
            Some(source) => format!("{error}: {source}"),
            None => error.to_string(),
        }),
        // Dropping the client and the connection closes it.
        Ok(Ok(_)) => Ok(()),
    }
}

#[cfg(not(feature = "postgres"))]
async fn postgres_reachable(_url: &str) -> Result<(), String> {
    Err("this build has no PostgreSQL backend (feature `postgres` is off)".to_owned())
}

/// Connects to the PostgreSQL store in `schema` (creating it if need be).
#[cfg(feature = "postgres")]
pub async fn connect_postgres(url: &str, schema: &str) -> Arc<dyn EventStore> {
    Arc::new(postgres_store(url, schema).await)
}

#[cfg(feature = "postgres")]
async fn postgres_store(url: &str, schema: &str) -> crate::postgres::PostgresStore {
    use crate::postgres::{PostgresConfig, PostgresStore};
    let config = PostgresConfig {
        schema: schema.to_owned(),
        ..Default::default()
    };
    let connect = PostgresStore::connect(url, config);
    match tokio::time::timeout(PG_CONNECT_TIMEOUT, connect).await {
        Ok(Ok(store)) => store,
        Ok(Err(error)) => panic!("connecting to {PG_URL_VAR}, schema {schema}: {error}"),
        Err(_) => panic!("connecting to {PG_URL_VAR} took over {PG_CONNECT_TIMEOUT:?}"),
    }
}

#[cfg(feature = "postgres")]
async fn drop_postgres(url: &str, schema: &str) {
    let store = postgres_store(url, schema).await;
    if let Err(error) = store.drop_schema().await {
        eprintln!("could not drop the test schema {schema}: {error}");
    }
}

/// Panics: this build has no PostgreSQL backend.
#[cfg(not(feature = "postgres"))]
pub async fn connect_postgres(_url: &str, schema: &str) -> Arc<dyn EventStore> {
    panic!("this build has no PostgreSQL backend; cannot open schema {schema}")
}

#[cfg(not(feature = "postgres"))]
async fn drop_postgres(_url: &str, _schema: &str) {}

/// Says (once per test binary) that the PostgreSQL cases are skipped, on the process's
/// real stderr: libtest captures `eprintln!` of passing tests, and this line is for the
/// person running `cargo test` on a machine without the server.
fn say_skipped(line: &str) {
    use std::io::Write as _;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = writeln!(
            std::io::stderr(),
            "{line} (every PostgreSQL case of this test binary)"
        );
    });
}
