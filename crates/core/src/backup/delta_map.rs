//! Choosing a delta's pages from the WAL block maps (issue 11) instead of reading every page.
//!
//! A delta whose base started at LSN `from` and which starts at `to` must hold every page changed
//! in `from..to`: later changes are replayed from its own WAL, earlier ones are in the base (the
//! checkpoint at the base's start wrote them out, and no record crosses a checkpoint's redo
//! point). The maps of the segments from `from`'s to `to`'s (the archiver's, or parsed here from
//! `pg_wal` when the archiver has not stored one yet) name every block those records reference.
//!
//! The maps are used only if all of them are there, are complete, belong to this system and
//! timeline, and the records crossing their boundaries join; anything else, including a map that
//! cannot be read or a stretch of `wal_level = minimal`, makes the delta read whole files (the
//! full scan), and the reason is logged and recorded. Records in the first and last segment
//! outside `from..to` only add pages (a superset is safe).
//!
//! Besides the named blocks, whole files for relations created or truncated in the range and for
//! every file of a database or tablespace created in it (their pages are not all WAL-logged as
//! blocks: `CREATE DATABASE ... STRATEGY FILE_COPY`, smgr creates). Pages past the base's end
//! that no map names were added by relation extension and never written with data since (that
//! would be logged): they are zeros, which is what a restore extends the file with.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read};
use std::path::Path;

use crate::error::{Error, Result};
use crate::format::increment::{for_each_page, PageHeader, PAGE_SIZE};
use crate::format::names::{lsn_to_string, wal_file_name_for_segno};
use crate::format::page_checksum::RELSEG_SIZE;
use crate::wal::blocks::{join, BlockRef, Change, End, FileEvent, Head, RelFileNode, Scan, SegmentMap, Start};

const DEFAULT_TABLESPACE: u32 = 1663;

/// The range a delta's maps must cover.
#[derive(Clone, Copy, Debug)]
pub struct MapRange {
    pub timeline: u32,
    /// The base's start LSN.
    pub from: u64,
    /// This backup's start LSN.
    pub to: u64,
    pub wal_segment_size: u64,
    pub system_identifier: u64,
}

/// How a delta chooses its pages.
#[derive(Clone, Debug)]
pub enum PagePlan {
    /// From the maps: read only the pages they name.
    Maps(ChangedPages),
    /// Every page of every candidate file, keeping those with an LSN at or after the base's start.
    FullScan { reason: String },
}

impl PagePlan {
    /// The sentinel's `WalgExtDeltaPages`: `wal-maps` or `full-scan`.
    pub fn method(&self) -> &'static str {
        match self {
            PagePlan::Maps(_) => "wal-maps",
            PagePlan::FullScan { .. } => "full-scan",
        }
    }
}

/// What the maps of a range say changed.
#[derive(Clone, Debug, Default)]
pub struct ChangedPages {
    /// Main-fork blocks per relation (absolute block numbers), sorted and without duplicates.
    blocks: HashMap<RelFileNode, Vec<u32>>,
    /// Relations created or truncated in the range: copied whole.
    whole_relations: HashSet<RelFileNode>,
    /// (tablespace, database) directories created in the range: every file whole.
    whole_databases: HashSet<(u32, u32)>,
    /// Tablespaces created in the range.
    whole_tablespaces: HashSet<u32>,
    /// Segments the maps came from, and of these how many were parsed here, from pg_wal and
    /// from the archived WAL.
    pub segments: usize,
    pub parsed_locally: usize,
    pub parsed_from_archive: usize,
}

/// What a delta stores of one relation segment file, by the maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FilePages {
    Whole,
    /// Block numbers within the file, sorted.
    Blocks(Vec<u32>),
}

