//! WAL-G's `copy`: backups and the WAL they need, from one storage to another, object by object
//! without transforming payloads (the destination needs the same keys to restore).
//!
//! Invariants:
//! - A backup appears in the destination only whole: its sentinel (what makes a backup exist)
//!   is copied last, after every other object of the backup, its delta ancestors and the WAL
//!   from its start to its end. A copy stopped at any point leaves no visible partial backup.
//! - Every object written is read back from the destination and must have the size and XXH3-128
//!   of the bytes read from the source. Where the backup records an object's checksum (tar parts
//!   in `WalgExtParts`, files_metadata.json in the sentinel), the source bytes must match it too:
//!   a damaged source object is an error naming it, never copied as good (what was written of it
//!   is deleted again).
//! - Resumable: an object already in the destination with the same bytes is skipped (compared by
//!   size and hash, not by name). One with different bytes is a conflict for WAL and sentinels
//!   (another cluster's, or a different backup of the same name); inside a backup whose sentinel
//!   is not in the destination yet (an earlier copy that stopped), it is replaced.
//! - Named backups must be restorable from what is copied: a missing delta ancestor or a gap in
//!   the WAL from the backup's start to its end is an error before anything is written.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::list::{chain, find, list_backups, BackupInfo};
use super::walfiles::{list_wal, next_position, position_of, position_of_lsn, WalKind, WalObject};
use crate::error::{Error, Result};
use crate::format::integrity::{Hasher, ObjectRecord};
use crate::format::names::{
    files_metadata_key, sentinel_key, tar_partitions_prefix, BACKUP_PREFIX, IN_PROGRESS_PREFIX, WAL_PREFIX,
};
use crate::format::sentinel::FilesMetadata;
use crate::storage::{get_bytes, Storage};

/// Which backups to copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// Every backup and every WAL object.
    All,
    /// These backups (names or LATEST) with their delta ancestors, and the WAL they need.
    Names(Vec<String>),
}

#[derive(Clone, Debug)]
pub struct CopyRequest {
    pub selection: Selection,
    /// WAL-G's `--with-history`: with named backups, also every WAL object after their end.
    pub with_history: bool,
    /// Objects copied at once.
    pub concurrency: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Backups now in the destination, parents first.
    pub backups: Vec<String>,
    pub wal_objects: usize,
    /// Objects written (and verified).
    pub copied: usize,
    /// Objects already in the destination with the same bytes.
    pub skipped: usize,
    pub bytes_copied: u64,
}

/// One object to copy, with the checksum the backup records for it, if any.
struct Item {
    key: String,
    record: Option<ObjectRecord>,
    /// Replace different bytes in the destination instead of refusing (objects of a backup
    /// whose sentinel is not in the destination).
    replaceable: bool,
}

/// Copy what `req` selects from `from` to `to`. `wal_segment_size` locates each backup's last
/// segment. `log` gets one line per step.
pub fn copy(
    from: &dyn Storage,
    to: &dyn Storage,
    req: &CopyRequest,
    wal_segment_size: u64,
    log: &(dyn Fn(&str) + Sync),
) -> Result<CopyReport> {
    if from.describe() == to.describe() {
        return Err(Error::InvalidArgument(format!(
            "--from and --to are the same storage ({}); a WALG_*_PREFIX in the environment applies to both",
            from.describe()
        )));
    }
    let all = list_backups(from)?;
    let wal = list_wal(from)?;
    let (backups, wanted) = select(&all, &req.selection)?;
    let wal_items = select_wal(&wanted, &wal, req, wal_segment_size)?;
    log(&format!(
        "copying {} backup(s) and {} WAL object(s) from {} to {}",
        backups.len(),
        wal_items.len(),
        from.describe(),
        to.describe()
    ));
    to.prepare_write()?;
    let dest: HashMap<String, u64> =
        to.list(BACKUP_PREFIX)?.into_iter().chain(to.list(WAL_PREFIX)?).map(|o| (o.key, o.size)).collect();
    let mut report = CopyReport { wal_objects: wal_items.len(), ..Default::default() };

    // WAL first: once a sentinel is in the destination, everything it needs is there.
    let items: Vec<Item> = wal_items.iter().map(|w| Item { key: w.key.clone(), record: None, replaceable: false }).collect();
    run_items(from, to, &items, &dest, req.concurrency, &mut report, log)?;

    for b in &backups {
        let items = backup_items(from, b, &dest)?;
        log(&format!("copying backup {} ({} objects)", b.name, items.len() + 1));
        run_items(from, to, &items, &dest, req.concurrency, &mut report, log)?;
        let sentinel = Item { key: sentinel_key(&b.name), record: None, replaceable: false };
        run_items(from, to, std::slice::from_ref(&sentinel), &dest, 1, &mut report, log)?;
        report.backups.push(b.name.clone());
    }
    log(&format!(
        "copy done: {} backup(s), {} object(s) copied ({} bytes), {} already there",
        report.backups.len(),
        report.copied,
        report.bytes_copied,
        report.skipped
    ));
    Ok(report)
}

