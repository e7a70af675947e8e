//! The archiver's changed-block maps, with real segment bytes (wal/blocks/tests.rs writes them).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::*;
use crate::storage::{FsStorage, ObjectInfo, ObjectWriter};
use crate::wal::blocks::stored::get_map;
use crate::wal::blocks::tests::sample_segments;
use crate::wal::Archiver;

/// A pg_wal with `segments` (and a timeline history file) marked `.ready`.
fn pg_wal(dir: &Path, segments: &[(String, Vec<u8>)]) -> PathBuf {
    let pg_wal = dir.join("pg_wal");
    fs::create_dir_all(pg_wal.join("archive_status")).unwrap();
    for (n, bytes) in segments {
        fs::write(pg_wal.join(n), bytes).unwrap();
        fs::write(pg_wal.join("archive_status").join(format!("{n}.ready")), b"").unwrap();
    }
    fs::write(pg_wal.join("00000002.history"), b"1\t0/5000000\tno recovery target specified\n").unwrap();
    pg_wal
}

fn config(bucket: &Path, steps: u32, maps: bool) -> Config {
    Config {
        upload_concurrency: 3,
        delta_max_steps: steps,
        delta_wal_maps: maps,
        ..Config::for_file_storage(bucket)
    }
}

fn map_keys(s: &dyn Storage) -> Vec<String> {
    s.list(MAP_PREFIX).unwrap_or_default().into_iter().map(|o| o.key).collect()
}

#[test]
fn archiver_stores_a_map_of_each_segment_it_and_its_look_ahead_archive() {
    let dir = tempfile::tempdir().unwrap();
    let segs = sample_segments();
    let pg_wal = pg_wal(dir.path(), &segs);
    let bucket = dir.path().join("bucket");
    let storage = FsStorage::new(&bucket);
    let key = crate::codec::crypto::Key::from_text("the archiver's map test encryption key", "none").unwrap();
    let cfg = Config { encryption: Some(key), ..config(&bucket, 1, true) };
    let mut a = Archiver::new();
    let first = &segs[0].0;
    let out = a.archive(&cfg, &storage, first, &pg_wal.join(first), &pg_wal).unwrap();
    assert!(matches!(out, PushOutcome::Uploaded { .. }), "{out:?}");
    assert_eq!(a.pending(), 2, "the other two went up ahead");
    // Every segment's map, the look-ahead ones included, is the map of the local file.
    for (n, bytes) in &segs {
        let stored = get_map(&cfg.pipeline(), &storage, n).unwrap().unwrap_or_else(|| panic!("no map of {n}"));
        assert_eq!(stored, SegmentMap::build(bytes), "{n}");
    }
    // The middle segment lies inside a record over MAX_PIECE: stored, and said at LOG level.
    let notes = a.take_map_notes();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(matches!(&notes[0], MapNote::Incomplete { segment, .. } if segment == &segs[1].0), "{notes:?}");
    assert!(!notes[0].is_warning());
    assert!(notes[0].message().contains("over 4 MiB"), "{}", notes[0].message());
    assert!(a.take_map_notes().is_empty());
    // A history file is archived with no map.
    let out = a.archive(&cfg, &storage, "00000002.history", &pg_wal.join("00000002.history"), &pg_wal).unwrap();
    assert!(matches!(out, PushOutcome::Uploaded { .. }), "{out:?}");
    assert_eq!(map_keys(&storage).len(), 3, "{:?}", map_keys(&storage));
    assert!(a.take_map_notes().is_empty());
}

#[test]
fn no_maps_without_deltas_or_with_maps_off() {
    let segs = sample_segments();
    for (steps, maps) in [(0, true), (3, false)] {
        let dir = tempfile::tempdir().unwrap();
        let pg_wal = pg_wal(dir.path(), &segs);
        let bucket = dir.path().join("bucket");
        let storage = FsStorage::new(&bucket);
        let cfg = config(&bucket, steps, maps);
        let mut a = Archiver::new();
        a.archive(&cfg, &storage, &segs[0].0, &pg_wal.join(&segs[0].0), &pg_wal).unwrap();
        assert_eq!(storage.list("wal_005/").unwrap().len(), 3, "archived as usual");
        assert!(map_keys(&storage).is_empty(), "steps {steps}, maps {maps}: {:?}", map_keys(&storage));
        assert!(a.take_map_notes().is_empty());
        assert!(!maps_enabled(&cfg));
    }
    assert!(maps_enabled(&config(Path::new("/x"), 1, true)));
}

