//! Tablespaces end to end in core: a fake PGDATA with pg_tblspc links to directories outside
//! it; the walk, the sentinel's Spec, restores to the original and to new locations (both
//! options), refusals, a WAL-G-built backup with Spec, a delta chain, damage.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;

use super::delta::DeltaRequest;
use super::delta_tests::{backup, pages, set_old_mtime, write_page};
use super::fetch::{fetch, fetch_with};
use super::push::{finish, push_data, Progress};
use super::tablespaces::{parse_relocation, read_restore_spec, TablespaceOptions};
use super::tests::{cfg, make_pgdata, no_log, start, stop};
use super::walk::walk_pgdata;
use crate::codec::Compression;
use crate::config::Config;
use crate::error::ErrorKind;
use crate::format::names::{files_metadata_key, metadata_key, sentinel_key, tar_partitions_prefix};
use crate::format::sentinel::{BackupMetadata, FileDescription, FilesMetadata, Sentinel, DATE_FMT};
use crate::format::tar as tarfmt;
use crate::storage::{get_bytes, Storage};

const CAT: &str = "PG_15_202209061";

/// Files inside tablespace `oid`'s directory (relative to it).
fn ts_files(oid: &str) -> Vec<String> {
    vec![format!("{CAT}/5/{oid}1"), format!("{CAT}/5/{oid}1_fsm"), format!("{CAT}/5/{oid}2")]
}

/// PGDATA from make_pgdata plus two tablespaces in `root/ts/<oid>`, linked from pg_tblspc.
fn pgdata_with_tablespaces(root: &Path) -> (PathBuf, Vec<(String, PathBuf)>) {
    let pg = make_pgdata(root);
    let mut ts = Vec::new();
    for (i, oid) in ["16400", "16401"].iter().enumerate() {
        let dir = root.join("ts").join(oid);
        fs::create_dir_all(dir.join(CAT).join("5")).unwrap();
        for (j, f) in ts_files(oid).iter().enumerate() {
            fs::write(dir.join(f), vec![(i * 10 + j) as u8 + 1; 8192 * (j + 1) + i]).unwrap();
        }
        std::os::unix::fs::symlink(&dir, pg.join("pg_tblspc").join(oid)).unwrap();
        ts.push((oid.to_string(), dir));
    }
    (pg, ts)
}

fn map_for(ts: &[(String, PathBuf)]) -> String {
    ts.iter().map(|(o, d)| format!("{o} {}\n", d.display())).collect()
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    pg: PathBuf,
    ts: Vec<(String, PathBuf)>,
    cfg: Config,
    storage: Arc<dyn Storage>,
    name: String,
}

fn pushed() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let (pg, ts) = pgdata_with_tablespaces(&root);
    let cfg = cfg(&root.join("bucket"), Compression::Lz4);
    let storage: Arc<dyn Storage> = cfg.open_storage().unwrap();
    let name = "base_000000010000000000000002".to_string();
    let mut st = start(&name, &pg);
    st.tablespace_names = BTreeMap::from([
        ("1663".to_string(), "pg_default".to_string()),
        ("16400".to_string(), "fast".to_string()),
        ("16401".to_string(), "slow".to_string()),
    ]);
    let data = push_data(&cfg, &storage, &st, &Progress::default(), &mut || Ok(())).unwrap();
    let mut sp = stop();
    sp.tablespace_map = map_for(&ts);
    finish(&cfg, &storage, &st, data, &sp).unwrap();
    Fixture { _dir: dir, root, pg, ts, cfg, storage, name }
}

/// Every tablespace file of `from` (oid -> dir) equals the one in `to`, and the target's
/// pg_tblspc links point to `to`.
fn same_tablespaces(target: &Path, from: &[(String, PathBuf)], to: &[(String, PathBuf)]) {
    for ((oid, a), (oid2, b)) in from.iter().zip(to) {
        assert_eq!(oid, oid2);
        assert_eq!(fs::read_link(target.join("pg_tblspc").join(oid)).unwrap(), *b, "link of {oid}");
        for f in ts_files(oid) {
            assert!(fs::read(a.join(&f)).unwrap() == fs::read(b.join(&f)).unwrap(), "{oid}/{f} differs");
            assert!(fs::read(target.join("pg_tblspc").join(oid).join(&f)).is_ok());
        }
    }
    assert!(!target.join("pg_tblspc/16400").symlink_metadata().unwrap().is_dir(), "a link, not a directory");
}

