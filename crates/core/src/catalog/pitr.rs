//! Point-in-time recovery planning, from the catalog alone (nothing is written): which backup a
//! target needs, the WAL range recovery will read (following the recovery target timeline
//! through its history file), and whether all of it is in storage.
//!
//! Rules (README "Point-in-time recovery"):
//! - With a time or LSN target, LATEST is the newest backup that finished (sentinel FinishTime /
//!   FinishLSN) at or before the target; a named backup that finished after it is refused, and
//!   so is a target before every backup. An xid or a restore point name gives no position:
//!   LATEST is then the newest backup (WAL-G's LATEST), with a note saying so.
//! - A target beyond the archive is refused: an LSN whose segment is not in storage on the
//!   recovery path; a time later than the newest archived segment's modification time (the
//!   cheap approximation: archive time is an upper bound of the time of the records in it).
//! - A gap is refused where the WAL is certainly needed: between the backup's start and end,
//!   up to an LSN target, up to the first segment archived after a time target, and up to the
//!   end of the archive for a recovery without target (PostgreSQL would stop at the gap and
//!   promote there). For xid and name targets and for a standby gaps are listed as a note:
//!   PostgreSQL itself stops with FATAL ("recovery ended before configured recovery target
//!   was reached") if the target lies beyond a gap, and a standby waits at it.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use chrono::{DateTime, Utc};

use super::list::{find, list_backups, BackupInfo};
use super::timeline::{load_histories, timeline_at, HistoryRecord};
use super::walfiles::{list_wal, name_of_position, next_position, position_of_lsn, WalKind, WalObject};
use crate::backup::recovery::{pg_time, RecoveryRequest, Target, TimelineChoice};
use crate::codec::Pipeline;
use crate::error::{Error, Result};
use crate::format::names::lsn_to_string;
use crate::storage::Storage;

/// What decides the last WAL segment of the range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeEnd {
    /// The backup's end (no recovery, or `--target-immediate`).
    BackupEnd,
    /// The segment holding the target LSN.
    TargetLsn,
    /// The first segment archived after the target time.
    TargetTime,
    /// The newest segment on the recovery path.
    ArchiveEnd,
}

#[derive(Clone, Debug)]
pub struct RecoveryPlan {
    pub backup: String,
    pub backup_timeline: u32,
    pub start_lsn: u64,
    pub finish_lsn: u64,
    pub finish_time: DateTime<Utc>,
    /// The timeline recovery ends on.
    pub timeline: u32,
    /// First and last segment of the range (names on the timeline that holds them).
    pub first: String,
    pub last: String,
    pub end: RangeEnd,
    /// Segments in the range.
    pub segments: u64,
    /// Segments of the range that storage does not hold.
    pub missing: Vec<String>,
    /// Things the user should know (LATEST choice for xid/name, gaps PostgreSQL will judge).
    pub notes: Vec<String>,
    /// Reasons to refuse; empty when the restore can go ahead.
    pub problems: Vec<String>,
}

fn st_utc(t: SystemTime) -> DateTime<Utc> {
    DateTime::<Utc>::from(t)
}

