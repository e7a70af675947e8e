//! Catalog tests on a synthetic file storage: hand-made sentinels, metadata and WAL objects.

use chrono::{TimeZone, Utc};

use super::delete::{self, DeleteRequest, Target};
use super::wal_verify::{self, CheckStatus, CurrentSegment, IntegrityOptions, SegmentStatus};
use super::*;
use crate::format::names::{metadata_key, sentinel_key};
use crate::format::{BackupMetadata, Sentinel};
use crate::storage::{FsStorage, Storage};
use crate::Error;

const SEG: u64 = 16 << 20;

struct Fixture {
    _dir: tempfile::TempDir,
    s: FsStorage,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("bucket");
    std::fs::create_dir(&root).unwrap();
    let s = FsStorage::new(root);
    Fixture { _dir: dir, s }
}

fn name(tli: u32, pos: u64) -> String {
    format!("base_{}", walfiles::name_of_position(tli, pos))
}

impl Fixture {
    /// A backup starting at segment `pos` of `tli`, `start` seconds after the epoch, finishing
    /// one segment later; `parent` makes it a delta.
    fn backup(&self, tli: u32, pos: u64, start: i64, permanent: bool, parent: Option<&str>) -> String {
        let base = name(tli, pos);
        let name = match parent {
            Some(p) => format!("{base}_D_{}", &p[5..29]),
            None => base,
        };
        let (delta_from, delta_full_name, delta_count) = match parent {
            Some(p) => {
                let all = list_backups(&self.s).unwrap();
                let c = chain(&all, p);
                (Some(p.to_string()), Some(c.last().unwrap().name.clone()), Some(c.len() as i64))
            }
            None => (None, None, None),
        };
        let s = Sentinel {
            lsn: pos * SEG + 0x28,
            finish_lsn: (pos + 1) * SEG + 0x100,
            delta_lsn: parent.map(|_| 1),
            delta_from,
            delta_full_name,
            delta_count,
            start_time: Utc.timestamp_opt(start, 0).unwrap(),
            finish_time: Utc.timestamp_opt(start + 10, 0).unwrap(),
            version: 2,
            pg_version: 150000,
            hostname: "h".into(),
            data_dir: "/d".into(),
            ..Default::default()
        };
        self.s.put(&format!("basebackups_005/{name}/tar_partitions/part_001.tar.lz4"), b"data").unwrap();
        let m = BackupMetadata { is_permanent: permanent, start_time: s.start_time, ..Default::default() };
        self.s.put(&metadata_key(&name), &m.to_json()).unwrap();
        self.s.put(&sentinel_key(&name), &s.to_json()).unwrap();
        name
    }

    fn wal(&self, tli: u32, positions: impl IntoIterator<Item = u64>) {
        for p in positions {
            self.s.put(&format!("wal_005/{}.lz4", walfiles::name_of_position(tli, p)), b"w").unwrap();
        }
    }

    fn names(&self) -> Vec<String> {
        list_backups(&self.s).unwrap().into_iter().map(|b| b.name).collect()
    }

    fn plan(&self, args: &str) -> delete::DeletePlan {
        let args: Vec<String> = args.split_whitespace().map(String::from).collect();
        let req = DeleteRequest::parse_args(&args, None, Utc::now()).unwrap();
        delete::plan(&self.s, &req, SEG).unwrap()
    }

    fn wal_keys(plan: &delete::DeletePlan) -> Vec<String> {
        plan.objects.iter().filter(|o| o.backup.is_none()).map(|o| o.key[8..32].to_string()).collect()
    }
}

fn wal_names(tli: u32, r: std::ops::Range<u64>) -> Vec<String> {
    r.map(|p| walfiles::name_of_position(tli, p)).collect()
}

#[test]
fn retain_plain_full_and_find_full_with_a_delta_chain() {
    let f = fixture();
    let b1 = f.backup(1, 2, 100, false, None);
    let b2 = f.backup(1, 4, 200, false, None);
    let d1 = f.backup(1, 6, 300, false, Some(&b2));
    let d2 = f.backup(1, 8, 400, false, Some(&d1));
    f.wal(1, 1..10);

    // retain 2: the 2nd newest is a delta whose parents would go: refused, nothing changed.
    let args: Vec<String> = ["retain", "2"].iter().map(|s| s.to_string()).collect();
    let req = DeleteRequest::parse_args(&args, None, Utc::now()).unwrap();
    let err = delete::run(&f.s, &req, SEG, true).unwrap_err();
    assert!(matches!(err, Error::Refused(_)), "{err}");
    assert!(err.to_string().contains("FIND_FULL"), "{err}");
    assert_eq!(f.names().len(), 4);

    // retain FIND_FULL 2 moves back to b2; so does retain FULL 1.
    for args in ["retain FIND_FULL 2", "retain FULL 1", "retain full 1"] {
        let p = f.plan(args);
        assert_eq!(p.backups, vec![b1.clone()], "{args}");
        assert_eq!(Fixture::wal_keys(&p), wal_names(1, 1..4), "{args}: WAL before b2's start segment");
        assert!(p.objects.iter().any(|o| o.key == sentinel_key(&b1)));
        assert!(p.objects.iter().all(|o| o.backup.as_deref() != Some(&b2[..])));
    }
    // retain 4 / FULL 2 / 9: every backup is kept; only the WAL before the oldest goes.
    for args in ["retain 4", "retain FULL 2", "retain 9"] {
        let p = f.plan(args);
        assert!(p.backups.is_empty(), "{args}");
        assert_eq!(Fixture::wal_keys(&p), wal_names(1, 1..2), "{args}");
    }
    // Dry run changed nothing; confirm deletes.
    assert_eq!(f.names(), vec![b1.clone(), b2.clone(), d1.clone(), d2.clone()]);
    let args: Vec<String> = ["retain", "FULL", "1"].iter().map(|s| s.to_string()).collect();
    let req = DeleteRequest::parse_args(&args, None, Utc::now()).unwrap();
    let done = delete::run(&f.s, &req, SEG, true).unwrap();
    assert_eq!(f.names(), vec![b2.clone(), d1, d2]);
    for o in &done.objects {
        assert!(!f.s.exists(&o.key).unwrap(), "{} still there", o.key);
    }
    assert!(f.s.exists("wal_005/000000010000000000000004.lz4").unwrap());
    assert!(!f.s.exists("wal_005/000000010000000000000003.lz4").unwrap());
}

