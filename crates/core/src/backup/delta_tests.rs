//! Delta chains end to end in core: push full + deltas of a fake PGDATA of real-looking pages,
//! restore the chain, compare; WAL-G-shaped chains; missing and damaged links.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::Utc;

use super::delta::{check_base_at_start, choose_base, delta_name, BaseChoice, DeltaRequest};
use super::push::{finish, push_data, BackupStop, Progress};
use super::tests::{as_if_walg, cfg, no_log, start};
use super::fetch;
use crate::codec::Compression;
use crate::config::Config;
use crate::format::increment::tests::heap_page;
use crate::format::increment::PAGE_SIZE;
use crate::format::names::{files_metadata_key, lsn_to_string, sentinel_key, wal_file_name};
use crate::format::FilesMetadata;
use crate::storage::{get_bytes, Storage};

const OLD: Duration = Duration::from_secs(3600);

pub(super) fn set_old_mtime(path: &Path) {
    let f = fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - OLD).unwrap();
}

pub(super) fn pages(lsns: &[u64], seed: u8) -> Vec<u8> {
    lsns.iter().enumerate().flat_map(|(i, &l)| heap_page(l, seed.wrapping_add(i as u8))).collect()
}

/// Write page `block` of `file` with a page stamped `lsn`.
pub(super) fn write_page(file: &Path, block: usize, lsn: u64, seed: u8) {
    use std::os::unix::fs::FileExt;
    let f = fs::File::options().write(true).open(file).unwrap();
    f.write_all_at(&heap_page(lsn, seed), (block * PAGE_SIZE) as u64).unwrap();
}

pub(super) fn pgdata(root: &Path) -> PathBuf {
    let pg = root.join("pgdata");
    for d in ["base/1", "base/5", "global", "pg_wal", "pg_tblspc"] {
        fs::create_dir_all(pg.join(d)).unwrap();
    }
    let old = 0x0100_0000;
    fs::write(pg.join("PG_VERSION"), "15\n").unwrap();
    fs::write(pg.join("base/5/16384"), pages(&[old; 40], 1)).unwrap();
    fs::write(pg.join("base/5/16385"), pages(&[old; 10], 2)).unwrap();
    fs::write(pg.join("base/5/16386"), pages(&[old; 10], 3)).unwrap(); // dropped later: a part of its own
    fs::write(pg.join("base/5/16384_fsm"), vec![7u8; 3 * PAGE_SIZE]).unwrap();
    fs::write(pg.join("base/1/1259"), pages(&[old; 5], 4)).unwrap(); // never changes
    fs::write(pg.join("global/1262"), pages(&[old; 1], 5)).unwrap();
    fs::write(pg.join("global/pg_control"), vec![9u8; 8192]).unwrap();
    for f in ["PG_VERSION", "base/5/16384", "base/5/16385", "base/5/16386", "base/5/16384_fsm", "base/1/1259", "global/1262"] {
        set_old_mtime(&pg.join(f));
    }
    pg
}

pub(super) fn stop_at(start_lsn: u64) -> BackupStop {
    BackupStop {
        finish_lsn: start_lsn + 0x100,
        backup_label: format!("START WAL LOCATION: {} (file {})\n", lsn_to_string(start_lsn), wal_file_name(1, start_lsn, 16 << 20)),
        tablespace_map: String::new(),
        finish_time: Utc::now(),
    }
}

/// One backup as the backup worker takes it: choose the base, "start" at `lsn`, check the base,
/// copy, finish. Returns the name.
pub(super) fn backup(cfg: &Config, storage: &Arc<dyn Storage>, pg: &Path, lsn: u64, req: &DeltaRequest) -> String {
    let own = crate::format::names::backup_name(1, lsn, 16 << 20);
    let mut st = start(&own, pg);
    st.start_lsn = lsn;
    if let BaseChoice::Delta { base, explicit } = choose_base(cfg, storage.as_ref(), req, false).unwrap() {
        if check_base_at_start(&base, explicit, lsn, 1, st.system_identifier).unwrap().is_none() {
            st.name = delta_name(&own, &base.name);
            st.delta = Some(*base);
        }
    }
    let data = push_data(cfg, storage, &st, &Progress::default(), &mut || Ok(())).unwrap();
    finish(cfg, storage, &st, data, &stop_at(lsn)).unwrap();
    // Sentinel modification times decide LATEST.
    std::thread::sleep(Duration::from_millis(15));
    st.name
}