fn sentinel_json(s: &dyn Storage, name: &str) -> serde_json::Value {
    serde_json::from_slice(&get_bytes(s, &sentinel_key(name)).unwrap().unwrap()).unwrap()
}

#[test]
fn walk_names_tablespace_files_as_walg_does() {
    let dir = tempfile::tempdir().unwrap();
    let (pg, ts) = pgdata_with_tablespaces(dir.path());
    let w = walk_pgdata(&pg).unwrap();
    let names: Vec<&str> = w.entries.iter().map(|e| e.name.as_str()).collect();
    assert!(!names.contains(&"/pg_tblspc/16400") && !names.contains(&"/pg_tblspc/16401"), "no entry for the links: {names:?}");
    assert!(names.contains(&"/pg_tblspc"));
    assert!(names.contains(&"/pg_tblspc/16400/PG_15_202209061") && names.contains(&"/pg_tblspc/16401/PG_15_202209061/5"));
    assert!(names.contains(&"/pg_tblspc/16401/PG_15_202209061/5/164012"));
    let want: Vec<(String, String)> = ts.iter().map(|(o, d)| (o.clone(), d.display().to_string())).collect();
    assert_eq!(w.tablespaces, want);
    let e = w.entries.iter().find(|e| e.name == "/pg_tblspc/16400/PG_15_202209061/5/164002").unwrap();
    assert_eq!(e.size, 3 * 8192);
}

#[test]
fn push_records_spec_and_restore_to_original_location_refuses_non_empty() {
    let f = pushed();
    let s = sentinel_json(f.storage.as_ref(), &f.name);
    let (a, b) = (f.ts[0].1.display().to_string(), f.ts[1].1.display().to_string());
    assert_eq!(
        s["Spec"],
        serde_json::json!({"base_prefix": f.pg.display().to_string(), "tablespaces": ["16400", "16401"],
            "16400": {"loc": a, "link": "pg_tblspc/16400"}, "16401": {"loc": b, "link": "pg_tblspc/16401"}})
    );
    assert_eq!(s["WalgExtTablespaceNames"], serde_json::json!({"16400": "fast", "16401": "slow"}));
    let fm = FilesMetadata::from_json(&get_bytes(f.storage.as_ref(), &files_metadata_key(&f.name)).unwrap().unwrap(), "fm").unwrap();
    assert_eq!(fm.files["/pg_tblspc/16400/PG_15_202209061/5/164001"].size, Some(8192));
    assert!(fm.tar_file_sets.values().flatten().any(|e| e == "/pg_tblspc/16401/PG_15_202209061/5/164012"));

    // The originals are there (the source cluster's): refused, naming the tablespace, nothing written.
    let target = f.root.join("r1");
    let e = fetch(&f.cfg, &f.storage, "LATEST", &target, &no_log).unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.kind(), ErrorKind::LocalIo, "{msg}");
    assert!(msg.contains("tablespace 16400 (fast)") && msg.contains("not empty") && msg.contains(&a), "{msg}");
    assert!(!target.exists());

    // Originals moved away: restored where they were, tablespace_map as stored.
    let saved: Vec<(String, PathBuf)> = f.ts.iter().map(|(o, d)| (o.clone(), d.with_extension("orig"))).collect();
    for ((_, d), (_, s)) in f.ts.iter().zip(&saved) {
        fs::rename(d, s).unwrap();
    }
    fs::create_dir(&f.ts[1].1).unwrap(); // an empty directory is fine
    fetch(&f.cfg, &f.storage, "LATEST", &target, &no_log).unwrap();
    same_tablespaces(&target, &saved, &f.ts);
    assert_eq!(fs::read_to_string(target.join("tablespace_map")).unwrap(), map_for(&f.ts));
    assert!(fs::read(target.join("base/1/1259")).unwrap() == fs::read(f.pg.join("base/1/1259")).unwrap());
}