/// The backup to restore for `requested` (a name or LATEST) and `target`.
pub fn choose_backup<'a>(
    backups: &'a [BackupInfo],
    requested: &str,
    target: Option<&Target>,
    notes: &mut Vec<String>,
) -> Result<&'a BackupInfo> {
    if requested != "LATEST" {
        let b = find(backups, requested)?;
        match target {
            Some(Target::Time(t)) if b.sentinel.finish_time > *t => {
                return Err(Error::Refused(format!(
                    "backup {} finished at {}, after the target time {}: recovery cannot stop before the backup's end; \
                     restore an older backup or LATEST",
                    b.name,
                    pg_time(&b.sentinel.finish_time),
                    pg_time(t)
                )))
            }
            Some(Target::Lsn(l)) if b.sentinel.finish_lsn > *l => {
                return Err(Error::Refused(format!(
                    "backup {} ends at LSN {}, after the target LSN {}: restore an older backup or LATEST",
                    b.name,
                    lsn_to_string(b.sentinel.finish_lsn),
                    lsn_to_string(*l)
                )))
            }
            _ => return Ok(b),
        }
    }
    if backups.is_empty() {
        return Err(Error::NotFound("no backups in storage".into()));
    }
    let by_finish_time = |t: &DateTime<Utc>| {
        backups
            .iter()
            .filter(|b| b.sentinel.finish_time <= *t)
            .max_by(|a, b| a.sentinel.finish_time.cmp(&b.sentinel.finish_time).then_with(|| a.name.cmp(&b.name)))
    };
    match target {
        Some(Target::Time(t)) => by_finish_time(t).ok_or_else(|| {
            let first = backups.iter().min_by_key(|b| b.sentinel.finish_time).expect("not empty");
            Error::Refused(format!(
                "the target time {} is before every backup: the first to finish, {}, finished at {}",
                pg_time(t),
                first.name,
                pg_time(&first.sentinel.finish_time)
            ))
        }),
        Some(Target::Lsn(l)) => backups
            .iter()
            .filter(|b| b.sentinel.finish_lsn <= *l)
            .max_by(|a, b| a.sentinel.finish_lsn.cmp(&b.sentinel.finish_lsn).then_with(|| a.name.cmp(&b.name)))
            .ok_or_else(|| {
                let first = backups.iter().min_by_key(|b| b.sentinel.finish_lsn).expect("not empty");
                Error::Refused(format!(
                    "the target LSN {} is before every backup: the first, {}, ends at LSN {}",
                    lsn_to_string(*l),
                    first.name,
                    lsn_to_string(first.sentinel.finish_lsn)
                ))
            }),
        _ => {
            // WAL-G's LATEST: the sentinel written last.
            let b = backups
                .iter()
                .max_by(|a, b| a.modified.cmp(&b.modified).then_with(|| a.name.cmp(&b.name)))
                .expect("not empty");
            if let Some(t @ (Target::Xid(_) | Target::Name(_))) = target {
                notes.push(format!(
                    "a {} gives no position in the WAL, so LATEST is the newest backup, {} (ended {}); if the target \
                     is older than that, PostgreSQL stops with FATAL and you restore an older backup by name",
                    if matches!(t, Target::Xid(_)) { "transaction id" } else { "restore point name" },
                    b.name,
                    pg_time(&b.sentinel.finish_time)
                ));
            }
            Ok(b)
        }
    }
}

/// First names of `missing`, then how many more.
pub fn list_some(missing: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut s = missing.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if missing.len() > SHOWN {
        s.push_str(&format!(" and {} more", missing.len() - SHOWN));
    }
    s
}

