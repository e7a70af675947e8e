use super::*;
use super::fetch::temp_path;
use std::fs;
use crate::config::Config;
use crate::error::Error;
use crate::codec::Compression;
use crate::storage::FsStorage;

/// A WAL segment as PostgreSQL writes it, as far as fetch checks: `seg_size` bytes whose first
/// page has a long header for the segment `name` names; the rest is `fill`.
pub(crate) fn fake_segment(name: &str, seg_size: u32, fill: impl Fn(usize) -> u8) -> Vec<u8> {
    let (tli, segno) = crate::format::names::parse_wal_file_name_with(name, seg_size as u64).unwrap();
    let mut v: Vec<u8> = (0..seg_size as usize).map(fill).collect();
    v[..40].copy_from_slice(&check::long_page_header(0xD110, tli, segno * seg_size as u64, seg_size, 42));
    v
}

fn setup() -> (tempfile::TempDir, FsStorage, Config) {
    let dir = tempfile::tempdir().unwrap();
    let storage = FsStorage::new(dir.path().join("bucket"));
    let cfg = Config::for_file_storage(dir.path().join("bucket"));
    (dir, storage, cfg)
}

#[test]
fn push_twice_is_already_archived_and_different_is_conflict() {
    let (dir, s, cfg) = setup();
    let seg = dir.path().join("000000010000000000000001");
    let content: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(&seg, &content).unwrap();
    let out = push(&cfg, &s, "000000010000000000000001", &seg).unwrap();
    assert!(matches!(&out, PushOutcome::Uploaded { key, .. } if key == "wal_005/000000010000000000000001.lz4"));
    assert_eq!(
        push(&cfg, &s, "000000010000000000000001", &seg).unwrap(),
        PushOutcome::AlreadyArchived { key: "wal_005/000000010000000000000001.lz4".into() }
    );
    fs::write(&seg, b"different").unwrap();
    let err = push(&cfg, &s, "000000010000000000000001", &seg).unwrap_err();
    assert!(matches!(err, Error::Conflict(_)));
    assert!(err.to_string().contains("already archived with different content"));

    // History files are never overwritten, whatever the compression of the existing copy.
    let hist = dir.path().join("00000002.history");
    fs::write(&hist, b"1\t0/3000000\tno recovery target specified\n").unwrap();
    let zcfg = Config { compression: Compression::Zstd { level: 3 }, ..cfg.clone() };
    assert!(matches!(push(&zcfg, &s, "00000002.history", &hist).unwrap(), PushOutcome::Uploaded { .. }));
    assert!(matches!(push(&cfg, &s, "00000002.history", &hist).unwrap(), PushOutcome::AlreadyArchived { .. }));
    fs::write(&hist, b"changed").unwrap();
    assert!(matches!(push(&cfg, &s, "00000002.history", &hist), Err(Error::Conflict(_))));
    assert!(s.exists("wal_005/00000002.history.zst").unwrap());
    assert!(!s.exists("wal_005/00000002.history.lz4").unwrap());
}

#[test]
fn fetch_round_trip_missing_and_corrupt() {
    let (dir, s, cfg) = setup();
    let seg = dir.path().join("src");
    for c in [Compression::Lz4, Compression::Zstd { level: 3 }, Compression::None] {
        let name = format!("0000000100000000000000{:02X}", c.name().len());
        let content = fake_segment(&name, 1 << 20, |i| (i * 7 % 256) as u8);
        fs::write(&seg, &content).unwrap();
        push(&Config { compression: c, ..cfg.clone() }, &s, &name, &seg).unwrap();
        let dest = dir.path().join(format!("restored-{}", c.name()));
        assert!(fetch(&cfg, &s, &name, &dest).unwrap());
        assert_eq!(fs::read(&dest).unwrap(), content, "{c:?}");
        assert!(!temp_path(&dest).exists());
    }
    let dest = dir.path().join("missing");
    assert!(!fetch(&cfg, &s, "0000000100000000000000FF", &dest).unwrap());
    assert!(!dest.exists());

    s.put("wal_005/0000000100000000000000EE.lz4", b"not lz4 at all").unwrap();
    let dest = dir.path().join("corrupt");
    let err = fetch(&cfg, &s, "0000000100000000000000EE", &dest).unwrap_err();
    assert!(err.to_string().contains("0000000100000000000000EE"), "{err}");
    assert!(!dest.exists() && !temp_path(&dest).exists());

    s.put("wal_005/0000000100000000000000DD.br", b"x").unwrap();
    let err = fetch(&cfg, &s, "0000000100000000000000DD", &dir.path().join("br")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("0000000100000000000000DD.br") && msg.contains("maybe the object is encrypted"), "{msg}");
    assert!(fetch(&cfg, &s, "../etc", &dir.path().join("x")).is_err());
}

