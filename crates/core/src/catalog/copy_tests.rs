//! `copy`: a delta chain and its WAL to another storage, restorable there; resumed copies,
//! damaged and missing source objects, conflicts.
use std::fs;
use std::sync::Arc;

use super::copy::{copy, CopyRequest, Selection};
use crate::backup::delta_tests::{make_chain, Chain};
use crate::backup::fetch;
use crate::codec::Compression;
use crate::config::Config;
use crate::error::ErrorKind;
use crate::format::names::{sentinel_key, tar_partitions_prefix, WAL_PREFIX};
use crate::storage::{get_bytes, Storage};

const SEG: u64 = 16 << 20;

fn no_log(_: &str) {}

/// The chain (full, delta, delta at segments 2, 3, 4) with WAL segments 2..=5 and a history file.
fn source() -> Chain {
    let ch = make_chain(Compression::Lz4);
    for n in 2..=5 {
        ch.storage.put(&format!("{WAL_PREFIX}00000001000000000000000{n}.lz4"), format!("segment {n}").as_bytes()).unwrap();
    }
    ch.storage.put(&format!("{WAL_PREFIX}00000002.history.lz4"), b"history").unwrap();
    ch
}

fn dest(ch: &Chain, name: &str) -> (Config, Arc<dyn Storage>) {
    let cfg = Config { storage: Config::for_file_storage(ch.root.join(name)).storage, ..ch.cfg.clone() };
    let s = cfg.open_storage().unwrap();
    (cfg, s)
}

fn req(selection: Selection) -> CopyRequest {
    CopyRequest { selection, with_history: false, concurrency: 3 }
}

fn keys(s: &dyn Storage, prefix: &str) -> Vec<String> {
    let mut k: Vec<String> = s.list(prefix).unwrap().into_iter().map(|o| o.key).collect();
    k.sort();
    k
}

#[test]
fn latest_delta_is_copied_with_its_chain_and_wal_and_restores_there() {
    let ch = source();
    let (dcfg, to) = dest(&ch, "copy");
    let r = copy(ch.storage.as_ref(), to.as_ref(), &req(Selection::Names(vec!["LATEST".into()])), SEG, &no_log).unwrap();
    assert_eq!(r.backups, ch.names, "the whole chain, parents first");
    assert_eq!(
        keys(to.as_ref(), WAL_PREFIX),
        [
            "wal_005/000000010000000000000004.lz4".to_string(),
            "wal_005/00000002.history.lz4".to_string(),
        ],
        "the newest backup's own WAL (start to end) and history files, not later segments"
    );
    assert_eq!(r.skipped, 0);
    // Restored from the copy: identical to a restore from the source.
    let (a, b) = (ch.root.join("restored-src"), ch.root.join("restored-copy"));
    fetch::fetch(&ch.cfg, &ch.storage, "LATEST", &a, &no_log).unwrap();
    fetch::fetch(&dcfg, &to, "LATEST", &b, &no_log).unwrap();
    for f in ["base/5/16384", "base/5/16385", "base/5/16390", "global/pg_control", "backup_label"] {
        assert_eq!(fs::read(a.join(f)).unwrap(), fs::read(b.join(f)).unwrap(), "{f}");
    }

    // Again: nothing to copy; with history the later segment comes along.
    let again = copy(ch.storage.as_ref(), to.as_ref(), &req(Selection::Names(vec!["LATEST".into()])), SEG, &no_log).unwrap();
    assert_eq!((again.copied, again.skipped > 0), (0, true), "{again:?}");
    let hist = CopyRequest { with_history: true, ..req(Selection::Names(vec![ch.names[1].clone()])) };
    let h = copy(ch.storage.as_ref(), to.as_ref(), &hist, SEG, &no_log).unwrap();
    assert_eq!(h.copied, 2, "segments 3 and 5 (4 is there) and nothing of the backups: {h:?}");
    assert!(to.exists("wal_005/000000010000000000000005.lz4").unwrap());
}