/// The selected backups and their delta ancestors, parents before children; and the selected
/// ones alone (whose WAL is copied: an ancestor is needed for its data, not for its WAL).
fn select<'a>(all: &'a [BackupInfo], selection: &Selection) -> Result<(Vec<&'a BackupInfo>, Vec<&'a BackupInfo>)> {
    let wanted: Vec<&BackupInfo> = match selection {
        Selection::All => all.iter().collect(),
        Selection::Names(names) if names.is_empty() => {
            return Err(Error::InvalidArgument("name the backups to copy, or --all".into()))
        }
        Selection::Names(names) => names
            .iter()
            .map(|n| match n.as_str() {
                // WAL-G's LATEST: the sentinel modified last (list::latest_backup).
                "LATEST" => all
                    .iter()
                    .max_by(|a, b| a.modified.cmp(&b.modified).then_with(|| a.name.cmp(&b.name)))
                    .ok_or_else(|| Error::NotFound("LATEST: there are no backups in the source storage".into())),
                _ => find(all, n),
            })
            .collect::<Result<_>>()?,
    };
    let mut depth: BTreeMap<&str, usize> = BTreeMap::new();
    for b in &wanted {
        let c = chain(all, &b.name);
        let root = c.last().expect("chain holds the backup itself");
        if let Some(parent) = root.delta_from() {
            return Err(Error::NotFound(format!(
                "backup {} is a delta whose base {parent} is not in the source storage: it cannot be restored, so it is not copied",
                root.name
            )));
        }
        for (i, x) in c.iter().enumerate() {
            depth.insert(&x.name, c.len() - 1 - i);
        }
    }
    let mut out: Vec<&BackupInfo> = depth.keys().map(|n| all.iter().find(|b| b.name == *n).expect("listed")).collect();
    out.sort_by_key(|b| (depth[b.name.as_str()], b.sentinel.start_time, b.name.clone()));
    Ok((out, wanted))
}

/// The WAL objects to copy: all of them for `All`; for named backups, timeline history files and
/// every object from each backup's start segment to its end segment (or on, with history),
/// after checking that each backup's own segments are all there.
fn select_wal<'a>(
    backups: &[&BackupInfo],
    wal: &'a [WalObject],
    req: &CopyRequest,
    wal_segment_size: u64,
) -> Result<Vec<&'a WalObject>> {
    let mut keep: BTreeSet<&str> = BTreeSet::new();
    for b in backups {
        let Some(start) = position_of(&b.wal_file_name) else { continue };
        let finish = position_of_lsn(b.sentinel.finish_lsn, wal_segment_size).max(start);
        let tli = b.timeline();
        let segments: BTreeSet<u64> =
            wal.iter().filter(|w| w.kind == WalKind::Segment && w.timeline == tli).map(|w| w.position).collect();
        let mut p = start;
        loop {
            if !segments.contains(&p) {
                let name = super::walfiles::name_of_position(tli, p);
                let msg = format!("WAL segment {name}, which backup {} needs, is not in the source storage", b.name);
                if req.selection == Selection::All {
                    // Copying everything: the destination gets what the source has.
                    break;
                }
                return Err(Error::NotFound(msg));
            }
            if p >= finish {
                break;
            }
            p = next_position(p, wal_segment_size);
        }
        for w in wal {
            let in_range = w.kind == WalKind::History
                || (w.timeline >= tli && w.position >= start && (req.with_history || w.position <= finish));
            if in_range && w.kind != WalKind::Other {
                keep.insert(&w.key);
            }
        }
    }
    Ok(wal.iter().filter(|w| req.selection == Selection::All || keep.contains(w.key.as_str())).collect())
}

/// Every object of backup `b` but its sentinel, with the checksums the backup records.
fn backup_items(from: &dyn Storage, b: &BackupInfo, dest: &HashMap<String, u64>) -> Result<Vec<Item>> {
    let replaceable = !dest.contains_key(&sentinel_key(&b.name));
    let mut records: BTreeMap<String, ObjectRecord> = BTreeMap::new();
    let fm_key = files_metadata_key(&b.name);
    if let Some(rec) = &b.sentinel.walg_ext_files_metadata {
        records.insert(fm_key.clone(), rec.clone());
        let bytes = get_bytes(from, &fm_key)?
            .ok_or_else(|| Error::corrupt(&fm_key, "missing from the source storage, though the sentinel records it"))?;
        rec.check_bytes(&fm_key, &bytes, "the sentinel")?;
        let fm = FilesMetadata::from_json(&bytes, &fm_key)?;
        let prefix = tar_partitions_prefix(&b.name);
        for (part, r) in fm.walg_ext_parts {
            records.insert(format!("{prefix}{part}"), r);
        }
    }
    let dir = format!("{BACKUP_PREFIX}{}/", b.name);
    let listed: BTreeSet<String> = from.list(&dir)?.into_iter().map(|o| o.key).collect();
    if let Some(missing) = records.keys().find(|k| !listed.contains(*k)) {
        return Err(Error::corrupt(missing, "missing from the source storage, though the backup records it"));
    }
    Ok(listed
        .into_iter()
        .filter(|k| !k.starts_with(IN_PROGRESS_PREFIX))
        .map(|key| Item { record: records.get(&key).cloned(), key, replaceable })
        .collect())
}

