//! Fault injection on file storage (no server). For every codec, with and without libsodium
//! encryption: every object a restore or a WAL fetch reads (sentinel, metadata.json,
//! files_metadata.json, data parts, backup_label.tar, pg_control.tar, WAL segment, .history) is
//! damaged every way (missing; truncated at several offsets, including zstd frame, lz4 block,
//! libsodium chunk and tar block boundaries; one byte flipped; swapped with the same object of
//! another backup), and the restore or fetch must fail with an error naming the object, of kind
//! Corrupt (NotFound only where storage says an object asked for by name is not there), leaving
//! no global/pg_control in the target and no WAL file at the destination. An extra stray part
//! must be ignored (and logged), never extracted. Backups stripped of our records (as WAL-G
//! writes them) are damaged too, to show what the streams' own checks catch without them.
//! README "What is verified" lists what is not caught (codec `none` without a record, ...).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::tests::{as_if_walg, pseudo_random, start, stop};
use super::*;
use crate::codec::crypto::Key;
use crate::codec::Compression;
use crate::config::Config;
use crate::error::{Error, ErrorKind};
use crate::format::names::{files_metadata_key, metadata_key, sentinel_key, tar_partitions_prefix};
use crate::storage::{get_bytes, Storage};

const A: &str = "base_000000010000000000000002";
const B: &str = "base_000000010000000000000003";
/// WAL segments of 2 MiB: with zstd level 1 (1 MiB frames) a segment is two frames.
const SEG: u32 = 2 << 20;
const SEG_A: &str = "000000010000000000000002";
const SEG_B: &str = "000000010000000000000003";
const HISTORY: &str = "00000002.history";