/// The relation and segment number of a main-fork relation segment's tar entry name:
/// `/base/DB/REL[.N]` or `/pg_tblspc/SPC/<version dir>/DB/REL[.N]`. None for anything else.
pub fn main_fork_segment(entry: &str) -> Option<(RelFileNode, u32)> {
    let parts: Vec<&str> = entry.trim_start_matches('/').split('/').collect();
    let num = |s: &str| -> Option<u32> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (spc, db, file) = match parts.as_slice() {
        ["base", db, file] => (DEFAULT_TABLESPACE, num(db)?, *file),
        ["pg_tblspc", spc, _version, db, file] => (num(spc)?, num(db)?, *file),
        _ => return None,
    };
    let (rel, seg) = match file.split_once('.') {
        Some((r, s)) => (num(r)?, num(s)?),
        None => (num(file)?, 0),
    };
    Some((RelFileNode { spc, db, rel }, seg))
}

impl ChangedPages {
    fn add(&mut self, map: &SegmentMap) -> std::result::Result<(), String> {
        for b in &map.blocks {
            self.block(b);
        }
        for (lsn, ev) in &map.events {
            self.event(*lsn, ev)?;
        }
        Ok(())
    }

    fn event(&mut self, lsn: u64, ev: &FileEvent) -> std::result::Result<(), String> {
        match ev {
            FileEvent::Create { rel, .. } | FileEvent::Truncate { rel, .. } => {
                self.whole_relations.insert(*rel);
            }
            FileEvent::CreateDatabaseCopy { db, spc, .. } | FileEvent::CreateDatabaseWalLog { db, spc } => {
                self.whole_databases.insert((*spc, *db));
            }
            FileEvent::CreateTablespace { spc } => {
                self.whole_tablespaces.insert(*spc);
            }
            FileEvent::WalLevel { level: 0 } => {
                return Err(format!(
                    "wal_level was set to minimal at {}: relations changed then are not WAL-logged page by page",
                    lsn_to_string(lsn)
                ))
            }
            FileEvent::WalLevel { .. }
            | FileEvent::DropDatabase { .. }
            | FileEvent::DropTablespace { .. }
            | FileEvent::RelMapUpdate { .. }
            | FileEvent::Drop { .. }
            | FileEvent::LogicalRewriteMapping => {}
        }
        Ok(())
    }

    fn change(&mut self, lsn: u64, c: Change) -> std::result::Result<(), String> {
        match c {
            Change::Block { block, .. } => self.block(&block),
            Change::File(ev) => self.event(lsn, &ev)?,
        }
        Ok(())
    }

    /// Main-fork blocks only: the other forks are stored whole.
    fn block(&mut self, b: &BlockRef) {
        if b.fork == 0 {
            self.blocks.entry(b.rel).or_default().push(b.block);
        }
    }

    fn finish(&mut self) {
        for v in self.blocks.values_mut() {
            v.sort_unstable();
            v.dedup();
        }
    }

    /// Pages to store of the relation segment file `entry` (`size` bytes now), or None when
    /// `entry` is no main-fork relation segment (the caller's rules apply).
    pub fn for_file(&self, entry: &str, size: u64) -> Option<FilePages> {
        let (rel, seg) = main_fork_segment(entry)?;
        if self.whole_relations.contains(&rel)
            || self.whole_databases.contains(&(rel.spc, rel.db))
            || self.whole_tablespaces.contains(&rel.spc)
        {
            return Some(FilePages::Whole);
        }
        let first = seg as u64 * RELSEG_SIZE as u64;
        let end = first + size / PAGE_SIZE as u64;
        let blocks = self.blocks.get(&rel).map_or_else(Vec::new, |all| {
            let lo = all.partition_point(|&b| (b as u64) < first);
            let hi = all.partition_point(|&b| (b as u64) < end);
            all[lo..hi].iter().map(|&b| (b as u64 - first) as u32).collect()
        });
        Some(FilePages::Blocks(blocks))
    }

    /// Pages named by the maps, over all relations.
    pub fn pages(&self) -> usize {
        self.blocks.values().map(Vec::len).sum()
    }
}

/// Where a segment's map came from.
pub enum MapSource {
    Storage(SegmentMap),
    /// Parsed here from pg_wal (the archiver has not stored one, e.g. the current segment).
    Local(SegmentMap),
    /// Parsed here from the archived segment (no map was stored for it).
    Archived(SegmentMap),
    Missing,
}

