//! WAL archive: push (with look-ahead for the archiver), fetch for restore_command (with
//! prefetch of the next segments).

mod ahead;
pub mod blocks;
pub mod check;
mod fetch;
pub mod prefetch;
#[cfg(test)]
mod prefetch_tests;
mod push;
mod segment_map;
#[cfg(test)]
pub(crate) mod tests;

pub use ahead::Archiver;
pub use fetch::{fetch, fetch_with};
pub use push::{push, push_with};
pub use segment_map::{maps_enabled, MapNote, MAX_MAPPED_SEGMENT};

use crate::error::{Error, Result};
use crate::storage::Storage;

#[derive(Clone, Debug, PartialEq)]
pub enum PushOutcome {
    Uploaded { key: String, bytes: u64 },
    /// An object with identical content was already there (e.g. the archiver retried).
    AlreadyArchived { key: String },
    /// A `.partial` file replaced an object of the same name with different content
    /// (`previous`, which is gone now): worth a WARNING naming both.
    Overwritten { key: String, bytes: u64, previous: String },
}

fn check_file_name(file_name: &str) -> Result<()> {
    if file_name.is_empty() || file_name.contains('/') || file_name == "." || file_name == ".." {
        return Err(Error::Format(format!("invalid WAL file name {file_name:?}")));
    }
    Ok(())
}

/// The existing object for `prefix_and_name` (e.g. "wal_005/000000010000000000000001"), probing
/// every known compression extension, then the bare name.
pub fn find_object(storage: &dyn Storage, prefix_and_name: &str) -> Result<Option<String>> {
    crate::codec::find_object(storage, prefix_and_name)
}