fn pgdata(root: &Path, seed: u32, extra: bool) -> PathBuf {
    let pg = root.join(format!("pgdata{seed}"));
    for d in ["base/1", "base/5", "global", "pg_wal/archive_status"] {
        fs::create_dir_all(pg.join(d)).unwrap();
    }
    fs::write(pg.join("PG_VERSION"), "15\n").unwrap();
    fs::write(pg.join("global/pg_control"), pseudo_random(8192, seed)).unwrap();
    fs::write(pg.join("global/1262"), pseudo_random(8192, seed + 1)).unwrap();
    // Over a zstd level 1 frame (1 MiB) and several libsodium chunks, in a part of its own.
    fs::write(pg.join("base/1/16384"), pseudo_random(1_100_000, seed + 2)).unwrap();
    for i in 0..5 {
        fs::write(pg.join(format!("base/1/{}", 2600 + i)), pseudo_random(20_000 + i * 100, seed + 3 + i as u32)).unwrap();
    }
    if extra {
        fs::write(pg.join("base/5/only_in_b"), pseudo_random(30_000, seed + 9)).unwrap();
    }
    pg
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            // Damage goes through the storage (write to a temp file, rename; unlink), so linking
            // the pristine objects is as good as copying them.
            fs::hard_link(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn segment(name: &str, seed: u32) -> Vec<u8> {
    let noise = pseudo_random(SEG as usize, seed);
    crate::wal::tests::fake_segment(name, SEG, |i| if i % 5 == 0 { noise[i] } else { (i / 300) as u8 })
}

struct Fixture {
    dir: tempfile::TempDir,
    pristine: PathBuf,
    cfg: Config,
    pg_a: PathBuf,
    wal: Vec<(String, Vec<u8>)>,
    cases: std::cell::Cell<u32>,
}

impl Fixture {
    fn new(c: Compression, key: Option<Key>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let pristine = dir.path().join("pristine");
        let cfg = Config {
            compression: c,
            encryption: key,
            tar_size_threshold: 48 * 1024,
            upload_concurrency: 1,
            download_concurrency: 2,
            ..Config::for_file_storage(&pristine)
        };
        let storage: Arc<dyn Storage> = cfg.open_storage().unwrap();
        let pg_a = pgdata(dir.path(), 1, false);
        let pg_b = pgdata(dir.path(), 100, true);
        for (name, pg, lsn, label) in [(A, &pg_a, 0x0200_0028u64, "0/2000028"), (B, &pg_b, 0x0300_0028, "0/3000028")] {
            let st = BackupStart { start_lsn: lsn, ..start(name, pg) };
            let sp = BackupStop {
                backup_label: format!("START WAL LOCATION: {label} (file {})\nCHECKPOINT LOCATION: {label}\n", &name[5..]),
                finish_lsn: lsn + 0x100,
                ..stop()
            };
            let data = push_data(&cfg, &storage, &st, &Progress::default(), &mut || Ok(())).unwrap();
            finish(&cfg, &storage, &st, data, &sp).unwrap();
        }
        let mut wal = Vec::new();
        for (name, seed) in [(SEG_A, 7), (SEG_B, 8)] {
            wal.push((name.to_string(), segment(name, seed)));
        }
        wal.push((HISTORY.to_string(), b"1\t0/2000000\tno recovery target specified\n".to_vec()));
        for (name, content) in &wal {
            let path = dir.path().join(format!("src-{name}"));
            fs::write(&path, content).unwrap();
            crate::wal::push(&cfg, storage.as_ref(), name, &path).unwrap();
        }
        Fixture { dir, pristine, cfg, pg_a, wal, cases: std::cell::Cell::new(0) }
    }

    fn with_key(&self) -> bool {
        self.cfg.encryption.is_some()
    }

    /// A fresh copy of the pristine bucket: its config and storage.
    fn copy(&self) -> (Config, Arc<dyn Storage>, PathBuf) {
        let n = self.cases.get() + 1;
        self.cases.set(n);
        let bucket = self.dir.path().join(format!("case{n}"));
        copy_dir(&self.pristine, &bucket);
        let cfg = Config { storage: Config::for_file_storage(&bucket).storage, ..self.cfg.clone() };
        let storage = cfg.open_storage().unwrap();
        (cfg, storage, self.dir.path().join(format!("target{n}")))
    }

    /// A's tar objects: (data parts by size, smallest first), backup_label.tar, pg_control.tar.
    fn objects(&self) -> (Vec<String>, String, String) {
        let storage = self.cfg.open_storage().unwrap();
        let mut parts = storage.list(&tar_partitions_prefix(A)).unwrap();
        parts.sort_by_key(|o| o.size);
        let find = |s: &str| parts.iter().find(|o| o.key.contains(s)).unwrap().key.clone();
        let data: Vec<String> = parts.iter().filter(|o| o.key.contains("/part_")).map(|o| o.key.clone()).collect();
        assert!(data.len() >= 3, "{parts:?}");
        (data, find("/backup_label.tar"), find("/pg_control.tar"))
    }

    fn raw(&self, key: &str) -> Vec<u8> {
        get_bytes(self.cfg.open_storage().unwrap().as_ref(), key).unwrap().unwrap()
    }

    /// Restore A after `damage`; it must fail naming `object` with one of `kinds`, and leave
    /// no pg_control behind.
    fn restore_fails(&self, what: &str, object: &str, kinds: &[ErrorKind], damage: impl FnOnce(&dyn Storage)) {
        let (cfg, storage, target) = self.copy();
        damage(storage.as_ref());
        let ctx = format!("{:?} key={} {object} {what}", self.cfg.compression, self.with_key());
        let err = match fetch(&cfg, &storage, A, &target, &|_| {}) {
            Ok(_) => panic!("{ctx}: restore succeeded"),
            Err(e) => e,
        };
        let msg = err.to_string();
        assert!(msg.contains(object), "{ctx}: error does not name {object}: {msg}");
        assert!(kinds.contains(&err.kind()), "{ctx}: kind {:?}: {msg}", err.kind());
        assert!(!target.join("global/pg_control").exists(), "{ctx}: pg_control written");
        if target.exists() {
            assert!(msg.contains("cannot be started"), "{ctx}: target touched but the error does not say so: {msg}");
        }
    }

    /// Restore A after `damage`; it must succeed with A's data. Returns the log.
    fn restore_ok(&self, what: &str, damage: impl FnOnce(&dyn Storage)) -> (PathBuf, Vec<String>) {
        let (cfg, storage, target) = self.copy();
        damage(storage.as_ref());
        let log = Mutex::new(Vec::new());
        let ctx = format!("{:?} key={} {what}", self.cfg.compression, self.with_key());
        fetch(&cfg, &storage, A, &target, &|l: &str| log.lock().unwrap().push(l.to_string()))
            .unwrap_or_else(|e| panic!("{ctx}: {e}"));
        for f in ["base/1/16384", "base/1/2600", "base/1/2604", "global/1262", "global/pg_control", "PG_VERSION"] {
            assert!(fs::read(target.join(f)).unwrap() == fs::read(self.pg_a.join(f)).unwrap(), "{ctx}: {f}");
        }
        (target, log.into_inner().unwrap())
    }

    /// Fetch WAL file `name` after `damage`. `strict`: it must fail naming the object (Corrupt);
    /// otherwise (damage nothing in the object can reveal: README) it may also succeed, but a
    /// failure must still be a Corrupt error naming it.
    fn wal_fails(&self, what: &str, name: &str, strict: bool, damage: impl FnOnce(&dyn Storage, &str)) {
        let (cfg, storage, target) = self.copy();
        let key = crate::wal::find_object(storage.as_ref(), &format!("wal_005/{name}")).unwrap().unwrap();
        damage(storage.as_ref(), &key);
        let ctx = format!("{:?} key={} {name} {what}", self.cfg.compression, self.with_key());
        fs::create_dir_all(&target).unwrap();
        let dest = target.join(name);
        match crate::wal::fetch(&cfg, storage.as_ref(), name, &dest) {
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains(&key), "{ctx}: error does not name {key}: {msg}");
                assert_eq!(e.kind(), ErrorKind::Corrupt, "{ctx}: {msg}");
                assert!(!dest.exists(), "{ctx}: file put in place");
                assert_eq!(fs::read_dir(&target).unwrap().count(), 0, "{ctx}: temp file left");
            }
            Ok(found) => assert!(!strict && found, "{ctx}: fetch did not fail (found={found})"),
        }
    }

    /// Offsets to cut `raw` at: generic ones plus the boundaries of this fixture's encoding.
    fn cuts(&self, raw: &[u8]) -> Vec<usize> {
        let l = raw.len();
        let mut v = vec![1, l / 2, l - 1];
        if self.with_key() {
            // libsodium: 24-byte header, then chunks of 8192 + 17 bytes; cut before the final one.
            let chunk = 8192 + 17;
            let k = (l - 24 - 1) / chunk;
            v.push(24);
            if k >= 1 {
                v.push(24 + k * chunk);
                v.push(24 + chunk);
            }
        } else {
            match self.cfg.compression {
                Compression::Zstd { .. } => {
                    let mut pos = 0;
                    while pos < l {
                        pos += ::zstd::zstd_safe::find_frame_compressed_size(&raw[pos..]).unwrap();
                        if pos < l {
                            v.push(pos); // a frame boundary: what is before it still decodes
                        }
                    }
                }
                // The end mark (4 zero bytes) and content checksum (4) follow the last block.
                Compression::Lz4 => v.extend([l - 8, l - 4]),
                // Tar block boundaries, the end-of-archive marker's included.
                Compression::None => v.extend([l.saturating_sub(1024), l.saturating_sub(512), (l / 2) / 512 * 512]),
                _ => {}
            }
        }
        v.sort_unstable();
        v.dedup();
        v.retain(|&c| c > 0 && c < l);
        v
    }

    /// Whether the stream itself (without our records) detects any flipped byte.
    fn stream_has_checksums(&self) -> bool {
        self.with_key() || matches!(self.cfg.compression, Compression::Lz4 | Compression::Zstd { .. })
    }
}

