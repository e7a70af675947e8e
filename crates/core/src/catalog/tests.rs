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
