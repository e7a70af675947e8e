//! One error type for the whole core, each variant saying what failed and on what, and each
//! knowing its kind (`ErrorKind`) so the caller picks a SQLSTATE or an exit code from the kind,
//! never from the text.

use std::io;

/// What sort of failure an error is; the SQL layer and the CLI decide from this alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Storage was reached and answered that the object does not exist.
    NotFound,
    /// Storage could not be reached, or refused us (missing prefix, permissions, network, timeout).
    Unreachable,
    /// An object was read but is damaged: bad checksum, truncated, wrong size, unparsable.
    Corrupt,
    /// The caller's input or the configuration is wrong.
    BadInput,
    /// The request conflicts with what exists or the current state; nothing was changed.
    Conflict,
    /// Stopped on request (cancel, shutdown).
    Cancelled,
    /// A local file system operation failed (PGDATA, restore target).
    LocalIo,
    /// A bug or an unexpected state (a panic, a broken invariant).
    Internal,
}

impl ErrorKind {
    /// Stable lower-case name, used where the kind crosses a process boundary (shared memory).
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::BadInput => "bad_input",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::LocalIo => "local_io",
            ErrorKind::Internal => "internal",
        }
    }

    pub fn from_name(s: &str) -> Option<ErrorKind> {
        ALL_KINDS.iter().copied().find(|k| k.name() == s)
    }
}

pub const ALL_KINDS: [ErrorKind; 8] = [
    ErrorKind::NotFound,
    ErrorKind::Unreachable,
    ErrorKind::Corrupt,
    ErrorKind::BadInput,
    ErrorKind::Conflict,
    ErrorKind::Cancelled,
    ErrorKind::LocalIo,
    ErrorKind::Internal,
];

/// Every fallible core function returns this.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No storage configured, bad setting value, unreadable config file.
    #[error("configuration: {0}")]
    Config(String),
    /// Storage was reached and said the object does not exist (never for an unreachable storage).
    #[error("not found: {0}")]
    NotFound(String),
    /// A storage operation failed. `key` is the object key or path ("" for the whole storage,
    /// as in `prepare`).
    #[error("storage {op}{}: {source}", if .key.is_empty() { String::new() } else { format!(" {}", .key) })]
    Storage {
        op: &'static str,
        key: String,
        #[source]
        source: io::Error,
    },
    /// Storage cannot be used at all (prefix missing or unreadable, bucket or endpoint wrong):
    /// the message says what to fix.
    #[error("storage unreachable: {0}")]
    Unreachable(String),
    /// Local file system error (PGDATA, restore target).
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    /// Bad JSON, bad tar entry, path escaping the target, etc. in something read from storage.
    #[error("{0}")]
    Format(String),
    /// Decompression failure, naming the object.
    #[error("cannot decode {object}: {msg}")]
    Codec { object: String, msg: String },
    /// An object read back does not match what was recorded (size, checksum, missing part).
    #[error("corrupt {object}: {msg}")]
    Corrupt { object: String, msg: String },
    /// WAL object exists with different content.
    #[error("{0}")]
    Conflict(String),
    /// The poll callback asked to stop.
    #[error("cancelled: {0}")]
    Cancelled(String),
    /// A caller-supplied argument is invalid (bad count, unknown mode, time in the future).
    #[error("{0}")]
    InvalidArgument(String),
    /// The operation is refused in the current state (would cut a delta chain, permanent
    /// backups in the way, ...); nothing was changed.
    #[error("{0}")]
    Refused(String),
    /// A bug: a panic in a worker thread, a broken invariant.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// io error kinds that say "the other side could not be reached or answered badly, try again".
fn io_is_transient(e: &io::Error) -> bool {
    use io::ErrorKind as K;
    matches!(
        e.kind(),
        K::TimedOut
            | K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::NotConnected
            | K::BrokenPipe
            | K::Interrupted
            | K::WouldBlock
            | K::HostUnreachable
            | K::NetworkUnreachable
            | K::NetworkDown
    )
}

impl Error {
    /// Local file system error on `path`.
    pub fn io(path: impl AsRef<std::path::Path>, source: io::Error) -> Error {
        Error::Io { path: path.as_ref().display().to_string(), source }
    }

    /// Storage error for operation `op` on object `key`.
    pub fn storage(op: &'static str, key: impl Into<String>, source: io::Error) -> Error {
        Error::Storage { op, key: key.into(), source }
    }

    /// A damaged object: `object` is its key.
    pub fn corrupt(object: impl Into<String>, msg: impl Into<String>) -> Error {
        Error::Corrupt { object: object.into(), msg: msg.into() }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config(_) | Error::InvalidArgument(_) => ErrorKind::BadInput,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Storage { source, .. } => match source.kind() {
                // Data read from storage that does not decode is damage, not an outage.
                io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => ErrorKind::Corrupt,
                // An object key we refuse to use (`..`, empty): the caller's input.
                io::ErrorKind::InvalidInput => ErrorKind::BadInput,
                _ => ErrorKind::Unreachable,
            },
            Error::Unreachable(_) => ErrorKind::Unreachable,
            Error::Io { .. } => ErrorKind::LocalIo,
            Error::Format(_) | Error::Codec { .. } | Error::Corrupt { .. } => ErrorKind::Corrupt,
            Error::Conflict(_) | Error::Refused(_) => ErrorKind::Conflict,
            Error::Cancelled(_) => ErrorKind::Cancelled,
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// Worth retrying as it is: a network fault or a timeout, not a wrong setting or damage.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Storage { source, .. } => io_is_transient(source),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_error_names_its_key_and_no_empty_one() {
        let e = |key: &str| Error::storage("prepare", key, io::Error::other("down")).to_string();
        assert_eq!(e(""), "storage prepare: down");
        assert_eq!(e("wal_005/x"), "storage prepare wal_005/x: down");
    }

    #[test]
    fn kinds_and_names_round_trip() {
        for k in ALL_KINDS {
            assert_eq!(ErrorKind::from_name(k.name()), Some(k));
        }
        assert_eq!(ErrorKind::from_name("nonsense"), None);
    }

    #[test]
    fn storage_errors_are_unreachable_unless_the_data_is_bad() {
        let refused = Error::storage("get", "k", io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(refused.kind(), ErrorKind::Unreachable);
        assert!(refused.is_transient());
        let denied = Error::storage("get", "k", io::Error::from(io::ErrorKind::PermissionDenied));
        assert_eq!(denied.kind(), ErrorKind::Unreachable);
        assert!(!denied.is_transient());
        let short = Error::storage("read", "k", io::Error::from(io::ErrorKind::UnexpectedEof));
        assert_eq!(short.kind(), ErrorKind::Corrupt);
        assert_eq!(Error::corrupt("wal_005/x", "size").kind(), ErrorKind::Corrupt);
        assert_eq!(Error::NotFound("x".into()).kind(), ErrorKind::NotFound);
    }
}