#[test]
fn retain_after_keeps_the_union() {
    let f = fixture();
    let b: Vec<String> = (0..4).map(|i| f.backup(1, 2 + 2 * i, 100 * (i as i64 + 1), false, None)).collect();
    let args: Vec<String> = ["retain", "1"].iter().map(|s| s.to_string()).collect();
    let now = Utc::now();
    // After a name: keep b[1] and newer even though only 1 is asked for.
    let req = DeleteRequest::parse_args(&args, Some(&b[1]), now).unwrap();
    assert_eq!(delete::plan(&f.s, &req, SEG).unwrap().backups, vec![b[0].clone()]);
    // After a time between b[1] (200) and b[2] (300).
    let req = DeleteRequest::parse_args(&args, Some("1970-01-01T00:04:10Z"), now).unwrap();
    assert_eq!(delete::plan(&f.s, &req, SEG).unwrap().backups, vec![b[0].clone(), b[1].clone()]);
    // An after time in the future, or --after with another mode, is refused.
    let err = DeleteRequest::parse_args(&args, Some("2999-01-01T00:00:00Z"), now).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)) && err.to_string().contains("future"), "{err}");
    let ev: Vec<String> = vec!["everything".into()];
    assert!(matches!(DeleteRequest::parse_args(&ev, Some(&b[1]), now), Err(Error::InvalidArgument(_))));
}

#[test]
fn order_is_by_start_time_not_name() {
    // A cluster re-initialised into the same prefix: its WAL names start over.
    let f = fixture();
    let old = f.backup(1, 0x50, 100, false, None);
    f.wal(1, 0x4F..0x53);
    let new = f.backup(1, 3, 200, false, None);
    f.wal(1, 1..5);
    assert_eq!(f.names(), vec![old.clone(), new.clone()]);
    let p = f.plan("retain 1");
    assert_eq!(p.backups, vec![old.clone()], "the re-initialised cluster's backup is the newest");
    // WAL before the kept backup only: the new cluster's 3.. stay, and so does old WAL after 3.
    assert_eq!(Fixture::wal_keys(&p), wal_names(1, 1..3));
    // retain 2 keeps both and so deletes no WAL the new backup needs.
    let p = f.plan("retain 2");
    assert!(p.backups.is_empty());
    assert_eq!(Fixture::wal_keys(&p), wal_names(1, 1..3));
    let p = f.plan(&format!("before {new}"));
    assert_eq!(p.backups, vec![old]);
}

#[test]
fn before_name_time_find_full_and_bad_targets() {
    let f = fixture();
    let b1 = f.backup(1, 2, 100, false, None);
    let b2 = f.backup(1, 4, 200, false, None);
    let d = f.backup(1, 6, 300, false, Some(&b2));
    f.wal(1, 1..8);
    let p = f.plan(&format!("before {b2}"));
    assert_eq!(p.backups, vec![b1.clone()]);
    assert_eq!(Fixture::wal_keys(&p), wal_names(1, 1..4));
    // Before a delta would orphan it.
    let now = Utc::now();
    let req = DeleteRequest::before(false, &d, now).unwrap();
    assert!(matches!(delete::plan(&f.s, &req, SEG), Err(Error::Refused(_))));
    let req = DeleteRequest::before(true, &d, now).unwrap();
    assert_eq!(delete::plan(&f.s, &req, SEG).unwrap().backups, vec![b1.clone()]);
    // A time: the first backup at or after it is kept.
    let p = f.plan("before 1970-01-01T00:02:30Z");
    assert_eq!(p.backups, vec![b1.clone()]);
    let p = f.plan("before FIND_FULL 1970-01-01T00:04:00Z");
    assert_eq!(p.backups, vec![b1.clone()], "the delta at 300 needs b2");
    // Unknown name, future time, garbage text, a time after every backup.
    let req = DeleteRequest::before(false, "base_000000010000000000000099", now).unwrap();
    assert!(matches!(delete::plan(&f.s, &req, SEG), Err(Error::NotFound(_))));
    assert!(matches!(DeleteRequest::before(false, "2999-01-01T00:00:00Z", now), Err(Error::InvalidArgument(_))));
    assert!(matches!(DeleteRequest::before(false, "yesterday", now), Err(Error::InvalidArgument(_))));
    let req = DeleteRequest::before(false, "2000-01-01T00:00:00Z", now).unwrap();
    assert!(matches!(delete::plan(&f.s, &req, SEG), Err(Error::Refused(_))));
    assert_eq!(Target::parse("2020-01-02 03:04:05", now).unwrap(), Target::Time(Utc.with_ymd_and_hms(2020, 1, 2, 3, 4, 5).unwrap()));
}