fn same_tree(a: &Path, b: &Path, files: &[&str]) {
    for f in files {
        let (x, y) = (fs::read(a.join(f)), fs::read(b.join(f)));
        match (x, y) {
            (Ok(x), Ok(y)) => assert!(x == y, "{f} differs ({} vs {} bytes)", x.len(), y.len()),
            (Err(_), Err(_)) => {}
            (x, y) => panic!("{f}: {:?} vs {:?}", x.map(|v| v.len()), y.map(|v| v.len())),
        }
    }
}

const FILES: &[&str] = &[
    "PG_VERSION", "base/5/16384", "base/5/16385", "base/5/16386", "base/5/16384_fsm", "base/1/1259", "global/1262",
    "global/pg_control", "base/5/16390",
];

fn fm(storage: &dyn Storage, name: &str) -> FilesMetadata {
    FilesMetadata::from_json(&get_bytes(storage, &files_metadata_key(name)).unwrap().unwrap(), "fm").unwrap()
}

pub(crate) struct Chain {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) root: PathBuf,
    pub(crate) pg: PathBuf,
    pub(crate) cfg: Config,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) names: Vec<String>,
}

/// full, then two deltas with changed, new, truncated, dropped and unchanged files.
pub(crate) fn make_chain(c: Compression) -> Chain {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let pg = pgdata(&root);
    let mut cfg = cfg(&root.join("bucket"), c);
    cfg.delta_max_steps = 3;
    let storage: Arc<dyn Storage> = cfg.open_storage().unwrap();
    let req = DeltaRequest::default();
    let full = backup(&cfg, &storage, &pg, 0x0200_0028, &req);

    // Between the full and delta 1: pages 3 and 30 change, 2 pages are added (one new, all
    // zeros), 16385 is cut to 4 pages, the fsm changes, a new table appears.
    write_page(&pg.join("base/5/16384"), 3, 0x0250_0000, 11);
    write_page(&pg.join("base/5/16384"), 30, 0x0250_0000, 12);
    {
        let mut f = fs::File::options().append(true).open(pg.join("base/5/16384")).unwrap();
        use std::io::Write;
        f.write_all(&heap_page(0x0260_0000, 13)).unwrap();
        f.write_all(&[0u8; PAGE_SIZE]).unwrap();
    }
    fs::File::options().write(true).open(pg.join("base/5/16385")).unwrap().set_len(4 * PAGE_SIZE as u64).unwrap();
    fs::write(pg.join("base/5/16384_fsm"), vec![8u8; 3 * PAGE_SIZE]).unwrap();
    // Changed, but long enough before the next backups for them to trust its mtime.
    set_old_mtime(&pg.join("base/5/16384_fsm"));
    fs::write(pg.join("base/5/16390"), pages(&[0x0270_0000; 2], 14)).unwrap();
    let d1 = backup(&cfg, &storage, &pg, 0x0300_0028, &req);

    // Between delta 1 and 2: page 3 changes again, 16385 grows back to 6 (page 5 new), 16386 is
    // dropped, 16390 changes.
    write_page(&pg.join("base/5/16384"), 3, 0x0350_0000, 21);
    {
        let f = fs::File::options().write(true).open(pg.join("base/5/16385")).unwrap();
        f.set_len(6 * PAGE_SIZE as u64).unwrap();
    }
    write_page(&pg.join("base/5/16385"), 4, 0x0350_0000, 22);
    fs::remove_file(pg.join("base/5/16386")).unwrap();
    write_page(&pg.join("base/5/16390"), 1, 0x0360_0000, 23);
    let d2 = backup(&cfg, &storage, &pg, 0x0400_0028, &req);
    Chain { _dir: dir, root, pg, cfg, storage, names: vec![full, d1, d2] }
}