/// Gather and check the maps of `range`; `get(segment name)` finds one segment's map (storage
/// first, then pg_wal). Every failure to get a map is a reason for the full scan, never an error.
pub fn plan(range: &MapRange, get: &mut dyn FnMut(&str) -> Result<MapSource>) -> PagePlan {
    match gather(range, get) {
        Ok(pages) => PagePlan::Maps(pages),
        Err(reason) => PagePlan::FullScan { reason },
    }
}

fn gather(range: &MapRange, get: &mut dyn FnMut(&str) -> Result<MapSource>) -> std::result::Result<ChangedPages, String> {
    let seg_size = range.wal_segment_size;
    if range.to < range.from {
        return Err(format!("the base starts at {}, after this backup's start", lsn_to_string(range.from)));
    }
    let first = range.from / seg_size;
    let last = range.to / seg_size;
    let mut pages = ChangedPages::default();
    // Only each map's ends are kept for the joins below: the blocks are in `pages` already.
    let mut scans: Vec<(String, Scan)> = Vec::new();
    for segno in first..=last {
        let name = wal_file_name_for_segno(range.timeline, segno, seg_size);
        let map = match get(&name) {
            Ok(MapSource::Storage(m)) => m,
            Ok(MapSource::Local(m)) => {
                pages.parsed_locally += 1;
                m
            }
            Ok(MapSource::Archived(m)) => {
                pages.parsed_from_archive += 1;
                m
            }
            Ok(MapSource::Missing) => {
                return Err(format!(
                    "no block map of WAL segment {name}, and it is neither in pg_wal nor among the first {MAX_SEGMENTS_FROM_ARCHIVE} archived segments without a map"
                ))
            }
            Err(e) => return Err(format!("the block map of WAL segment {name} could not be read: {e}")),
        };
        check_segment(range, segno, &name, &map)?;
        pages.add(&map)?;
        if (segno - first) % 16 == 15 {
            // Blocks repeat from segment to segment: compact now and then, so a long range
            // holds about one entry per changed page, not one per segment that touched it.
            pages.finish();
        }
        scans.push((name, map.scan));
    }
    // Records crossing a boundary inside the range: a tail joined with the heads that follow.
    for i in 0..scans.len() {
        let (name, scan) = &scans[i];
        let End::MidRecord { lsn, tail } = &scan.end else { continue };
        if *lsn >= range.to {
            continue;
        }
        let Some(tail) = tail else {
            return Err(format!("the record at {} crossing the end of {name} was too large to keep", lsn_to_string(*lsn)));
        };
        let mut heads: Vec<&Head> = Vec::new();
        let mut aborted = false;
        for (next_name, next) in &scans[i + 1..] {
            match &next.start {
                Start::MidRecord(Some(h)) => heads.push(h),
                Start::AfterAbortedRecord => {
                    aborted = true; // never completed (a crash): nothing to join
                    break;
                }
                Start::MidRecord(None) | Start::AtRecord => {
                    return Err(format!("{next_name} does not continue the record at {} begun in {name}", lsn_to_string(*lsn)))
                }
            }
            if !matches!(next.end, End::InsideRecord) {
                break;
            }
        }
        if aborted {
            continue;
        }
        if heads.is_empty() {
            return Err(format!("the rest of the record at {} crossing the end of {name} is beyond the range", lsn_to_string(*lsn)));
        }
        let mut bad = None;
        join(tail, &heads, &mut |l, c| {
            if bad.is_none() {
                bad = pages.change(l, c).err();
            }
        })
        .map_err(|e| format!("the record at {} crossing the end of {name} does not join: {e}", lsn_to_string(*lsn)))?;
        if let Some(b) = bad {
            return Err(b);
        }
    }
    pages.segments = scans.len();
    pages.finish();
    Ok(pages)
}