#[test]
fn all_copies_every_backup_and_wal_object() {
    let ch = source();
    let (_, to) = dest(&ch, "all");
    let r = copy(ch.storage.as_ref(), to.as_ref(), &req(Selection::All), SEG, &no_log).unwrap();
    assert_eq!(r.backups.len(), 3);
    assert_eq!(keys(to.as_ref(), WAL_PREFIX), keys(ch.storage.as_ref(), WAL_PREFIX));
    assert_eq!(keys(to.as_ref(), "basebackups_005/"), keys(ch.storage.as_ref(), "basebackups_005/"));
}

#[test]
fn an_interrupted_copy_is_invisible_and_resumes() {
    let ch = source();
    let (dcfg, to) = dest(&ch, "resume");
    let full = &ch.names[0];
    copy(ch.storage.as_ref(), to.as_ref(), &req(Selection::Names(vec![full.clone()])), SEG, &no_log).unwrap();
    // As if the copy had stopped before the sentinel, with one part written wrong.
    to.delete(&sentinel_key(full)).unwrap();
    let part = keys(to.as_ref(), &tar_partitions_prefix(full)).into_iter().find(|k| k.contains("/part_")).unwrap();
    to.put(&part, b"half written").unwrap();
    assert!(crate::catalog::list_backups(to.as_ref()).unwrap().is_empty(), "no sentinel, no backup");
    let r = copy(ch.storage.as_ref(), to.as_ref(), &req(Selection::Names(vec![full.clone()])), SEG, &no_log).unwrap();
    assert_eq!(r.copied, 2, "the bad part and the sentinel: {r:?}");
    fetch::fetch(&dcfg, &to, full, &ch.root.join("restored"), &no_log).unwrap();
}

#[test]
fn damaged_or_missing_source_objects_are_errors_and_nothing_is_committed() {
    let ch = source();
    let full = ch.names[0].clone();
    let part = keys(ch.storage.as_ref(), &tar_partitions_prefix(&full)).into_iter().find(|k| k.contains("/part_")).unwrap();
    let mut bytes = get_bytes(ch.storage.as_ref(), &part).unwrap().unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    ch.storage.put(&part, &bytes).unwrap();
    let (_, to) = dest(&ch, "damaged");
    let e = copy(ch.storage.as_ref(), to.as_ref(), &req(Selection::Names(vec![full.clone()])), SEG, &no_log).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains(&part) && e.to_string().contains("damaged in the source"), "{e}");
    assert!(!to.exists(&part).unwrap(), "what was written of it is gone");
    assert!(!to.exists(&sentinel_key(&full)).unwrap());

    // A segment the backup needs is missing: refused before anything is written.
    let ch = source();
    ch.storage.delete("wal_005/000000010000000000000003.lz4").unwrap();
    let (_, to) = dest(&ch, "nowal");
    let e = copy(ch.storage.as_ref(), to.as_ref(), &req(Selection::Names(vec![ch.names[1].clone()])), SEG, &no_log).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("000000010000000000000003"), "{e}");
    assert!(!ch.root.join("nowal").exists(), "not even the destination prefix was created");

    // A delta whose base was deleted from the source.
    let ch = source();
    for k in keys(ch.storage.as_ref(), &format!("basebackups_005/{}", ch.names[0])) {
        ch.storage.delete(&k).unwrap();
    }
    let (_, to) = dest(&ch, "nobase");
    let e = copy(ch.storage.as_ref(), to.as_ref(), &req(Selection::Names(vec!["LATEST".into()])), SEG, &no_log).unwrap_err();
    assert!(e.to_string().contains(&ch.names[0]), "{e}");
}

#[test]
fn different_wal_in_the_destination_is_a_conflict_and_the_same_storage_is_refused() {
    let ch = source();
    let (_, to) = dest(&ch, "conflict");
    to.put("wal_005/000000010000000000000002.lz4", b"another cluster").unwrap();
    let e = copy(ch.storage.as_ref(), to.as_ref(), &req(Selection::Names(vec![ch.names[0].clone()])), SEG, &no_log).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert_eq!(get_bytes(to.as_ref(), "wal_005/000000010000000000000002.lz4").unwrap().unwrap(), b"another cluster");
    assert!(!to.exists(&sentinel_key(&ch.names[0])).unwrap());
    let e = copy(ch.storage.as_ref(), ch.storage.as_ref(), &req(Selection::All), SEG, &no_log).unwrap_err();
    assert!(e.to_string().contains("same storage"), "{e}");
}
