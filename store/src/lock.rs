//! The single-writer lock: who holds a store ([`LockHolder`]) and the guard that holds
//! it ([`WriterLock`]). Each backend takes it in its own way; see
//! [`EventStore::lock_writer`](super::EventStore::lock_writer) for what every one
//! guarantees.

use std::any::Any;
use std::fmt;

use keel_core::Timestamp;
use serde::{Deserialize, Serialize};

/// The longest host name kept; Linux allows 64 bytes, DNS 253.
const HOST_CHARS_MAX: usize = 255;

/// Who holds a store's writer lock, as a refused locker is told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// The holding process's id.
    pub pid: u32,
    /// The host it runs on.
    pub host: String,
    /// When it took the lock (as it says).
    pub since: Timestamp,
}

impl LockHolder {
    /// This process, on this host, holding since `since` (time is an input).
    ///
    /// The host name is read from `/proc/sys/kernel/hostname`, else the `HOSTNAME`
    /// environment variable, else it is `unknown`.
    ///
    /// ```
    /// use keel_core::Timestamp;
    /// use keel_store::LockHolder;
    ///
    /// let holder = LockHolder::this_process(Timestamp::UNIX_EPOCH);
    /// assert_eq!(holder.pid, std::process::id());
    /// assert!(!holder.host.is_empty());
    /// ```
    pub fn this_process(since: Timestamp) -> Self {
        Self {
            pid: std::process::id(),
            host: host_name(),
            since,
        }
    }
}

impl fmt::Display for LockHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "process {} on host `{}` since {}",
            self.pid, self.host, self.since
        )
    }
}

/// This host's name, for [`LockHolder::this_process`].
fn host_name() -> String {
    let from_proc = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    let from_env = || std::env::var("HOSTNAME").ok();
    [from_proc, from_env()]
        .into_iter()
        .flatten()
        .map(|name| name.trim().chars().take(HOST_CHARS_MAX).collect::<String>())
        .find(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// What a refused locker says of the holder: its name, or that it has not written it.
pub(crate) fn describe_holder(holder: &Option<LockHolder>) -> String {
    match holder {
        Some(holder) => holder.to_string(),
        None => "a process that has not recorded itself yet (try again in a moment)".to_owned(),
    }
}

/// A store's writer lock, held until this guard is dropped.
///
/// Taken with [`EventStore::lock_writer`](super::EventStore::lock_writer). It stops no
/// read and no append: it only makes a second `lock_writer` fail while it is held.
pub struct WriterLock {
    holder: LockHolder,
    location: String,
    /// Whatever holds the lock (a locked file, a database session, a flag's reset);
    /// dropping it releases the lock.
    _held: Box<dyn Any + Send + Sync>,
}

impl WriterLock {
    /// A lock held for `holder` on the store at `location` until `held` is dropped: for
    /// implementations of [`EventStore`](super::EventStore), whose `held` releases the
    /// lock in its `Drop`.
    pub fn new(
        holder: LockHolder,
        location: impl Into<String>,
        held: impl Any + Send + Sync,
    ) -> Self {
        Self {
            holder,
            location: location.into(),
            _held: Box::new(held),
        }
    }

    /// Who holds it.
    pub fn holder(&self) -> &LockHolder {
        &self.holder
    }

    /// The store it locks: a path, a URL and schema, or `memory`.
    pub fn location(&self) -> &str {
        &self.location
    }
}

impl fmt::Debug for WriterLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriterLock")
            .field("holder", &self.holder)
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_is_described_by_pid_host_and_time() {
        let holder = LockHolder {
            pid: 42,
            host: "box".to_owned(),
            since: Timestamp::UNIX_EPOCH,
        };
        assert_eq!(
            describe_holder(&Some(holder)),
            "process 42 on host `box` since 1970-01-01T00:00:00Z"
        );
        assert!(describe_holder(&None).contains("not recorded"));
    }

    #[test]
    fn this_process_names_its_pid_and_a_host() {
        let holder = LockHolder::this_process(Timestamp::from_unix_nanos(5));
        assert_eq!(holder.pid, std::process::id());
        assert!(!holder.host.is_empty() && holder.host.len() <= HOST_CHARS_MAX * 4);
        assert_eq!(holder.since, Timestamp::from_unix_nanos(5));
    }

    #[test]
    fn the_guard_is_debug_send_and_sync() {
        fn send_sync<T: Send + Sync + fmt::Debug>() {}
        send_sync::<WriterLock>();
    }
}