#[test]
fn permanent_backups_and_their_wal_are_protected() {
    let f = fixture();
    let p1 = f.backup(1, 2, 100, true, None);
    let b2 = f.backup(1, 5, 200, false, None);
    let b3 = f.backup(1, 8, 300, false, None);
    f.wal(1, 1..10);
    let p = f.plan("retain 1");
    assert_eq!(p.backups, vec![b2.clone()]);
    // p1 spans segments 2..=3 (finish LSN in segment 3): kept; 1 and 4..8 go.
    let mut expect = wal_names(1, 1..2);
    expect.extend(wal_names(1, 4..8));
    assert_eq!(Fixture::wal_keys(&p), expect);
    assert!(p.objects.iter().all(|o| o.backup.as_deref() != Some(&p1[..])));
    // everything refuses while a permanent backup exists; FORCE takes all.
    let ev: Vec<String> = vec!["everything".into()];
    let err = delete::plan(&f.s, &DeleteRequest::parse_args(&ev, None, Utc::now()).unwrap(), SEG).unwrap_err();
    assert!(matches!(err, Error::Refused(_)) && err.to_string().contains(&p1), "{err}");
    let p = f.plan("everything FORCE");
    assert_eq!(p.backups, vec![p1.clone(), b2, b3]);
    assert_eq!(Fixture::wal_keys(&p).len(), 9);
    delete::execute(&f.s, &p).unwrap();
    assert!(f.names().is_empty());
    assert!(f.s.list("").unwrap().is_empty());
}

#[test]
fn target_deletes_dependants_and_find_full_the_family() {
    let f = fixture();
    let b1 = f.backup(1, 2, 100, false, None);
    let d1 = f.backup(1, 4, 200, false, Some(&b1));
    let d2 = f.backup(1, 6, 300, false, Some(&d1));
    let b2 = f.backup(1, 8, 400, false, None);
    f.wal(1, 1..10);
    let p = f.plan(&format!("target {d1}"));
    assert_eq!(p.backups, vec![d1.clone(), d2.clone()]);
    assert!(Fixture::wal_keys(&p).is_empty(), "target never deletes WAL");
    let p = f.plan(&format!("target FIND_FULL {d2}"));
    assert_eq!(p.backups, vec![b1.clone(), d1.clone(), d2.clone()]);
    let p = f.plan(&format!("target {b2}"));
    assert_eq!(p.backups, vec![b2.clone()]);
    super::mark::mark(&f.s, &d2, true).unwrap();
    let req = DeleteRequest::target(false, &d1).unwrap();
    assert!(matches!(delete::plan(&f.s, &req, SEG), Err(Error::Refused(_))));
    assert!(matches!(DeleteRequest::target(false, "nope"), Err(Error::InvalidArgument(_))));
    let req = DeleteRequest::target(false, "base_000000010000000000000099").unwrap();
    assert!(matches!(delete::plan(&f.s, &req, SEG), Err(Error::NotFound(_))));
}

#[test]
fn garbage_removes_old_leftovers_and_wal() {
    let f = fixture();
    // A failed backup (no sentinel), written before the first real backup.
    f.s.put("basebackups_005/base_000000010000000000000001/tar_partitions/part_001.tar.lz4", b"x").unwrap();
    let now = Utc::now().timestamp();
    let p1 = f.backup(1, 2, 100, true, None);
    let b = f.backup(1, 5, now + 3600, false, None); // starts after the leftover was written
    f.wal(1, 1..7);
    let p = f.plan("garbage");
    let keys: Vec<&str> = p.objects.iter().map(|o| o.key.as_str()).collect();
    assert!(keys.contains(&"basebackups_005/base_000000010000000000000001/tar_partitions/part_001.tar.lz4"), "{keys:?}");
    assert_eq!(Fixture::wal_keys(&p), vec!["000000010000000000000001".to_string(), "000000010000000000000004".into()]);
    assert!(p.backups.is_empty());
    assert!(Fixture::wal_keys(&f.plan("garbage BACKUPS")).is_empty());
    assert_eq!(f.plan("garbage ARCHIVES").objects.len(), 2);
    let _ = (p1, b);
    // A leftover newer than the earliest non-permanent backup (a backup running now) stays.
    let f2 = fixture();
    f2.backup(1, 2, 100, false, None);
    f2.s.put("basebackups_005/base_000000010000000000000009/tar_partitions/part_001.tar.lz4", b"x").unwrap();
    assert!(f2.plan("garbage BACKUPS").objects.is_empty());
}

#[test]
fn parse_args_rejects_bad_modes_and_counts() {
    let now = Utc::now();
    for bad in ["", "retain", "retain 0", "retain -1", "retain x", "retain HALF 2", "bogus", "everything NOW", "garbage ALL", "before"] {
        let args: Vec<String> = bad.split_whitespace().map(String::from).collect();
        let err = DeleteRequest::parse_args(&args, None, now).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{bad}: {err}");
    }
    assert!(DeleteRequest::retain(None, 0, None, now).unwrap_err().to_string().contains("at least 1"));
}