#[test]
fn encrypted_push_fetch_and_clear_errors() {
    use crate::codec::crypto::Key;
    let (dir, s, cfg) = setup();
    let seg = dir.path().join("seg");
    let key = Key::from_text("an encryption key for the WAL archive", "none").unwrap();
    for (i, c) in [Compression::Brotli { quality: 3 }, Compression::Lzma { preset: 1 }, Compression::None].into_iter().enumerate() {
        let ecfg = Config { compression: c, encryption: Some(key.clone()), ..cfg.clone() };
        let name = format!("0000000100000000000000{:02X}", 0x30 + i);
        let content = fake_segment(&name, 1 << 20, |i| (i % 13) as u8);
        fs::write(&seg, &content).unwrap();
        let out = push(&ecfg, &s, &name, &seg).unwrap();
        let PushOutcome::Uploaded { key: object, .. } = out else { panic!("{out:?}") };
        assert_eq!(object, c.object_name(&format!("wal_005/{name}")));
        // Stored bytes are not the plain compressed stream.
        let raw = crate::storage::get_bytes(&s, &object).unwrap().unwrap();
        assert_ne!(raw, crate::codec::compress_bytes(c, &content).unwrap());
        // Pushing again with the key recognises the identical content.
        assert!(matches!(push(&ecfg, &s, &name, &seg).unwrap(), PushOutcome::AlreadyArchived { .. }));
        let dest = dir.path().join(format!("r-{}", c.name()));
        assert!(fetch(&ecfg, &s, &name, &dest).unwrap());
        assert_eq!(fs::read(&dest).unwrap(), content);
        // Wrong key: error names the object, nothing at dest.
        let other = Config { encryption: Some(Key::from_bytes([1; 32])), ..ecfg.clone() };
        let dest = dir.path().join(format!("w-{}", c.name()));
        let err = fetch(&other, &s, &name, &dest).unwrap_err().to_string();
        assert!(err.contains("wrong key") && err.contains(&object), "{err}");
        assert!(!dest.exists() && !temp_path(&dest).exists());
        if c != Compression::None {
            // No key: the decompressor fails and the error says the object may be encrypted.
            let err = fetch(&cfg, &s, &name, &dest).unwrap_err().to_string();
            assert!(err.contains("maybe the object is encrypted") && err.contains(&object), "{err}");
            assert!(!dest.exists() && !temp_path(&dest).exists());
        }
    }
}

/// wal-fetch says "not in storage" (Ok(false), restore_command exit 1) only when the storage was
/// reached and its wal_005/ exists; every other case is an error of kind Unreachable, so that
/// recovery stops instead of ending early.
#[test]
fn fetch_missing_versus_unreachable() {
    use crate::error::ErrorKind;
    let (dir, s, cfg) = setup();
    let dest = dir.path().join("dest");
    let name = "000000010000000000000003";
    let unreachable = |s: &FsStorage, what: &str| {
        let e = fetch(&cfg, s, name, &dest).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unreachable, "{e}");
        assert!(e.to_string().contains(what), "{e}");
        assert!(!dest.exists());
    };
    // The prefix does not exist (an unmounted share, a typo).
    unreachable(&s, "does not exist");
    // The prefix exists but holds no wal_005/: nothing was ever archived here, or wrong prefix.
    fs::create_dir(dir.path().join("bucket")).unwrap();
    unreachable(&s, "no wal_005/ under file://");
    // The prefix is a file; a path under a file (ENOTDIR: how "unreadable" shows as root).
    let file = dir.path().join("file");
    fs::write(&file, b"x").unwrap();
    unreachable(&FsStorage::new(&file), "is not a directory");
    unreachable(&FsStorage::new(file.join("walg")), "cannot be used");
    // wal_005 is a file, not a directory.
    fs::write(dir.path().join("bucket/wal_005"), b"x").unwrap();
    assert_eq!(fetch(&cfg, &s, name, &dest).unwrap_err().kind(), ErrorKind::Unreachable);
    fs::remove_file(dir.path().join("bucket/wal_005")).unwrap();
    // Reached, wal_005/ there, the file is not: the one real "not in storage".
    let seg = dir.path().join("seg");
    fs::write(&seg, fake_segment("000000010000000000000002", 1 << 20, |_| 1)).unwrap();
    push(&cfg, &s, "000000010000000000000002", &seg).unwrap();
    assert!(!fetch(&cfg, &s, name, &dest).unwrap());
    assert!(!fetch(&cfg, &s, "00000002.history", &dest).unwrap());
    assert!(fetch(&cfg, &s, "000000010000000000000002", &dest).unwrap());
    // An emptied wal_005/ (everything deleted) still answers "not there".
    s.delete("wal_005/000000010000000000000002.lz4").unwrap();
    assert!(!fetch(&cfg, &s, "000000010000000000000002", &dir.path().join("d2")).unwrap());
}

