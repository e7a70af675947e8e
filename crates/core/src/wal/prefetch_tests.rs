//! Prefetch: names of the next segments, the WAL-G layout, verification on serve, stale cleanup.
use std::fs;
use std::path::Path;

use super::prefetch::{self, cleanup, next_segments, take, Dirs, NotServed, Outcome};
use super::push;
use super::tests::fake_segment;
use crate::config::Config;
use crate::storage::{FsStorage, Storage};

const MB: u64 = 1 << 20;

#[test]
fn next_segment_names_across_segment_size_and_timeline_edges() {
    // 16 MiB: 256 segments per xlogid, the low part wraps at 0xFF.
    assert_eq!(
        next_segments("0000000100000000000000FE", 16 * MB, 3),
        ["0000000100000000000000FF", "000000010000000100000000", "000000010000000100000001"]
    );
    // 1 GiB: 4 segments per xlogid.
    assert_eq!(next_segments("000000020000000500000003", 1 << 30, 2), ["000000020000000600000000", "000000020000000600000001"]);
    // 1 MiB: 4096 per xlogid.
    assert_eq!(next_segments("000000030000000000000FFF", MB, 1), ["000000030000000100000000"]);
    // The timeline never changes: prefetch follows the requested name's timeline only.
    assert!(next_segments("0000000A00000000000000FF", 16 * MB, 4).iter().all(|n| n.starts_with("0000000A")));
    // The last segment of the address space has no successor.
    assert_eq!(next_segments("00000001FFFFFFFF000000FE", 16 * MB, 5), ["00000001FFFFFFFF000000FF"]);
    // Not a segment of this size (0x100 is no 16 MiB segment number), history, partial: nothing.
    assert!(next_segments("000000010000000000000100", 16 * MB, 2).is_empty());
    assert!(next_segments("00000002.history", 16 * MB, 2).is_empty());
    assert!(next_segments("000000010000000000000001.partial", 16 * MB, 2).is_empty());
    assert_eq!(next_segments("000000010000000000000001", 16 * MB, 0).len(), 0);
}

#[test]
fn layout_is_wal_gs() {
    let d = Dirs::new(None, Path::new("pg_wal/RECOVERYXLOG"));
    assert_eq!(d.ready, Path::new("pg_wal/.wal-g/prefetch"));
    assert_eq!(d.running, Path::new("pg_wal/.wal-g/prefetch/running"));
    let d = Dirs::new(Some(Path::new("/var/tmp/pf")), Path::new("pg_wal/RECOVERYXLOG"));
    assert_eq!(d.ready, Path::new("/var/tmp/pf/.wal-g/prefetch"));
    assert_eq!(Dirs::new(None, Path::new("RECOVERYXLOG")).ready, Path::new("./.wal-g/prefetch"));
}

struct Fixture {
    dir: tempfile::TempDir,
    storage: FsStorage,
    cfg: Config,
    dirs: Dirs,
}

/// Segments 1..=n of timeline 1 (1 MiB each) archived.
fn archive(n: u32) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let storage = FsStorage::new(dir.path().join("bucket"));
    let cfg = Config::for_file_storage(dir.path().join("bucket"));
    for i in 1..=n {
        put_segment(&cfg, &storage, dir.path(), &format!("0000000100000000000000{i:02X}"));
    }
    fs::create_dir(dir.path().join("pg_wal")).unwrap();
    let dirs = Dirs::new(None, &dir.path().join("pg_wal/RECOVERYXLOG"));
    Fixture { dir, storage, cfg, dirs }
}

fn put_segment(cfg: &Config, s: &FsStorage, tmp: &Path, name: &str) -> Vec<u8> {
    let content = fake_segment(name, MB as u32, |i| (i * 31 % 251) as u8 ^ name.as_bytes()[23]);
    let p = tmp.join("src");
    fs::write(&p, &content).unwrap();
    push(cfg, s, name, &p).unwrap();
    content
}

fn run(f: &Fixture, requested: &str, count: usize) -> Vec<(String, Outcome)> {
    prefetch::run(&f.cfg.pipeline(), &f.storage, &f.dirs, requested, MB, count, &|_| {})
}

