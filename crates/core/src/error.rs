//! One error type for the whole core, each variant saying what failed and on what.

/// Every fallible core function returns this.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No storage configured, bad setting value, unreadable config file.
    #[error("configuration: {0}")]
    Config(String),
    /// An object (key) is missing where it must exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A storage operation failed. `key` is the object key or path.
    #[error("storage {op} {key}: {source}")]
    Storage {
        op: &'static str,
        key: String,
        #[source]
        source: std::io::Error,
    },
    /// Local file system error (PGDATA, restore target).
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Bad JSON, bad backup name, bad tar entry, path escaping the target, etc.
    #[error("{0}")]
    Format(String),
    /// Decompression failure, naming the object.
    #[error("cannot decode {object}: {msg}")]
    Codec { object: String, msg: String },
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
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Local file system error on `path`.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Error {
        Error::Io { path: path.as_ref().display().to_string(), source }
    }

    /// Storage error for operation `op` on object `key`.
    pub fn storage(op: &'static str, key: impl Into<String>, source: std::io::Error) -> Error {
        Error::Storage { op, key: key.into(), source }
    }
}