/// A map fits the range: this system, timeline and segment, and complete up to `to`.
fn check_segment(range: &MapRange, segno: u64, name: &str, map: &SegmentMap) -> std::result::Result<(), String> {
    let s = &map.scan;
    let seg_lsn = segno * range.wal_segment_size;
    if s.segment_lsn != seg_lsn || s.timeline != range.timeline {
        return Err(format!(
            "the block map of {name} describes segment {} of timeline {}",
            lsn_to_string(s.segment_lsn),
            s.timeline
        ));
    }
    if s.system_id != range.system_identifier {
        return Err(format!("the block map of {name} is of another database system ({})", s.system_id));
    }
    let seg_end = seg_lsn + range.wal_segment_size;
    if matches!(s.start, Start::MidRecord(None)) && seg_lsn > range.from {
        return Err(format!("{name} begins inside a record too large to keep"));
    }
    match &s.end {
        End::Invalid { lsn, reason } if *lsn < range.to.min(seg_end) => Err(format!(
            "the WAL of {name} is unreadable from {} on ({reason})",
            lsn_to_string(*lsn)
        )),
        _ => Ok(()),
    }
}

/// At most this many segments of a range without a stored map are parsed from the archived WAL
/// (1 GiB of 16 MiB segments); more, and reading the data once (the full scan) is likely cheaper.
pub const MAX_SEGMENTS_FROM_ARCHIVE: usize = 64;

/// The plan of a delta over `range`: each segment's map from storage (`stored`, the archiver's),
/// else parsed here from `pg_wal` (the current segment, or one the archiver has not reached),
/// else parsed from the archived segment (`archived`: maps not written then, e.g. before
/// `walg.delta_max_steps` was set, or lost), up to [`MAX_SEGMENTS_FROM_ARCHIVE`].
pub fn plan_for_backup(
    range: &MapRange,
    pg_wal: &Path,
    stored: &mut dyn FnMut(&str) -> Result<Option<SegmentMap>>,
    archived: &mut dyn FnMut(&str) -> Result<Option<Vec<u8>>>,
) -> PagePlan {
    let mut from_archive = 0;
    plan(range, &mut |name: &str| {
        if let Some(m) = stored(name)? {
            return Ok(MapSource::Storage(m));
        }
        let path = pg_wal.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => return Ok(MapSource::Local(SegmentMap::build(&bytes))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&path, e)),
        }
        if from_archive == MAX_SEGMENTS_FROM_ARCHIVE {
            return Ok(MapSource::Missing);
        }
        from_archive += 1;
        Ok(match archived(name)? {
            Some(bytes) => MapSource::Archived(SegmentMap::build(&bytes)),
            None => MapSource::Missing,
        })
    })
}

/// A whole WAL segment as archived in `wal_005/`, decoded; None if storage says it is not there.
pub fn read_archived_segment(pipeline: &crate::codec::Pipeline, storage: &dyn crate::storage::Storage, name: &str) -> Result<Option<Vec<u8>>> {
    let Some(key) = crate::wal::find_object(storage, &format!("{}{name}", crate::format::names::WAL_PREFIX))? else {
        return Ok(None);
    };
    let Some(mut r) = pipeline.open(storage, &key)? else { return Ok(None) };
    let mut bytes = Vec::with_capacity(16 << 20);
    r.read_to_end(&mut bytes).map_err(|e| crate::codec::read_error(&key, e))?;
    Ok(Some(bytes))
}

/// The proving mode (`walg.delta_map_check`): read every page of a relation segment file and
/// return the blocks whose page LSN lies in `from..to` (changed in the range, so the maps must
/// name them). Pages changed again after `to` cannot be judged and are not returned.
pub fn changed_in_range(r: &mut dyn Read, size: u64, from: u64, to: u64) -> io::Result<Vec<u32>> {
    let mut out = Vec::new();
    for_each_page(r, size, &mut |_| {}, &mut |block, page| {
        let h = PageHeader::parse(page);
        if !h.is_new() && h.is_valid() && h.lsn >= from && h.lsn < to {
            out.push(block);
        }
        true
    })?;
    Ok(out)
}