enum Done {
    Copied(u64),
    Skipped,
}

/// Copy `items` with `concurrency` threads; the first error stops the others' new work.
fn run_items(
    from: &dyn Storage,
    to: &dyn Storage,
    items: &[Item],
    dest: &HashMap<String, u64>,
    concurrency: usize,
    report: &mut CopyReport,
    log: &(dyn Fn(&str) + Sync),
) -> Result<()> {
    let next = AtomicUsize::new(0);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let (copied, skipped, bytes) = (AtomicUsize::new(0), AtomicUsize::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        for _ in 0..concurrency.clamp(1, items.len().max(1)) {
            s.spawn(|| loop {
                if first_error.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
                    return;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(item) = items.get(i) else { return };
                match copy_object(from, to, item, dest.get(&item.key).copied()) {
                    Ok(Done::Copied(n)) => {
                        bytes.fetch_add(n, Ordering::SeqCst);
                        let c = copied.fetch_add(1, Ordering::SeqCst) + 1;
                        if c % 100 == 0 {
                            log(&format!("{c} of {} objects copied", items.len()));
                        }
                    }
                    Ok(Done::Skipped) => {
                        skipped.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => {
                        first_error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    report.copied += copied.into_inner();
    report.skipped += skipped.into_inner();
    report.bytes_copied += bytes.into_inner();
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Read `r` (object `key`) to the end, handing each chunk to `each`; its size and XXH3-128.
fn stream(mut r: impl Read, key: &str, mut each: impl FnMut(&[u8]) -> Result<()>) -> Result<ObjectRecord> {
    let mut h = Hasher::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf).map_err(|e| Error::storage("read", key, e))?;
        if n == 0 {
            return Ok(ObjectRecord { size, xxh3: h.hex() });
        }
        h.update(&buf[..n]);
        size += n as u64;
        each(&buf[..n])?;
    }
}

/// Size and XXH3-128 of an object, streamed. None if it does not exist.
fn record_of(storage: &dyn Storage, key: &str) -> Result<Option<ObjectRecord>> {
    match storage.get(key)? {
        Some(r) => stream(r, key, |_| Ok(())).map(Some),
        None => Ok(None),
    }
}

fn copy_object(from: &dyn Storage, to: &dyn Storage, item: &Item, dest_size: Option<u64>) -> Result<Done> {
    let key = &item.key;
    if dest_size.is_some() {
        let there = record_of(to, key)?;
        let source = record_of(from, key)?.ok_or_else(|| Error::corrupt(key, "listed in the source storage, then gone"))?;
        check_source(item, &source)?;
        if there.as_ref() == Some(&source) {
            return Ok(Done::Skipped);
        }
        if !item.replaceable {
            return Err(Error::Conflict(format!(
                "{key} is already in {} with different content; refusing to overwrite",
                to.describe()
            )));
        }
    }
    let src = from.get(key)?.ok_or_else(|| Error::corrupt(key, "listed in the source storage, then gone"))?;
    let mut w = to.writer(key)?;
    let source = stream(src, key, |chunk| w.write_all(chunk).map_err(|e| Error::storage("write", key, e)))?;
    let size = source.size;
    if let Err(e) = check_source(item, &source) {
        drop(w); // never finished: not visible
        return Err(e);
    }
    w.finish()?;
    match record_of(to, key)? {
        Some(r) if r == source => Ok(Done::Copied(size)),
        other => {
            let _ = to.delete(key);
            let what = match other {
                Some(r) => format!("{} bytes with XXH3 {}", r.size, r.xxh3),
                None => "nothing".into(),
            };
            Err(Error::corrupt(
                key,
                format!("read back from {} as {what}; {} bytes with XXH3 {} were written", to.describe(), source.size, source.xxh3),
            ))
        }
    }
}

/// The source bytes match what the backup records for them.
fn check_source(item: &Item, source: &ObjectRecord) -> Result<()> {
    match &item.record {
        Some(r) if r != source => Err(Error::corrupt(
            &item.key,
            format!(
                "damaged in the source storage: {} bytes with XXH3 {}, the backup records {} bytes with XXH3 {}",
                source.size, source.xxh3, r.size, r.xxh3
            ),
        )),
        _ => Ok(()),
    }
}