#[test]
fn prefetched_segments_are_served_from_disk_and_match_storage() {
    let f = archive(5);
    let out = run(&f, "000000010000000000000001", 6);
    let fetched: Vec<&str> = out.iter().filter(|(_, o)| matches!(o, Outcome::Fetched)).map(|(n, _)| n.as_str()).collect();
    assert_eq!(fetched, ["000000010000000000000002", "000000010000000000000003", "000000010000000000000004", "000000010000000000000005"]);
    assert!(out.iter().filter(|(_, o)| matches!(o, Outcome::Missing)).count() == 2, "{out:?}");
    assert!(f.dirs.ready.join("000000010000000000000003").exists());
    // Nothing left in running/ (claims, parts, temp files).
    assert_eq!(fs::read_dir(&f.dirs.running).unwrap().count(), 0);

    // Served from disk even with the storage gone, and byte for byte what storage holds.
    let bucket_copy = f.dir.path().join("bucket-moved");
    fs::rename(f.dir.path().join("bucket"), &bucket_copy).unwrap();
    let dest = f.dir.path().join("pg_wal/RECOVERYXLOG");
    take(&f.dirs, "000000010000000000000003", &dest, &f.storage.describe()).unwrap();
    fs::rename(&bucket_copy, f.dir.path().join("bucket")).unwrap();
    let direct = f.dir.path().join("direct");
    assert!(super::fetch(&f.cfg, &f.storage, "000000010000000000000003", &direct).unwrap());
    assert_eq!(fs::read(&dest).unwrap(), fs::read(&direct).unwrap());
    assert!(!f.dirs.ready.join("000000010000000000000003").exists(), "served files are moved, not copied");
    assert!(!f.dirs.ready.join("000000010000000000000003.xxh3").exists());
    // A second run skips what is already there and downloads again what was served.
    let again = run(&f, "000000010000000000000001", 2);
    assert!(matches!((&again[0].1, &again[1].1), (Outcome::Skipped, Outcome::Fetched)), "{again:?}");
    // Not prefetched at all: absent, the caller fetches itself.
    assert_eq!(take(&f.dirs, "000000010000000000000009", &dest, &f.storage.describe()), Err(NotServed::Absent));
    assert_eq!(take(&f.dirs, "00000002.history", &dest, &f.storage.describe()), Err(NotServed::Absent));
}