/// The proving mode's verdict for one file: Err naming the pages the maps missed.
pub fn check_map_missed(entry: &str, mapped: &[u32], changed: &[u32]) -> Result<()> {
    let missed: Vec<u32> = changed.iter().copied().filter(|b| mapped.binary_search(b).is_err()).collect();
    if missed.is_empty() {
        return Ok(());
    }
    Err(Error::Internal(format!(
        "walg.delta_map_check: the WAL block maps miss {} changed page(s) of {entry} (blocks {:?}{}); \
         please report this: deltas from maps are unsafe here, set walg.delta_wal_maps = off",
        missed.len(),
        &missed[..missed.len().min(20)],
        if missed.len() > 20 { ", ..." } else { "" }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::blocks::tests::{heap, record, smgr_create, Writer, SEG, SEG_LSN};

    const SYSID: u64 = 0x1234_5678_9abc_def0;

    fn range(from: u64, to: u64) -> MapRange {
        MapRange { timeline: 1, from, to, wal_segment_size: SEG as u64, system_identifier: SYSID }
    }

    /// Three segments: rel 500's blocks 0.., rel 501 created, rel 502's blocks 131072.. with the
    /// last record crossing into the third segment, then rel 503 and WAL that ends (zeros).
    fn wal() -> (Writer, u32, u32) {
        let mut w = Writer::new();
        w.push(|p| smgr_create(p, 501));
        let mut i = 0;
        while w.segs.len() == 1 {
            w.push(|p| heap(p, 500, i, 4000));
            i += 1;
        }
        let mut k = 0;
        while w.segs.len() == 2 {
            w.push(|p| heap(p, 502, 131_072 + k, 4000));
            k += 1;
        }
        w.push(|p| heap(p, 503, 3, 10));
        let second = SegmentMap::build(&w.segs[1]);
        assert!(matches!(second.scan.end, End::MidRecord { tail: Some(_), .. }), "the test needs a crossing record");
        (w, i, k)
    }

    fn source(w: &Writer) -> impl FnMut(&str) -> Result<MapSource> + '_ {
        move |name: &str| {
            let (_, segno) = crate::format::names::parse_wal_file_name(name).unwrap();
            let i = (segno - SEG_LSN / SEG as u64) as usize;
            Ok(match w.segs.get(i) {
                Some(s) if i + 1 == w.segs.len() => MapSource::Local(SegmentMap::build(s)),
                Some(s) => MapSource::Storage(SegmentMap::build(s)),
                None => MapSource::Missing,
            })
        }
    }

    fn pages(plan: PagePlan) -> ChangedPages {
        match plan {
            PagePlan::Maps(p) => p,
            PagePlan::FullScan { reason } => panic!("full scan: {reason}"),
        }
    }

    #[test]
    fn entry_names() {
        let r = |spc, db, rel| RelFileNode { spc, db, rel };
        assert_eq!(main_fork_segment("/base/5/16384"), Some((r(1663, 5, 16384), 0)));
        assert_eq!(main_fork_segment("/base/5/16384.3"), Some((r(1663, 5, 16384), 3)));
        assert_eq!(main_fork_segment("/pg_tblspc/16390/PG_15_202209061/16384/16400.1"), Some((r(16390, 16384, 16400), 1)));
        for no in ["/base/5/16384_fsm", "/base/5/16384_vm.1", "/global/1262", "/base/5/PG_VERSION", "/base/5/", "/base/x/1", "/base/5/1.x"] {
            assert_eq!(main_fork_segment(no), None, "{no}");
        }
    }

    #[test]
    fn maps_name_every_block_of_the_range_and_whole_files_for_creates() {
        let (w, n500, n502) = wal();
        let to = *w.lsns.last().unwrap();
        let p = pages(plan(&range(SEG_LSN + 100, to), &mut source(&w)));
        assert_eq!((p.segments, p.parsed_locally), (3, 1));
        let Some(FilePages::Blocks(b)) = p.for_file("/base/5/500", 1 << 30) else { panic!() };
        assert_eq!(b, (0..n500).collect::<Vec<_>>());
        // Rel 502's blocks 131072.. are blocks 0.. of its second 1 GiB file; the last one is named
        // only by the record crossing into the third segment (found by joining the pieces).
        let Some(FilePages::Blocks(b)) = p.for_file("/base/5/502.1", 1 << 30) else { panic!() };
        assert_eq!(b, (0..n502).collect::<Vec<_>>());
        // Only the blocks inside the file as it is now.
        let Some(FilePages::Blocks(b)) = p.for_file("/base/5/500", 8192 * 3) else { panic!() };
        assert_eq!(b, vec![0, 1, 2]);
        assert_eq!(p.for_file("/base/5/502.1", 8192 * 2), Some(FilePages::Blocks(vec![0, 1])));
        assert_eq!(p.for_file("/base/5/502", 1 << 30), Some(FilePages::Blocks(vec![])));
        assert_eq!(p.for_file("/base/5/501", 8192), Some(FilePages::Whole), "created in the range");
        assert_eq!(p.for_file("/base/5/503", 8192 * 4), Some(FilePages::Blocks(vec![3])), "the local segment's record");
        assert_eq!(p.for_file("/base/5/500_fsm", 8192), None);
    }

    #[test]
    fn any_gap_or_doubt_falls_back_to_the_full_scan() {
        let (w, _, _) = wal();
        let to = *w.lsns.last().unwrap();
        let reason = |plan: PagePlan| match plan {
            PagePlan::FullScan { reason } => reason,
            PagePlan::Maps(_) => panic!("maps used"),
        };
        // A segment without a map.
        let mut src = source(&w);
        let mut gap = |n: &str| if n.ends_with("04") { Ok(MapSource::Missing) } else { src(n) };
        let r = reason(plan(&range(SEG_LSN, to), &mut gap));
        assert!(r.contains("000000010000000000000004") && r.contains("neither in pg_wal"), "{r}");
        // Storage could not be read.
        let mut err = |_: &str| Err(Error::Unreachable("cannot reach the bucket".into()));
        assert!(reason(plan(&range(SEG_LSN, to), &mut err)).contains("cannot reach the bucket"));
        // A middle segment whose WAL stops early (damaged, recycled).
        let mut src = source(&w);
        let mut cut = |n: &str| {
            let m = src(n)?;
            Ok(match m {
                MapSource::Storage(mut m) if n.ends_with("04") => {
                    m.scan.end = End::Invalid { lsn: SEG_LSN + SEG as u64 + 5000, reason: "bad CRC".into() };
                    MapSource::Storage(m)
                }
                other => other,
            })
        };
        assert!(reason(plan(&range(SEG_LSN, to), &mut cut)).contains("unreadable from"));
        // The current segment's valid WAL must reach this backup's start.
        let r = reason(plan(&range(SEG_LSN, to + 100_000), &mut source(&w)));
        assert!(r.contains("000000010000000000000005") && r.contains("unreadable"), "{r}");
        // Another system, another timeline.
        let mut other = range(SEG_LSN, to);
        other.system_identifier = 7;
        assert!(reason(plan(&other, &mut source(&w))).contains("another database system"));
        let mut other = range(SEG_LSN, to);
        other.timeline = 2;
        let mut src = source(&w);
        let mut tl2 = |n: &str| src(&format!("00000001{}", &n[8..]));
        assert!(reason(plan(&other, &mut tl2)).contains("timeline 1"));
        // A damaged crossing piece does not join.
        let mut src = source(&w);
        let mut bad = |n: &str| {
            Ok(match src(n)? {
                MapSource::Local(mut m) if n.ends_with("05") => {
                    if let Start::MidRecord(Some(h)) = &mut m.scan.start {
                        h.bytes[5] ^= 0xFF;
                    }
                    MapSource::Local(m)
                }
                other => other,
            })
        };
        assert!(reason(plan(&range(SEG_LSN, to), &mut bad)).contains("does not join"));
    }

    #[test]
    fn segments_without_a_stored_map_are_parsed_from_pg_wal_or_the_archive() {
        let (w, n500, _) = wal();
        let to = *w.lsns.last().unwrap();
        let dir = tempfile::tempdir().unwrap();
        // The current segment is in pg_wal; the middle one only in the archive.
        std::fs::write(dir.path().join("000000010000000000000005"), &w.segs[2]).unwrap();
        let mut stored = |n: &str| Ok(n.ends_with("03").then(|| SegmentMap::build(&w.segs[0])));
        let mut asked = Vec::new();
        let mut archived = |n: &str| {
            asked.push(n.to_string());
            Ok(n.ends_with("04").then(|| w.segs[1].clone()))
        };
        let p = pages(plan_for_backup(&range(SEG_LSN, to), dir.path(), &mut stored, &mut archived));
        assert_eq!((p.segments, p.parsed_locally, p.parsed_from_archive), (3, 1, 1));
        assert_eq!(asked, vec!["000000010000000000000004".to_string()]);
        let Some(FilePages::Blocks(b)) = p.for_file("/base/5/500", 1 << 30) else { panic!() };
        assert_eq!(b.len() as u32, n500);
        // Not archived either: the full scan.
        let mut none = |_: &str| Ok(None);
        let mut stored = |n: &str| Ok(n.ends_with("03").then(|| SegmentMap::build(&w.segs[0])));
        match plan_for_backup(&range(SEG_LSN, to), dir.path(), &mut stored, &mut none) {
            PagePlan::FullScan { reason } => assert!(reason.contains("000000010000000000000004"), "{reason}"),
            PagePlan::Maps(_) => panic!("maps without segment 4"),
        }
    }

    #[test]
    fn minimal_wal_level_in_the_range_is_not_trusted() {
        let mut w = Writer::new();
        // XLOG_PARAMETER_CHANGE (rmgr 0, info 0x60) with wal_level (the int after five others) = 0.
        let mut main = vec![0u8; 32];
        main[20..24].copy_from_slice(&0u32.to_le_bytes());
        w.push(|p| record(p, 0, 0x60, &[], &main));
        let to = w.push(|p| heap(p, 500, 1, 10));
        let mut src = |_: &str| Ok(MapSource::Local(SegmentMap::build(&w.segs[0])));
        match plan(&range(SEG_LSN, to), &mut src) {
            PagePlan::FullScan { reason } => assert!(reason.contains("minimal"), "{reason}"),
            PagePlan::Maps(_) => panic!("{:?}", SegmentMap::build(&w.segs[0]).events),
        }
    }

    #[test]
    fn proving_mode_finds_changed_pages_the_maps_lack() {
        let mut file = vec![0u8; 4 * PAGE_SIZE];
        let mut page = |b: usize, lsn: u64| {
            let p = &mut file[b * PAGE_SIZE..(b + 1) * PAGE_SIZE];
            p[0..4].copy_from_slice(&((lsn >> 32) as u32).to_le_bytes());
            p[4..8].copy_from_slice(&(lsn as u32).to_le_bytes());
            p[12..14].copy_from_slice(&24u16.to_le_bytes()); // pd_lower
            p[14..16].copy_from_slice(&8192u16.to_le_bytes()); // pd_upper
            p[16..18].copy_from_slice(&8192u16.to_le_bytes()); // pd_special
            p[18..20].copy_from_slice(&(8192u16 | 4).to_le_bytes()); // size | version
        };
        page(0, 0x100); // before the range
        page(1, 0x2000); // in it
        page(3, 0x9000); // after it (changed again later: not judged)
        let changed = changed_in_range(&mut &file[..], file.len() as u64, 0x1000, 0x8000).unwrap();
        assert_eq!(changed, vec![1]);
        assert!(check_map_missed("/base/5/1", &[1, 3], &changed).is_ok());
        let e = check_map_missed("/base/5/1", &[0, 3], &changed).unwrap_err().to_string();
        assert!(e.contains("/base/5/1") && e.contains("[1]"), "{e}");
    }
}
