//! WAL-G's `wal-verify`: the `integrity` check (is every segment from the earliest usable backup
//! up to the cluster's current segment in storage?) and the `timeline` check (is the cluster on
//! the highest timeline found in storage? if not, another cluster writes here: split brain).

use std::collections::BTreeSet;

use serde::Serialize;

use super::list::BackupInfo;
use super::timeline::{load_histories, timeline_at};
use super::walfiles::{list_wal, name_of_position, position_of, position_of_lsn, prev_position, WalKind};
use crate::error::{Error, Result};
use crate::storage::Storage;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Check {
    Integrity,
    Timeline,
}

impl Check {
    /// `integrity` or `timeline` (any case).
    pub fn parse(s: &str) -> Result<Check> {
        match s.trim().to_ascii_lowercase().as_str() {
            "integrity" => Ok(Check::Integrity),
            "timeline" => Ok(Check::Timeline),
            _ => Err(Error::InvalidArgument(format!(
                "unknown wal-verify check {s:?}: use 'integrity' or 'timeline'"
            ))),
        }
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            Check::Integrity => "integrity",
            Check::Timeline => "timeline",
        }
    }
}

/// Overall result of a check: WAL-G's OK / WARNING / FAILURE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum CheckStatus {
    #[serde(rename = "OK")]
    Ok,
    #[serde(rename = "WARNING")]
    Warning,
    #[serde(rename = "FAILURE")]
    Failure,
}

impl CheckStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            CheckStatus::Ok => "OK",
            CheckStatus::Warning => "WARNING",
            CheckStatus::Failure => "FAILURE",
        }
    }
}

/// Status of one scanned segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum SegmentStatus {
    #[serde(rename = "FOUND")]
    Found,
    /// Missing, but probably not handed to the archiver yet.
    #[serde(rename = "MISSING_DELAYED")]
    MissingDelayed,
    /// Missing, but probably being uploaded right now.
    #[serde(rename = "MISSING_UPLOADING")]
    MissingUploading,
    /// Missing and neither of the above: point-in-time recovery across it is impossible.
    #[serde(rename = "MISSING_LOST")]
    MissingLost,
}

impl SegmentStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            SegmentStatus::Found => "FOUND",
            SegmentStatus::MissingDelayed => "MISSING_DELAYED",
            SegmentStatus::MissingUploading => "MISSING_UPLOADING",
            SegmentStatus::MissingLost => "MISSING_LOST",
        }
    }
}

/// A run of consecutive segments with the same timeline and status.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SegmentRun {
    pub timeline_id: u32,
    pub start_segment: String,
    pub end_segment: String,
    pub segments_count: u64,
    pub status: SegmentStatus,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IntegrityReport {
    pub status: CheckStatus,
    pub details: Vec<SegmentRun>,
    /// The backup whose start segment begins the scan (None: scanned from segment 1).
    pub earliest_backup: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TimelineReport {
    pub status: CheckStatus,
    pub current_timeline_id: u32,
    pub highest_storage_timeline_id: Option<u32>,
}

/// Where the cluster writes now: its timeline and the segment containing its current LSN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CurrentSegment {
    pub timeline: u32,
    pub lsn: u64,
}

/// How many missing segments right before the current one count as delayed / uploading.
#[derive(Clone, Copy, Debug)]
pub struct IntegrityOptions {
    pub wal_segment_size: u64,
    /// WAL-G's WALG_INTEGRITY_MAX_DELAYED_WALS (default 0).
    pub max_delayed: usize,
    /// WAL-G uses the upload concurrency.
    pub uploading: usize,
}