/// The WAL plan for restoring `backup` with `req` (`recovery` false: a plain restore, which
/// needs the WAL up to the backup's end only).
pub fn plan_wal(
    backup: &BackupInfo,
    req: &RecoveryRequest,
    recovery: bool,
    wal: &[WalObject],
    histories: &BTreeMap<u32, Vec<HistoryRecord>>,
    seg: u64,
) -> RecoveryPlan {
    let s = &backup.sentinel;
    let btli = backup.timeline();
    let mut problems = Vec::new();
    let mut notes = Vec::new();

    // The recovery target timeline, as PostgreSQL picks it (default 'latest': the highest
    // timeline with consecutive history files after the backup's).
    let choice = if recovery { req.timeline.unwrap_or(TimelineChoice::Latest) } else { TimelineChoice::Current };
    let tli = match choice {
        TimelineChoice::Current => btli,
        TimelineChoice::Id(n) => n,
        TimelineChoice::Latest => {
            let mut t = btli;
            while histories.contains_key(&(t + 1)) {
                t += 1;
            }
            t
        }
    };
    let empty = Vec::new();
    let history = if tli == btli {
        &empty
    } else if tli < btli {
        problems.push(format!("timeline {tli} is older than timeline {btli} of backup {}", backup.name));
        &empty
    } else {
        match histories.get(&tli) {
            None => {
                problems.push(format!("timeline {tli} has no history file ({tli:08X}.history) in storage"));
                &empty
            }
            Some(h) => {
                let hint = if choice == TimelineChoice::Latest { " (use --target-timeline current to stay on the backup's timeline)" } else { "" };
                match h.iter().find(|r| r.timeline == btli) {
                    None => problems.push(format!("timeline {tli} does not descend from timeline {btli} of backup {}{hint}", backup.name)),
                    Some(r) if r.switch_lsn < s.finish_lsn => problems.push(format!(
                        "timeline {tli} left timeline {btli} at {}, before backup {} ended ({}){hint}",
                        lsn_to_string(r.switch_lsn),
                        backup.name,
                        lsn_to_string(s.finish_lsn)
                    )),
                    Some(_) => {}
                }
                h
            }
        }
    };
    let tli_at = |p: u64| if tli <= btli { btli } else { timeline_at(tli, history, p, |l| position_of_lsn(l, seg)) };

    let mut present: HashMap<(u32, u64), SystemTime> = HashMap::new();
    for o in wal.iter().filter(|o| o.kind == WalKind::Segment) {
        let e = present.entry((o.timeline, o.position)).or_insert(o.modified);
        *e = (*e).max(o.modified);
    }
    let start = position_of_lsn(s.lsn, seg);
    let backup_end = position_of_lsn(s.finish_lsn.max(s.lsn + 1) - 1, seg).max(start);
    // Segments on the recovery path from the backup's start on.
    let on_path: Vec<(u64, SystemTime)> =
        present.iter().filter(|((t, p), _)| *p >= start && tli_at(*p) == *t).map(|((_, p), m)| (*p, *m)).collect();
    let archive_end = on_path.iter().map(|(p, _)| *p).max();
    let newest = on_path.iter().max_by_key(|(_, m)| *m).copied();
    let name_at = |p: u64| name_of_position(tli_at(p), p);

    let target = if recovery { req.target.as_ref() } else { None };
    let (mut end_pos, end) = match target {
        _ if !recovery => (backup_end, RangeEnd::BackupEnd),
        Some(Target::Immediate) => (backup_end, RangeEnd::BackupEnd),
        Some(Target::Lsn(l)) => {
            let lp = position_of_lsn(*l, seg);
            if archive_end.is_none_or(|a| lp > a) {
                problems.push(format!(
                    "the target LSN {} is beyond the archived WAL: its segment {} is not in storage{}",
                    lsn_to_string(*l),
                    name_at(lp),
                    archive_end.map(|a| format!(" (the last archived segment on timeline {tli}'s path is {})", name_at(a))).unwrap_or_default()
                ));
            }
            (lp, RangeEnd::TargetLsn)
        }
        Some(Target::Time(t)) => {
            match newest {
                Some((_, m)) if st_utc(m) >= *t => {}
                _ => problems.push(format!(
                    "the target time {} is beyond the archived WAL: {}",
                    pg_time(t),
                    match newest {
                        Some((p, m)) => format!("the newest archived segment, {}, was archived at {}", name_at(p), pg_time(&st_utc(m))),
                        None => "no WAL from the backup on is archived".to_string(),
                    }
                )),
            }
            let last_before = on_path.iter().filter(|(_, m)| st_utc(*m) <= *t).map(|(p, _)| *p).max();
            let e = last_before.map(|p| next_position(p, seg)).unwrap_or(backup_end);
            (e.min(archive_end.unwrap_or(e)), RangeEnd::TargetTime)
        }
        _ => (archive_end.unwrap_or(backup_end), RangeEnd::ArchiveEnd),
    };
    // Never walk past the archive (an LSN far beyond it), never stop before the backup's end.
    if let Some(a) = archive_end {
        end_pos = end_pos.min(a.max(backup_end));
    } else {
        end_pos = backup_end;
    }
    end_pos = end_pos.max(backup_end);

    let (mut missing, mut missing_before_end, mut segments) = (Vec::new(), 0usize, 0u64);
    let mut p = start;
    loop {
        segments += 1;
        if !present.contains_key(&(tli_at(p), p)) {
            missing.push(name_at(p));
            if p <= backup_end {
                missing_before_end += 1;
            }
        }
        if p >= end_pos {
            break;
        }
        p = next_position(p, seg);
    }
    if missing_before_end > 0 {
        problems.push(format!(
            "backup {} cannot become consistent: {} of the WAL segments from its start to its end are missing: {}",
            backup.name,
            missing_before_end,
            list_some(&missing[..missing_before_end])
        ));
    }
    let later = &missing[missing_before_end..];
    if !later.is_empty() {
        let certain = matches!(end, RangeEnd::TargetLsn | RangeEnd::TargetTime) || (end == RangeEnd::ArchiveEnd && target.is_none() && !req.standby);
        if certain {
            problems.push(format!(
                "{} WAL segment(s) needed are missing from storage: {}{}",
                later.len(),
                list_some(later),
                if end == RangeEnd::ArchiveEnd { " (recovery would end at the first gap and promote there, short of the archive's end)" } else { "" }
            ));
        } else if req.standby {
            notes.push(format!("{} WAL segment(s) missing from storage: {}; the standby will wait at the first gap", later.len(), list_some(later)));
        } else {
            notes.push(format!(
                "{} WAL segment(s) missing from storage: {}; if the target lies beyond the first gap, PostgreSQL stops \
                 with FATAL \"recovery ended before configured recovery target was reached\"",
                later.len(),
                list_some(later)
            ));
        }
    }
    RecoveryPlan {
        backup: backup.name.clone(),
        backup_timeline: btli,
        start_lsn: s.lsn,
        finish_lsn: s.finish_lsn,
        finish_time: s.finish_time,
        timeline: tli,
        first: name_at(start),
        last: name_at(end_pos),
        end,
        segments,
        missing,
        notes,
        problems,
    }
}

