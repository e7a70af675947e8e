//! Object storage abstraction. Keys are `/`-separated and relative to the storage root/prefix.
//! Implementations: a local directory (fs), S3 or an S3-compatible service (s3), Azure Blob
//! (azure), Google Cloud Storage (gcs), a directory on a host reached over SSH (sftp). `open` picks one from the settings; `retry` is the one retry policy.
//!
//! Invariant of every implementation: "not there" (`get` -> None, `exists` -> false, an empty
//! `list`, `has_dir` -> false) is said only when the storage was reached and answered so. A
//! storage that cannot be reached or read (missing or unreadable prefix, wrong bucket, wrong
//! endpoint, a proxy's bare 404, permissions, timeouts) gives an error whose `kind()` is
//! Unreachable.

pub mod azure;
mod body;
mod dal;
mod http;
mod direct;
mod fs;
pub mod gcs;
mod open;
pub mod retry;
pub mod s3;
pub mod swift;
pub mod sftp;

pub use azure::{AzureConfig, AzureStorage};
pub use fs::{FsStorage, FS_TMP_PREFIX};
pub use gcs::{GcsConfig, GcsStorage};
pub use open::{describe, open};
pub use retry::{RetryPolicy, Retrying, Transient};
pub use s3::{S3Config, S3Storage};
pub use swift::{SwiftConfig, SwiftStorage};
pub use sftp::{SftpConfig, SftpStorage};

use std::io::{self, Read, Write};
use std::time::SystemTime;

use crate::error::Result;

/// One listed object.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub modified: SystemTime,
}

/// An upload that was started and neither finished nor aborted: what a killed writer leaves
/// behind (a temp file of file storage, an S3 multipart upload). Never a visible object: `list`
/// does not show it, and nothing reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingUpload {
    /// File storage: the temp file's own key (`dir/.walg-tmp-<pid>-<n>-<name>`). S3: the key
    /// the upload would have created.
    pub key: String,
    /// S3's multipart upload id; empty for file storage.
    pub upload_id: String,
    /// The latest time the upload is known to have been active: file storage, the temp file's
    /// modification time (a live writer keeps writing to it); S3, when the upload was initiated
    /// (S3 does not say when its last part arrived).
    pub last_activity: SystemTime,
    /// Bytes held so far, where the backend says (0 otherwise).
    pub size: u64,
}

/// A streaming upload. Dropping it without `finish()` aborts: nothing becomes visible.
pub trait ObjectWriter: Write + Send {
    /// Commit: make the object visible (durably). Returns bytes stored (for a compressing
    /// writer, the compressed size).
    fn finish(self: Box<Self>) -> Result<u64>;

    /// Room for the next bytes directly in the writer's own buffer, when it has one, so a
    /// caller reading a file can read straight into it (one memory copy less); `commit_input(n)`
    /// then takes the first `n` bytes of it as written. None by default.
    fn input_buffer(&mut self) -> Option<&mut [u8]> {
        None
    }
    fn commit_input(&mut self, n: usize) -> io::Result<()> {
        let _ = n;
        Err(io::Error::other("this writer has no input buffer"))
    }
}

pub trait Storage: Send + Sync {
    /// Open an object for reading; `None` when there is no such object.
    fn get(&self, key: &str) -> Result<Option<Box<dyn Read + Send>>>;
    /// Store `data` durably, atomically replacing any previous object.
    fn put(&self, key: &str, data: &[u8]) -> Result<()>;
    /// Streaming put.
    fn writer(&self, key: &str) -> Result<Box<dyn ObjectWriter>>;
    /// Every object whose key starts with `prefix` (recursive), keys relative to the root, sorted.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;
    fn exists(&self, key: &str) -> Result<bool>;
    /// Whether the "directory" `dir` (a key prefix such as "wal_005/") is there: for files, the
    /// directory exists; for S3, some object's key starts with it. `Ok(false)` is an answer from
    /// a reachable storage; an unreachable one is an error (kind Unreachable). The default lists
    /// everything under `dir`; implementations answer with one cheap request.
    fn has_dir(&self, dir: &str) -> Result<bool> {
        Ok(!self.list(dir)?.is_empty())
    }
    /// Make the storage ready for writing before a writer's first existence check: file storage
    /// creates its prefix directory when it is missing (archiving into a fresh prefix works
    /// without a setup step); S3 has nothing to do. Readers never call this, so a missing
    /// prefix stays "unreachable" for them.
    fn prepare_write(&self) -> Result<()> {
        Ok(())
    }
    /// Remove an object; a missing object is not an error.
    fn delete(&self, key: &str) -> Result<()>;
    /// Human-readable location, e.g. "file:///backups".
    fn describe(&self) -> String;

    /// Uploads under `prefix` that were started and never finished nor aborted (killed writers'
    /// leftovers), sorted by key. A backend whose unfinished uploads leave nothing behind has
    /// none (the default). Live uploads are listed too: the caller decides by `last_activity`.
    fn pending_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>> {
        let _ = prefix;
        Ok(Vec::new())
    }

    /// Discard one pending upload (its bytes are freed; nothing visible changes). Gone already
    /// is not an error.
    fn abort_upload(&self, upload: &PendingUpload) -> Result<()> {
        let _ = upload;
        Ok(())
    }
}

/// Object keys as FsStorage accepts them, so every backend refuses the same keys.
pub(crate) fn check_key(op: &'static str, key: &str) -> Result<()> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key.split('/').any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(crate::Error::storage(op, key, io::Error::new(io::ErrorKind::InvalidInput, "invalid object key")));
    }
    Ok(())
}

/// Read a whole (small) object; `None` when missing.
pub fn get_bytes(storage: &dyn Storage, key: &str) -> Result<Option<Vec<u8>>> {
    let Some(mut r) = storage.get(key)? else { return Ok(None) };
    let mut buf = Vec::new();
    r.read_to_end(&mut buf).map_err(|e| crate::Error::storage("read", key, e))?;
    Ok(Some(buf))
}