/// The segment archived before (a retry after a crash): its map is written if missing, left
/// alone if there.
#[test]
fn already_archived_segment_gets_a_map_only_when_it_has_none() {
    let dir = tempfile::tempdir().unwrap();
    let segs = sample_segments();
    let pg_wal = pg_wal(dir.path(), &segs[2..]);
    let bucket = dir.path().join("bucket");
    let storage = FsStorage::new(&bucket);
    let (n, bytes) = &segs[2];
    let path = pg_wal.join(n);
    crate::wal::push(&config(&bucket, 0, true), &storage, n, &path).unwrap();
    let cfg = config(&bucket, 1, true);
    let out = Archiver::new().archive(&cfg, &storage, n, &path, &pg_wal).unwrap();
    assert!(matches!(out, PushOutcome::AlreadyArchived { .. }), "{out:?}");
    assert_eq!(get_map(&cfg.pipeline(), &storage, n).unwrap(), Some(SegmentMap::build(bytes)));
    // An existing map object is not rewritten (this one is not even a map).
    let key = map_keys(&storage).pop().unwrap();
    storage.put(&key, b"left alone").unwrap();
    let mut a = Archiver::new();
    let out = a.archive(&cfg, &storage, n, &path, &pg_wal).unwrap();
    assert!(matches!(out, PushOutcome::AlreadyArchived { .. }), "{out:?}");
    assert_eq!(crate::storage::get_bytes(&storage, &key).unwrap().unwrap(), b"left alone");
    assert!(a.take_map_notes().is_empty());
}

/// File storage whose map objects fail (or panic): everything else works.
struct BadMaps {
    inner: FsStorage,
    panic: bool,
}

impl BadMaps {
    fn check(&self, key: &str) -> Result<()> {
        if key.starts_with(MAP_PREFIX) {
            if self.panic {
                panic!("injected panic storing {key}");
            }
            return Err(Error::Unreachable(format!("injected failure storing {key}")));
        }
        Ok(())
    }
}

impl Storage for BadMaps {
    fn get(&self, key: &str) -> Result<Option<Box<dyn Read + Send>>> {
        self.inner.get(key)
    }
    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        self.check(key)?;
        self.inner.put(key, data)
    }
    fn writer(&self, key: &str) -> Result<Box<dyn ObjectWriter>> {
        self.check(key)?;
        self.inner.writer(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.inner.list(prefix)
    }
    fn exists(&self, key: &str) -> Result<bool> {
        self.inner.exists(key)
    }
    fn prepare_write(&self) -> Result<()> {
        self.inner.prepare_write()
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key)
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[test]
fn a_failing_map_never_fails_the_archive_and_is_reported() {
    let segs = sample_segments();
    for panic in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let pg_wal = pg_wal(dir.path(), &segs);
        let bucket = dir.path().join("bucket");
        let storage = BadMaps { inner: FsStorage::new(&bucket), panic };
        let cfg = config(&bucket, 1, true);
        let mut a = Archiver::new();
        let out = a.archive(&cfg, &storage, &segs[0].0, &pg_wal.join(&segs[0].0), &pg_wal).unwrap();
        assert!(matches!(out, PushOutcome::Uploaded { .. }), "{out:?}");
        assert_eq!(a.pending(), 2, "look-ahead uploads succeed too");
        assert_eq!(storage.list("wal_005/").unwrap().len(), 3);
        let mut notes = a.take_map_notes();
        notes.sort_by(|x, y| x.segment().cmp(y.segment()));
        assert_eq!(notes.len(), 3, "{notes:?}");
        for (note, (n, _)) in notes.iter().zip(&segs) {
            assert!(note.is_warning(), "{note:?}");
            let msg = note.message();
            let why = if panic { "panicked: injected panic" } else { "injected failure" };
            assert!(msg.starts_with(&format!("walg_ext: no changed-block map for {n}: ")) && msg.contains(why), "{msg}");
        }
        // PostgreSQL asks for the next one: answered from the look-ahead, no new note.
        let out = a.archive(&cfg, &storage, &segs[1].0, &pg_wal.join(&segs[1].0), &pg_wal).unwrap();
        assert!(matches!(out, PushOutcome::Uploaded { .. }), "{out:?}");
        assert!(a.take_map_notes().is_empty());
    }
}