/// Read the catalog and plan: the backup for `requested` and the WAL range for `req`.
pub fn plan(
    storage: &dyn Storage,
    pipeline: &Pipeline,
    requested: &str,
    req: &RecoveryRequest,
    recovery: bool,
    seg: u64,
) -> Result<RecoveryPlan> {
    req.check()?;
    let backups = list_backups(storage)?;
    if backups.is_empty() {
        return Err(Error::NotFound(format!("no backups in {}", storage.describe())));
    }
    let mut notes = Vec::new();
    let target = if recovery { req.target.as_ref() } else { None };
    let backup = choose_backup(&backups, requested, target, &mut notes)?;
    let wal = list_wal(storage)?;
    let histories = load_histories(storage, pipeline, &wal)?;
    let mut p = plan_wal(backup, req, recovery, &wal, &histories, seg);
    notes.append(&mut p.notes);
    p.notes = notes;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::recovery::parse_target_time;
    use crate::format::Sentinel;
    use chrono::TimeZone;
    use std::time::Duration;

    const SEG: u64 = 16 << 20;

    /// A backup of timeline `tli` from segment `pos` to `pos + 1`, finishing at `finish` (s).
    fn backup(tli: u32, pos: u64, finish: i64, modified: u64) -> BackupInfo {
        let wal = name_of_position(tli, pos);
        BackupInfo {
            name: format!("base_{wal}"),
            modified: SystemTime::UNIX_EPOCH + Duration::from_secs(modified),
            wal_file_name: wal,
            sentinel: Sentinel {
                lsn: pos * SEG + 0x28,
                finish_lsn: (pos + 1) * SEG + 0x100,
                start_time: Utc.timestamp_opt(finish - 5, 0).unwrap(),
                finish_time: Utc.timestamp_opt(finish, 0).unwrap(),
                ..Default::default()
            },
            metadata: None,
            is_permanent: false,
            drill: None,
        }
    }

    /// Segment `pos` of `tli`, archived at `at` seconds.
    fn seg(tli: u32, pos: u64, at: u64) -> WalObject {
        let name = name_of_position(tli, pos);
        WalObject {
            key: format!("wal_005/{name}.lz4"),
            size: 1,
            modified: SystemTime::UNIX_EPOCH + Duration::from_secs(at),
            name,
            kind: WalKind::Segment,
            timeline: tli,
            position: pos,
        }
    }

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(s, 0).unwrap()
    }

    fn req(target: Option<Target>) -> RecoveryRequest {
        RecoveryRequest { target, ..Default::default() }
    }

    #[test]
    fn latest_is_the_newest_backup_finished_before_the_target() {
        // b2 finished at 2000, b4 at 4000, b6 at 6000; b4's sentinel was rewritten last.
        let all = vec![backup(1, 2, 2000, 2000), backup(1, 4, 4000, 9000), backup(1, 6, 6000, 6000)];
        let mut notes = Vec::new();
        let pick = |t: Option<Target>, n: &mut Vec<String>| choose_backup(&all, "LATEST", t.as_ref(), n).map(|b| b.name.clone());
        assert_eq!(pick(Some(Target::Time(at(4500))), &mut notes).unwrap(), all[1].name);
        assert_eq!(pick(Some(Target::Time(at(4000))), &mut notes).unwrap(), all[1].name, "finished exactly at the target");
        assert_eq!(pick(Some(Target::Time(at(3999))), &mut notes).unwrap(), all[0].name);
        assert_eq!(pick(Some(Target::Time(at(7000))), &mut notes).unwrap(), all[2].name);
        assert_eq!(pick(Some(Target::Lsn(5 * SEG + 0x100)), &mut notes).unwrap(), all[1].name);
        assert_eq!(pick(Some(Target::Lsn(7 * SEG + 0x100)), &mut notes).unwrap(), all[2].name);
        assert!(notes.is_empty());
        // No position: WAL-G's LATEST (sentinel written last), and a note saying so.
        assert_eq!(pick(None, &mut notes).unwrap(), all[1].name);
        assert_eq!(pick(Some(Target::Immediate), &mut notes).unwrap(), all[1].name);
        assert!(notes.is_empty());
        assert_eq!(pick(Some(Target::Xid(1000)), &mut notes).unwrap(), all[1].name);
        assert!(notes[0].contains("transaction id gives no position") && notes[0].contains(&all[1].name), "{notes:?}");
        pick(Some(Target::Name("rp".into())), &mut notes).unwrap();
        assert!(notes[1].contains("restore point name"), "{notes:?}");

        // Before every backup: refused, naming the first backup.
        let e = pick(Some(Target::Time(at(1999))), &mut notes).unwrap_err();
        assert!(matches!(e, Error::Refused(_)) && e.to_string().contains("before every backup") && e.to_string().contains(&all[0].name), "{e}");
        let e = pick(Some(Target::Lsn(3 * SEG)), &mut notes).unwrap_err();
        assert!(e.to_string().contains("before every backup"), "{e}");
        // A named backup that ended after the target: refused.
        let e = choose_backup(&all, &all[2].name, Some(&Target::Time(at(5000))), &mut notes).unwrap_err();
        assert!(matches!(e, Error::Refused(_)) && e.to_string().contains("after the target time"), "{e}");
        let e = choose_backup(&all, &all[2].name, Some(&Target::Lsn(6 * SEG)), &mut notes).unwrap_err();
        assert!(e.to_string().contains("after the target LSN"), "{e}");
        assert_eq!(choose_backup(&all, &all[0].name, Some(&Target::Time(at(5000))), &mut notes).unwrap().name, all[0].name);
        assert!(matches!(choose_backup(&all, "base_000000010000000000000099", None, &mut notes), Err(Error::NotFound(_))));
        assert!(matches!(choose_backup(&[], "LATEST", None, &mut notes), Err(Error::NotFound(_))));
    }

    #[test]
    fn wal_range_by_target_and_refusals() {
        let b = backup(1, 2, 2000, 2000); // WAL 2..=3 to become consistent
        let wal: Vec<WalObject> = (1..=8).map(|p| seg(1, p, 1000 + p * 1000)).collect(); // 8 archived at 9000
        let h = BTreeMap::new();
        let plan = |r: RecoveryRequest, recovery: bool, w: &[WalObject]| plan_wal(&b, &r, recovery, w, &h, SEG);

        let p = plan(req(None), false, &wal);
        assert_eq!((p.first.as_str(), p.last.as_str(), p.segments, p.end), ("000000010000000000000002", "000000010000000000000003", 2, RangeEnd::BackupEnd));
        assert!(p.problems.is_empty() && p.missing.is_empty());
        let p = plan(req(Some(Target::Immediate)), true, &wal);
        assert_eq!((p.last.as_str(), p.end), ("000000010000000000000003", RangeEnd::BackupEnd));
        let p = plan(req(None), true, &wal);
        assert_eq!((p.last.as_str(), p.segments, p.end, p.timeline), ("000000010000000000000008", 7, RangeEnd::ArchiveEnd, 1));
        let p = plan(req(Some(Target::Lsn(5 * SEG + 10))), true, &wal);
        assert_eq!((p.last.as_str(), p.end), ("000000010000000000000005", RangeEnd::TargetLsn));
        assert!(p.problems.is_empty());
        // Time: up to the first segment archived after it (5 archived at 6000, 6 at 7000).
        let p = plan(req(Some(Target::Time(at(6500)))), true, &wal);
        assert_eq!((p.last.as_str(), p.end), ("000000010000000000000006", RangeEnd::TargetTime));
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        let p = plan(req(Some(Target::Time(at(9000)))), true, &wal);
        assert!(p.problems.is_empty(), "at the newest segment's time: {:?}", p.problems);

        // Beyond the archive.
        let p = plan(req(Some(Target::Time(at(9001)))), true, &wal);
        assert!(p.problems[0].contains("beyond the archived WAL") && p.problems[0].contains("000000010000000000000008"), "{:?}", p.problems);
        let p = plan(req(Some(Target::Lsn(9 * SEG))), true, &wal);
        assert!(p.problems[0].contains("beyond the archived WAL") && p.problems[0].contains("000000010000000000000009"), "{:?}", p.problems);
        let p = plan(req(Some(Target::Lsn(0xFFFF_FFFF_0000_0000))), true, &wal);
        assert!(p.problems[0].contains("beyond"), "a far LSN is refused without walking to it");
        assert_eq!(p.last, "000000010000000000000008");

        // Gaps: segment 5 lost.
        let gap: Vec<WalObject> = wal.iter().filter(|o| o.position != 5).cloned().collect();
        let p = plan(req(None), true, &gap);
        assert_eq!(p.missing, vec!["000000010000000000000005".to_string()]);
        assert!(p.problems[0].contains("000000010000000000000005") && p.problems[0].contains("promote there"), "{:?}", p.problems);
        assert!(plan(req(Some(Target::Lsn(4 * SEG))), true, &gap).problems.is_empty(), "gap after the LSN target");
        assert!(!plan(req(Some(Target::Lsn(6 * SEG))), true, &gap).problems.is_empty());
        assert!(plan(req(Some(Target::Time(at(4500)))), true, &gap).problems.is_empty(), "gap after the time target");
        assert!(!plan(req(Some(Target::Time(at(6500)))), true, &gap).problems.is_empty());
        let p = plan(req(Some(Target::Xid(1234))), true, &gap);
        assert!(p.problems.is_empty() && p.notes[0].contains("FATAL"), "{:?} {:?}", p.problems, p.notes);
        let p = plan(RecoveryRequest { standby: true, ..Default::default() }, true, &gap);
        assert!(p.problems.is_empty() && p.notes[0].contains("standby will wait"), "{:?}", p.notes);
        // A gap inside the backup: refused whatever the target.
        let inside: Vec<WalObject> = wal.iter().filter(|o| o.position != 3).cloned().collect();
        for (r, rec) in [(req(None), false), (req(Some(Target::Immediate)), true), (req(Some(Target::Xid(5))), true)] {
            let p = plan(r, rec, &inside);
            assert!(p.problems[0].contains("cannot become consistent") && p.problems[0].contains("000000010000000000000003"), "{:?}", p.problems);
        }
        // Nothing archived at all.
        let p = plan(req(Some(Target::Time(at(2500)))), true, &[]);
        assert!(p.problems.iter().any(|m| m.contains("beyond")) && p.problems.iter().any(|m| m.contains("consistent")), "{:?}", p.problems);
    }

    #[test]
    fn follows_the_target_timeline() {
        // Backup on timeline 1 at 2..3; timeline 2 branched at 0/5000100 (in segment 5), then
        // timeline 3 branched off timeline 1 at segment 3, before the backup ended.
        let b = backup(1, 2, 2000, 2000);
        let mut wal: Vec<WalObject> = (1..=6).map(|p| seg(1, p, 1000 + p * 1000)).collect();
        wal.extend((5..=8).map(|p| seg(2, p, 20000 + p)));
        let mut h = BTreeMap::new();
        h.insert(2, vec![HistoryRecord { timeline: 1, switch_lsn: 5 * SEG + 0x100 }]);
        let plan = |r: RecoveryRequest, h: &BTreeMap<u32, Vec<HistoryRecord>>| plan_wal(&b, &r, true, &wal, h, SEG);
        let p = plan(req(None), &h);
        assert_eq!((p.timeline, p.first.as_str(), p.last.as_str(), p.segments), (2, "000000010000000000000002", "000000020000000000000008", 7));
        assert!(p.problems.is_empty() && p.missing.is_empty(), "{:?}", p.missing);
        let cur = RecoveryRequest { timeline: Some(TimelineChoice::Current), ..Default::default() };
        let p = plan(cur, &h);
        assert_eq!((p.timeline, p.last.as_str()), (1, "000000010000000000000006"));
        // A time target checks the archive times on the path only (timeline 2 archived ~20000).
        let p = plan(req(Some(Target::Time(at(15000)))), &h);
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        // Timeline 3 left timeline 1 before the backup ended: refused, with a hint for latest.
        h.insert(3, vec![HistoryRecord { timeline: 1, switch_lsn: 3 * SEG }]);
        let p = plan(req(None), &h);
        assert!(p.problems[0].contains("timeline 3 left timeline 1") && p.problems[0].contains("--target-timeline current"), "{:?}", p.problems);
        let p = plan(RecoveryRequest { timeline: Some(TimelineChoice::Id(2)), ..Default::default() }, &h);
        assert!(p.problems.is_empty() && p.timeline == 2);
        let p = plan(RecoveryRequest { timeline: Some(TimelineChoice::Id(7)), ..Default::default() }, &h);
        assert!(p.problems[0].contains("no history file (00000007.history)"), "{:?}", p.problems);
        // The parsers and the planner agree on times written by PostgreSQL.
        assert_eq!(parse_target_time("1970-01-01 04:10:00+00").unwrap(), at(15000));
    }
}
