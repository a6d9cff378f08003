//! What a tokio-postgres error means to the caller: may trying again later succeed
//! ([`Error::Unavailable`]), or will it fail the same way ([`Error::Storage`])?
//!
//! The decision is [`is_transient`], a pure function of what the error carries: the
//! server's SQLSTATE when it answered, else whether the connection is closed or the
//! socket failed. A server that answered with an error is transient only for the codes
//! that describe the server's state rather than the statement: connection exceptions,
//! shutdowns, exhausted resources, system (I/O) errors, serialization failures,
//! deadlocks and timeouts. Everything about the statement or its data (a constraint,
//! a syntax error, a value out of range, an internal error) fails the same way again.

use std::io;

use tokio_postgres::error::SqlState;

use crate::error::Error;

/// What a tokio-postgres error carries that decides whether trying again may help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault<'a> {
    /// The server answered with this SQLSTATE.
    Server(&'a SqlState),
    /// The connection is closed: the server ended it, or its driver task stopped.
    Closed,
    /// Connecting, reading or writing the socket failed with this kind of I/O error.
    Io(io::ErrorKind),
    /// Anything else: encoding or decoding a value, a protocol error, a bad
    /// configuration, an unexpected row count.
    Other,
}

impl<'a> Fault<'a> {
    /// The fault `error` reports.
    pub(super) fn of(error: &'a tokio_postgres::Error) -> Self {
        if let Some(code) = error.code() {
            return Self::Server(code);
        }
        if error.is_closed() {
            return Self::Closed;
        }
        match std::error::Error::source(error).and_then(|s| s.downcast_ref::<io::Error>()) {
            Some(io) => Self::Io(io.kind()),
            None => Self::Other,
        }
    }
}

/// Whether an operation that failed with `fault` may succeed if tried again later.
///
/// | fault | transient |
/// | --- | --- |
/// | SQLSTATE class 08 (connection exception), but 08P01 (protocol violation) | yes |
/// | class 53 (insufficient resources: disk full, out of memory, too many connections) | yes |
/// | 57P01, 57P02, 57P03 (admin shutdown, crash shutdown, cannot connect now) | yes |
/// | class 58 (system error, I/O error) | yes |
/// | 40001, 40P01 (serialization failure, deadlock detected) | yes |
/// | 55P03 (lock not available: `lock_timeout`) | yes |
/// | 57014 (query cancelled: `statement_timeout`, or cancelled by an operator) | yes |
/// | any other SQLSTATE (08P01, 22 data, 23 integrity, 42 syntax or undefined, 54, XX) | no |
/// | the connection is closed | yes |
/// | an I/O error, but for `InvalidInput` and `InvalidData` | yes |
/// | `InvalidInput` or `InvalidData`: tokio-postgres's encoding and protocol errors | no |
/// | anything else (a value that does not convert, a bad configuration) | no |
pub(super) fn is_transient(fault: Fault<'_>) -> bool {
    match fault {
        Fault::Server(code) => {
            let text = code.code();
            let class = text.get(..2).unwrap_or(text);
            // A protocol violation (08P01) is a message the server could not parse:
            // keel would send the same one again.
            (matches!(class, "08" | "53" | "58") && *code != SqlState::PROTOCOL_VIOLATION)
                || [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::T_R_SERIALIZATION_FAILURE,
                    SqlState::T_R_DEADLOCK_DETECTED,
                    SqlState::LOCK_NOT_AVAILABLE,
                    SqlState::QUERY_CANCELED,
                ]
                .contains(code)
        }
        Fault::Closed => true,
        // tokio-postgres wraps its own encoding and protocol parsing failures in I/O
        // errors of these kinds: a message the server sent that cannot be parsed, or a
        // value that cannot be sent, fails the same way next time.
        Fault::Io(kind) => !matches!(
            kind,
            io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData
        ),
        Fault::Other => false,
    }
}

/// `error`, met while trying to do `context`, as keel's error: [`Error::Unavailable`]
/// if it may pass ([`is_transient`]), else [`Error::Storage`].
pub(super) fn storage_error(context: &str, error: &tokio_postgres::Error) -> Error {
    let reason = format!("could not {context}: {}", describe_error(error));
    if is_transient(Fault::of(error)) {
        unavailable(reason)
    } else {
        Error::Storage {
            backend: "postgres",
            reason,
        }
    }
}

/// For `map_err`: a storage error saying what could not be done (see [`storage_error`]).
pub(super) fn storage(context: &'static str) -> impl Fn(tokio_postgres::Error) -> Error {
    move |error| storage_error(context, &error)
}

