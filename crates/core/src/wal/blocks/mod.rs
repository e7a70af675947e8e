//! Which relation blocks and files one WAL segment changes: the first piece of the changed-block
//! map (issue 11). The archiver already reads every byte of every segment it archives; parsing the
//! records there gives, per segment, every block reference (relation, fork, block) and every
//! file-level change (create, truncate, drop, database and tablespace create/drop, relation map
//! rewrite). A delta backup whose base starts at LSN `A` and which itself starts at `B` then reads
//! only the blocks named by the maps of the segments covering `A..B`, plus whole files for the
//! relations those maps create, truncate or that are not main forks, if and only if every map in
//! the range is complete and the maps join without a gap; otherwise it falls back to the full scan
//! (see issue 11). This module parses; [`stored`] keeps the maps in storage (the archiver writes
//! them, see wal/ahead.rs); planning deltas from them is in backup/.
//!
//! PostgreSQL 15 format only (page magic 0xD110): the layout is from the server headers
//! `access/xlogrecord.h` and `access/xlog_internal.h`, decoding follows the rules of `xlogreader.c`.
//!
//! Records that cross a segment boundary: a segment alone cannot decode them, so the segment's
//! result keeps the bytes it holds of such a record ([`Tail`] at its end, [`Head`] at its start)
//! and [`join`] decodes the record from the pieces of adjacent segments. That keeps the parse of
//! each segment independent (the archiver's look-ahead archives segments in parallel); the map of a
//! range is complete only when every boundary record is joined. A piece larger than
//! [`MAX_PIECE`] is not kept and makes its range incomplete (such records are rare: only very
//! large commit records or logical messages reach that size).
//!
//! Anything the parser does not accept (bad page header, bad CRC, impossible record layout) ends
//! the segment's valid WAL there: [`End::Invalid`] says where and why, and the map is incomplete
//! from that LSN on. It is never read as "no changes".

//! What the delta planner must add to the map, because PostgreSQL 15 changes these files without
//! a block reference for each page (found while writing this parser, checked by the workload of
//! tests/walparse.rs):
//! - a new relation file ([`FileEvent::Create`]; also every relation of a database created with
//!   `STRATEGY FILE_COPY` or moved by `ALTER DATABASE SET TABLESPACE`, logged only as
//!   [`FileEvent::CreateDatabaseCopy`]): copy the whole file;
//! - a truncated one ([`FileEvent::Truncate`]): the new length comes from the file at backup time;
//! - dropped files ([`FileEvent::Drop`] at commit or abort, [`FileEvent::DropDatabase`]): absent
//!   from the new backup;
//! - pages added by relation extension are zero-filled and not WAL-logged until first used: pages
//!   past the base's length that no map names are new pages, to be copied (as the full scan does);
//! - unlogged relations (those with an init fork): only the init fork is WAL-logged, the other
//!   forks change with no WAL at all; skip them (as pg_basebackup does) or copy them whole;
//! - `wal_level = minimal` ([`FileEvent::WalLevel`] 0): relations created or rewritten in a
//!   transaction are fsynced at commit instead of logged, so such a stretch is not mapped;
//! - files that are not relation files (pg_xact, pg_multixact, pg_commit_ts, pg_filenode.map,
//!   pg_twophase, pg_logical, PG_VERSION, pg_control) are copied whole by every backup;
//!   [`FileEvent::RelMapUpdate`] and [`FileEvent::LogicalRewriteMapping`] are reported only so
//!   the map is a full account of the WAL;
//! - hint-bit-only changes without `wal_log_hints` or checksums are neither logged nor visible to
//!   the full scan (the page LSN does not move): not needed for a correct restore.

mod events;
mod page;
mod record;
mod scan;
pub mod stored;
#[cfg(test)]
pub(crate) mod tests;

pub use events::FileEvent;
pub use scan::{join, scan_segment, Scan};

/// Pieces of a boundary record larger than this are not kept (the range becomes incomplete).
pub const MAX_PIECE: usize = 4 << 20;

/// A relation file node: tablespace, database and relfilenode OIDs (PostgreSQL's `RelFileNode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelFileNode {
    pub spc: u32,
    pub db: u32,
    pub rel: u32,
}