#[test]
fn mark_chain_and_refuse_unmark_under_permanent_delta() {
    let f = fixture();
    let b1 = f.backup(1, 2, 100, false, None);
    let d1 = f.backup(1, 4, 200, false, Some(&b1));
    let d2 = f.backup(1, 6, 300, false, Some(&d1));
    assert_eq!(mark::mark(&f.s, &d1, true).unwrap(), vec![b1.clone(), d1.clone()]);
    let all = list_backups(&f.s).unwrap();
    assert_eq!(all.iter().map(|b| b.is_permanent).collect::<Vec<_>>(), vec![true, true, false]);
    assert!(mark::mark(&f.s, &d1, true).unwrap().is_empty(), "already permanent");
    let err = mark::mark(&f.s, &b1, false).unwrap_err();
    assert!(matches!(err, Error::Refused(_)) && err.to_string().contains(&d1), "{err}");
    assert_eq!(mark::mark(&f.s, &d1, false).unwrap(), vec![d1.clone()]);
    assert_eq!(mark::mark(&f.s, &b1, false).unwrap(), vec![b1.clone()]);
    assert!(matches!(mark::mark(&f.s, "base_000000010000000000000077", true), Err(Error::NotFound(_))));
    // Without metadata.json: rebuilt from the sentinel, which is left as it was.
    f.s.delete(&metadata_key(&d2)).unwrap();
    let sentinel_before = crate::storage::get_bytes(&f.s, &sentinel_key(&d2)).unwrap();
    mark::mark(&f.s, &d2, true).unwrap();
    let m = BackupMetadata::from_json(&crate::storage::get_bytes(&f.s, &metadata_key(&d2)).unwrap().unwrap(), "m").unwrap();
    assert!(m.is_permanent && m.hostname == "h" && m.start_lsn == 6 * SEG + 0x28);
    assert_eq!(crate::storage::get_bytes(&f.s, &sentinel_key(&d2)).unwrap(), sentinel_before);
    assert!(list_backups(&f.s).unwrap().iter().all(|b| b.is_permanent));
}

#[test]
fn wal_show_timelines_gaps_and_history() {
    let f = fixture();
    f.backup(1, 2, 100, false, None);
    f.backup(2, 0x12, 200, false, None);
    f.wal(1, (1..0x0D).filter(|p| *p != 5));
    f.wal(2, 0x0D..0x13);
    f.s.put("wal_005/00000002.history", b"1\t0/D000000\tno recovery target specified\n").unwrap();
    f.s.put("wal_005/000000010000000000000002.00000028.backup.lz4", b"b").unwrap();
    let rows = wal_show::wal_show(&f.s, &plain(), &list_backups(&f.s).unwrap(), SEG).unwrap();
    assert_eq!(rows.len(), 2);
    let t1 = &rows[0];
    assert_eq!((t1.id, t1.parent_id, t1.switch_point_lsn), (1, 0, 0));
    assert_eq!((t1.start_segment.as_str(), t1.end_segment.as_str()), ("000000010000000000000001", "00000001000000000000000C"));
    assert_eq!((t1.segment_range_size, t1.segments_count), (12, 11));
    assert_eq!(t1.missing_segments, vec!["000000010000000000000005".to_string()]);
    assert_eq!(t1.status, "LOST_SEGMENTS");
    assert_eq!(t1.backups.len(), 1);
    let t2 = &rows[1];
    assert_eq!((t2.id, t2.parent_id, t2.switch_point().as_str(), t2.status), (2, 1, "0/D000000", "OK"));
    assert_eq!((t2.segment_range_size, t2.segments_count, t2.backups.len()), (6, 6, 1));
}

fn opts() -> IntegrityOptions {
    IntegrityOptions { wal_segment_size: SEG, max_delayed: 0, uploading: 2 }
}

#[test]
fn wal_verify_integrity_statuses() {
    let f = fixture();
    let b = f.backup(1, 3, 100, false, None);
    f.wal(1, 1..10);
    let cur = CurrentSegment { timeline: 1, lsn: 10 * SEG + 5 };
    let r = wal_verify::integrity(&f.s, &plain(), &list_backups(&f.s).unwrap(), cur, opts()).unwrap();
    assert_eq!(r.status, CheckStatus::Ok);
    assert_eq!(r.earliest_backup.as_deref(), Some(b.as_str()));
    assert_eq!(r.details.len(), 1);
    assert_eq!((r.details[0].start_segment.as_str(), r.details[0].end_segment.as_str()), ("000000010000000000000003", "000000010000000000000009"));
    assert_eq!((r.details[0].segments_count, r.details[0].status), (7, SegmentStatus::Found));

    // The two newest missing: uploading (WARNING). One in the middle missing: lost (FAILURE).
    f.s.delete("wal_005/000000010000000000000009.lz4").unwrap();
    f.s.delete("wal_005/000000010000000000000008.lz4").unwrap();
    let r = wal_verify::integrity(&f.s, &plain(), &list_backups(&f.s).unwrap(), cur, opts()).unwrap();
    assert_eq!(r.status, CheckStatus::Warning);
    assert_eq!(r.details.last().unwrap().status, SegmentStatus::MissingUploading);
    assert_eq!(r.details.last().unwrap().segments_count, 2);
    f.s.delete("wal_005/000000010000000000000005.lz4").unwrap();
    let r = wal_verify::integrity(&f.s, &plain(), &list_backups(&f.s).unwrap(), cur, opts()).unwrap();
    assert_eq!(r.status, CheckStatus::Failure);
    let lost: Vec<_> = r.details.iter().filter(|d| d.status == SegmentStatus::MissingLost).collect();
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].start_segment, "000000010000000000000005");
    // With max_delayed 1, the newest missing one is delayed instead.
    let r = wal_verify::integrity(&f.s, &plain(), &list_backups(&f.s).unwrap(), cur, IntegrityOptions { max_delayed: 1, ..opts() }).unwrap();
    let st: Vec<_> = r.details.iter().map(|d| (d.status, d.segments_count)).collect();
    assert_eq!(
        st,
        vec![
            (SegmentStatus::Found, 2),
            (SegmentStatus::MissingLost, 1),
            (SegmentStatus::Found, 2),
            (SegmentStatus::MissingUploading, 1),
            (SegmentStatus::MissingDelayed, 1)
        ]
    );
}