#[test]
fn full_delta_delta_restores_the_newest_state() {
    for c in [Compression::Lz4, Compression::Zstd { level: 1 }] {
        let ch = make_chain(c);
        let [full, d1, d2] = [&ch.names[0], &ch.names[1], &ch.names[2]];
        assert_eq!(full, "base_000000010000000000000002");
        assert_eq!(d1, "base_000000010000000000000003_D_000000010000000000000002");
        assert_eq!(d2, "base_000000010000000000000004_D_000000010000000000000003");

        // The sentinels carry the four Delta* keys together.
        let s2 = crate::format::Sentinel::from_json(&get_bytes(ch.storage.as_ref(), &sentinel_key(d2)).unwrap().unwrap(), "s").unwrap();
        assert_eq!((s2.delta_from.as_deref(), s2.delta_full_name.as_deref(), s2.delta_count, s2.delta_lsn),
                   (Some(d1.as_str()), Some(full.as_str()), Some(2), Some(0x0300_0028)));
        let raw: serde_json::Value = serde_json::from_slice(&get_bytes(ch.storage.as_ref(), &sentinel_key(full)).unwrap().unwrap()).unwrap();
        assert!(["DeltaFrom", "DeltaLSN", "DeltaFullName", "DeltaCount"].iter().all(|k| raw.get(k).is_none()));

        // What delta 1 stored: increments of the changed relation files, skipped unchanged ones.
        let f1 = fm(ch.storage.as_ref(), d1);
        let d = |n: &str| &f1.files[n];
        assert!(d("/base/5/16384").is_incremented && !d("/base/5/16384").is_skipped);
        // 2 changed + 2 added pages.
        assert_eq!(d("/base/5/16384").size, Some(crate::format::increment::encoded_len(4)));
        assert!(d("/base/5/16385").is_incremented, "cut: an increment of 0 pages with the new size");
        assert_eq!(d("/base/5/16385").size, Some(crate::format::increment::encoded_len(0)));
        assert!(d("/base/1/1259").is_skipped && d("/PG_VERSION").is_skipped && d("/global/1262").is_skipped);
        assert!(!d("/base/5/16384_fsm").is_incremented && !d("/base/5/16384_fsm").is_skipped, "fsm: whole");
        assert!(!d("/base/5/16390").is_incremented, "new file: whole");
        assert!(f1.tar_file_sets.values().flatten().all(|e| e != "/base/1/1259"), "skipped files are in no tar");
        let f2 = fm(ch.storage.as_ref(), d2);
        assert!(!f2.files.contains_key("/base/5/16386"));
        assert!(f2.files["/base/5/16390"].is_incremented);
        assert!(f2.files["/base/5/16384_fsm"].is_skipped);

        // Restore the chain: the newest state, pg_control last.
        let logs = std::sync::Mutex::new(Vec::<String>::new());
        let log = |l: &str| logs.lock().unwrap().push(l.to_string());
        let target = ch.root.join("restore");
        let sum = fetch(&ch.cfg, &ch.storage, "LATEST", &target, &log).unwrap();
        assert_eq!(&sum.backup, d2);
        same_tree(&ch.pg, &target, FILES);
        assert!(!target.join("base/5/16386").exists());
        assert_eq!(fs::read_to_string(target.join("backup_label")).unwrap(), stop_at(0x0400_0028).backup_label);
        let logs = logs.into_inner().unwrap();
        assert!(logs.iter().any(|l| l.contains("a chain of 3 backups")), "{logs:?}");

        // An intermediate delta restores its own state.
        let t1 = ch.root.join("restore-d1");
        fetch(&ch.cfg, &ch.storage, d1, &t1, &no_log).unwrap();
        assert!(t1.join("base/5/16386").exists());
        assert_eq!(fs::metadata(t1.join("base/5/16385")).unwrap().len(), 4 * PAGE_SIZE as u64);

        // The list shows base, chain root and step.
        let list = crate::catalog::list_backups(ch.storage.as_ref()).unwrap();
        let b = list.iter().find(|b| &b.name == d2).unwrap();
        assert!(!b.is_full());
        assert_eq!(b.detail_json()["delta_count"], 2);
    }
}

