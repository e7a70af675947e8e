//! The on-storage contract (FORMAT.md): object names, LSNs, JSON documents and tar handling.

pub mod increment;
pub mod integrity;
pub mod names;
pub mod page_checksum;
pub mod sentinel;
pub mod tablespace;
pub mod tar;

pub use self::names::*;
pub use self::sentinel::{BackupMetadata, CorruptBlocks, FileDescription, FilesMetadata, Sentinel, DATE_FMT};
pub use self::tar::extract_tar;