#[test]
fn wal_verify_follows_timeline_switches_and_timeline_check() {
    let f = fixture();
    f.backup(1, 2, 100, false, None);
    f.wal(1, 1..8); // timeline 1 went on to 7 (a split-off future that tli 2 does not follow)
    f.s.put("wal_005/00000002.history.lz4", &crate::codec::compress_bytes(crate::Compression::Lz4, b"1\t0/5000000\tx\n").unwrap()).unwrap();
    f.wal(2, 5..9);
    let cur = CurrentSegment { timeline: 2, lsn: 9 * SEG };
    let r = wal_verify::integrity(&f.s, &plain(), &list_backups(&f.s).unwrap(), cur, opts()).unwrap();
    assert_eq!(r.status, CheckStatus::Ok, "{r:?}");
    let runs: Vec<_> = r.details.iter().map(|d| (d.timeline_id, d.start_segment.as_str(), d.segments_count)).collect();
    assert_eq!(runs, vec![(1, "000000010000000000000002", 3), (2, "000000020000000000000005", 4)]);
    // A backup on timeline 1 after the switch is not on tli 2's path: not the earliest.
    // Timeline check.
    assert_eq!(wal_verify::timeline(&f.s, 2).unwrap().status, CheckStatus::Ok);
    let r = wal_verify::timeline(&f.s, 1).unwrap();
    assert_eq!((r.status, r.highest_storage_timeline_id), (CheckStatus::Failure, Some(2)));
    assert_eq!(wal_verify::timeline(&fixture().s, 1).unwrap().status, CheckStatus::Warning);
    assert!(matches!(wal_verify::Check::parse("bogus"), Err(Error::InvalidArgument(_))));
    assert_eq!(wal_verify::Check::parse("Integrity").unwrap(), wal_verify::Check::Integrity);
    let c = wal_verify::current_from_storage(&f.s, SEG).unwrap().unwrap();
    assert_eq!(c, CurrentSegment { timeline: 2, lsn: 9 * SEG });
}

/// The pipeline of an unencrypted storage (reading picks the codec from each key).
fn plain() -> crate::codec::Pipeline {
    crate::codec::Pipeline::new(crate::codec::Compression::Lz4, None)
}

// --- delete and backups in progress (backup/in_progress.rs markers) ---

use crate::backup::in_progress::{Marker, STALE_AFTER};
use crate::format::names::IN_PROGRESS_PREFIX;
use std::time::{Duration, SystemTime};

impl Fixture {
    /// A marker of a backup in progress; `start` is its start segment position.
    fn marker(&self, id: &str, backup: Option<&str>, start: Option<u64>, delta_from: Option<&str>) -> String {
        let m = Marker {
            host: "otherhost".into(),
            pid: 77,
            started: Utc::now(),
            heartbeat: Utc::now(),
            backup_name: backup.map(str::to_string),
            start_lsn: start.map(|p| p * SEG + 0x28),
            timeline: Some(1),
            wal_segment_size: Some(SEG),
            delta_from: delta_from.map(str::to_string),
            abandoned: false,
        };
        let key = format!("{IN_PROGRESS_PREFIX}{id}.json");
        self.s.put(&key, &serde_json::to_vec(&m).unwrap()).unwrap();
        key
    }

    fn part(&self, backup: &str) -> String {
        let k = format!("basebackups_005/{backup}/tar_partitions/part_001.tar.lz4");
        self.s.put(&k, b"running").unwrap();
        k
    }

    fn plan_req(&self, args: &str, now: SystemTime) -> crate::Result<delete::DeletePlan> {
        let args: Vec<String> = args.split_whitespace().map(String::from).collect();
        let req = DeleteRequest::parse_args(&args, None, Utc::now()).unwrap();
        delete::plan_at(&self.s, &req, SEG, now)
    }
}

fn keys(p: &delete::DeletePlan) -> Vec<String> {
    p.objects.iter().map(|o| o.key.clone()).collect()
}

