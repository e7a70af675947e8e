//! WAL-G's `wal-show`: the WAL segments in storage grouped by timeline, with each timeline's
//! parent and switch point (from its history file), gaps, and how many backups start on it.

use serde::Serialize;

use super::list::BackupInfo;
use super::timeline::load_histories;
use super::walfiles::{name_of_position, next_position, list_wal, segno_of_position, WalKind};
use crate::error::Result;
use crate::format::names::lsn_to_string;
use crate::storage::Storage;

/// Status of a timeline with no gaps between its first and last segment.
pub const STATUS_OK: &str = "OK";
/// Status of a timeline with gaps.
pub const STATUS_LOST_SEGMENTS: &str = "LOST_SEGMENTS";

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TimelineInfo {
    pub id: u32,
    /// 0 when there is no history file (the first timeline).
    pub parent_id: u32,
    /// LSN where the parent was left (0 without history).
    pub switch_point_lsn: u64,
    pub start_segment: String,
    pub end_segment: String,
    /// Segments from start to end, both included.
    pub segment_range_size: u64,
    /// Segments present.
    pub segments_count: u64,
    pub missing_segments: Vec<String>,
    pub status: &'static str,
    /// Backups whose start segment is on this timeline, oldest first.
    pub backups: Vec<String>,
}

impl TimelineInfo {
    pub fn switch_point(&self) -> String {
        lsn_to_string(self.switch_point_lsn)
    }
}

/// One row per timeline that has segments in storage, lowest timeline first.
pub fn wal_show(storage: &dyn Storage, pipeline: &crate::codec::Pipeline, backups: &[BackupInfo], wal_segment_size: u64) -> Result<Vec<TimelineInfo>> {
    let wal = list_wal(storage)?;
    let histories = load_histories(storage, pipeline, &wal)?;
    let mut by_tli: std::collections::BTreeMap<u32, Vec<u64>> = Default::default();
    for o in wal.iter().filter(|o| o.kind == WalKind::Segment) {
        by_tli.entry(o.timeline).or_default().push(o.position);
    }
    let mut out = Vec::new();
    for (tli, mut positions) in by_tli {
        positions.sort_unstable();
        positions.dedup(); // the same segment under two extensions
        let (first, last) = (positions[0], *positions.last().unwrap());
        let mut missing = Vec::new();
        let mut p = first;
        let mut i = 0;
        while p <= last {
            if positions.get(i) == Some(&p) {
                i += 1;
            } else {
                missing.push(name_of_position(tli, p));
            }
            p = next_position(p, wal_segment_size);
        }
        let (parent_id, switch_point_lsn) =
            histories.get(&tli).and_then(|h| h.last()).map(|r| (r.timeline, r.switch_lsn)).unwrap_or((0, 0));
        let range = segno_of_position(last, wal_segment_size) - segno_of_position(first, wal_segment_size) + 1;
        out.push(TimelineInfo {
            id: tli,
            parent_id,
            switch_point_lsn,
            start_segment: name_of_position(tli, first),
            end_segment: name_of_position(tli, last),
            segment_range_size: range,
            segments_count: positions.len() as u64,
            status: if missing.is_empty() { STATUS_OK } else { STATUS_LOST_SEGMENTS },
            missing_segments: missing,
            backups: backups.iter().filter(|b| b.timeline() == tli).map(|b| b.name.clone()).collect(),
        });
    }
    Ok(out)
}