/// One block of one fork of one relation (fork 0 main, 1 fsm, 2 vm, 3 init).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockRef {
    pub rel: RelFileNode,
    pub fork: u8,
    pub block: u32,
}

/// What a record changes: a block it references, or a file-level event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Block reference `block_id` (the `#N` of pg_waldump's `blkref #N`) of the record.
    Block {
        block_id: u8,
        block: BlockRef,
        image: bool,
    },
    File(FileEvent),
}

/// How the segment begins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// A record starts right after the first page header.
    AtRecord,
    /// The page says the record continued from the previous segment was never completed
    /// (`XLP_FIRST_IS_OVERWRITE_CONTRECORD`, written after a crash): nothing to join.
    AfterAbortedRecord,
    /// The segment starts inside a record begun earlier: its rest, or `None` if it was larger
    /// than [`MAX_PIECE`] (that record then cannot be decoded: incomplete).
    MidRecord(Option<Head>),
}

/// How the segment's valid WAL ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// The last record ends exactly at the segment's end.
    SegmentEnd,
    /// An `XLOG_SWITCH` record at `lsn`: the rest of the segment is padding.
    Switch { lsn: u64 },
    /// The record at the end continues into the next segment: its first part, or `None` if that
    /// was larger than [`MAX_PIECE`] (incomplete).
    MidRecord { lsn: u64, tail: Option<Tail> },
    /// The whole segment is inside one record that goes on into the next segment (see
    /// [`Start::MidRecord`]'s head).
    InsideRecord,
    /// Valid WAL ends at `lsn` (a zeroed or foreign page, a bad CRC, an unreadable record): the
    /// map knows nothing from there on.
    Invalid { lsn: u64, reason: String },
}

/// The first part of a record that continues into the next segment (page headers removed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tail {
    pub lsn: u64,
    /// The LSN where this segment ends (where the next piece must start).
    pub segment_end: u64,
    pub tot_len: u32,
    pub bytes: Vec<u8>,
}

/// The part at a segment's start of a record begun in an earlier segment (page headers removed).
/// `rem_len` is the first page's `xlp_rem_len`: the bytes of the record still to come at the
/// segment start, of which `bytes` holds those in this segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub segment_lsn: u64,
    pub segment_end: u64,
    pub rem_len: u32,
    pub bytes: Vec<u8>,
}

/// One segment's map: the distinct blocks and the file events, with how complete it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentMap {
    pub scan: Scan,
    /// Sorted, without duplicates.
    pub blocks: Vec<BlockRef>,
    /// In WAL order, with the record's LSN.
    pub events: Vec<(u64, FileEvent)>,
}

impl SegmentMap {
    /// Parses a whole segment file's bytes.
    pub fn build(segment: &[u8]) -> SegmentMap {
        let mut blocks = Vec::new();
        let mut events = Vec::new();
        // Most references repeat a block touched just before (rows added to the same page, the
        // same index pages): a small direct-mapped cache of recent blocks drops most repeats
        // before they reach the sort, which was a third of the time of a map.
        let mut recent = vec![None::<BlockRef>; 4096];
        let scan = scan_segment(segment, &mut |lsn, change| match change {
            Change::Block { block, .. } => {
                let h = (block.rel.rel
                    ^ block.block.wrapping_mul(0x9E37_79B9)
                    ^ (block.fork as u32) << 7) as usize;
                let slot = &mut recent[(h ^ (h >> 12)) & 4095];
                if *slot != Some(block) {
                    *slot = Some(block);
                    blocks.push(block);
                }
            }
            Change::File(ev) => events.push((lsn, ev)),
        });
        blocks.sort_unstable();
        blocks.dedup();
        SegmentMap {
            scan,
            blocks,
            events,
        }
    }

    /// True when every record that ends in this segment was read and the boundary pieces needed
    /// to join the records crossing its ends were kept. A range of maps is complete when each map
    /// is and [`join`] succeeds at every boundary.
    pub fn is_complete(&self) -> bool {
        self.scan.is_complete()
    }
}