#[test]
fn an_unreadable_or_oversized_segment_is_a_note_not_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FsStorage::new(dir.path().join("bucket"));
    storage.prepare_write().unwrap();
    let pipeline = Pipeline::new(crate::codec::Compression::Lz4, None);
    let m = MapMaker::default();
    let up = PushOutcome::Uploaded { key: "k".into(), bytes: 1 };
    let name = "000000010000000000000009";
    let note = m.after_push(&pipeline, &storage, name, &dir.path().join("gone"), &up).unwrap();
    assert!(note.is_warning() && note.message().contains("gone"), "{note:?}");
    let big = dir.path().join("big");
    fs::File::create(&big).unwrap().set_len(MAX_MAPPED_SEGMENT + 1).unwrap();
    let note = m.after_push(&pipeline, &storage, name, &big, &up).unwrap();
    assert!(note.message().contains("over the 64 MiB"), "{note:?}");
    // A file of garbage is parsed (as invalid from its first byte) and stored as incomplete.
    let junk = dir.path().join("junk");
    fs::write(&junk, vec![7u8; 1 << 16]).unwrap();
    let note = m.after_push(&pipeline, &storage, name, &junk, &up).unwrap();
    assert!(!note.is_warning() && note.message().contains("valid WAL ends at"), "{note:?}");
    assert!(!get_map(&pipeline, &storage, name).unwrap().unwrap().is_complete());
    assert_eq!(map_keys(&storage).len(), 1);
}

fn status_kb(field: &str) -> u64 {
    let s = fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// One archiver call in this process, for [`archiver_memory_with_maps_and_look_ahead`], which
/// runs it as a child process (a fresh process: peak RSS is then the archiver's, not what other
/// tests left in the allocator). Does nothing unless that test set WALG_TEST_RSS_PG_WAL.
#[test]
#[ignore]
fn archiver_memory_child() {
    let Ok(pg_wal) = std::env::var("WALG_TEST_RSS_PG_WAL") else { return };
    let pg_wal = PathBuf::from(pg_wal);
    let maps = std::env::var("WALG_TEST_RSS_MAPS").unwrap() == "1";
    let mut names: Vec<String> = fs::read_dir(pg_wal.join("archive_status"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().trim_end_matches(".ready").to_string())
        .collect();
    names.sort();
    let bucket = pg_wal.with_file_name(format!("bucket-{maps}"));
    let storage = FsStorage::new(&bucket);
    let cfg = Config { upload_concurrency: names.len(), ..config(&bucket, 1, maps) };
    let start = status_kb("VmHWM:");
    let t = std::time::Instant::now();
    let mut a = Archiver::new();
    a.archive(&cfg, &storage, &names[0], &pg_wal.join(&names[0]), &pg_wal).unwrap();
    let took = t.elapsed().as_millis();
    assert_eq!(map_keys(&storage).len(), if maps { names.len() } else { 0 });
    println!("RSS_PEAK_KB={} TOOK_MS={took} START_KB={start}", status_kb("VmHWM:"));
}

/// Peak resident memory of a process that makes one archiver call with look-ahead over 16 MiB
/// segments (eight: seven ahead; three: two ahead), maps off and on:
/// `cargo test -p walg-core --lib archiver_memory -- --ignored --nocapture`.
#[test]
#[ignore]
fn archiver_memory_with_maps_and_look_ahead() {
    let segs = sample_segments();
    for n in [8usize, 3] {
        let dir = tempfile::tempdir().unwrap();
        // The sample's three segments, then copies of its first under later names.
        let mut all = segs.clone();
        for k in 6..(3 + n as u32) {
            all.push((format!("0000000100000000000000{k:02X}"), segs[0].1.clone()));
        }
        all.truncate(n);
        let pg_wal = pg_wal(dir.path(), &all);
        fs::remove_file(pg_wal.join("00000002.history")).unwrap();
        let run = |maps: bool| -> (u64, u64) {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--ignored", "--exact", "--nocapture", "--test-threads=1", "wal::segment_map::tests::archiver_memory_child"])
                .env("WALG_TEST_RSS_PG_WAL", &pg_wal)
                .env("WALG_TEST_RSS_MAPS", if maps { "1" } else { "0" })
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
            let line = text.lines().find_map(|l| l.split("RSS_PEAK_KB=").nth(1)).unwrap_or_else(|| panic!("{text}"));
            let v: Vec<u64> = line.split([' ', '=']).filter_map(|x| x.trim().parse().ok()).collect();
            eprintln!("{n} segments, maps {maps}: peak {} MiB, {} ms, {} MiB before the call", v[0] >> 10, v[1], v[2] >> 10);
            (v[0] >> 10, v[1])
        };
        let (off, _) = run(false);
        let (on, _) = run(true);
        // The maps add their one shared buffer (16 MiB), a boundary piece the parser gathers
        // (up to MAX_PIECE, 4 MiB) and the maps: never one buffer per thread (that would be
        // 16 MiB more per look-ahead thread).
        assert!(on <= off + 24, "{n} segments: peak RSS {on} MiB with maps, {off} MiB without");
    }
}
