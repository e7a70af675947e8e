//! Partial restore end to end in core: a full of ours (WalgExtDatabases) and a WAL-G-shaped
//! delta chain (DatabasesByNames with tables); only the database asked for gets its relation
//! files, the others keep their catalogs and get empty placeholders; bad names are refused
//! before anything is written.
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::delta::DeltaRequest;
use super::delta_tests::{backup, pages, pgdata as base_pgdata, set_old_mtime, write_page};
use super::fetch::{fetch_with, FetchOptions};
use super::push::{finish, push_data, Progress};
use super::tests::{as_if_walg, cfg, no_log, start, stop};
use crate::codec::Compression;
use crate::error::ErrorKind;
use crate::format::names::files_metadata_key;
use crate::storage::{get_bytes, Storage};

const OLD: u64 = 0x0100_0000;

/// Two user databases, 16384 ("crm") and 16390 ("shop"), each with a catalog file (1259), a
/// table (16400) and, in shop, a rewritten catalog (16401) and a fork.
fn pgdata(root: &Path) -> PathBuf {
    let pg = base_pgdata(root);
    for (db, seed) in [("16384", 30u8), ("16390", 40)] {
        fs::create_dir_all(pg.join(format!("base/{db}"))).unwrap();
        fs::write(pg.join(format!("base/{db}/PG_VERSION")), "15\n").unwrap();
        fs::write(pg.join(format!("base/{db}/1259")), pages(&[OLD; 3], seed)).unwrap();
        fs::write(pg.join(format!("base/{db}/16400")), pages(&[OLD; 8], seed + 1)).unwrap();
    }
    fs::write(pg.join("base/16390/16401"), pages(&[OLD; 2], 50)).unwrap();
    fs::write(pg.join("base/16390/16400_fsm"), vec![3u8; 8192]).unwrap();
    for f in ["base/16384/PG_VERSION", "base/16384/1259", "base/16384/16400", "base/16390/PG_VERSION", "base/16390/1259",
              "base/16390/16400", "base/16390/16401", "base/16390/16400_fsm"] {
        set_old_mtime(&pg.join(f));
    }
    pg
}

fn opts(dbs: &[&str]) -> FetchOptions {
    FetchOptions { restore_only: dbs.iter().map(|s| s.to_string()).collect(), ..Default::default() }
}

fn same(pg: &Path, out: &Path, f: &str) {
    assert_eq!(fs::read(pg.join(f)).unwrap(), fs::read(out.join(f)).unwrap(), "{f}");
}

fn placeholder(out: &Path, f: &str) {
    let m = fs::metadata(out.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    assert!(m.is_file() && m.len() == 0, "{f} is an empty placeholder ({} bytes)", m.len());
}

#[test]
fn our_full_backup_restores_one_database() {
    let dir = tempfile::tempdir().unwrap();
    let pg = pgdata(dir.path());
    let cfg = cfg(&dir.path().join("bucket"), Compression::Lz4);
    let storage: Arc<dyn Storage> = cfg.open_storage().unwrap();
    let name = "base_000000010000000000000002";
    let st = start(name, &pg);
    let mut data = push_data(&cfg, &storage, &st, &Progress::default(), &mut || Ok(())).unwrap();
    data.set_databases(BTreeMap::from([("crm".into(), 16384), ("shop".into(), 16390), ("postgres".into(), 5)]));
    finish(&cfg, &storage, &st, data, &stop()).unwrap();

    let out = dir.path().join("out");
    let logs = std::sync::Mutex::new(Vec::<String>::new());
    fetch_with(&cfg, &storage, name, &out, &opts(&["crm"]), &|l: &str| logs.lock().unwrap().push(l.into())).unwrap();
    for f in ["base/16384/16400", "base/16384/1259", "base/16390/1259", "base/16390/PG_VERSION", "base/5/16384", "base/1/1259", "global/1262"] {
        same(&pg, &out, f);
    }
    for f in ["base/16390/16400", "base/16390/16400_fsm", "base/16390/16401"] {
        placeholder(&out, f);
    }
    assert!(out.join("global/pg_control").exists(), "a complete restore");
    assert!(logs.lock().unwrap().iter().any(|l| l.contains("3 relation files") && l.contains("placeholders")), "{:?}", logs.lock().unwrap());

    // Names the backup does not know, and table names: refused before anything is written.
    for bad in [&["nope"][..], &["crm/orders"]] {
        let t = dir.path().join("bad");
        let e = fetch_with(&cfg, &storage, name, &t, &opts(bad), &no_log).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadInput, "{e}");
        assert!(!t.exists(), "{bad:?}: nothing written");
    }
}

#[test]
fn walg_shaped_delta_chain_restores_one_database_and_its_recorded_catalogs() {
    let dir = tempfile::tempdir().unwrap();
    let pg = pgdata(dir.path());
    let mut cfg = cfg(&dir.path().join("bucket"), Compression::Lz4);
    cfg.delta_max_steps = 3;
    let storage: Arc<dyn Storage> = cfg.open_storage().unwrap();
    let req = DeltaRequest::default();
    let full = backup(&cfg, &storage, &pg, 0x0200_0028, &req);
    // Both tables change after the full; shop's catalog 1259 does not.
    write_page(&pg.join("base/16384/16400"), 2, 0x0250_0000, 61);
    write_page(&pg.join("base/16390/16400"), 3, 0x0250_0000, 62);
    let delta = backup(&cfg, &storage, &pg, 0x0300_0028, &req);
    assert!(delta.contains("_D_"), "{delta}");

    // A backup without database names cannot be restored partially.
    let e = fetch_with(&cfg, &storage, "LATEST", &dir.path().join("t0"), &opts(&["crm"]), &no_log).unwrap_err();
    assert!(e.to_string().contains("records no database names"), "{e}");

    // As WAL-G writes them, with DatabasesByNames: shop's pg_class was rewritten into 16401.
    for name in [&full, &delta] {
        as_if_walg(storage.as_ref(), name);
        let key = files_metadata_key(name);
        let mut v: serde_json::Value = serde_json::from_slice(&get_bytes(storage.as_ref(), &key).unwrap().unwrap()).unwrap();
        v["DatabasesByNames"] = serde_json::json!({
            "crm": {"oid": 16384},
            "shop": {"oid": 16390, "tables_new": {
                "pg_catalog.pg_class": {"oid": 1259, "relfilenode": 16401},
                "public.t": {"oid": 16400, "relfilenode": 16400}
            }},
        });
        storage.put(&key, &serde_json::to_vec(&v).unwrap()).unwrap();
    }
    let out = dir.path().join("out");
    fetch_with(&cfg, &storage, "LATEST", &out, &opts(&["crm"]), &no_log).unwrap();
    for f in ["base/16384/16400", "base/16384/1259", "base/16390/1259", "base/16390/16401", "base/5/16384"] {
        same(&pg, &out, f);
    }
    for f in ["base/16390/16400", "base/16390/16400_fsm"] {
        placeholder(&out, f);
    }
    // And the other way round: shop whole, crm's table a placeholder.
    let out2 = dir.path().join("out2");
    fetch_with(&cfg, &storage, "LATEST", &out2, &opts(&["\"shop\""]), &no_log).unwrap();
    same(&pg, &out2, "base/16390/16400");
    placeholder(&out2, "base/16384/16400");
}
