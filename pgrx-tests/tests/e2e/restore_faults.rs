//! End-to-end slice of the fault-injection suite (the whole matrix runs without a server in
//! crates/core/src/backup/faults.rs): a real backup and real WAL, damaged in file storage.
//! (a) a data part removed: `backup-fetch` fails naming it and the target has no
//! global/pg_control; (b) backup_label.tar removed: fails naming it; (c) a WAL segment cut inside
//! its one zstd frame, and a many-frame copy of it (as WAL-G writes) cut at a frame boundary
//! (what is left still decodes): `wal-fetch` exits 126 (not 1), naming the
//! object, and leaves no file at the destination. `backup-fetch` exits 5 (corrupt). After each, the intact object is put back and
//! the same command succeeds, so the failure was the damage's.

use std::path::Path;
use std::time::Duration;

use walg_e2e::cmd::chown_postgres;
use walg_e2e::{require_installed, Cluster, ScratchDir, Storage};

fn put_back(storage: &Storage, key: &str, bytes: &[u8]) {
    let path = storage.file_prefix().join(key);
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    chown_postgres(&path);
}

fn fetch_fails_naming(storage: &Storage, name: &str, target: &Path, key: &str) {
    let out = storage.walg_ext(&["backup-fetch", &target.display().to_string(), name]);
    assert_eq!(out.code, Some(5), "backup-fetch must fail as 'corrupt' (exit 5) when {key} is damaged\n{}", out.describe());
    let text = out.all_output();
    assert!(text.contains(key), "the error must name {key}\n{}", out.describe());
    assert!(!target.join("global/pg_control").exists(), "a failed restore must leave no pg_control\n{}", out.describe());
}

#[test]
fn damaged_backup_and_wal_objects_fail_clearly() {
    require_installed();
    let storage = Storage::new("restore-faults", "zstd");
    let mut a = Cluster::init("restore-faults-a", &storage.extension_conf());
    a.start();
    a.pgbench_init(2);
    a.psql("CREATE EXTENSION walg_ext");
    let name = a.psql("SELECT walg_backup_push()");
    assert!(name.starts_with("base_"), "{name}");
    a.psql("CREATE TABLE more AS SELECT g, md5(g::text) AS h FROM generate_series(1, 300000) g");
    let seg = a.switch_wal();
    a.wait_archived(&seg, Duration::from_secs(120));
    a.stop();

    let prefix = format!("basebackups_005/{name}/tar_partitions/");
    let parts = storage.tar_partitions(&name);
    let part = format!("{prefix}{}", parts.iter().find(|p| p.starts_with("part_001.tar")).expect("part_001"));
    let label = format!("{prefix}{}", parts.iter().find(|p| p.starts_with("backup_label.tar")).expect("backup_label.tar"));

    // (a) A data part removed.
    let bytes = storage.read(&part);
    storage.delete(&part);
    let t = Cluster::empty("restore-faults-t1");
    fetch_fails_naming(&storage, &name, &t.data, &part);
    put_back(&storage, &part, &bytes);

    // (b) backup_label.tar removed.
    let bytes = storage.read(&label);
    storage.delete(&label);
    let t = Cluster::empty("restore-faults-t2");
    fetch_fails_naming(&storage, &name, &t.data, &label);
    put_back(&storage, &label, &bytes);

    // Intact again: restores.
    let t = Cluster::empty("restore-faults-t3");
    let target = t.data.clone();
    let out = storage.walg_ext(&["backup-fetch", &target.display().to_string(), &name]);
    assert!(out.success(), "restore of the repaired backup\n{}", out.describe());
    assert!(target.join("global/pg_control").exists());

    // (c) A WAL segment cut short. walg_ext writes one zstd frame per object: cut inside it.
    // Then the same segment as WAL-G may write it (several frames, here 4 MiB each), cut at a
    // frame boundary, where what is left still decodes.
    let key = storage.wal_object(&seg).expect("segment archived");
    assert!(key.ends_with(".zst"), "{key}");
    let whole = storage.read(&key);
    let first = zstd::zstd_safe::find_frame_compressed_size(&whole).expect("a zstd frame");
    assert_eq!(first, whole.len(), "walg_ext writes a segment as one zstd frame");
    let plain = zstd::decode_all(&whole[..]).expect("the segment decodes");
    let mut frames = Vec::new();
    for chunk in plain.chunks(4 << 20) {
        frames.extend(zstd::bulk::compress(chunk, 3).unwrap());
    }
    let first_of_many = zstd::zstd_safe::find_frame_compressed_size(&frames).expect("a zstd frame");
    assert!(first_of_many < frames.len(), "several frames");
    let scratch = ScratchDir::new("restore-faults-wal");
    let dest = scratch.subdir("fetch").join("RECOVERYXLOG");
    let cuts = [("inside its one frame", whole[..whole.len() / 2].to_vec()), ("at a frame boundary", frames[..first_of_many].to_vec())];
    for (what, cut) in cuts {
        put_back(&storage, &key, &cut);
        let out = storage.walg_ext(&["wal-fetch", &seg, &dest.display().to_string()]);
        // 126, not 1: 1 would tell PostgreSQL the segment does not exist (recovery would end early).
        assert_eq!(out.code, Some(126), "wal-fetch of a segment cut {what} must fail with 126\n{}", out.describe());
        assert!(out.all_output().contains(&key), "the error must name {key}\n{}", out.describe());
        assert!(!dest.exists(), "nothing at the destination ({what})\n{}", out.describe());
    }
    put_back(&storage, &key, &whole);
    let out = storage.walg_ext(&["wal-fetch", &seg, &dest.display().to_string()]);
    assert_eq!(out.code, Some(0), "wal-fetch of the repaired segment\n{}", out.describe());
    assert_eq!(std::fs::metadata(&dest).unwrap().len(), 16 << 20);
}