#[test]
fn damaged_prefetched_file_is_rejected_removed_and_refetched() {
    let f = archive(4);
    run(&f, "000000010000000000000001", 3);
    let dest = f.dir.path().join("pg_wal/RECOVERYXLOG");
    // One byte flipped in the middle: the header still looks right, the digest does not match.
    let p = f.dirs.ready.join("000000010000000000000002");
    let mut bytes = fs::read(&p).unwrap();
    bytes[500_000] ^= 0x40;
    fs::write(&p, &bytes).unwrap();
    match take(&f.dirs, "000000010000000000000002", &dest, &f.storage.describe()) {
        Err(NotServed::Rejected(why)) => assert!(why.contains("digest"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(!p.exists() && !dest.exists(), "a rejected file is removed and nothing is put in place");
    // Truncated: WalCheck refuses it.
    let p = f.dirs.ready.join("000000010000000000000003");
    let bytes = fs::read(&p).unwrap();
    fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    match take(&f.dirs, "000000010000000000000003", &dest, &f.storage.describe()) {
        Err(NotServed::Rejected(why)) => assert!(why.contains("truncated"), "{why}"),
        other => panic!("{other:?}"),
    }
    // Another segment's bytes under this name (digest replaced too): the page address check.
    let p4 = f.dirs.ready.join("000000010000000000000004");
    let seg5 = fake_segment("000000010000000000000005", MB as u32, |_| 0);
    fs::write(&p4, &seg5).unwrap();
    let record = format!("{}\n{}\n", crate::format::integrity::hash_hex(&seg5), f.storage.describe());
    fs::write(f.dirs.ready.join("000000010000000000000004.xxh3"), record).unwrap();
    match take(&f.dirs, "000000010000000000000004", &dest, &f.storage.describe()) {
        Err(NotServed::Rejected(why)) => assert!(why.contains("not the start of segment"), "{why}"),
        other => panic!("{other:?}"),
    }
    // A file without a digest (e.g. WAL-G's own prefetch) is never served.
    run(&f, "000000010000000000000001", 3);
    fs::remove_file(f.dirs.ready.join("000000010000000000000002.xxh3")).unwrap();
    assert!(matches!(take(&f.dirs, "000000010000000000000002", &dest, &f.storage.describe()), Err(NotServed::Rejected(_))));
    // The refetch after a rejection: the next run downloads it again and it is served.
    run(&f, "000000010000000000000001", 3);
    take(&f.dirs, "000000010000000000000002", &dest, &f.storage.describe()).unwrap();
    assert!(super::fetch(&f.cfg, &f.storage, "000000010000000000000002", &f.dir.path().join("d")).unwrap());
    assert_eq!(fs::read(&dest).unwrap(), fs::read(f.dir.path().join("d")).unwrap());
}

#[test]
fn segment_prefetched_from_another_storage_is_never_served() {
    // Two clusters' storages hold a segment of the same name; a prefetch directory shared by
    // wal-fetch calls for both (WALG_PREFETCH_DIR, or /tmp) holds the first one's copy.
    let a = archive(3);
    let b = archive(3);
    let dirs = Dirs::at(&a.dir.path().join("shared"));
    prefetch::run(&a.cfg.pipeline(), &a.storage, &dirs, "000000010000000000000001", MB, 2, &|_| {});
    assert!(dirs.ready.join("000000010000000000000002").exists());
    let dest = b.dir.path().join("pg_wal/RECOVERYXLOG");
    match take(&dirs, "000000010000000000000002", &dest, &b.storage.describe()) {
        Err(NotServed::Rejected(why)) => {
            assert!(why.contains(&a.storage.describe()) && why.contains(&b.storage.describe()), "{why}")
        }
        other => panic!("another storage's segment must not be served: {other:?}"),
    }
    assert!(!dest.exists() && !dirs.ready.join("000000010000000000000002").exists(), "rejected and removed");
    // The storage it came from is still served.
    take(&dirs, "000000010000000000000003", &dest, &a.storage.describe()).unwrap();
    // A record without the storage line (written before it existed) is not served either.
    prefetch::run(&a.cfg.pipeline(), &a.storage, &dirs, "000000010000000000000001", MB, 1, &|_| {});
    let digest = dirs.ready.join("000000010000000000000002.xxh3");
    let hash = fs::read_to_string(&digest).unwrap().lines().next().unwrap().to_string();
    fs::write(&digest, hash).unwrap();
    assert!(matches!(
        take(&dirs, "000000010000000000000002", &dest, &a.storage.describe()),
        Err(NotServed::Rejected(why)) if why.contains("storage it came from")
    ));
}

#[test]
fn damaged_object_in_storage_is_not_prefetched() {
    let f = archive(2);
    f.storage.put("wal_005/000000010000000000000003.lz4", b"garbage").unwrap();
    let out = run(&f, "000000010000000000000002", 1);
    assert!(matches!(&out[0].1, Outcome::Failed(e) if e.to_string().contains("000000010000000000000003")), "{out:?}");
    assert!(!f.dirs.ready.join("000000010000000000000003").exists());
    assert_eq!(fs::read_dir(&f.dirs.running).unwrap().count(), 0, "claim and temp files removed");
}

#[test]
fn timeline_switch_never_serves_the_other_timelines_file_and_cleans_it_up() {
    let f = archive(6);
    run(&f, "000000010000000000000002", 4); // tli 1, 3..6 prefetched
    let seg = put_segment(&f.cfg, &f.storage, f.dir.path(), "000000020000000000000004");
    let dest = f.dir.path().join("pg_wal/RECOVERYXLOG");
    // PostgreSQL asks for the new timeline's segment: the timeline-1 file of the same number is
    // not an answer.
    assert_eq!(take(&f.dirs, "000000020000000000000004", &dest, &f.storage.describe()), Err(NotServed::Absent));
    assert!(!dest.exists());
    // After the direct fetch of 00000002...04, cleanup removes everything of timeline 1.
    assert!(f.dirs.ready.join("000000010000000000000005").exists());
    let removed = cleanup(&f.dirs, "000000020000000000000004", MB);
    assert_eq!(removed, 8, "4 segments and their digests");
    assert_eq!(fs::read_dir(&f.dirs.ready).unwrap().filter(|e| e.as_ref().unwrap().path().is_file()).count(), 0);
    put_segment(&f.cfg, &f.storage, f.dir.path(), "000000020000000000000005");
    run(&f, "000000020000000000000004", 1);
    take(&f.dirs, "000000020000000000000005", &dest, &f.storage.describe()).unwrap();
    assert_ne!(fs::read(&dest).unwrap(), seg);
    assert_eq!(&fs::read(&dest).unwrap()[8..16], &(5 * MB).to_le_bytes());
}

#[test]
fn stale_cleanup_removes_what_recovery_passed_and_dead_claims_only() {
    let f = archive(8);
    run(&f, "000000010000000000000001", 6); // 2..7
    // A claim of another live process (our parent) and one of a process that does not exist.
    fs::write(f.dirs.running.join("000000010000000000000008"), std::os::unix::process::parent_id().to_string()).unwrap();
    fs::write(f.dirs.running.join("000000010000000000000009"), "2147483646").unwrap();
    let removed = cleanup(&f.dirs, "000000010000000000000005", MB);
    assert_eq!(removed, 2 * 3 + 1, "segments 2..4 with digests, and the dead claim");
    for n in 2..=4 {
        assert!(!f.dirs.ready.join(format!("0000000100000000000000{n:02X}")).exists());
    }
    for n in 5..=7 {
        assert!(f.dirs.ready.join(format!("0000000100000000000000{n:02X}")).exists());
    }
    assert!(f.dirs.running.join("000000010000000000000008").exists(), "a live claim stays");
    assert!(!f.dirs.running.join("000000010000000000000009").exists());
    // A live claim is skipped by the prefetcher (nobody downloads twice) ...
    let out = run(&f, "000000010000000000000007", 1);
    assert!(matches!(out[0].1, Outcome::Skipped), "{out:?}");
    // ... and a waiter gives up on it once it makes no progress, to fetch directly.
    let t = std::time::Instant::now();
    assert_eq!(take(&f.dirs, "000000010000000000000008", &f.dir.path().join("x"), &f.storage.describe()), Err(NotServed::Stalled));
    assert!(t.elapsed() >= prefetch::STALL && t.elapsed() < prefetch::STALL * 3);
    // A dead claim: no waiting at all.
    fs::write(f.dirs.running.join("000000010000000000000008"), "2147483646").unwrap();
    let t = std::time::Instant::now();
    assert_eq!(take(&f.dirs, "000000010000000000000008", &f.dir.path().join("x"), &f.storage.describe()), Err(NotServed::Stalled));
    assert!(t.elapsed() < prefetch::STALL / 2);
}

#[test]
fn a_waiter_is_served_when_the_running_download_finishes() {
    let f = archive(3);
    let dirs = f.dirs.clone();
    let dest = f.dir.path().join("pg_wal/RECOVERYXLOG");
    // Claim it as a live download would, then finish it from another thread.
    fs::create_dir_all(&dirs.running).unwrap();
    fs::write(dirs.running.join("000000010000000000000002"), std::process::id().to_string()).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            // The download lands (part file growing, then the finished file and its digest),
            // then the claim goes, as prefetch_one does it.
            std::thread::sleep(std::time::Duration::from_millis(300));
            let scratch = f.dir.path().join("scratch");
            assert!(super::fetch(&f.cfg, &f.storage, "000000010000000000000002", &scratch).unwrap());
            let bytes = fs::read(&scratch).unwrap();
            let record = format!("{}\n{}\n", crate::format::integrity::hash_hex(&bytes), f.storage.describe());
            fs::write(dirs.ready.join("000000010000000000000002.xxh3"), record).unwrap();
            fs::rename(&scratch, dirs.ready.join("000000010000000000000002")).unwrap();
            fs::remove_file(dirs.running.join("000000010000000000000002")).unwrap();
        });
        take(&dirs, "000000010000000000000002", &dest, &f.storage.describe()).unwrap();
    });
    assert_eq!(&fs::read(&dest).unwrap()[8..16], &(2 * MB).to_le_bytes());
}