#[test]
fn walg_shaped_chain_restores_and_only_needed_parts_are_read() {
    let ch = make_chain(Compression::Lz4);
    // Without any of our records: WAL-G's reader view.
    for n in &ch.names {
        as_if_walg(ch.storage.as_ref(), n);
    }
    let target = ch.root.join("restore");
    fetch(&ch.cfg, &ch.storage, &ch.names[2], &target, &no_log).unwrap();
    same_tree(&ch.pg, &target, FILES);

    // A full part that holds nothing the chain needs is not even read: damage it.
    let full = &ch.names[0];
    let f = fm(ch.storage.as_ref(), full);
    let unneeded = f
        .tar_file_sets
        .iter()
        .find(|(p, e)| p.starts_with("part_") && e.iter().all(|x| !x.starts_with("/base/1") && !x.starts_with("/PG_VERSION") && !x.starts_with("/global/") && x != "/base/5/16384" && x != "/base/5/16385"))
        .map(|(p, _)| p.clone())
        .expect("a part of the full that the chain does not need");
    let key = format!("{}{unneeded}", crate::format::names::tar_partitions_prefix(full));
    let good = get_bytes(ch.storage.as_ref(), &key).unwrap().unwrap();
    ch.storage.put(&key, &vec![0x42u8; good.len()]).unwrap();
    fetch(&ch.cfg, &ch.storage, &ch.names[2], &ch.root.join("restore2"), &no_log).unwrap();
    // A needed part damaged the same way is caught.
    let (needed, _) = f.tar_file_sets.iter().find(|(_, e)| e.iter().any(|x| x == "/base/1/1259")).unwrap();
    let key = format!("{}{needed}", crate::format::names::tar_partitions_prefix(full));
    let len = get_bytes(ch.storage.as_ref(), &key).unwrap().unwrap().len();
    ch.storage.put(&key, &vec![0x42u8; len]).unwrap();
    let err = fetch(&ch.cfg, &ch.storage, &ch.names[2], &ch.root.join("restore3"), &no_log).unwrap_err();
    assert!(err.to_string().contains(needed.as_str()), "{err}");
}

#[test]
fn a_chain_without_its_base_or_with_a_damaged_link_is_refused() {
    let ch = make_chain(Compression::Lz4);
    let [full, d1, d2] = [&ch.names[0], &ch.names[1], &ch.names[2]];

    // A damaged increment: the restore fails naming the part, and pg_control is absent.
    let f2 = fm(ch.storage.as_ref(), d2);
    let (part, _) = f2.tar_file_sets.iter().find(|(_, e)| e.iter().any(|x| x == "/base/5/16384")).unwrap();
    let key = format!("{}{part}", crate::format::names::tar_partitions_prefix(d2));
    let good = get_bytes(ch.storage.as_ref(), &key).unwrap().unwrap();
    let mut tar_bytes = Vec::new();
    {
        let p = ch.cfg.pipeline();
        use std::io::Read;
        p.reader(&key, Box::new(std::io::Cursor::new(good.clone()))).unwrap().read_to_end(&mut tar_bytes).unwrap();
    }
    let at = tar_bytes.windows(4).position(|w| w == crate::format::increment::MAGIC).unwrap();
    tar_bytes[at + 1] = b'X';
    ch.storage.put(&key, &ch.cfg.pipeline().encode_bytes(&tar_bytes).unwrap()).unwrap();
    as_if_walg(ch.storage.as_ref(), d2); // so the part's own checksum does not catch it first
    let t = ch.root.join("r-bad");
    let err = fetch(&ch.cfg, &ch.storage, d2, &t, &no_log).unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains(part) && err.to_string().contains("bad magic"), "{err}");
    assert!(!t.join("global/pg_control").exists());
    ch.storage.put(&key, &good).unwrap();

    // The base is deleted: NotFound, naming the missing backup, nothing written.
    let skey = sentinel_key(d1);
    let sentinel = get_bytes(ch.storage.as_ref(), &skey).unwrap().unwrap();
    ch.storage.delete(&skey).unwrap();
    let t = ch.root.join("r-nobase");
    let err = fetch(&ch.cfg, &ch.storage, d2, &t, &no_log).unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains(d1.as_str()) && err.to_string().contains("chain"), "{err}");
    assert!(!t.exists());

    // The base's name now holds another backup (other start LSN): refused as corrupt.
    let mut other = crate::format::Sentinel::from_json(&sentinel, "s").unwrap();
    other.lsn += 0x10;
    ch.storage.put(&skey, &other.to_json()).unwrap();
    let err = fetch(&ch.cfg, &ch.storage, d2, &ch.root.join("r-other"), &no_log).unwrap_err();
    assert!(err.to_string().contains("DeltaLSN"), "{err}");
    ch.storage.put(&skey, &sentinel).unwrap();

    // Unreachable storage is never NotFound.
    let gone = Config { storage: crate::config::StorageConfig::File { prefix: ch.root.join("nowhere") }, ..ch.cfg.clone() };
    let gs: Arc<dyn Storage> = gone.open_storage().unwrap();
    let err = fetch(&gone, &gs, d2, &ch.root.join("r-gone"), &no_log).unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::Unreachable, "{err}");
    let _ = full;
}