#[test]
fn restore_into_new_locations_with_either_option() {
    let f = pushed();
    // --tablespace by OID and by name.
    let target = f.root.join("r1");
    let new: Vec<(String, PathBuf)> = f.ts.iter().map(|(o, _)| (o.clone(), f.root.join("new1").join(o))).collect();
    let opts = TablespaceOptions {
        under: None,
        restore_spec: None,
        relocate: vec![
            parse_relocation(&format!("16400={}", new[0].1.display())).unwrap(),
            parse_relocation(&format!("slow={}", new[1].1.display())).unwrap(),
        ],
    };
    fetch_with(&f.cfg, &f.storage, &f.name, &target, &opts, &no_log).unwrap();
    same_tablespaces(&target, &f.ts, &new);
    assert_eq!(fs::read_to_string(target.join("tablespace_map")).unwrap(), map_for(&new));
    assert!(!target.join("tablespace_map.walg-ext.tmp").exists());

    // WAL-G's --restore-spec (its own base_prefix is only logged), one tablespace moved by it,
    // the other by --tablespace (applied after).
    let target = f.root.join("r2");
    let new: Vec<(String, PathBuf)> = f.ts.iter().map(|(o, _)| (o.clone(), f.root.join("new2").join(o))).collect();
    let spec_file = f.root.join("spec.json");
    fs::write(
        &spec_file,
        format!(
            r#"{{"base_prefix": "/somewhere/else", "tablespaces": ["16401"],
                "16401": {{"loc": "{}/", "link": "pg_tblspc/16401"}}}}"#,
            new[1].1.display()
        ),
    )
    .unwrap();
    let opts = TablespaceOptions {
        under: None,
        restore_spec: Some(read_restore_spec(&spec_file).unwrap()),
        relocate: vec![("16400".into(), new[0].1.clone())],
    };
    let logs = std::sync::Mutex::new(Vec::<String>::new());
    fetch_with(&f.cfg, &f.storage, &f.name, &target, &opts, &|l: &str| logs.lock().unwrap().push(l.into())).unwrap();
    same_tablespaces(&target, &f.ts, &new);
    assert_eq!(fs::read_to_string(target.join("tablespace_map")).unwrap(), map_for(&new));
    assert!(logs.lock().unwrap().iter().any(|l| l.contains("base_prefix /somewhere/else")));

    // Refusals, before anything is written.
    let t = f.root.join("r3");
    let d = f.root.join("x").display().to_string();
    let refused = |opts: TablespaceOptions, want: &str| {
        let e = fetch_with(&f.cfg, &f.storage, &f.name, &t, &opts, &no_log).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadInput, "{e}");
        assert!(e.to_string().contains(want), "{e} lacks {want:?}");
        assert!(!t.exists());
    };
    let reloc = |v: &[(&str, &str)]| TablespaceOptions {
        under: None,
        restore_spec: None,
        relocate: v.iter().map(|(k, d)| (k.to_string(), PathBuf::from(d))).collect(),
    };
    refused(reloc(&[("nosuch", &d)]), "records no tablespace named \"nosuch\" (it has tablespace 16400 (fast), tablespace 16401 (slow))");
    refused(reloc(&[("99999", &d)]), "has no tablespace 99999");
    refused(reloc(&[("16400", "relative/dir")]), "must be an absolute path");
    refused(reloc(&[("16400", &d), ("16401", &format!("{d}/sub"))]), "overlapping");
    refused(reloc(&[("16400", &t.join("ts").display().to_string())]), "overlaps the restore target");
    fs::write(&spec_file, r#"{"base_prefix": "/x", "tablespaces": ["777"], "777": {"loc": "/tmp/x", "link": "pg_tblspc/777"}}"#).unwrap();
    refused(TablespaceOptions { under: None, restore_spec: Some(read_restore_spec(&spec_file).unwrap()), relocate: vec![] }, "names tablespace 777");
    fs::write(&spec_file, r#"{"tablespaces": []}"#).unwrap();
    assert_eq!(read_restore_spec(&spec_file).unwrap_err().kind(), ErrorKind::BadInput);
    assert_eq!(parse_relocation("16400").unwrap_err().kind(), ErrorKind::BadInput);
    // A non-empty chosen directory.
    fs::create_dir_all(f.root.join("full")).unwrap();
    fs::write(f.root.join("full/junk"), "x").unwrap();
    let e = fetch_with(&f.cfg, &f.storage, &f.name, &t, &reloc(&[("16400", &d), ("16401", &f.root.join("full").display().to_string())]), &no_log)
        .unwrap_err();
    assert!(e.to_string().contains("tablespace 16401 (slow)'s restore directory is not empty"), "{e}");
    assert!(!t.exists());
}

#[test]
fn damaged_tablespace_file_fails_the_restore() {
    let f = pushed();
    // A tablespace file recorded with another size: the restore's file check covers tablespace
    // files (here WAL-G-shaped metadata without part checksums, so the Files check is what
    // catches it).
    super::tests::as_if_walg(f.storage.as_ref(), &f.name);
    let key = files_metadata_key(&f.name);
    let mut v: serde_json::Value = serde_json::from_slice(&get_bytes(f.storage.as_ref(), &key).unwrap().unwrap()).unwrap();
    let files = v["TarFileSets"].as_object_mut().unwrap();
    let part = files.iter().find(|(_, e)| e.as_array().unwrap().iter().any(|n| n == "/base/1/1259")).unwrap().0.clone();
    files[&part].as_array_mut().unwrap().push("/pg_tblspc/16400/PG_15_202209061/5/99999".into());
    f.storage.put(&key, &serde_json::to_vec(&v).unwrap()).unwrap();
    let t = f.root.join("r");
    let opts = TablespaceOptions { under: None, restore_spec: None, relocate: vec![("16400".into(), f.root.join("n0")), ("16401".into(), f.root.join("n1"))] };
    let e = fetch_with(&f.cfg, &f.storage, &f.name, &t, &opts, &no_log).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("/pg_tblspc/16400/PG_15_202209061/5/99999"), "{e}");
    assert!(!t.join("global/pg_control").exists());
}