fn put(s: &dyn Storage, key: &str, data: &[u8]) {
    s.put(key, data).unwrap()
}

fn flipped(raw: &[u8], at: usize) -> Vec<u8> {
    let mut v = raw.to_vec();
    v[at] ^= 0x01;
    v
}

const CORRUPT: &[ErrorKind] = &[ErrorKind::Corrupt];

fn tar_objects(f: &Fixture) {
    let (data, label, control) = f.objects();
    let biggest = data.last().unwrap().clone();
    let mut objects = vec![data[0].clone(), biggest.clone(), label.clone(), control.clone()];
    objects.dedup();
    for key in &objects {
        let raw = f.raw(key);
        let other = key.replace(A, B);
        f.restore_fails("missing", key, CORRUPT, |s| s.delete(key).unwrap());
        for cut in f.cuts(&raw) {
            f.restore_fails(&format!("cut at {cut}"), key, CORRUPT, |s| put(s, key, &raw[..cut]));
            // Without our records the stream's own checks must catch it (codec, tar end).
            let strict = f.stream_has_checksums() || f.cfg.compression == Compression::None;
            if strict {
                f.restore_fails(&format!("cut at {cut}, WAL-G metadata"), key, CORRUPT, |s| {
                    as_if_walg(s, A);
                    put(s, key, &raw[..cut])
                });
            }
        }
        let mut longer = raw.clone();
        longer.extend_from_slice(&[0u8; 700]);
        f.restore_fails("extended", key, CORRUPT, |s| put(s, key, &longer));
        for at in [0, raw.len() / 3, raw.len() / 2, raw.len() - 1] {
            f.restore_fails(&format!("byte {at} flipped"), key, CORRUPT, |s| put(s, key, &flipped(&raw, at)));
            if f.stream_has_checksums() {
                f.restore_fails(&format!("byte {at} flipped, WAL-G metadata"), key, CORRUPT, |s| {
                    as_if_walg(s, A);
                    put(s, key, &flipped(&raw, at))
                });
            }
        }
        if let Some(theirs) = get_bytes(f.cfg.open_storage().unwrap().as_ref(), &other).unwrap() {
            f.restore_fails("swapped with B's", key, CORRUPT, |s| put(s, key, &theirs));
        }
    }
    // Without our records: backup_label.tar and pg_control.tar missing, a data part missing,
    // and another backup's backup_label (caught by its START WAL LOCATION).
    for key in [&label, &control, &data[0]] {
        f.restore_fails("missing, WAL-G metadata", key, CORRUPT, |s| {
            as_if_walg(s, A);
            s.delete(key).unwrap()
        });
    }
    let theirs = f.raw(&label.replace(A, B));
    f.restore_fails("swapped with B's, WAL-G metadata", &label, CORRUPT, |s| {
        as_if_walg(s, A);
        put(s, &label, &theirs)
    });

    // A stray part (B's biggest, as if left by an aborted attempt): ignored, logged, not extracted.
    let stray = format!("{}{}", tar_partitions_prefix(A), f.cfg.compression.object_name("part_099.tar"));
    let theirs = f.raw(&biggest.replace(A, B));
    for walg in [false, true] {
        let (target, log) = f.restore_ok(&format!("stray part (WAL-G metadata: {walg})"), |s| {
            if walg {
                as_if_walg(s, A);
            }
            put(s, &stray, &theirs)
        });
        assert!(log.iter().any(|l| l.contains("ignoring") && l.contains(&stray)), "{log:?}");
        assert!(!log.iter().any(|l| l.contains("extracting") && l.contains(&stray)), "{log:?}");
        assert!(!target.join("base/5/only_in_b").exists());
    }
}