#[test]
fn running_backup_keeps_its_objects_and_wal_and_blocks_everything() {
    let f = fixture();
    let now = Utc::now().timestamp();
    // Committed backups that start "later" than the running one's parts were written, so the
    // age rule alone would call its parts leftovers: only the marker keeps them.
    let b1 = f.backup(1, 2, now + 3600, false, None);
    let b2 = f.backup(1, 5, now + 7200, false, None);
    f.wal(1, 1..9);
    let running = "base_000000010000000000000003";
    f.marker("h-1-1", Some(running), Some(3), None);
    let part = f.part(running);

    for args in ["garbage", "garbage BACKUPS", "retain 1", "before base_000000010000000000000005"] {
        let p = f.plan_req(args, SystemTime::now()).unwrap();
        assert!(!keys(&p).contains(&part), "{args}: a running backup's part is planned: {:?}", keys(&p));
        assert!(keys(&p).iter().all(|k| !k.starts_with(IN_PROGRESS_PREFIX)), "{args}: marker planned");
        // WAL from the running backup's start (segment 3) on stays, though b2 starts at 5.
        let wal = Fixture::wal_keys(&p);
        assert!(wal.iter().all(|w| w.as_str() < "000000010000000000000003"), "{args}: {wal:?}");
        assert_eq!(p.in_progress.len(), 1, "{args}");
        assert!(p.in_progress[0].contains(running) && p.in_progress[0].contains("otherhost"));
    }
    assert_eq!(Fixture::wal_keys(&f.plan_req("retain 1", SystemTime::now()).unwrap()), wal_names(1, 1..3));
    for args in ["everything", "everything FORCE"] {
        let err = f.plan_req(args, SystemTime::now()).unwrap_err();
        assert!(matches!(err, Error::Refused(_)) && err.to_string().contains("in progress"), "{args}: {err}");
        assert!(err.to_string().contains(running), "{err}");
    }
    // Confirmed: the part, the marker and WAL 3.. are all still there.
    let args: Vec<String> = ["retain", "1"].iter().map(|s| s.to_string()).collect();
    let req = DeleteRequest::parse_args(&args, None, Utc::now()).unwrap();
    delete::run(&f.s, &req, SEG, true).unwrap();
    assert!(f.s.exists(&part).unwrap());
    assert!(f.s.exists("wal_005/000000010000000000000003.lz4").unwrap());
    assert!(!f.s.exists("wal_005/000000010000000000000002.lz4").unwrap());
    assert_eq!(f.names(), vec![b2]);
    let _ = b1;
}

#[test]
fn marker_without_a_start_keeps_all_wal_and_a_delta_keeps_its_parent() {
    let f = fixture();
    let b1 = f.backup(1, 2, 100, false, None);
    let b2 = f.backup(1, 5, 200, false, None);
    f.wal(1, 1..9);
    // Inside pg_backup_start: no name, no start yet.
    let m = f.marker("h-1-1", None, None, None);
    let p = f.plan_req("retain 1", SystemTime::now()).unwrap();
    assert_eq!(p.backups, vec![b1.clone()], "backups still go");
    assert!(Fixture::wal_keys(&p).is_empty(), "no WAL while a backup's start is unknown");
    f.s.delete(&m).unwrap();
    // A delta being taken from b1: b1 is kept by retain and cannot be targeted.
    f.marker("h-1-2", Some("base_000000010000000000000007_D_000000010000000000000002"), Some(7), Some(&b1));
    let p = f.plan_req("retain 1", SystemTime::now()).unwrap();
    assert!(p.backups.is_empty(), "{:?}", p.backups);
    let err = f.plan_req(&format!("target {b1}"), SystemTime::now()).unwrap_err();
    assert!(matches!(err, Error::Refused(_)) && err.to_string().contains("in progress"), "{err}");
    assert!(f.plan_req(&format!("target {b2}"), SystemTime::now()).is_ok());
}

#[test]
fn stale_or_abandoned_marker_and_its_leftovers_are_garbage() {
    let f = fixture();
    f.backup(1, 2, 100, false, None);
    f.wal(1, 1..4);
    let dead = "base_000000010000000000000009";
    let mk = f.marker("h-1-1", Some(dead), Some(9), None);
    let part = f.part(dead);
    // Fresh: kept. After STALE_AFTER without heartbeat: garbage, marker included.
    assert!(!keys(&f.plan_req("garbage", SystemTime::now()).unwrap()).contains(&part));
    let later = SystemTime::now() + STALE_AFTER + Duration::from_secs(5);
    let p = f.plan_req("garbage BACKUPS", later).unwrap();
    assert!(keys(&p).contains(&part) && keys(&p).contains(&mk), "{:?}", keys(&p));
    assert!(p.in_progress.is_empty());
    assert!(!keys(&f.plan_req("garbage ARCHIVES", later).unwrap()).contains(&mk));
    // everything is allowed once the marker is stale, and takes it too.
    assert!(keys(&f.plan_req("everything", later).unwrap()).contains(&mk));
    // Abandoned (the backup failed): garbage at once.
    let mut m: Marker = serde_json::from_slice(&crate::storage::get_bytes(&f.s, &mk).unwrap().unwrap()).unwrap();
    m.abandoned = true;
    f.s.put(&mk, &serde_json::to_vec(&m).unwrap()).unwrap();
    let p = f.plan_req("garbage", SystemTime::now()).unwrap();
    assert!(keys(&p).contains(&part) && keys(&p).contains(&mk), "{:?}", keys(&p));
    // Markers are never listed as backups.
    assert_eq!(f.names().len(), 1);
}

#[test]
fn backup_starting_after_the_plan_keeps_its_parts_and_wal() {
    let f = fixture();
    let now = Utc::now().timestamp();
    f.backup(1, 2, 100, false, None);
    f.backup(1, 6, now + 3600, false, None);
    f.wal(1, 1..9);
    let p = f.plan_req("retain 1", SystemTime::now()).unwrap();
    assert_eq!(Fixture::wal_keys(&p), wal_names(1, 1..6));
    // Between plan and execute a (standby) backup starts at segment 4 and writes a part.
    f.marker("h-2-1", Some("base_000000010000000000000004"), Some(4), None);
    let part = f.part("base_000000010000000000000004");
    let kept = delete::execute(&f.s, &p).unwrap();
    assert_eq!(kept, vec!["wal_005/000000010000000000000004.lz4".to_string(), "wal_005/000000010000000000000005.lz4".into()]);
    assert!(f.s.exists(&part).unwrap(), "not listed by the plan, so never deleted");
    assert!(!f.s.exists("wal_005/000000010000000000000003.lz4").unwrap());
    assert!(f.s.exists("wal_005/000000010000000000000004.lz4").unwrap());
}

