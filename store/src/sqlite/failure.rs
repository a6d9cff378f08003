//! What a SQLite failure means to the caller: may trying again later succeed
//! ([`Error::Unavailable`]), or will it fail the same way ([`Error::Storage`])?
//!
//! SQLite's own errors go through [`sqlite`], which asks [`is_transient`] about their
//! result code: a busy or locked database, a full disk, an I/O error, a file that cannot
//! be opened or memory that cannot be had may pass; a constraint, a damaged or foreign
//! file, a type mismatch or a misuse will not. What keel finds wrong itself (a value out
//! of range, a row that does not decode, the writer thread gone) goes through
//! [`storage`] and is always [`Error::Storage`]: the same data fails the same way.

use rusqlite::ErrorCode;
use rusqlite::types::FromSqlError;

use crate::error::Error;

/// Whether an operation that failed with SQLite result code `code` may succeed if tried
/// again later.
///
/// | code | transient | because |
/// | --- | --- | --- |
/// | `SQLITE_BUSY` (`DatabaseBusy`) | yes | another connection held a lock past the timeout |
/// | `SQLITE_LOCKED` (`DatabaseLocked`) | yes | another statement holds a table lock |
/// | `SQLITE_FULL` (`DiskFull`) | yes | the disk is full until space is freed |
/// | `SQLITE_IOERR` (`SystemIoFailure`) | yes | a read, write or fsync failed: a volume away |
/// | `SQLITE_CANTOPEN` (`CannotOpen`) | yes | a file cannot be opened: no mount, no handles |
/// | `SQLITE_NOMEM` (`OutOfMemory`) | yes | memory may be free again later |
/// | `SQLITE_PROTOCOL` (`FileLockingProtocolFailed`) | yes | a lock race between processes |
/// | anything else | no | a constraint, a damaged or foreign file, a type mismatch, misuse |
pub(super) fn is_transient(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure
            | ErrorCode::CannotOpen
            | ErrorCode::OutOfMemory
            | ErrorCode::FileLockingProtocolFailed
    )
}

/// A failure SQLite reported, as keel's error (see [`is_transient`]).
pub(super) fn sqlite(error: rusqlite::Error) -> Error {
    sqlite_with(error.sqlite_error_code(), error.to_string())
}

/// `reason`, describing a failure SQLite reported with `code` (`None`: not one of
/// SQLite's result codes, such as a column of the wrong type), as keel's error.
pub(super) fn sqlite_with(code: Option<ErrorCode>, reason: String) -> Error {
    if code.is_some_and(is_transient) {
        Error::Unavailable {
            backend: "sqlite",
            reason,
        }
    } else {
        Error::Storage {
            backend: "sqlite",
            reason,
        }
    }
}

/// What keel finds wrong itself, or a value that does not encode or decode: the same
/// data fails the same way, so always [`Error::Storage`].
pub(super) fn storage(reason: impl Permanent) -> Error {
    Error::Storage {
        backend: "sqlite",
        reason: reason.to_string(),
    }
}

/// A failure that trying again does not change: what [`storage`] takes.
///
/// Not implemented for [`rusqlite::Error`] on purpose: some of SQLite's failures pass
/// (a busy database, a full disk), so they must go through [`sqlite`], and passing one
/// to [`storage`] does not compile.
pub(super) trait Permanent: std::fmt::Display {}

impl Permanent for String {}
impl Permanent for &str {}
impl Permanent for serde_json::Error {}
impl Permanent for uuid::Error {}
// A stored value of another type than its column holds: a damaged row.
impl Permanent for FromSqlError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_or_full_database_is_transient_and_a_refused_or_damaged_one_is_not() {
        let table = [
            (ErrorCode::DatabaseBusy, true),
            (ErrorCode::DatabaseLocked, true),
            (ErrorCode::DiskFull, true),
            (ErrorCode::SystemIoFailure, true),
            (ErrorCode::CannotOpen, true),
            (ErrorCode::OutOfMemory, true),
            (ErrorCode::FileLockingProtocolFailed, true),
            (ErrorCode::ConstraintViolation, false),
            (ErrorCode::DatabaseCorrupt, false),
            (ErrorCode::NotADatabase, false),
            (ErrorCode::TypeMismatch, false),
            (ErrorCode::ReadOnly, false),
            (ErrorCode::PermissionDenied, false),
            (ErrorCode::TooBig, false),
            (ErrorCode::SchemaChanged, false),
            (ErrorCode::ApiMisuse, false),
            (ErrorCode::ParameterOutOfRange, false),
            (ErrorCode::InternalMalfunction, false),
            (ErrorCode::OperationAborted, false),
            (ErrorCode::OperationInterrupted, false),
            (ErrorCode::NotFound, false),
            (ErrorCode::NoLargeFileSupport, false),
            (ErrorCode::AuthorizationForStatementDenied, false),
            (ErrorCode::Unknown, false),
        ];
        for (code, transient) in table {
            assert_eq!(is_transient(code), transient, "{code:?}");
        }
    }

    #[test]
    fn a_sqlite_error_keeps_its_class_and_its_text() {
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            Some("database is locked".to_owned()),
        );
        let constraint = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE),
            Some("UNIQUE constraint failed: events.id".to_owned()),
        );
        let busy = sqlite(busy);
        assert!(busy.is_unavailable(), "{busy:?}");
        assert!(busy.to_string().contains("database is locked"), "{busy}");
        let constraint = sqlite(constraint);
        assert!(
            matches!(&constraint, Error::Storage { reason, .. } if reason.contains("UNIQUE")),
            "{constraint:?}"
        );
        // Not a failure of SQLite's at all: no code, so not worth trying again.
        let mismatch = sqlite(rusqlite::Error::InvalidColumnType(
            0,
            "head".to_owned(),
            rusqlite::types::Type::Text,
        ));
        assert!(!mismatch.is_unavailable(), "{mismatch:?}");
    }
}