#[test]
fn base_choice_follows_walg_rules() {
    let ch = make_chain(Compression::None);
    let s = ch.storage.as_ref();
    let req = DeltaRequest::default();
    let mut cfg = ch.cfg.clone();
    // max 3: the 3rd delta is allowed; max 2: a full.
    match choose_base(&cfg, s, &req, false).unwrap() {
        BaseChoice::Delta { base, explicit } => {
            assert_eq!((base.name.as_str(), base.count, explicit), (ch.names[2].as_str(), 3, false));
            assert_eq!(base.full_name, ch.names[0]);
        }
        other => panic!("{other:?}"),
    }
    cfg.delta_max_steps = 2;
    assert!(matches!(choose_base(&cfg, s, &req, false).unwrap(), BaseChoice::Full { reason } if reason.contains("WALG_DELTA_MAX_STEPS is 2")));
    cfg.delta_max_steps = 0;
    assert!(matches!(choose_base(&cfg, s, &req, false).unwrap(), BaseChoice::Full { .. }));
    cfg.delta_max_steps = 5;
    // LATEST_FULL: from the full, counted as WAL-G counts (from the newest backup).
    cfg.delta_from_full = true;
    match choose_base(&cfg, s, &req, false).unwrap() {
        BaseChoice::Delta { base, .. } => assert_eq!((base.name.as_str(), base.count), (ch.names[0].as_str(), 3)),
        other => panic!("{other:?}"),
    }
    cfg.delta_from_full = false;
    // full => true.
    assert!(matches!(choose_base(&cfg, s, &DeltaRequest { full: true, ..req.clone() }, false).unwrap(), BaseChoice::Full { .. }));
    // By name.
    let by_name = DeltaRequest { from_name: Some(ch.names[1].clone()), ..req.clone() };
    match choose_base(&cfg, s, &by_name, false).unwrap() {
        BaseChoice::Delta { base, explicit } => assert_eq!((base.name.as_str(), base.count, explicit), (ch.names[1].as_str(), 2, true)),
        other => panic!("{other:?}"),
    }
    let missing = DeltaRequest { from_name: Some("base_0000000100000000000000AA".into()), ..req.clone() };
    assert_eq!(choose_base(&cfg, s, &missing, false).unwrap_err().kind(), crate::ErrorKind::NotFound);
    // A permanent base: a full, unless the new backup is permanent too.
    crate::catalog::mark::mark(s, &ch.names[2], true).unwrap();
    assert!(matches!(choose_base(&cfg, s, &req, false).unwrap(), BaseChoice::Full { reason } if reason.contains("permanent")));
    assert!(matches!(choose_base(&cfg, s, &req, true).unwrap(), BaseChoice::Delta { .. }));
    // No backups: full.
    let empty = ch.root.join("empty");
    fs::create_dir_all(&empty).unwrap();
    let e = crate::storage::FsStorage::new(&empty);
    assert!(matches!(choose_base(&cfg, &e, &req, false).unwrap(), BaseChoice::Full { reason } if reason.contains("no backup")));
}

