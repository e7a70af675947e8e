//! Base backups: push (walk PGDATA, tar, compress, upload) and fetch (restore).

pub mod chain;
pub mod delta;
pub mod delta_map;
pub mod drill;
pub mod drill_request;
pub mod fetch;
pub mod in_progress;
pub mod page_verify;
pub mod partial;
pub mod push;
pub mod recovery;
pub mod standby;
pub mod tablespaces;
pub mod walk;
pub mod wal_wait;

pub use fetch::{fetch, resolve_backup_name, FetchSummary};
pub use push::{finish, push_data, BackupStart, BackupStop, DataResult, Progress};
pub use in_progress::InProgress;
pub use wal_wait::{wait_for_wal, WaitTiming, WalRange};

#[cfg(test)]
mod faults;
#[cfg(test)]
pub(crate) mod delta_tests;
#[cfg(test)]
mod tablespace_tests;
#[cfg(test)]
mod partial_tests;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::catalog::list_backups;
    use crate::codec::Compression;
    use crate::config::Config;
    use crate::format::names::{files_metadata_key, metadata_key, sentinel_key, tar_partitions_prefix};
    use crate::format::{BackupMetadata, FilesMetadata, Sentinel};
    use crate::storage::{get_bytes, Storage};
    use chrono::Utc;
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    pub(crate) fn pseudo_random(len: usize, seed: u32) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|i| {
                x = x.wrapping_mul(1664525).wrapping_add(1013904223);
                if i % 3 == 0 { (x >> 24) as u8 } else { (i % 97) as u8 }
            })
            .collect()
    }

    /// A small fake PGDATA.
    const LONG_NAME: &str = "a_file_name_long_enough_to_need_a_gnu_long_name_entry_in_tar_since_ustar_names_stop_at_one_hundred_bytes";

    pub(crate) fn make_pgdata(root: &Path) -> PathBuf {
        let pg = root.join("pgdata");
        for d in ["base/1", "base/5", "global", "pg_wal/archive_status", "pg_stat_tmp", "pg_tblspc"] {
            fs::create_dir_all(pg.join(d)).unwrap();
        }
        fs::write(pg.join("PG_VERSION"), "15\n").unwrap();
        fs::write(pg.join("base/1/1259"), pseudo_random(300_000, 1)).unwrap();
        fs::write(pg.join("base/1/1249"), pseudo_random(120_000, 2)).unwrap();
        fs::write(pg.join("base/1/2608_fsm"), pseudo_random(24_576, 3)).unwrap();
        fs::write(pg.join("base/5/16384"), pseudo_random(90_000, 4)).unwrap();
        fs::write(pg.join("base/5/empty"), b"").unwrap();
        // Over 100 bytes of name (a GNU long-name entry) and over the 1 MiB copy buffer.
        fs::write(pg.join(format!("base/5/{LONG_NAME}")), pseudo_random((1 << 20) + 777, 8)).unwrap();
        fs::write(pg.join("global/pg_control"), pseudo_random(8192, 5)).unwrap();
        fs::write(pg.join("global/1262"), pseudo_random(8192, 6)).unwrap();
        fs::write(pg.join("pg_wal/000000010000000000000001"), pseudo_random(50_000, 7)).unwrap();
        fs::write(pg.join("postmaster.pid"), "12345\n").unwrap();
        fs::write(pg.join("pg_stat_tmp/x"), "stats").unwrap();
        fs::write(pg.join("backup_label"), "stale label").unwrap();
        pg
    }

    pub(crate) fn start(name: &str, pgdata: &Path) -> BackupStart {
        BackupStart {
            name: name.to_string(),
            pgdata: pgdata.to_path_buf(),
            start_lsn: 0x0200_0028,
            timeline: 1,
            wal_segment_size: 16 << 20,
            pg_version: 150004,
            system_identifier: 7_339_209_394_853_810_000,
            start_time: Utc::now(),
            hostname: "testhost".into(),
            is_permanent: false,
            user_data: None,
            delta: None,
            delta_pages: None,
            delta_map_check: false,
            data_checksums: false,
            tablespace_names: Default::default(),
        }
    }

    pub(crate) fn stop() -> BackupStop {
        BackupStop {
            finish_lsn: 0x0200_0100,
            backup_label: "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n".into(),
            tablespace_map: String::new(),
            finish_time: Utc::now(),
        }
    }

    pub(crate) fn cfg(bucket: &Path, c: Compression) -> Config {
        Config {
            compression: c,
            tar_size_threshold: 64 * 1024,
            upload_concurrency: 2,
            download_concurrency: 2,
            ..Config::for_file_storage(bucket)
        }
    }

    pub(crate) fn no_log(_: &str) {}

    /// Make a backup of ours look as WAL-G writes it: none of our keys in files_metadata.json
    /// and the sentinel.
    pub(crate) fn as_if_walg(storage: &dyn Storage, name: &str) {
        let strip = |key: &str, drop: &[&str], files: bool| {
            let mut v: serde_json::Value = serde_json::from_slice(&get_bytes(storage, key).unwrap().unwrap()).unwrap();
            let o = v.as_object_mut().unwrap();
            for k in drop {
                o.remove(*k);
            }
            if files {
                for d in o["Files"].as_object_mut().unwrap().values_mut() {
                    d.as_object_mut().unwrap().remove("Size");
                }
            }
            storage.put(key, &serde_json::to_vec(&v).unwrap()).unwrap();
        };
        strip(&files_metadata_key(name), &["WalgExtParts"], true);
        strip(&sentinel_key(name), &["WalgExtFilesMetadata", "WalgExtSentinelXxh3"], false);
    }

    #[test]
    fn push_finish_list_fetch_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let pg = make_pgdata(dir.path());
        let cfg = cfg(&dir.path().join("bucket"), Compression::Lz4);
        let storage: Arc<dyn Storage> = cfg.open_storage().unwrap();
        let name = "base_000000010000000000000002";
        let st = start(name, &pg);
        let progress = Progress::default();
        let mut polls = 0;
        let data = push_data(&cfg, &storage, &st, &progress, &mut || {
            polls += 1;
            Ok(())
        })
        .unwrap();
        assert!(polls >= 3);
        assert_eq!(progress.bytes_done.load(std::sync::atomic::Ordering::Relaxed),
                   progress.bytes_total.load(std::sync::atomic::Ordering::Relaxed));
        // Data is visible but no backup yet: the sentinel comes with finish().
        assert!(!storage.exists(&sentinel_key(name)).unwrap());
        let sentinel = finish(&cfg, &storage, &st, data, &stop()).unwrap();

        let keys: Vec<String> = storage.list(&tar_partitions_prefix(name)).unwrap().into_iter().map(|o| o.key).collect();
        let parts: Vec<&String> = keys.iter().filter(|k| k.contains("/part_")).collect();
        assert!(parts.len() >= 3, "expected several parts: {keys:?}");
        assert!(keys.iter().any(|k| k.ends_with("tar_partitions/part_001.tar.lz4")));
        assert!(keys.iter().any(|k| k.ends_with("tar_partitions/pg_control.tar.lz4")));
        assert!(keys.iter().any(|k| k.ends_with("tar_partitions/backup_label.tar.lz4")));

        // Sentinel as stored equals the one returned, with the FORMAT.md constants.
        let stored = Sentinel::from_json(&get_bytes(storage.as_ref(), &sentinel_key(name)).unwrap().unwrap(), "s").unwrap();
        assert_eq!(stored, sentinel);
        assert_eq!(sentinel.version, 2);
        assert_eq!(sentinel.date_fmt, "%Y-%m-%dT%H:%M:%S.%fZ");
        assert_eq!(sentinel.lsn, 0x0200_0028);
        assert_eq!(sentinel.finish_lsn, 0x0200_0100);
        assert!(sentinel.uncompressed_size > 540_000 && sentinel.compressed_size > 0);
        assert_eq!(sentinel.data_catalog_size as usize, 3 + 300_000 + 120_000 + 24_576 + 90_000 + (1 << 20) + 777 + 8192 + 8192);
        let meta = BackupMetadata::from_json(&get_bytes(storage.as_ref(), &metadata_key(name)).unwrap().unwrap(), "m").unwrap();
        assert_eq!(meta.start_lsn, sentinel.lsn);
        assert_eq!(meta.system_identifier, Some(7_339_209_394_853_810_000));
        let fm = FilesMetadata::from_json(&get_bytes(storage.as_ref(), &files_metadata_key(name)).unwrap().unwrap(), "f").unwrap();
        assert!(fm.files.contains_key("/base/1/1259"));
        assert!(!fm.files.contains_key("/global/pg_control"));
        assert!(!fm.files.contains_key("/postmaster.pid") && !fm.files.contains_key("/pg_stat_tmp/x"));
        assert!(!fm.files.contains_key("/backup_label"));
        assert!(fm.files.values().all(|d| !d.is_incremented && !d.is_skipped && d.updates_count == 0));
        assert_eq!(fm.tar_file_sets["backup_label.tar.lz4"], vec!["backup_label"]);
        assert_eq!(fm.tar_file_sets["pg_control.tar.lz4"], vec!["/global/pg_control"]);

        let list = list_backups(storage.as_ref()).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].name, name);
        assert_eq!(list[0].wal_file_name, "000000010000000000000002");

        let target = dir.path().join("restore");
        let summary = fetch(&cfg, &storage, "LATEST", &target, &no_log).unwrap();
        assert_eq!(summary.backup, name);
        let long = format!("base/5/{LONG_NAME}");
        for f in ["PG_VERSION", "base/1/1259", "base/1/1249", "base/1/2608_fsm", "base/5/16384", "base/5/empty",
                  "global/pg_control", "global/1262", &long] {
            assert!(fs::read(target.join(f)).unwrap() == fs::read(pg.join(f)).unwrap(), "{f}");
        }
        assert_eq!(summary.files, 10); // 9 data files + backup_label
        assert!(target.join("pg_wal").is_dir());
        assert_eq!(fs::read_dir(target.join("pg_wal")).unwrap().count(), 0);
        assert!(target.join("pg_stat_tmp").is_dir() && !target.join("pg_stat_tmp/x").exists());
        assert!(!target.join("postmaster.pid").exists());
        assert_eq!(fs::read_to_string(target.join("backup_label")).unwrap(), stop().backup_label);
        assert!(!target.join("tablespace_map").exists());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o700);

        // A non-empty target is refused, naming it.
        let err = fetch(&cfg, &storage, name, &target, &no_log).unwrap_err().to_string();
        assert!(err.contains(&target.display().to_string()) && err.contains("not empty"), "{err}");
        // Unknown backups are NotFound.
        assert!(matches!(
            fetch(&cfg, &storage, "base_0000000100000000000000FF", &dir.path().join("r2"), &no_log),
            Err(crate::Error::NotFound(_))
        ));
        // Same name again is refused instead of overwriting a committed backup.
        let again = push_data(&cfg, &storage, &st, &Progress::default(), &mut || Ok(()));
        assert!(matches!(again, Err(crate::Error::Conflict(_))));
    }

    #[test]
    fn failing_poll_cancels_and_leaves_no_backup() {
        let dir = tempfile::tempdir().unwrap();
        let pg = make_pgdata(dir.path());
        let mut cfg = cfg(&dir.path().join("bucket"), Compression::Lz4);
        cfg.disk_rate_limit = Some(1_000_000); // slow enough that poll runs while uploading
        let storage: Arc<dyn Storage> = cfg.open_storage().unwrap();
        let name = "base_000000010000000000000002";
        let st = start(name, &pg);
        let progress = Progress::default();
        let mut polls = 0;
        let err = push_data(&cfg, &storage, &st, &progress, &mut || {
            polls += 1;
            if polls >= 4 {
                Err(crate::Error::Cancelled("shutdown requested".into()))
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert!(matches!(&err, crate::Error::Cancelled(m) if m == "shutdown requested"), "{err}");
        assert!(!storage.exists(&sentinel_key(name)).unwrap());
        assert!(list_backups(storage.as_ref()).unwrap().is_empty());
        assert!(!storage.exists(&format!("{}pg_control.tar.lz4", tar_partitions_prefix(name))).unwrap());
        // Aborted part writers left no temp files behind.
        let mut stack = vec![dir.path().join("bucket")];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                assert!(!e.file_name().to_string_lossy().starts_with(".walg-tmp"), "{:?}", e.path());
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                }
            }
        }
        assert!(matches!(
            fetch(&cfg, &storage, "LATEST", &dir.path().join("r"), &no_log),
            Err(crate::Error::NotFound(_))
        ));
    }

    #[test]
    fn zstd_and_none_round_trip_with_rate_limit() {
        for c in [Compression::Zstd { level: 1 }, Compression::None] {
            let dir = tempfile::tempdir().unwrap();
            let pg = make_pgdata(dir.path());
            let mut cfg = cfg(&dir.path().join("bucket"), c);
            cfg.tar_size_threshold = 1 << 30;
            cfg.upload_concurrency = 1;
            cfg.disk_rate_limit = Some(4_000_000);
            let storage: Arc<dyn Storage> = cfg.open_storage().unwrap();
            let name = "base_000000010000000000000002";
            let st = start(name, &pg);
            let t0 = std::time::Instant::now();
            let data = push_data(&cfg, &storage, &st, &Progress::default(), &mut || Ok(())).unwrap();
            // ~560 kB at 4 MB/s: the limiter must have slowed the reads down.
            assert!(t0.elapsed() >= std::time::Duration::from_millis(100), "{:?}", t0.elapsed());
            finish(&cfg, &storage, &st, data, &stop()).unwrap();
            let part = format!("{}{}", tar_partitions_prefix(name), c.object_name("part_001.tar"));
            assert!(storage.exists(&part).unwrap(), "{part}");
            if c == Compression::None {
                assert!(part.ends_with("/part_001.tar"));
            }
            assert!(!storage.exists(&format!("{}part_002.tar", tar_partitions_prefix(name))).unwrap());
            let target = dir.path().join("restore");
            fetch(&cfg, &storage, name, &target, &no_log).unwrap();
            assert_eq!(fs::read(target.join("base/1/1259")).unwrap(), fs::read(pg.join("base/1/1259")).unwrap());
        }
    }

    #[test]
    fn fetch_refuses_escaping_entry_in_a_part() {
        let dir = tempfile::tempdir().unwrap();
        let pg = make_pgdata(dir.path());
        let cfg = cfg(&dir.path().join("bucket"), Compression::None);
        let storage: Arc<dyn Storage> = cfg.open_storage().unwrap();
        let name = "base_000000010000000000000002";
        let st = start(name, &pg);
        let data = push_data(&cfg, &storage, &st, &Progress::default(), &mut || Ok(())).unwrap();
        finish(&cfg, &storage, &st, data, &stop()).unwrap();
        // Replace a part with one that holds "../evil".
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..7].copy_from_slice(b"../evil");
        h.set_size(1);
        h.set_mode(0o600);
        h.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&h, &b"x"[..]).unwrap();
        let key = format!("{}part_001.tar", tar_partitions_prefix(name));
        storage.put(&key, &b.into_inner().unwrap()).unwrap();
        // Our record of the part would refuse it first (other size and hash): drop our records so
        // the tar reader's own refusal is what is tested.
        as_if_walg(storage.as_ref(), name);
        let err = fetch(&cfg, &storage, name, &dir.path().join("r"), &no_log).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, crate::Error::Format(_)) && msg.contains("../evil") && msg.contains("part_001.tar"), "{msg}");
        assert!(!dir.path().join("evil").exists());
    }

    /// OpenPGP as WAL-G uses it: the server pushes with the public key only; a restore needs
    /// the secret key (and its passphrase). Backup parts and a WAL segment, through zstd.
    #[test]
    fn pgp_backup_pushed_with_the_public_key_restores_with_the_secret_key() {
        use crate::codec::PgpKey;
        let testdata = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata");
        let read = |f: &str| fs::read_to_string(format!("{testdata}/{f}")).unwrap();
        let public = PgpKey::from_armored("WALG_PGP_KEY", &read("pgp-test-public.asc"), None).unwrap();
        let secret = PgpKey::from_armored("WALG_PGP_KEY", &read("pgp-test-secret.asc"), Some("walg-test".into())).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pg = make_pgdata(dir.path());
        let c = Compression::Zstd { level: 1 };
        let push_cfg = Config { pgp: Some(public), ..cfg(&dir.path().join("bucket"), c) };
        let restore_cfg = Config { pgp: Some(secret), ..push_cfg.clone() };
        let storage: Arc<dyn Storage> = push_cfg.open_storage().unwrap();
        let name = "base_000000010000000000000002";
        let st = start(name, &pg);
        let data = push_data(&push_cfg, &storage, &st, &Progress::default(), &mut || Ok(())).unwrap();
        finish(&push_cfg, &storage, &st, data, &stop()).unwrap();
        let part = format!("{}{}", tar_partitions_prefix(name), c.object_name("part_001.tar"));
        let raw = get_bytes(storage.as_ref(), &part).unwrap().unwrap();
        assert_ne!(&raw[..4], &[0x28, 0xB5, 0x2F, 0xFD], "encrypted after compression");
        let target = dir.path().join("restore");
        fetch(&restore_cfg, &storage, name, &target, &no_log).unwrap();
        for f in ["base/1/1259", "base/5/16384", "global/pg_control"] {
            assert_eq!(fs::read(target.join(f)).unwrap(), fs::read(pg.join(f)).unwrap(), "{f}");
        }
        // The server's public key cannot restore: a configuration error naming an object.
        let t = dir.path().join("r-public");
        let err = fetch(&push_cfg, &storage, name, &t, &no_log).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::BadInput, "{err}");
        assert!(err.to_string().contains("tar.zst") && err.to_string().contains("public key"), "{err}");
        assert!(!t.join("global/pg_control").exists());
        // A flipped byte in a data part: corrupt, naming it; pg_control is not written.
        let mut bad = raw.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x20;
        storage.put(&part, &bad).unwrap();
        let t = dir.path().join("r-bad");
        let err = fetch(&restore_cfg, &storage, name, &t, &no_log).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Corrupt, "{err}");
        assert!(err.to_string().contains("part_001.tar"), "{err}");
        assert!(!t.join("global/pg_control").exists());
    }

    #[test]
    fn every_codec_encrypted_round_trip_and_tampered_part_fails() {
        use crate::codec::crypto::Key;
        let key = Key::from_text("a libsodium key of 32 bytes, ok.", "none").unwrap();
        for c in [Compression::Brotli { quality: 3 }, Compression::Lzma { preset: 1 }, Compression::Zstd { level: 3 }, Compression::Lz4] {
            let dir = tempfile::tempdir().unwrap();
            let pg = make_pgdata(dir.path());
            let cfg = Config { encryption: Some(key.clone()), ..cfg(&dir.path().join("bucket"), c) };
            let storage: Arc<dyn Storage> = cfg.open_storage().unwrap();
            let name = "base_000000010000000000000002";
            let st = start(name, &pg);
            let data = push_data(&cfg, &storage, &st, &Progress::default(), &mut || Ok(())).unwrap();
            finish(&cfg, &storage, &st, data, &stop()).unwrap();
            let part = format!("{}{}", tar_partitions_prefix(name), c.object_name("part_001.tar"));
            let raw = get_bytes(storage.as_ref(), &part).unwrap().unwrap();
            // Sentinel and metadata stay plain JSON, readable without the key.
            assert!(Sentinel::from_json(&get_bytes(storage.as_ref(), &sentinel_key(name)).unwrap().unwrap(), "s").is_ok());
            assert!(BackupMetadata::from_json(&get_bytes(storage.as_ref(), &metadata_key(name)).unwrap().unwrap(), "m").is_ok());
            let target = dir.path().join("restore");
            fetch(&cfg, &storage, name, &target, &no_log).unwrap();
            for f in ["base/1/1259", "base/5/16384", "global/pg_control"] {
                assert_eq!(fs::read(target.join(f)).unwrap(), fs::read(pg.join(f)).unwrap(), "{c:?} {f}");
            }

            // Without the key: an error naming the part and suggesting the key.
            let plain = Config { encryption: None, ..cfg.clone() };
            let err = fetch(&plain, &storage, name, &dir.path().join("r-nokey"), &no_log).unwrap_err().to_string();
            assert!(err.contains("WALG_LIBSODIUM_KEY") && err.contains("tar_partitions/"), "{c:?}: {err}");
            // With another key: "wrong key".
            let other = Config { encryption: Some(Key::from_bytes([9; 32])), ..cfg.clone() };
            let err = fetch(&other, &storage, name, &dir.path().join("r-wrong"), &no_log).unwrap_err().to_string();
            assert!(err.contains("wrong key"), "{c:?}: {err}");
            // A flipped byte in a data part: the restore fails naming it, and pg_control (written
            // last) is absent, so the half-restored directory cannot be started.
            let mut bad = raw.clone();
            let mid = bad.len() / 2;
            bad[mid] ^= 0x20;
            storage.put(&part, &bad).unwrap();
            let t = dir.path().join("r-bad");
            let err = fetch(&cfg, &storage, name, &t, &no_log).unwrap_err().to_string();
            assert!(err.contains("part_001.tar") && err.contains("corrupt"), "{c:?}: {err}");
            assert!(!t.join("global/pg_control").exists());
            // Cut at a chunk boundary (final chunk dropped): refused as truncated.
            let boundary = 24 + (raw.len() - 24) / 8209 * 8209;
            let cut = if boundary == raw.len() { boundary - 8209 } else { boundary };
            storage.put(&part, &raw[..cut]).unwrap();
            let t = dir.path().join("r-cut");
            let err = fetch(&cfg, &storage, name, &t, &no_log).unwrap_err().to_string();
            assert!(err.contains("part_001.tar") && err.contains("records"), "{c:?}: {err}");
            assert!(!t.join("global/pg_control").exists());
        }
    }
}