fn json_objects(f: &Fixture, every_byte: bool) {
    let skey = sentinel_key(A);
    let mkey = metadata_key(A);
    let fkey = files_metadata_key(A);
    // Sentinel: missing means no such backup (storage said so).
    f.restore_fails("sentinel missing", A, &[ErrorKind::NotFound], |s| s.delete(&skey).unwrap());
    let raw = f.raw(&skey);
    let theirs = f.raw(&sentinel_key(B));
    f.restore_fails("sentinel swapped", &skey, CORRUPT, |s| put(s, &skey, &theirs));
    let text = String::from_utf8(raw.clone()).unwrap();
    let sum_key_at = text.find(crate::format::sentinel::SENTINEL_SUM_KEY).unwrap();
    let positions: Vec<usize> = if every_byte { (0..raw.len()).collect() } else { vec![0, 10, raw.len() / 2, raw.len() - 2] };
    for at in positions {
        // A flip inside the name of the self-sum key only hides the sum: the content is intact.
        if (sum_key_at..sum_key_at + crate::format::sentinel::SENTINEL_SUM_KEY.len()).contains(&at) {
            continue;
        }
        f.restore_fails(&format!("sentinel byte {at} flipped"), &skey, CORRUPT, |s| put(s, &skey, &flipped(&raw, at)));
    }
    for cut in [1, raw.len() / 2, raw.len() - 1] {
        f.restore_fails(&format!("sentinel cut at {cut}"), &skey, CORRUPT, |s| put(s, &skey, &raw[..cut]));
    }

    // metadata.json: missing, cut, swapped, its start LSN changed.
    f.restore_fails("metadata.json missing", &mkey, CORRUPT, |s| s.delete(&mkey).unwrap());
    let raw = f.raw(&mkey);
    for cut in [1, raw.len() / 2, raw.len() - 1] {
        f.restore_fails(&format!("metadata.json cut at {cut}"), &mkey, CORRUPT, |s| put(s, &mkey, &raw[..cut]));
    }
    let theirs = f.raw(&metadata_key(B));
    f.restore_fails("metadata.json swapped", &mkey, CORRUPT, |s| put(s, &mkey, &theirs));
    let text = String::from_utf8(raw.clone()).unwrap();
    let lsn_digit = text.find("\"start_lsn\":").unwrap() + "\"start_lsn\":".len() + 1;
    f.restore_fails("metadata.json start_lsn flipped", &mkey, CORRUPT, |s| put(s, &mkey, &flipped(&raw, lsn_digit)));

    // files_metadata.json: the sentinel's record catches every change.
    f.restore_fails("files_metadata.json missing", &fkey, CORRUPT, |s| s.delete(&fkey).unwrap());
    let raw = f.raw(&fkey);
    let theirs = f.raw(&files_metadata_key(B));
    f.restore_fails("files_metadata.json swapped", &fkey, CORRUPT, |s| put(s, &fkey, &theirs));
    let positions: Vec<usize> = if every_byte { (0..raw.len()).step_by(7).collect() } else { vec![0, raw.len() / 3, raw.len() - 1] };
    for at in positions {
        f.restore_fails(&format!("files_metadata.json byte {at} flipped"), &fkey, CORRUPT, |s| put(s, &fkey, &flipped(&raw, at)));
    }
    for cut in [1, raw.len() / 2, raw.len() - 1] {
        f.restore_fails(&format!("files_metadata.json cut at {cut}"), &fkey, CORRUPT, |s| put(s, &fkey, &raw[..cut]));
    }
    // Without our records, another backup's files_metadata.json lists entries A's parts lack.
    f.restore_fails("files_metadata.json swapped, WAL-G metadata", "tar_partitions/part_", CORRUPT, |s| {
        as_if_walg(s, B);
        let theirs = get_bytes(s, &files_metadata_key(B)).unwrap().unwrap();
        as_if_walg(s, A);
        put(s, &fkey, &theirs)
    });
    // FilesMetadataDisabled / no files_metadata.json (WAL-G): restored from the listing, logged.
    let (_, log) = f.restore_ok("no files_metadata.json, WAL-G metadata", |s| {
        as_if_walg(s, A);
        s.delete(&fkey).unwrap()
    });
    assert!(log.iter().any(|l| l.contains("cannot be detected")), "{log:?}");
    // ... where backup_label.tar is still required.
    let (_, label, _) = f.objects();
    f.restore_fails("no files_metadata.json, no backup_label.tar", "backup_label.tar", CORRUPT, |s| {
        as_if_walg(s, A);
        s.delete(&fkey).unwrap();
        s.delete(&label).unwrap()
    });
}