#[test]
fn segment_size_is_read_from_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s");
    fs::write(&p, fake_segment("000000010000000000000002", 4 << 20, |_| 0)).unwrap();
    assert_eq!(prefetch::segment_size_of(&p), Some(4 << 20));
    fs::write(&p, b"short").unwrap();
    assert_eq!(prefetch::segment_size_of(&p), None);
}

#[test]
fn claims_taken_for_a_prefetcher_are_adopted_by_it_and_make_waiters_wait() {
    let f = archive(4);
    let names = next_segments("000000010000000000000001", MB, 3);
    // Claimed for this process (as wal-fetch does for the child it starts).
    let claimed = prefetch::claim_for(&f.dirs, &names, std::process::id());
    assert_eq!(claimed, names);
    // A second claimer gets nothing: the claims exist.
    assert!(prefetch::claim_for(&f.dirs, &names, 1).is_empty());
    // A waiter arriving before the download starts waits for it, then is served.
    let dest = f.dir.path().join("pg_wal/RECOVERYXLOG");
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(std::time::Duration::from_millis(200));
            let out = run(&f, "000000010000000000000001", 3);
            let fetched = out.iter().filter(|(_, o)| matches!(o, Outcome::Fetched)).count();
            assert_eq!(fetched, 3, "the prefetcher adopts claims holding its own pid: {out:?}");
        });
        take(&f.dirs, "000000010000000000000002", &dest, &f.storage.describe()).unwrap();
    });
    assert_eq!(fs::read_dir(&f.dirs.running).unwrap().count(), 0, "every claim released");
    // A claim for a process that is gone is not waited for.
    prefetch::claim_for(&f.dirs, &["000000010000000000000009".to_string()], 2147483646);
    let t = std::time::Instant::now();
    assert_eq!(take(&f.dirs, "000000010000000000000009", &dest, &f.storage.describe()), Err(NotServed::Stalled));
    assert!(t.elapsed() < prefetch::STALL / 2);
}