#[test]
fn conflicting_partial_is_overwritten_history_and_segments_never() {
    let (dir, s, cfg) = setup();
    let name = "000000010000000000000007.partial";
    let p = dir.path().join(name);
    // First promotion archives its .partial (zstd).
    fs::write(&p, vec![1u8; 200_000]).unwrap();
    let zcfg = Config { compression: Compression::Zstd { level: 3 }, ..cfg.clone() };
    assert!(matches!(push(&zcfg, &s, name, &p).unwrap(), PushOutcome::Uploaded { .. }));
    assert!(matches!(push(&zcfg, &s, name, &p).unwrap(), PushOutcome::AlreadyArchived { .. }));
    // A second promotion out of the same segment: same name, different bytes, another codec.
    fs::write(&p, vec![2u8; 200_000]).unwrap();
    let out = push(&cfg, &s, name, &p).unwrap();
    assert_eq!(
        out,
        PushOutcome::Overwritten {
            key: format!("wal_005/{name}.lz4"),
            bytes: match &out { PushOutcome::Overwritten { bytes, .. } => *bytes, _ => 0 },
            previous: format!("wal_005/{name}.zst"),
        }
    );
    // The old object is gone (readers probing extensions cannot find it), the new one is whole.
    assert!(!s.exists(&format!("wal_005/{name}.zst")).unwrap());
    let dest = dir.path().join("fetched");
    assert!(fetch(&cfg, &s, name, &dest).unwrap());
    assert_eq!(fs::read(&dest).unwrap(), vec![2u8; 200_000]);
    // Same codec: replaced in place.
    fs::write(&p, vec![3u8; 1000]).unwrap();
    assert!(matches!(push(&cfg, &s, name, &p).unwrap(), PushOutcome::Overwritten { ref key, ref previous, .. } if key == previous));
    assert!(fetch(&cfg, &s, name, &dest).unwrap());
    assert_eq!(fs::read(&dest).unwrap(), vec![3u8; 1000]);
    // An undecodable stored .partial is replaced too.
    s.put(&format!("wal_005/{name}.lz4"), b"not lz4").unwrap();
    assert!(matches!(push(&cfg, &s, name, &p).unwrap(), PushOutcome::Overwritten { .. }));
    assert!(fetch(&cfg, &s, name, &dest).unwrap());
    assert_eq!(fs::read(&dest).unwrap(), vec![3u8; 1000]);

    // Segments and .backup files keep the rule: different content is a conflict, nothing replaced.
    for file in ["000000010000000000000008", "000000010000000000000008.00000028.backup"] {
        let f = dir.path().join(file);
        // A segment must look like one to be fetched (size, first page header).
        let (first, second) = if file.len() == 24 {
            (fake_segment(file, 1 << 20, |_| 1), fake_segment(file, 1 << 20, |_| 2))
        } else {
            (b"first".to_vec(), b"second".to_vec())
        };
        fs::write(&f, &first).unwrap();
        push(&cfg, &s, file, &f).unwrap();
        fs::write(&f, &second).unwrap();
        assert!(matches!(push(&cfg, &s, file, &f), Err(Error::Conflict(_))), "{file}");
        let d = dir.path().join("seg-fetched");
        assert!(fetch(&cfg, &s, file, &d).unwrap());
        assert!(fs::read(&d).unwrap() == first, "{file} untouched");
    }
    // History: never, even when the stored copy is undecodable.
    let h = dir.path().join("00000003.history");
    fs::write(&h, b"2\t0/9000000\tno recovery target specified\n").unwrap();
    s.put("wal_005/00000003.history.lz4", b"garbage").unwrap();
    assert!(push(&cfg, &s, "00000003.history", &h).is_err());
    assert_eq!(crate::storage::get_bytes(&s, "wal_005/00000003.history.lz4").unwrap().unwrap(), b"garbage");
}

#[test]
fn archiver_look_ahead_does_not_stall_on_a_conflicting_partial() {
    let (dir, s, cfg) = setup();
    let pg_wal = dir.path().join("pg_wal");
    fs::create_dir_all(pg_wal.join("archive_status")).unwrap();
    let name = "000000010000000000000009.partial";
    fs::write(pg_wal.join(name), b"from promotion A").unwrap();
    push(&cfg, &s, name, &pg_wal.join(name)).unwrap();
    fs::write(pg_wal.join(name), b"from promotion B").unwrap();
    fs::write(pg_wal.join("archive_status").join(format!("{name}.ready")), b"").unwrap();
    let mut a = Archiver::new();
    let out = a.archive(&cfg, &s, name, &pg_wal.join(name), &pg_wal).unwrap();
    assert!(matches!(out, PushOutcome::Overwritten { .. }), "{out:?}");
    let dest = dir.path().join("f");
    assert!(fetch(&cfg, &s, name, &dest).unwrap());
    assert_eq!(fs::read(&dest).unwrap(), b"from promotion B");
}