fn wal_objects(f: &Fixture) {
    for name in [SEG_A, HISTORY] {
        // Missing: storage says so, fetch answers "not found" and writes nothing.
        let (cfg, storage, target) = f.copy();
        let key = crate::wal::find_object(storage.as_ref(), &format!("wal_005/{name}")).unwrap().unwrap();
        storage.delete(&key).unwrap();
        fs::create_dir_all(&target).unwrap();
        assert!(!crate::wal::fetch(&cfg, storage.as_ref(), name, &target.join(name)).unwrap());
        assert!(!target.join(name).exists());

        let raw = f.raw(&key);
        // Cuts: detected by the segment size or history syntax even where the stream is not
        // (none), and by the stream where it has an end (lz4, zstd frames, libsodium).
        let strict_cut = f.stream_has_checksums() || f.cfg.compression == Compression::None;
        for cut in f.cuts(&raw).into_iter().chain([39.min(raw.len() - 1)]) {
            f.wal_fails(&format!("cut at {cut}"), name, strict_cut, |s, k| put(s, k, &raw[..cut]));
        }
        let mut longer = raw.clone();
        longer.extend_from_slice(b"trailing garbage");
        // Bytes after a complete stream: zstd and lz4 read them as a bad frame, libsodium as
        // chunks after the final one, `none` as a longer file; the brotli and lzma decoders stop
        // at their stream's end, so only the content (whole) is checked there.
        let strict_ext = f.with_key() || matches!(f.cfg.compression, Compression::Zstd { .. } | Compression::Lz4 | Compression::None);
        f.wal_fails("extended", name, strict_ext, |s, k| put(s, k, &longer));
        for at in [0, raw.len() / 2, raw.len() - 1] {
            // Without checksums in the stream, a flipped byte inside a segment's data is not
            // detectable by fetch (README); one in the page header is.
            f.wal_fails(&format!("byte {at} flipped"), name, f.stream_has_checksums(), |s, k| put(s, k, &flipped(&raw, at)));
        }
    }
    // Another segment's object under this name: the page address gives it away, any codec.
    let theirs = f.raw(&crate::wal::find_object(f.cfg.open_storage().unwrap().as_ref(), &format!("wal_005/{SEG_B}")).unwrap().unwrap());
    f.wal_fails("swapped with the next segment", SEG_A, true, |s, k| put(s, k, &theirs));
    // Header checks on a plain segment whatever the codec: a zeroed magic, a wrong size.
    let mut bad = f.wal[0].1.clone();
    bad[..2].fill(0);
    let enc = f.cfg.pipeline().encode_bytes(&bad).unwrap();
    f.wal_fails("zeroed page magic", SEG_A, true, |s, k| put(s, k, &enc));
    let enc = f.cfg.pipeline().encode_bytes(&f.wal[0].1[..SEG as usize - 8192]).unwrap();
    f.wal_fails("re-encoded one page short", SEG_A, true, |s, k| put(s, k, &enc));
    let enc = f.cfg.pipeline().encode_bytes(b"1\t0/2000000\tno recovery tar").unwrap();
    f.wal_fails("history re-encoded without its last newline", HISTORY, true, |s, k| put(s, k, &enc));
}