/// The server could not be reached in time, or is otherwise away for now.
pub(super) fn unavailable(reason: String) -> Error {
    Error::Unavailable {
        backend: "postgres",
        reason,
    }
}

/// The database's text of an error: tokio-postgres shows only "db error" by itself.
pub(super) fn describe_error(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        let mut text = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
        if let Some(detail) = db.detail() {
            text.push_str(&format!(" ({detail})"));
        }
        if let Some(hint) = db.hint() {
            text.push_str(&format!("; hint: {hint}"));
        }
        return text;
    }
    match std::error::Error::source(error) {
        Some(source) => format!("{error}: {source}"),
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_being_away_or_busy_is_transient_and_a_bad_statement_is_not() {
        let table = [
            // Connection exceptions (08).
            (SqlState::CONNECTION_EXCEPTION, true),
            (SqlState::CONNECTION_FAILURE, true),
            (SqlState::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION, true),
            (SqlState::PROTOCOL_VIOLATION, false),
            // Insufficient resources (53).
            (SqlState::DISK_FULL, true),
            (SqlState::OUT_OF_MEMORY, true),
            (SqlState::TOO_MANY_CONNECTIONS, true),
            (SqlState::INSUFFICIENT_RESOURCES, true),
            // Operator intervention: shutdowns and start-up, and cancelled queries.
            (SqlState::ADMIN_SHUTDOWN, true),
            (SqlState::CRASH_SHUTDOWN, true),
            (SqlState::CANNOT_CONNECT_NOW, true),
            (SqlState::QUERY_CANCELED, true),
            (SqlState::DATABASE_DROPPED, false),
            // System errors (58).
            (SqlState::SYSTEM_ERROR, true),
            (SqlState::IO_ERROR, true),
            (SqlState::UNDEFINED_FILE, true),
            // Transaction rollbacks that a retry resolves, and lock timeouts.
            (SqlState::T_R_SERIALIZATION_FAILURE, true),
            (SqlState::T_R_DEADLOCK_DETECTED, true),
            (SqlState::LOCK_NOT_AVAILABLE, true),
            (SqlState::TRANSACTION_ROLLBACK, false),
            // The statement or its data: the same again next time.
            (SqlState::UNIQUE_VIOLATION, false),
            (SqlState::FOREIGN_KEY_VIOLATION, false),
            (SqlState::CHECK_VIOLATION, false),
            (SqlState::NUMERIC_VALUE_OUT_OF_RANGE, false),
            (SqlState::CHARACTER_NOT_IN_REPERTOIRE, false),
            (SqlState::SYNTAX_ERROR, false),
            (SqlState::UNDEFINED_TABLE, false),
            (SqlState::INSUFFICIENT_PRIVILEGE, false),
            (SqlState::PROGRAM_LIMIT_EXCEEDED, false),
            (SqlState::INVALID_PASSWORD, false),
            (SqlState::INVALID_CATALOG_NAME, false),
            (SqlState::INTERNAL_ERROR, false),
            (SqlState::DATA_CORRUPTED, false),
            (SqlState::IN_FAILED_SQL_TRANSACTION, false),
        ];
        for (code, transient) in &table {
            assert_eq!(
                is_transient(Fault::Server(code)),
                *transient,
                "SQLSTATE {}",
                code.code()
            );
        }
        let unknown = SqlState::from_code("08X42");
        assert!(
            is_transient(Fault::Server(&unknown)),
            "an unknown code of class 08"
        );
    }

    #[test]
    fn a_lost_connection_or_a_failed_socket_is_transient_and_a_codec_error_is_not() {
        let table = [
            (Fault::Closed, true),
            (Fault::Io(io::ErrorKind::ConnectionRefused), true),
            (Fault::Io(io::ErrorKind::ConnectionReset), true),
            (Fault::Io(io::ErrorKind::ConnectionAborted), true),
            (Fault::Io(io::ErrorKind::BrokenPipe), true),
            (Fault::Io(io::ErrorKind::UnexpectedEof), true),
            (Fault::Io(io::ErrorKind::TimedOut), true),
            (Fault::Io(io::ErrorKind::HostUnreachable), true),
            (Fault::Io(io::ErrorKind::NetworkUnreachable), true),
            (Fault::Io(io::ErrorKind::Other), true),
            (Fault::Io(io::ErrorKind::InvalidInput), false),
            (Fault::Io(io::ErrorKind::InvalidData), false),
            (Fault::Other, false),
        ];
        for (fault, transient) in table {
            assert_eq!(is_transient(fault), transient, "{fault:?}");
        }
    }
}