/// A delta whose pages come from WAL maps naming `blocks` of database 5 (and `events`).
fn mapped_delta(
    ch: &Chain,
    lsn: u64,
    blocks: &[(u32, u32)],
    events: Vec<(u64, crate::wal::blocks::FileEvent)>,
    check: bool,
) -> crate::error::Result<String> {
    use super::delta_map::{plan, MapRange, MapSource, PagePlan};
    use crate::wal::blocks::{BlockRef, End, RelFileNode, Scan, SegmentMap, Start};
    let own = crate::format::names::backup_name(1, lsn, 16 << 20);
    let mut st = start(&own, &ch.pg);
    st.start_lsn = lsn;
    let BaseChoice::Delta { base, .. } = choose_base(&ch.cfg, ch.storage.as_ref(), &DeltaRequest::default(), false).unwrap() else {
        panic!("no delta")
    };
    let range = MapRange { timeline: 1, from: base.start_lsn, to: lsn, wal_segment_size: 16 << 20, system_identifier: st.system_identifier };
    let mut blocks: Vec<BlockRef> =
        blocks.iter().map(|&(rel, block)| BlockRef { rel: RelFileNode { spc: 1663, db: 5, rel }, fork: 0, block }).collect();
    blocks.sort();
    let mut first = true;
    let pages = plan(&range, &mut |name: &str| {
        let (_, segno) = crate::format::names::parse_wal_file_name(name).unwrap();
        let scan = Scan {
            segment_lsn: segno << 24,
            system_id: st.system_identifier,
            timeline: 1,
            start: Start::AtRecord,
            end: End::SegmentEnd,
            records: 1,
        };
        let (blocks, events) = if std::mem::take(&mut first) { (blocks.clone(), events.clone()) } else { (vec![], vec![]) };
        Ok(MapSource::Storage(SegmentMap { scan, blocks, events }))
    });
    assert!(matches!(pages, PagePlan::Maps(_)), "{pages:?}");
    st.name = delta_name(&own, &base.name);
    st.delta = Some(*base);
    st.delta_pages = Some(pages);
    st.delta_map_check = check;
    let data = push_data(&ch.cfg, &ch.storage, &st, &Progress::default(), &mut || Ok(()))?;
    finish(&ch.cfg, &ch.storage, &st, data, &stop_at(lsn))?;
    Ok(st.name)
}

#[test]
fn a_delta_from_wal_maps_reads_only_the_named_pages_and_the_proving_mode_catches_a_miss() {
    use crate::wal::blocks::{FileEvent, RelFileNode};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let pg = pgdata(&root);
    let mut cfg = cfg(&root.join("bucket"), Compression::Lz4);
    cfg.delta_max_steps = 3;
    let storage: Arc<dyn Storage> = cfg.open_storage().unwrap();
    backup(&cfg, &storage, &pg, 0x0200_0028, &DeltaRequest::default());
    let ch = Chain { _dir: dir, root, pg, cfg, storage, names: vec![] };

    // Changed in the range: pages 3 and 30 of 16384, page 1 of 16385; 16386 is truncated; a
    // page of 1259 changed long ago (its LSN is before the base), and the file's mtime too.
    write_page(&ch.pg.join("base/5/16384"), 3, 0x0250_0000, 11);
    write_page(&ch.pg.join("base/5/16384"), 30, 0x0250_0000, 12);
    write_page(&ch.pg.join("base/5/16385"), 1, 0x0260_0000, 13);
    fs::File::options().write(true).open(ch.pg.join("base/5/16386")).unwrap().set_len(2 * PAGE_SIZE as u64).unwrap();
    let truncate = FileEvent::Truncate { rel: RelFileNode { spc: 1663, db: 5, rel: 16386 }, blocks: 2, flags: 1 };

    // Maps that miss page 30: the proving mode stops the backup, naming the file and block.
    let e = mapped_delta(&ch, 0x0300_0028, &[(16384, 3), (16385, 1)], vec![], true).unwrap_err().to_string();
    assert!(e.contains("/base/5/16384") && e.contains("[30]") && e.contains("delta_map_check"), "{e}");

    // Complete maps: only the named pages are stored, the truncated file whole, and the chain
    // restores the newest state.
    let named = [(16384, 3), (16384, 30), (16385, 1), (16384, 9999)];
    let d = mapped_delta(&ch, 0x0300_0028, &named, vec![(0x0280_0000, truncate)], true).unwrap();
    let f = fm(ch.storage.as_ref(), &d);
    assert_eq!(f.files["/base/5/16384"].size, Some(crate::format::increment::encoded_len(2)), "pages 3 and 30 (9999 is past the end)");
    assert_eq!(f.files["/base/5/16385"].size, Some(crate::format::increment::encoded_len(1)));
    assert!(!f.files["/base/5/16386"].is_incremented && !f.files["/base/5/16386"].is_skipped, "truncated in the range: whole");
    let s = crate::format::Sentinel::from_json(&get_bytes(ch.storage.as_ref(), &sentinel_key(&d)).unwrap().unwrap(), "s").unwrap();
    assert_eq!(s.walg_ext_delta_pages.as_deref(), Some("wal-maps"));
    let target = ch.root.join("restore");
    fetch(&ch.cfg, &ch.storage, "LATEST", &target, &no_log).unwrap();
    same_tree(&ch.pg, &target, FILES);
}