/// Scan backwards from the segment before `current` to the start segment of the earliest backup
/// that lies on the current timeline's history, following timeline switches.
pub fn integrity(
    storage: &dyn Storage,
    pipeline: &crate::codec::Pipeline,
    backups: &[BackupInfo],
    current: CurrentSegment,
    opt: IntegrityOptions,
) -> Result<IntegrityReport> {
    let seg = opt.wal_segment_size;
    let wal = list_wal(storage)?;
    let histories = load_histories(storage, pipeline, &wal)?;
    let history = histories.get(&current.timeline).cloned().unwrap_or_default();
    let switch_pos = |lsn: u64| position_of_lsn(lsn, seg);
    let tli_at = |p: u64| timeline_at(current.timeline, &history, p, switch_pos);
    let present: BTreeSet<(u32, u64)> =
        wal.iter().filter(|o| o.kind == WalKind::Segment).map(|o| (o.timeline, o.position)).collect();

    // The earliest backup whose start segment is on the path that leads to the current timeline.
    let earliest = backups
        .iter()
        .filter_map(|b| position_of(&b.wal_file_name).map(|p| (b, p)))
        .filter(|(b, p)| b.timeline() != 0 && tli_at(*p) == b.timeline())
        .min_by_key(|(_, p)| *p);
    let stop = earliest.map(|(_, p)| p).unwrap_or(1);

    let mut scanned: Vec<(u32, u64, SegmentStatus)> = Vec::new();
    let current_pos = position_of_lsn(current.lsn, seg);
    let mut pos = prev_position(current_pos, seg);
    // Phase 1: until the first segment found, at most max_delayed: missing ones are delayed.
    // Phase 2: the next `uploading` segments: missing ones are uploading. Then: lost.
    let mut phase = if opt.max_delayed > 0 { 1 } else { 2 };
    let mut in_phase = 0usize;
    while let Some(p) = pos.filter(|p| *p >= stop) {
        let tli = tli_at(p);
        let found = present.contains(&(tli, p));
        if phase == 1 && (found || in_phase >= opt.max_delayed) {
            phase = 2;
            in_phase = 0;
        }
        if phase == 2 && in_phase >= opt.uploading {
            phase = 3;
        }
        let status = match (found, phase) {
            (true, _) => SegmentStatus::Found,
            (false, 1) => SegmentStatus::MissingDelayed,
            (false, 2) => SegmentStatus::MissingUploading,
            _ => SegmentStatus::MissingLost,
        };
        in_phase += 1;
        scanned.push((tli, p, status));
        pos = prev_position(p, seg);
    }
    scanned.reverse();

    let mut details: Vec<SegmentRun> = Vec::new();
    for (tli, p, status) in scanned {
        match details.last_mut() {
            Some(run) if run.timeline_id == tli && run.status == status => {
                run.end_segment = name_of_position(tli, p);
                run.segments_count += 1;
            }
            _ => details.push(SegmentRun {
                timeline_id: tli,
                start_segment: name_of_position(tli, p),
                end_segment: name_of_position(tli, p),
                segments_count: 1,
                status,
            }),
        }
    }
    let status = details.iter().fold(CheckStatus::Ok, |acc, r| {
        acc.max(match r.status {
            SegmentStatus::Found => CheckStatus::Ok,
            SegmentStatus::MissingDelayed | SegmentStatus::MissingUploading => CheckStatus::Warning,
            SegmentStatus::MissingLost => CheckStatus::Failure,
        })
    });
    Ok(IntegrityReport { status, details, earliest_backup: earliest.map(|(b, _)| b.name.clone()) })
}

/// OK when the cluster's timeline is the highest in storage, FAILURE when it is not, WARNING
/// when storage holds no WAL to compare with.
pub fn timeline(storage: &dyn Storage, current_timeline: u32) -> Result<TimelineReport> {
    let highest = list_wal(storage)?
        .iter()
        .filter(|o| matches!(o.kind, WalKind::Segment | WalKind::History | WalKind::Partial))
        .map(|o| o.timeline)
        .max();
    let status = match highest {
        None => CheckStatus::Warning,
        Some(h) if h == current_timeline => CheckStatus::Ok,
        Some(_) => CheckStatus::Failure,
    };
    Ok(TimelineReport { status, current_timeline_id: current_timeline, highest_storage_timeline_id: highest })
}

/// For the CLI when no server is asked: the segment after the newest one in storage on the
/// highest timeline (as if the cluster were writing right after it).
pub fn current_from_storage(storage: &dyn Storage, wal_segment_size: u64) -> Result<Option<CurrentSegment>> {
    let wal = list_wal(storage)?;
    let best = wal.iter().filter(|o| o.kind == WalKind::Segment).max_by_key(|o| (o.timeline, o.position));
    Ok(best.map(|o| {
        let next = super::walfiles::next_position(o.position, wal_segment_size);
        let segno = super::walfiles::segno_of_position(next, wal_segment_size);
        CurrentSegment { timeline: o.timeline, lsn: segno * wal_segment_size }
    }))
}