fn run(c: Compression, key: bool) {
    let key = key.then(|| Key::from_text("a libsodium key for fault injection!", "none").unwrap());
    let f = Fixture::new(c, key);
    // Intact: restores, every check passing.
    let (_, log) = f.restore_ok("intact", |_| {});
    assert!(log.iter().any(|l| l.contains("all checks passed")), "{log:?}");
    tar_objects(&f);
    json_objects(&f, c == Compression::Lz4 && f.cfg.encryption.is_none());
    wal_objects(&f);
}

#[test]
fn faults_lz4() {
    run(Compression::Lz4, false)
}
#[test]
fn faults_lz4_encrypted() {
    run(Compression::Lz4, true)
}
#[test]
fn faults_zstd() {
    run(Compression::Zstd { level: 1 }, false)
}
#[test]
fn faults_zstd_encrypted() {
    run(Compression::Zstd { level: 1 }, true)
}
#[test]
fn faults_brotli() {
    run(Compression::Brotli { quality: 1 }, false)
}
#[test]
fn faults_brotli_encrypted() {
    run(Compression::Brotli { quality: 1 }, true)
}
#[test]
fn faults_lzma() {
    run(Compression::Lzma { preset: 0 }, false)
}
#[test]
fn faults_lzma_encrypted() {
    run(Compression::Lzma { preset: 0 }, true)
}
#[test]
fn faults_none() {
    run(Compression::None, false)
}
#[test]
fn faults_none_encrypted() {
    run(Compression::None, true)
}

/// Not an Error variant the suite would accept by accident: a missing object of a committed
/// backup is Corrupt (the backup is not whole), never NotFound.
#[test]
fn a_missing_part_is_not_reported_as_no_such_backup() {
    let f = Fixture::new(Compression::Lz4, None);
    let (data, _, _) = f.objects();
    let (cfg, storage, target) = f.copy();
    storage.delete(&data[0]).unwrap();
    let err = fetch(&cfg, &storage, A, &target, &|_| {}).unwrap_err();
    assert!(matches!(&err, Error::Corrupt { object, .. } if *object == data[0]), "{err}");
    assert!(!target.exists(), "nothing is written when the plan already fails");
}