/// A backup as WAL-G writes one with a tablespace: our own writer not involved.
#[test]
fn walg_backup_with_spec_restores() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let cfg = cfg(&root.join("bucket"), Compression::Lz4);
    let storage: Arc<dyn Storage> = cfg.open_storage().unwrap();
    let p = cfg.pipeline();
    let name = "base_000000010000000000000002";
    let prefix = tar_partitions_prefix(name);
    let tar = |entries: &[(&str, Option<&[u8]>)]| {
        let mut b = tarfmt::builder(Vec::new());
        for (n, data) in entries {
            match data {
                Some(d) => tarfmt::append(&mut b, &mut tarfmt::file_header(d.len() as u64, 0o600, 1_700_000_000), n, *d).unwrap(),
                None => tarfmt::append(&mut b, &mut tarfmt::dir_header(0o700, 1_700_000_000), n, &[][..]).unwrap(),
            }
        }
        p.encode_bytes(&b.into_inner().unwrap()).unwrap()
    };
    let rel = pages(&[0x0100_0000; 3], 7);
    let part = p.object_name("part_001.tar");
    let (label, control) = (p.object_name("backup_label.tar"), p.object_name("pg_control.tar"));
    let map = "16390 /mnt/old space\n";
    storage
        .put(
            &format!("{prefix}{part}"),
            &tar(&[
                ("/PG_VERSION", Some(b"15\n")),
                ("/base", None),
                ("/base/5", None),
                ("/base/5/1259", Some(&[1u8; 8192])),
                ("/global", None),
                ("/pg_tblspc", None),
                ("/pg_tblspc/16390/PG_15_202209061", None),
                ("/pg_tblspc/16390/PG_15_202209061/5", None),
                ("/pg_tblspc/16390/PG_15_202209061/5/16391", Some(&rel)),
            ]),
        )
        .unwrap();
    let label_text = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n";
    storage
        .put(&format!("{prefix}{label}"), &tar(&[("tablespace_map", Some(map.as_bytes())), ("backup_label", Some(label_text.as_bytes()))]))
        .unwrap();
    storage.put(&format!("{prefix}{control}"), &tar(&[("/global/pg_control", Some(&[3u8; 8192]))])).unwrap();
    let fd = |size: u64| FileDescription { is_incremented: false, is_skipped: false, mtime: Utc::now(), updates_count: 0, corrupt_blocks: None, size: Some(size) };
    let mut files_md = FilesMetadata {
        files: BTreeMap::from([
            ("/PG_VERSION".to_string(), fd(3)),
            ("/base/5/1259".to_string(), fd(8192)),
            ("/pg_tblspc/16390/PG_15_202209061/5/16391".to_string(), fd(rel.len() as u64)),
        ]),
        tar_file_sets: BTreeMap::from([
            (part.clone(), vec!["/PG_VERSION".into(), "/base/5/1259".into(), "/pg_tblspc/16390/PG_15_202209061/5/16391".into()]),
            (label.clone(), vec!["tablespace_map".into(), "backup_label".into()]),
            (control.clone(), vec!["/global/pg_control".into()]),
        ]),
        ..Default::default()
    };
    let no_size = |md: &FilesMetadata| {
        let mut v: serde_json::Value = serde_json::from_slice(&md.to_json()).unwrap();
        for d in v["Files"].as_object_mut().unwrap().values_mut() {
            d.as_object_mut().unwrap().remove("Size");
        }
        serde_json::to_vec(&v).unwrap()
    };
    storage.put(&files_metadata_key(name), &no_size(&files_md)).unwrap();
    let now = Utc::now();
    let meta = BackupMetadata {
        start_time: now,
        finish_time: now,
        date_fmt: DATE_FMT.into(),
        hostname: "h".into(),
        data_dir: "/var/lib/postgresql/15/main".into(),
        pg_version: 150004,
        start_lsn: 0x0200_0028,
        finish_lsn: 0x0200_0100,
        is_permanent: false,
        system_identifier: Some(1),
        uncompressed_size: 1,
        compressed_size: 1,
        user_data: None,
    };
    storage.put(&metadata_key(name), &meta.to_json()).unwrap();
    let sentinel = serde_json::json!({
        "LSN": 0x0200_0028u64, "FinishLSN": 0x0200_0100u64, "PgVersion": 150004, "SystemIdentifier": 1,
        "UncompressedSize": 1, "CompressedSize": 0, "DataCatalogSize": 1,
        "Spec": {"base_prefix": "/var/lib/postgresql/15/main", "tablespaces": ["16390"],
                 "16390": {"loc": "/mnt/old space", "link": "pg_tblspc/16390"}},
        "ChkpNum": null, "Version": 2, "StartTime": "2025-02-21T10:20:11.5Z", "FinishTime": "2025-02-21T10:21:11.5Z",
        "DateFmt": DATE_FMT, "Hostname": "h", "DataDir": "/var/lib/postgresql/15/main", "IsPermanent": false
    });
    storage.put(&sentinel_key(name), &serde_json::to_vec(&sentinel).unwrap()).unwrap();
    assert!(Sentinel::from_json(&serde_json::to_vec(&sentinel).unwrap(), "s").unwrap().spec.is_some());

    // The original location (/mnt/old space) is not ours to write: by name is refused (WAL-G
    // records no names), by OID into a new directory works.
    let t = root.join("r");
    let new = root.join("new space");
    let e = fetch_with(&cfg, &storage, "LATEST", &t, &TablespaceOptions { under: None, restore_spec: None, relocate: vec![("old".into(), new.clone())] }, &no_log)
        .unwrap_err();
    assert!(e.to_string().contains("records no tablespace named \"old\" (it has tablespace 16390)"), "{e}");
    let opts = TablespaceOptions { under: None, restore_spec: None, relocate: vec![("16390".into(), new.clone())] };
    fetch_with(&cfg, &storage, "LATEST", &t, &opts, &no_log).unwrap();
    assert_eq!(fs::read_link(t.join("pg_tblspc/16390")).unwrap(), new);
    assert!(fs::read(new.join("PG_15_202209061/5/16391")).unwrap() == rel);
    assert_eq!(fs::read_to_string(t.join("tablespace_map")).unwrap(), format!("16390 {}\n", new.display()));

    // WAL-E's lowercase "spec" is read too.
    let mut lower = sentinel.clone();
    let spec = lower.as_object_mut().unwrap().remove("Spec").unwrap();
    lower["spec"] = spec;
    assert!(Sentinel::from_json(&serde_json::to_vec(&lower).unwrap(), "s").unwrap().spec.is_some());

    // A tablespace file TarFileSets records but the part lacks: Corrupt, named.
    files_md.tar_file_sets.get_mut(&part).unwrap().push("/pg_tblspc/16390/PG_15_202209061/5/16392".into());
    storage.put(&files_metadata_key(name), &no_size(&files_md)).unwrap();
    let t2 = root.join("r2");
    let opts = TablespaceOptions { under: None, restore_spec: None, relocate: vec![("16390".into(), root.join("new2"))] };
    let e = fetch_with(&cfg, &storage, "LATEST", &t2, &opts, &no_log).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("16392"), "{e}");

    // tablespace_map naming a tablespace the Spec lacks: Corrupt, before anything is written.
    files_md.tar_file_sets.get_mut(&part).unwrap().pop();
    storage.put(&files_metadata_key(name), &no_size(&files_md)).unwrap();
    storage.put(&format!("{prefix}{label}"), &tar(&[("tablespace_map", Some(b"16390 /a\n16500 /b\n")), ("backup_label", Some(label_text.as_bytes()))])).unwrap();
    let t3 = root.join("r3");
    let e = fetch_with(&cfg, &storage, "LATEST", &t3, &opts, &no_log).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("16500"), "{e}");
    assert!(!t3.exists());
}

