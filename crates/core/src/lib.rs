//! walg-core: everything of walg_ext that is not PostgreSQL glue. WAL-G's bucket layout
//! (FORMAT.md), storage, codecs, backup push/fetch, WAL push/fetch and the backup catalog.

pub mod backup;
pub mod catalog;
pub mod codec;
pub mod config;
pub mod error;
pub mod format;
pub mod schedule;
pub mod storage;
pub(crate) mod threads;
pub mod wal;

pub use codec::{Compression, READ_EXTENSIONS};
pub use config::{Config, ScheduleConfig, Settings, StorageConfig};
pub use error::{Error, ErrorKind, Result};
pub use storage::{FsStorage, ObjectInfo, ObjectWriter, Storage};
