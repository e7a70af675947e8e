//! The backup catalog: list, mark, delete (retention), and the WAL views wal-show and
//! wal-verify. Everything here reads and writes storage only, so the extension and the CLI run
//! the same code.

pub mod copy;
pub mod delete;
pub mod list;
pub mod mark;
pub mod pitr;
pub mod timeline;
pub mod wal_show;
pub mod wal_verify;
pub mod walfiles;

pub use list::{chain, descendants, find, latest_backup, list_backups, BackupInfo};

#[cfg(test)]
mod tests;

#[cfg(test)]
mod copy_tests;