/// A delta chain: increments of tablespace files land in the chosen directory.
#[test]
fn delta_chain_restores_tablespace_increments_in_the_new_location() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let pg = super::delta_tests::pgdata(root);
    let ts = root.join("ts16400");
    fs::create_dir_all(ts.join(CAT).join("5")).unwrap();
    let rel = ts.join(CAT).join("5/16500");
    fs::write(&rel, pages(&[0x0100_0000; 20], 40)).unwrap();
    set_old_mtime(&rel);
    std::os::unix::fs::symlink(&ts, pg.join("pg_tblspc/16400")).unwrap();
    let mut cfg = cfg(&root.join("bucket"), Compression::Lz4);
    cfg.delta_max_steps = 3;
    let storage: Arc<dyn Storage> = cfg.open_storage().unwrap();
    let req = DeltaRequest::default();
    backup(&cfg, &storage, &pg, 0x0200_0028, &req);
    write_page(&rel, 7, 0x0250_0000, 41);
    let d1 = backup(&cfg, &storage, &pg, 0x0300_0028, &req);
    assert!(d1.contains("_D_"));
    let fm = FilesMetadata::from_json(&get_bytes(storage.as_ref(), &files_metadata_key(&d1)).unwrap().unwrap(), "fm").unwrap();
    assert!(fm.files["/pg_tblspc/16400/PG_15_202209061/5/16500"].is_incremented);
    let t = root.join("r");
    let new = root.join("new16400");
    fetch_with(&cfg, &storage, "LATEST", &t, &TablespaceOptions { under: None, restore_spec: None, relocate: vec![("16400".into(), new.clone())] }, &no_log)
        .unwrap();
    assert!(fs::read(new.join(CAT).join("5/16500")).unwrap() == fs::read(&rel).unwrap());
    assert_eq!(fs::read_link(t.join("pg_tblspc/16400")).unwrap(), new);
    // Everything under one directory (what restore-drill asks for).
    let t = root.join("r2");
    fetch_with(&cfg, &storage, &d1, &t, &TablespaceOptions { under: Some(root.join("drill")), ..Default::default() }, &no_log).unwrap();
    assert_eq!(fs::read_link(t.join("pg_tblspc/16400")).unwrap(), root.join("drill/16400"));
    assert!(fs::read(root.join("drill/16400").join(CAT).join("5/16500")).unwrap() == fs::read(&rel).unwrap());
}
