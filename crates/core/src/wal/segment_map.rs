//! The archiver's second job (issue 11): after a WAL segment is archived, parse it and store its
//! changed-block map (wal/blocks/stored.rs), so a delta backup can read only the pages the WAL
//! says changed. Archiving comes first: the map is made after the upload, in the thread that
//! uploaded the segment, and nothing here can change the archive's outcome. A failure (reading
//! the file, storing the map, even a panic in the parser) is returned as a [`MapNote`] for the
//! caller to log on its own thread (the extension logs from the main thread only); a delta over
//! that WAL then parses the archived segment itself (backup/delta_map.rs) or scans whole files.
//!
//! Memory: a segment is parsed from one buffer holding all of it. The archiver keeps one such
//! buffer and its threads take turns (parsing takes ~10 ms per 16 MiB), instead of one per
//! look-ahead thread.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;

use super::blocks::stored::{is_segment_name, put_map, MAP_PREFIX};
use super::blocks::{End, SegmentMap, Start, MAX_PIECE};
use super::{find_object, PushOutcome};
use crate::codec::Pipeline;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::format::names::lsn_to_string;
use crate::storage::Storage;

/// Segments up to this size are parsed from the kept buffer (16 MiB: PostgreSQL's default).
const KEEP_BUFFER: usize = 16 << 20;
/// Larger segments are parsed too, up to this size, from a buffer freed right after; beyond it
/// (wal_segment_size of 128 MiB to 1 GiB) the archiver would hold too much memory: no map.
pub const MAX_MAPPED_SEGMENT: u64 = 64 << 20;

/// Whether the archiver writes maps: deltas are on and maps are not turned off.
pub fn maps_enabled(cfg: &Config) -> bool {
    cfg.delta_max_steps > 0 && cfg.delta_wal_maps
}

/// What became of the map of one archived segment, when it is worth telling (a complete map
/// stored, or one already there, says nothing).
#[derive(Clone, Debug, PartialEq)]
pub enum MapNote {
    /// Stored as `key`, but the parser could not account for the whole segment.
    Incomplete { segment: String, key: String, why: String },
    /// No map stored.
    Failed { segment: String, error: String },
}

impl MapNote {
    /// A failure deserves a WARNING; an incomplete map (a rare record over 4 MiB, WAL the parser
    /// does not accept) a LOG line.
    pub fn is_warning(&self) -> bool {
        matches!(self, MapNote::Failed { .. })
    }

    pub fn segment(&self) -> &str {
        match self {
            MapNote::Incomplete { segment, .. } | MapNote::Failed { segment, .. } => segment,
        }
    }

    pub fn message(&self) -> String {
        match self {
            MapNote::Failed { segment, error } => format!(
                "walg_ext: no changed-block map for {segment}: {error}; a delta backup over this WAL \
                 parses the archived segment instead (or scans whole files)"
            ),
            MapNote::Incomplete { segment, key, why } => format!(
                "walg_ext: the changed-block map of {segment} ({key}) is incomplete: {why}; a delta backup \
                 over this WAL scans whole files instead"
            ),
        }
    }
}

/// Why a map is incomplete, in words.
fn why_incomplete(map: &SegmentMap) -> String {
    let mut why = Vec::new();
    if map.scan.start == Start::MidRecord(None) {
        why.push(format!("the record continued from the previous segment is over {} MiB", MAX_PIECE >> 20));
    }
    match &map.scan.end {
        End::MidRecord { lsn: at, tail: None } => {
            why.push(format!("the record at {} continuing into the next segment is over {} MiB", lsn_to_string(*at), MAX_PIECE >> 20))
        }
        End::Invalid { lsn: at, reason } => why.push(format!("valid WAL ends at {}: {reason}", lsn_to_string(*at))),
        _ => {}
    }
    why.join("; ")
}

/// The archiver's map maker: the one segment buffer its threads share.
#[derive(Default)]
pub(super) struct MapMaker {
    buf: Mutex<Vec<u8>>,
}

impl MapMaker {
    /// After `file_name` (at `path`) was archived with `outcome`: store its map if it is a
    /// segment, it was uploaded now or no map exists yet. Never fails; never panics.
    pub(super) fn after_push(
        &self,
        pipeline: &Pipeline,
        storage: &dyn Storage,
        file_name: &str,
        path: &Path,
        outcome: &PushOutcome,
    ) -> Option<MapNote> {
        if !is_segment_name(file_name) {
            return None; // .history, .backup, .partial: not WAL records to map
        }
        let failed = |e: Error| Some(MapNote::Failed { segment: file_name.to_string(), error: e.to_string() });
        match outcome {
            PushOutcome::Uploaded { .. } => {}
            // A retry of a segment archived before: its map may be there already.
            PushOutcome::AlreadyArchived { .. } => match find_object(storage, &format!("{MAP_PREFIX}{file_name}")) {
                Ok(Some(_)) => return None,
                Ok(None) => {}
                Err(e) => return failed(e),
            },
            PushOutcome::Overwritten { .. } => return None,
        }
        let map = match crate::threads::catch_panic("the WAL parser", || self.build(path)) {
            Ok(m) => m,
            Err(e) => return failed(e),
        };
        match crate::threads::catch_panic("storing a changed-block map", || put_map(pipeline, storage, file_name, &map)) {
            Ok(key) if !map.is_complete() => {
                Some(MapNote::Incomplete { segment: file_name.to_string(), key, why: why_incomplete(&map) })
            }
            Ok(_) => None,
            Err(e) => failed(e),
        }
    }

    /// Read the whole segment into the shared buffer (waiting for the other threads) and parse it.
    fn build(&self, path: &Path) -> Result<SegmentMap> {
        let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
        if len > MAX_MAPPED_SEGMENT {
            return Err(Error::InvalidArgument(format!(
                "the segment is {} MiB, over the {} MiB the archiver maps",
                len >> 20,
                MAX_MAPPED_SEGMENT >> 20
            )));
        }
        // A panic while parsing leaves the lock poisoned; the buffer is still just bytes.
        let mut buf = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        buf.clear();
        buf.reserve_exact(len as usize);
        // Reads what is there, even if the file changed size since: the parser judges the bytes.
        let read = f.read_to_end(&mut buf).map_err(|e| Error::io(path, e));
        let map = read.map(|_| SegmentMap::build(&buf));
        if buf.capacity() > KEEP_BUFFER + (1 << 20) {
            *buf = Vec::new();
        }
        map
    }
}

#[cfg(test)]
#[path = "segment_map_tests.rs"]
mod tests;
