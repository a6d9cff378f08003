//! The writer lock of a SQLite store: an exclusive OS file lock (`flock` on Linux) on a
//! file beside the database, `<db>.lock`, holding the holder's name as JSON.
//!
//! A file of its own rather than the database: SQLite takes and drops POSIX locks on the
//! database and its WAL all the time, and closing any descriptor of a file drops every
//! POSIX lock the process holds on it; a separate file with a lock of its own cannot
//! disturb SQLite's locking, nor be disturbed by it. The lock belongs to the open file,
//! so the operating system releases it when the holding process ends, however it ends;
//! the stale name left in the file is overwritten by the next holder. The file itself is
//! never removed: removing a lock file races with a process about to lock it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::storage;
use crate::error::Error;
use crate::{LockHolder, WriterLock};

/// The most bytes read back of a lock file: a holder's JSON is far shorter.
const HOLDER_BYTES_MAX: u64 = 4096;

/// Takes the writer lock of the store at `db`, or names who has it.
pub(super) fn lock(db: &Path, holder: &LockHolder) -> Result<WriterLock, Error> {
    // Beside the real file, so that two paths to one database (a symlink, `..`) share
    // one lock.
    let db = std::fs::canonicalize(db).unwrap_or_else(|_| db.to_path_buf());
    let path = lock_path(&db);
    let failed = |what: &str, error: std::io::Error| {
        storage(format!(
            "cannot {what} the lock file `{}`: {error}",
            path.display()
        ))
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| failed("open", e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(Error::StoreLocked {
                holder: recorded(&path),
                location: db.display().to_string(),
            });
        }
        Err(TryLockError::Error(error)) => return Err(failed("lock", error)),
    }
    // Written at once after locking: a locker refused in between reads an empty (or a
    // stale) name, for the microseconds this takes.
    let text = serde_json::to_vec(holder).map_err(storage)?;
    file.set_len(0).map_err(|e| failed("write", e))?;
    file.write_all(&text).map_err(|e| failed("write", e))?;
    Ok(WriterLock::new(
        holder.clone(),
        db.display().to_string(),
        HeldFile(file),
    ))
}

/// `<db>.lock`: the database's file name with `.lock` appended.
pub(super) fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// The holder named in the lock file at `path`, if it wrote itself there.
fn recorded(path: &Path) -> Option<LockHolder> {
    let mut text = Vec::new();
    File::open(path)
        .ok()?
        .take(HOLDER_BYTES_MAX)
        .read_to_end(&mut text)
        .ok()?;
    serde_json::from_slice(&text).ok()
}

/// The locked file; dropping it unlocks (closing it would too, but an explicit unlock
/// does not depend on there being no other descriptor of it).
#[derive(Debug)]
struct HeldFile(File);

impl Drop for HeldFile {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}