/// File storage that runs a hook once, right after the first listing of `wal_005/` (that is:
/// after the backup objects were listed, before the markers are read).
type Hook = Box<dyn FnOnce(&FsStorage) + Send>;

struct Interleave {
    inner: FsStorage,
    hook: std::sync::Mutex<Option<Hook>>,
}

impl Storage for Interleave {
    fn get(&self, key: &str) -> crate::Result<Option<Box<dyn std::io::Read + Send>>> {
        self.inner.get(key)
    }
    fn put(&self, key: &str, data: &[u8]) -> crate::Result<()> {
        self.inner.put(key, data)
    }
    fn writer(&self, key: &str) -> crate::Result<Box<dyn crate::storage::ObjectWriter>> {
        self.inner.writer(key)
    }
    fn list(&self, prefix: &str) -> crate::Result<Vec<crate::storage::ObjectInfo>> {
        let out = self.inner.list(prefix)?;
        if prefix == crate::format::names::WAL_PREFIX {
            if let Some(h) = self.hook.lock().unwrap().take() {
                h(&self.inner);
            }
        }
        Ok(out)
    }
    fn exists(&self, key: &str) -> crate::Result<bool> {
        self.inner.exists(key)
    }
    fn delete(&self, key: &str) -> crate::Result<()> {
        self.inner.delete(key)
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn pending_uploads(&self, prefix: &str) -> crate::Result<Vec<crate::storage::PendingUpload>> {
        self.inner.pending_uploads(prefix)
    }
}

#[test]
fn backup_starting_while_delete_lists_is_seen_by_the_marker_read() {
    let f = fixture();
    let now = Utc::now().timestamp();
    f.backup(1, 2, now + 3600, false, None);
    f.wal(1, 1..6);
    let dir = f.s.root().to_path_buf();
    let running = "base_000000010000000000000003";
    let s = Interleave {
        inner: FsStorage::new(&dir),
        hook: std::sync::Mutex::new(Some(Box::new(move |s: &FsStorage| {
            // Marker first, then a part: exactly a backup's order.
            let m = Marker {
                host: "h".into(), pid: 1, started: Utc::now(), heartbeat: Utc::now(),
                backup_name: Some(running.into()), start_lsn: Some(3 * SEG), timeline: Some(1),
                wal_segment_size: Some(SEG), delta_from: None, abandoned: false,
            };
            s.put(&format!("{IN_PROGRESS_PREFIX}h-1-1.json"), &serde_json::to_vec(&m).unwrap()).unwrap();
            s.put(&format!("basebackups_005/{running}/tar_partitions/part_001.tar.lz4"), b"x").unwrap();
        }))),
    };
    let err = delete::plan(&s, &DeleteRequest::Everything { force: true }, SEG).unwrap_err();
    assert!(err.to_string().contains("in progress"), "the marker read comes after the listings: {err}");
    assert!(dir.join(format!("basebackups_005/{running}/tar_partitions/part_001.tar.lz4")).exists());
}

#[test]
fn unfinished_uploads_are_garbage_only_when_old_and_never_listed() {
    let f = fixture();
    f.backup(1, 2, 100, false, None);
    let root = f.s.root().to_path_buf();
    let tmp_part = "basebackups_005/base_000000010000000000000001/tar_partitions/.walg-tmp-999-0-part_001.tar.lz4";
    let tmp_wal = "wal_005/.walg-tmp-999-1-000000010000000000000001.lz4";
    for k in [tmp_part, tmp_wal] {
        std::fs::create_dir_all(root.join(k).parent().unwrap()).unwrap();
        std::fs::write(root.join(k), b"half").unwrap();
    }
    // Never shown as backups, WAL or objects.
    assert_eq!(f.names().len(), 1);
    assert!(walfiles::list_wal(&f.s).unwrap().is_empty());
    assert!(f.s.list("").unwrap().iter().all(|o| !o.key.contains(".walg-tmp-")));
    // Young: an upload may be in progress, left alone.
    assert!(!keys(&f.plan_req("garbage", SystemTime::now()).unwrap()).iter().any(|k| k.contains(".walg-tmp-")));
    let later = SystemTime::now() + delete::PENDING_UPLOAD_MIN_AGE + Duration::from_secs(60);
    let p = f.plan_req("garbage", later).unwrap();
    assert!(keys(&p).contains(&tmp_part.to_string()) && keys(&p).contains(&tmp_wal.to_string()), "{:?}", keys(&p));
    assert!(p.objects.iter().filter(|o| o.key.contains(".walg-tmp-")).all(|o| o.upload_id.is_some()));
    assert_eq!(keys(&f.plan_req("garbage ARCHIVES", later).unwrap()), vec![tmp_wal.to_string()]);
    let kb = keys(&f.plan_req("garbage BACKUPS", later).unwrap());
    assert!(kb.contains(&tmp_part.to_string()) && !kb.contains(&tmp_wal.to_string()), "{kb:?}");
    delete::execute(&f.s, &p).unwrap();
    assert!(!root.join(tmp_part).exists() && !root.join(tmp_wal).exists());
    assert_eq!(f.names().len(), 1, "the backup is untouched");
    // abort_upload refuses anything that is not a temp file.
    let not_tmp = crate::storage::PendingUpload {
        key: "wal_005/000000010000000000000001.lz4".into(), upload_id: String::new(),
        last_activity: SystemTime::UNIX_EPOCH, size: 0,
    };
    f.s.put(&not_tmp.key, b"w").unwrap();
    assert!(f.s.abort_upload(&not_tmp).is_err());
    assert!(f.s.exists(&not_tmp.key).unwrap());
}

/// File storage that refuses to list unfinished uploads (an S3 policy without
/// s3:ListBucketMultipartUploads).
struct NoUploadListing(FsStorage);

impl Storage for NoUploadListing {
    fn get(&self, key: &str) -> crate::Result<Option<Box<dyn std::io::Read + Send>>> {
        self.0.get(key)
    }
    fn put(&self, key: &str, data: &[u8]) -> crate::Result<()> {
        self.0.put(key, data)
    }
    fn writer(&self, key: &str) -> crate::Result<Box<dyn crate::storage::ObjectWriter>> {
        self.0.writer(key)
    }
    fn list(&self, prefix: &str) -> crate::Result<Vec<crate::storage::ObjectInfo>> {
        self.0.list(prefix)
    }
    fn exists(&self, key: &str) -> crate::Result<bool> {
        self.0.exists(key)
    }
    fn delete(&self, key: &str) -> crate::Result<()> {
        self.0.delete(key)
    }
    fn describe(&self) -> String {
        self.0.describe()
    }
    fn pending_uploads(&self, _prefix: &str) -> crate::Result<Vec<crate::storage::PendingUpload>> {
        Err(Error::Unreachable("AccessDenied on ListMultipartUploads".into()))
    }
}

#[test]
fn garbage_works_without_upload_listing_and_says_so() {
    let f = fixture();
    f.backup(1, 3, 100, false, None);
    f.wal(1, 1..4);
    let s = NoUploadListing(FsStorage::new(f.s.root()));
    let p = delete::plan(&s, &DeleteRequest::Garbage { scope: delete::GarbageScope::All }, SEG).unwrap();
    assert_eq!(Fixture::wal_keys(&p), wal_names(1, 1..3));
    assert!(p.notes.iter().any(|n| n.contains("AccessDenied")), "{:?}", p.notes);
    // Modes that never touch uploads do not even ask.
    assert!(delete::plan(&s, &DeleteRequest::retain(None, 1, None, Utc::now()).unwrap(), SEG).unwrap().notes.is_empty());
}

/// Changed-block maps follow their segments' fate: deleted at the positions whose WAL goes
/// (also where the WAL itself is already gone, on any timeline), kept where a permanent backup
/// keeps the WAL, all gone with `everything`.
#[test]
fn changed_block_maps_go_with_their_segments() {
    use crate::wal::blocks::stored::MAP_PREFIX;
    let f = fixture();
    let perm = f.backup(1, 1, 50, true, None); // keeps the WAL of positions 1 and 2
    let b1 = f.backup(1, 3, 100, false, None);
    let b2 = f.backup(1, 5, 200, false, None);
    f.wal(1, (0..10).filter(|p| *p != 4)); // 4: deleted by some other tool, its map is left
    let map = |tli: u32, p: u64| format!("{MAP_PREFIX}{}.lz4", walfiles::name_of_position(tli, p));
    for p in 0..10 {
        f.s.put(&map(1, p), b"m").unwrap();
    }
    f.s.put(&map(2, 0), b"m").unwrap();
    f.s.put(&format!("{MAP_PREFIX}not-a-map"), b"?").unwrap();
    let maps = || -> Vec<String> { f.s.list(MAP_PREFIX).unwrap().into_iter().map(|o| o.key).collect() };

    let plan = f.plan("retain 1");
    assert_eq!(plan.backups, vec![b1]);
    let planned: Vec<&str> = plan.objects.iter().filter(|o| o.key.starts_with(MAP_PREFIX)).map(|o| o.key.as_str()).collect();
    assert_eq!(planned, vec![map(1, 0), map(1, 3), map(1, 4), map(2, 0)], "maps before b2's start, not perm's");
    assert!(plan.objects.iter().any(|o| o.key == "wal_005/000000010000000000000003.lz4"), "the WAL goes too");
    let args: Vec<String> = ["retain", "1"].iter().map(|s| s.to_string()).collect();
    let req = DeleteRequest::parse_args(&args, None, Utc::now()).unwrap();
    delete::run(&f.s, &req, SEG, true).unwrap();
    let mut want: Vec<String> = [1, 2, 5, 6, 7, 8, 9].into_iter().map(|p| map(1, p)).collect();
    want.push(format!("{MAP_PREFIX}not-a-map"));
    want.sort();
    assert_eq!(maps(), want);
    assert!(f.s.exists("wal_005/000000010000000000000005.lz4").unwrap());

    let args: Vec<String> = ["everything", "FORCE"].iter().map(|s| s.to_string()).collect();
    let req = DeleteRequest::parse_args(&args, None, Utc::now()).unwrap();
    delete::run(&f.s, &req, SEG, true).unwrap();
    assert!(maps().is_empty(), "{:?}", maps());
    assert!(f.names().is_empty());
    let _ = (perm, b2);
}
