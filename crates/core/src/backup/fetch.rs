//! Base backup restore: data parts in parallel, then backup_label.tar, then pg_control.tar, so
//! an interrupted restore never looks like a startable cluster.
//!
//! A restore is right or it fails. It reads exactly the tar objects `files_metadata.json`
//! records (a stray `part_` left by an aborted earlier attempt is ignored, and logged), checks
//! each recorded object's presence and stored size before writing anything, its XXH3-128 while it
//! streams (our backups), every recorded entry and file on the way out, and writes pg_control
//! only when all of that passed. Backups written by WAL-G are checked as far as their metadata
//! allows; without files metadata the parts come from a listing (logged as a weaker check).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, DirBuilder, File};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::threads::{catch_panic, spawn_scoped};
use crate::catalog::latest_backup;
use crate::codec::{read_error, Pipeline, ReadAhead};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::format::integrity::{settle, ObjectRecord, VerifyingReader};
use crate::format::names::{files_metadata_key, lsn_to_string, metadata_key, parse_lsn, sentinel_key, tar_partitions_prefix};
use crate::format::sentinel::{BackupMetadata, FileDescription, FilesMetadata, Sentinel, SENTINEL_SUM_KEY};
use crate::format::tar::{extract_tar_from, extract_tar_with, ExtractStats};
use super::chain::{self, Needs, StepFiles};
use super::partial::{self, RestoreOnly};
use super::tablespaces::{self, TablespaceOptions};
use crate::format::tablespace::Tablespace;
use crate::storage::{get_bytes, Storage};

/// "LATEST" (newest sentinel) or an exact backup name that has a sentinel.
pub fn resolve_backup_name(storage: &dyn Storage, name: &str) -> Result<String> {
    if name == "LATEST" {
        return latest_backup(storage)?
            .map(|b| b.name)
            .ok_or_else(|| Error::NotFound(format!("no backups in {}", storage.describe())));
    }
    if name.is_empty() || name.contains('/') {
        return Err(Error::Format(format!("invalid backup name {name:?}")));
    }
    if !storage.exists(&sentinel_key(name))? {
        return Err(Error::NotFound(format!("backup {name} in {} (no sentinel)", storage.describe())));
    }
    Ok(name.to_string())
}

#[derive(Clone, Debug, PartialEq)]
pub struct FetchSummary {
    pub backup: String,
    /// Regular files written.
    pub files: u64,
    /// Bytes of file data written.
    pub bytes: u64,
}

/// Make sure `target` is a new or empty directory with mode 0700.
fn prepare_target(target: &Path) -> Result<()> {
    match fs::symlink_metadata(target) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            DirBuilder::new().recursive(true).mode(0o700).create(target).map_err(|e| Error::io(target, e))
        }
        Err(e) => Err(Error::io(target, e)),
        Ok(m) if !m.is_dir() => Err(Error::io(
            target,
            io::Error::new(io::ErrorKind::AlreadyExists, "restore target exists and is not a directory"),
        )),
        Ok(_) => {
            let mut entries = fs::read_dir(target).map_err(|e| Error::io(target, e))?;
            if entries.next().is_some() {
                return Err(Error::io(
                    target,
                    io::Error::new(io::ErrorKind::AlreadyExists, "restore target directory is not empty"),
                ));
            }
            fs::set_permissions(target, fs::Permissions::from_mode(0o700)).map_err(|e| Error::io(target, e))
        }
    }
}

/// One tar object to restore, as the backup's metadata records it.
#[derive(Clone, Debug)]
struct PartPlan {
    key: String,
    /// Stored size and hash (our backups); None for WAL-G's and when restoring from a listing.
    record: Option<ObjectRecord>,
    /// Entry names `TarFileSets` records for it; None when restoring from a listing.
    entries: Option<Vec<String>>,
}

/// Everything a restore reads, decided before anything is written.
struct Plan {
    data: Vec<PartPlan>,
    label: PartPlan,
    control: PartPlan,
    files: Option<RecordedFiles>,
}

/// What `Files` says must come out of a restore.
struct RecordedFiles {
    /// files_metadata.json's key.
    fm_key: String,
    files: BTreeMap<String, FileDescription>,
    /// Entry name -> key of the part `TarFileSets` puts it in.
    where_is: BTreeMap<String, String>,
    /// The databases the backup records (for partial restore).
    databases: BTreeMap<String, partial::RecordedDatabase>,
}

const FILES_METADATA: &str = "files_metadata.json";

fn is_tar_named(base: &str, stem: &str) -> bool {
    base == stem || base.strip_prefix(stem).is_some_and(|rest| rest.starts_with('.'))
}

/// Objects directly under the backup's tar_partitions/: base name -> stored size.
fn list_parts(storage: &dyn Storage, prefix: &str) -> Result<BTreeMap<String, u64>> {
    Ok(storage
        .list(prefix)?
        .into_iter()
        .filter_map(|o| {
            let base = o.key[prefix.len()..].to_string();
            (!base.is_empty() && !base.contains('/')).then_some((base, o.size))
        })
        .collect())
}

/// The weaker plan for a backup without usable files metadata: whatever `part_*`,
/// backup_label.tar.* and pg_control.tar.* the listing shows (a missing data part goes unseen).
fn plan_from_listing(prefix: &str, listed: &BTreeMap<String, u64>) -> Result<Plan> {
    let find = |stem: &str| {
        listed.keys().find(|b| is_tar_named(b, stem)).map(|b| PartPlan { key: format!("{prefix}{b}"), record: None, entries: None })
    };
    let missing = |stem: &str| Error::corrupt(format!("{prefix}{stem}"), "missing from storage (no object with any extension): the backup is incomplete");
    let label = find("backup_label.tar").ok_or_else(|| missing("backup_label.tar"))?;
    let control = find("pg_control.tar").ok_or_else(|| missing("pg_control.tar"))?;
    let data = listed
        .keys()
        .filter(|b| b.starts_with("part_"))
        .map(|b| PartPlan { key: format!("{prefix}{b}"), record: None, entries: None })
        .collect();
    Ok(Plan { data, label, control, files: None })
}

/// Read the backup's metadata and decide exactly which objects to restore, checking every
/// record against storage (presence, stored size) before the target is touched.
fn plan(storage: &dyn Storage, backup: &str, sentinel: &Sentinel, log: &(dyn Fn(&str) + Sync)) -> Result<Plan> {
    let prefix = tar_partitions_prefix(backup);
    let fm_key = files_metadata_key(backup);
    let listed = list_parts(storage, &prefix)?;
    let weaker = |why: &str| {
        log(&format!(
            "{backup}: {why}; restoring the tar parts found by listing {prefix}: a missing data part or a stray \
             one cannot be detected, only each object's own stream checks apply"
        ))
    };
    if sentinel.files_metadata_disabled {
        weaker("the sentinel says FilesMetadataDisabled");
        return plan_from_listing(&prefix, &listed);
    }
    let Some(bytes) = get_bytes(storage, &fm_key)? else {
        if sentinel.walg_ext_files_metadata.is_some() {
            return Err(Error::corrupt(&fm_key, "missing from storage, though the sentinel records it: the backup is incomplete"));
        }
        weaker(&format!("no {fm_key}"));
        return plan_from_listing(&prefix, &listed);
    };
    if let Some(rec) = &sentinel.walg_ext_files_metadata {
        rec.check_bytes(&fm_key, &bytes, "the sentinel")?;
    }
    let fm = FilesMetadata::from_json(&bytes, &fm_key)?;
    if fm.tar_file_sets.is_empty() {
        if sentinel.walg_ext_files_metadata.is_some() {
            return Err(Error::corrupt(&fm_key, "records no tar parts"));
        }
        weaker(&format!("{fm_key} records no tar parts"));
        return plan_from_listing(&prefix, &listed);
    }
    let ours = !fm.walg_ext_parts.is_empty();
    if ours {
        if let Some(name) = fm.walg_ext_parts.keys().find(|n| !fm.tar_file_sets.contains_key(*n)) {
            return Err(Error::corrupt(&fm_key, format!("WalgExtParts has {name}, which TarFileSets does not list")));
        }
        let stored: u64 = fm.walg_ext_parts.values().map(|r| r.size).sum();
        if sentinel.compressed_size > 0 && stored != sentinel.compressed_size as u64 {
            return Err(Error::corrupt(
                &fm_key,
                format!("its parts add up to {stored} bytes, the sentinel's CompressedSize is {}", sentinel.compressed_size),
            ));
        }
    } else {
        log(&format!("{backup}: {fm_key} has no part checksums (written by WAL-G?): checking that every recorded part and file is restored, not the parts' content"));
    }
    let mut data = Vec::new();
    let (mut label, mut control) = (None, None);
    let mut where_is = BTreeMap::new();
    for (name, entries) in &fm.tar_file_sets {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(Error::corrupt(&fm_key, format!("bad tar part name {name:?}")));
        }
        let key = format!("{prefix}{name}");
        let record = fm.walg_ext_parts.get(name).cloned();
        if ours && record.is_none() {
            return Err(Error::corrupt(&fm_key, format!("no size and checksum recorded for {name}")));
        }
        match (listed.get(name), &record) {
            (None, _) => {
                return Err(Error::corrupt(
                    &key,
                    format!("missing from storage, though {FILES_METADATA} records it: the backup is incomplete"),
                ))
            }
            (Some(&size), Some(rec)) if size != rec.size => {
                return Err(Error::corrupt(&key, format!("{size} bytes in storage, {FILES_METADATA} records {}", rec.size)))
            }
            _ => {}
        }
        for e in entries {
            where_is.insert(e.clone(), key.clone());
        }
        let part = PartPlan { key, record, entries: Some(entries.clone()) };
        if is_tar_named(name, "backup_label.tar") {
            label = Some(part);
        } else if is_tar_named(name, "pg_control.tar") {
            control = Some(part);
        } else {
            data.push(part);
        }
    }
    // WAL-G's metadata may leave these two out of TarFileSets: then they come from the listing.
    let unrecorded = |stem: &str| -> Result<PartPlan> {
        let b = listed.keys().find(|b| is_tar_named(b, stem)).ok_or_else(|| {
            Error::corrupt(format!("{prefix}{stem}"), "missing from storage (no object with any extension): the backup is incomplete")
        })?;
        Ok(PartPlan { key: format!("{prefix}{b}"), record: None, entries: None })
    };
    let label = match label {
        Some(p) => p,
        None if ours => return Err(Error::corrupt(&fm_key, "records no backup_label.tar")),
        None => unrecorded("backup_label.tar")?,
    };
    let control = match control {
        Some(p) => p,
        None if ours => return Err(Error::corrupt(&fm_key, "records no pg_control.tar")),
        None => unrecorded("pg_control.tar")?,
    };
    for base in listed.keys() {
        let key = format!("{prefix}{base}");
        if !fm.tar_file_sets.contains_key(base) && key != label.key && key != control.key {
            log(&format!("ignoring {key}: not recorded in {fm_key} (left over from an earlier, aborted attempt?)"));
        }
    }
    let databases = partial::recorded_databases(&fm.databases_by_names, &fm.walg_ext_databases, &fm_key)?;
    Ok(Plan { data, label, control, files: Some(RecordedFiles { fm_key, files: fm.files, where_is, databases }) })
}

/// The decoded stream of `part`, its raw bytes checked against the part's record as they
/// stream (when there is one); `consume` reads it, then the rest is drained so every frame's and
/// chunk's own check runs too. Damage found by the record wins over the consumer's error.
fn read_part<T>(
    pipeline: &Pipeline,
    storage: &dyn Storage,
    part: &PartPlan,
    consume: impl FnOnce(&mut dyn Read) -> Result<T>,
) -> Result<T> {
    let key = &part.key;
    let raw = storage.get(key)?.ok_or_else(|| {
        Error::corrupt(key, "missing from storage (it was listed a moment ago): the backup is incomplete")
    })?;
    let (raw, verdict) = match &part.record {
        Some(rec) => {
            let (r, v) = VerifyingReader::wrap(raw, key, rec.clone(), FILES_METADATA);
            (r, Some(v))
        }
        None => (raw, None),
    };
    let result = (|| {
        // A recorded XXH3-128 checks every stored byte: zstd's own frame checksums are skipped then.
        // Decoded on a helper thread (codec/read_ahead.rs) while this one extracts and writes; the
        // reader is dropped (its helper joined) at the end of this closure, before `settle`.
        let mut r = ReadAhead::new("part", pipeline.reader_opts(key, raw, part.record.is_none())?);
        let out = consume(&mut r)?;
        io::copy(&mut r, &mut io::sink()).map_err(|e| read_error(key, e))?;
        Ok(out)
    })();
    let result = match (&verdict, &part.record) {
        (Some(v), Some(rec)) => settle(key, v, rec.size, result),
        _ => result,
    };
    result.map_err(|e| pipeline.explain(e))
}

/// Every entry `TarFileSets` records for `part` must have come out of it.
fn check_entries(part: &PartPlan, names: &[String]) -> Result<()> {
    let Some(recorded) = &part.entries else { return Ok(()) };
    let got: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    if let Some(lost) = recorded.iter().find(|e| !got.contains(e.as_str())) {
        return Err(Error::corrupt(
            &part.key,
            format!("holds no entry {lost:?}, which {FILES_METADATA} records in it (is it another backup's object?)"),
        ));
    }
    Ok(())
}

/// Download, decode and extract one data part, verifying it as it streams.
fn extract_part(pipeline: &Pipeline, storage: &dyn Storage, part: &PartPlan, target: &Path, needs: &Needs) -> Result<ExtractStats> {
    let decide = |name: &str, is_dir: bool| needs.decide(name, is_dir);
    let stats = read_part(pipeline, storage, part, |r| extract_tar_with(r, target, true, &part.key, &decide))?;
    check_entries(part, &stats.names)?;
    Ok(stats)
}

/// backup_label.tar and pg_control.tar are small: read (and verified) whole before any of
/// them is written, so a damaged pg_control.tar never leaves a pg_control behind.
const SMALL_PART_LIMIT: u64 = 64 << 20;

fn read_small_part(pipeline: &Pipeline, storage: &dyn Storage, part: &PartPlan) -> Result<Vec<u8>> {
    read_part(pipeline, storage, part, |r| {
        let mut buf = Vec::new();
        r.take(SMALL_PART_LIMIT + 1).read_to_end(&mut buf).map_err(|e| read_error(&part.key, e))?;
        if buf.len() as u64 > SMALL_PART_LIMIT {
            return Err(Error::corrupt(&part.key, format!("decodes to more than {SMALL_PART_LIMIT} bytes")));
        }
        Ok(buf)
    })
}

fn extract_small(part: &PartPlan, tar: &[u8], target: &Path) -> Result<ExtractStats> {
    let stats = extract_tar_from(tar, target, true, &part.key)?;
    check_entries(part, &stats.names)?;
    Ok(stats)
}

/// backup_label's START WAL LOCATION must be the sentinel's start LSN: a label from another
/// backup would make PostgreSQL replay from the wrong place.
fn check_label(target: &Path, label: &PartPlan, sentinel: &Sentinel) -> Result<()> {
    let path = target.join("backup_label");
    let text = fs::read_to_string(&path).map_err(|_| Error::corrupt(&label.key, "holds no readable backup_label file"))?;
    let lsn = text
        .lines()
        .find_map(|l| l.strip_prefix("START WAL LOCATION: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|l| parse_lsn(l).ok())
        .ok_or_else(|| Error::corrupt(&label.key, "backup_label has no readable START WAL LOCATION line"))?;
    if lsn != sentinel.lsn {
        return Err(Error::corrupt(
            &label.key,
            format!(
                "backup_label starts at {} but the backup's sentinel says {}: the label belongs to another backup",
                lsn_to_string(lsn),
                lsn_to_string(sentinel.lsn)
            ),
        ));
    }
    Ok(())
}

/// Every file `Files` of the restored (newest) backup records came out of the restore: with the
/// size the restore gave it (`final_sizes`: the last whole copy or increment written) and, for a
/// file stored whole in this backup, the size recorded. WAL-G records directories too: those
/// must exist as directories.
fn check_files(
    target: &Path,
    fm_key: &str,
    files: &BTreeMap<String, FileDescription>,
    where_is: &BTreeMap<String, String>,
    final_sizes: &BTreeMap<String, u64>,
) -> Result<()> {
    for (name, d) in files {
        let object = match where_is.get(name) {
            Some(o) => o.as_str(),
            None if d.is_skipped => fm_key,
            None => {
                return Err(Error::corrupt(fm_key, format!("records file {name:?} in Files but in no tar part of TarFileSets")));
            }
        };
        let rel = name.trim_start_matches('/');
        if rel.is_empty() || rel.split('/').any(|c| c == "..") {
            return Err(Error::corrupt(fm_key, format!("bad file name {name:?}")));
        }
        let want = final_sizes.get(name).copied().or(if d.is_incremented || d.is_skipped { None } else { d.size });
        // A tablespace's link (pg_tblspc/<oid>), should `Files` record it as a directory, is
        // checked as the directory it points to; every other path is taken as it is.
        let path = target.join(rel);
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() && rel.starts_with("pg_tblspc/") && !rel[10..].contains('/') => fs::metadata(&path),
            other => other,
        };
        match meta {
            Ok(m) if m.is_file() => {
                if let Some(size) = want.filter(|&s| s != m.len()) {
                    return Err(Error::corrupt(
                        object,
                        format!("file {name:?} came out with {} bytes, {size} expected from {FILES_METADATA} and the increments", m.len()),
                    ));
                }
                if !final_sizes.contains_key(name) {
                    return Err(Error::corrupt(object, format!("file {name:?}, which {FILES_METADATA} records, was not written by this restore")));
                }
            }
            Ok(m) if m.is_dir() && want.is_none() && !d.is_incremented => {}
            _ => {
                return Err(Error::corrupt(
                    object,
                    format!("file {name:?}, which {FILES_METADATA} records in it, was not restored"),
                ))
            }
        }
    }
    Ok(())
}

/// metadata.json must be there and agree with the sentinel on the backup's LSNs and system.
fn check_metadata(storage: &dyn Storage, backup: &str, sentinel: &Sentinel) -> Result<()> {
    let key = metadata_key(backup);
    let data = get_bytes(storage, &key)?
        .ok_or_else(|| Error::corrupt(&key, "missing from storage: the backup is incomplete"))?;
    let m = BackupMetadata::from_json(&data, &key)?;
    let skey = sentinel_key(backup);
    let differs = |what: &str, a: String, b: String| {
        Error::corrupt(&key, format!("{what} {a} differs from {b} in {skey} (one of them is damaged or another backup's)"))
    };
    if m.start_lsn != sentinel.lsn {
        return Err(differs("start_lsn", lsn_to_string(m.start_lsn), lsn_to_string(sentinel.lsn)));
    }
    if m.finish_lsn != sentinel.finish_lsn {
        return Err(differs("finish_lsn", lsn_to_string(m.finish_lsn), lsn_to_string(sentinel.finish_lsn)));
    }
    if let (Some(a), Some(b)) = (m.system_identifier, sentinel.system_identifier) {
        if a != b {
            return Err(differs("system_identifier", a.to_string(), b.to_string()));
        }
    }
    Ok(())
}

/// A failure once the target has been written to: it is incomplete and, pg_control being
/// written last, cannot be started. Said in the log and, where the error has a message, there.
fn unstartable(e: Error, target: &Path, log: &(dyn Fn(&str) + Sync)) -> Error {
    let note = format!(
        "the restore into {} is incomplete and cannot be started (global/pg_control was not written)",
        target.display()
    );
    log(&format!("restore failed: {e}; {note}"));
    match e {
        Error::Corrupt { object, msg } => Error::Corrupt { object, msg: format!("{msg}; {note}") },
        Error::Codec { object, msg } => Error::Codec { object, msg: format!("{msg}; {note}") },
        Error::Format(msg) => Error::Format(format!("{msg}; {note}")),
        other => other,
    }
}

fn fsync_dirs(target: &Path) -> Result<()> {
    let mut stack = vec![target.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            if entry.file_type().map_err(|e| Error::io(entry.path(), e))?.is_dir() {
                stack.push(entry.path());
            }
        }
        File::open(&dir).and_then(|f| f.sync_all()).map_err(|e| Error::io(&dir, e))?;
    }
    if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
        File::open(parent).and_then(|f| f.sync_all()).map_err(|e| Error::io(parent, e))?;
    }
    Ok(())
}

/// One backup of the chain being restored (a full backup is a chain of one).
struct Step {
    name: String,
    sentinel: Sentinel,
    plan: Plan,
}

/// The sentinel of `backup`, its self-sum checked; None when storage says it does not exist.
fn read_sentinel(storage: &dyn Storage, backup: &str, log: &(dyn Fn(&str) + Sync)) -> Result<Option<Sentinel>> {
    let skey = sentinel_key(backup);
    let Some(data) = get_bytes(storage, &skey)? else { return Ok(None) };
    if !Sentinel::verify_self_sum(&data, &skey)? {
        log(&format!("{skey} has no {SENTINEL_SUM_KEY} (written by WAL-G or an older walg_ext): its content is not checked"));
    }
    Ok(Some(Sentinel::from_json(&data, &skey)?))
}

/// Every check that does not need the data: metadata.json against the sentinel, the files
/// metadata and every recorded part present with its recorded size.
fn load_step(storage: &dyn Storage, name: &str, sentinel: Sentinel, log: &(dyn Fn(&str) + Sync)) -> Result<Step> {
    check_metadata(storage, name, &sentinel)?;
    let plan = plan(storage, name, &sentinel, log)?;
    Ok(Step { name: name.to_string(), sentinel, plan })
}

/// `backup` and, for a delta, its bases down to the full backup, newest first, each link and
/// each backup checked (chain.rs).
fn load_chain(storage: &dyn Storage, backup: &str, log: &(dyn Fn(&str) + Sync)) -> Result<Vec<Step>> {
    let skey = sentinel_key(backup);
    let newest = read_sentinel(storage, backup, log)?
        .ok_or_else(|| Error::corrupt(&skey, "missing from storage (it was listed a moment ago)"))?;
    let mut steps = vec![load_step(storage, backup, newest, log)?];
    loop {
        let last = steps.last().expect("one step at least");
        let Some(parent) = last.sentinel.delta_from.clone() else { break };
        if steps.iter().any(|s| s.name == parent) || steps.len() >= chain::MAX_CHAIN {
            return Err(Error::corrupt(sentinel_key(&last.name), format!("DeltaFrom {parent} makes the chain loop or exceed {} backups", chain::MAX_CHAIN)));
        }
        if parent.is_empty() || parent.contains('/') {
            return Err(Error::corrupt(sentinel_key(&last.name), format!("bad DeltaFrom {parent:?}")));
        }
        let ps = read_sentinel(storage, &parent, log)?.ok_or_else(|| {
            Error::NotFound(format!(
                "backup {backup} cannot be restored: {} is a delta from {parent}, which is not in {} (no {}); \
                 a delta needs every backup of its chain down to the full one",
                last.name,
                storage.describe(),
                sentinel_key(&parent)
            ))
        })?;
        chain::check_link(&last.name, &last.sentinel, &parent, &ps)?;
        log(&format!("{} is a delta from {parent}", last.name));
        steps.push(load_step(storage, &parent, ps, log)?);
    }
    let links: Vec<(&str, &Sentinel)> = steps.iter().map(|s| (s.name.as_str(), &s.sentinel)).collect();
    chain::check_root(&links)?;
    Ok(steps)
}

/// How to restore: where tablespaces go, and which databases (README, backup-fetch).
#[derive(Clone, Debug, Default)]
pub struct FetchOptions {
    pub tablespaces: TablespaceOptions,
    /// WAL-G's `--restore-only`: only these databases' relation files (partial.rs); empty = all.
    pub restore_only: Vec<String>,
}

/// `fetch_with`, each tablespace to its original location, every database.
pub fn fetch(
    cfg: &Config,
    storage: &Arc<dyn Storage>,
    name: &str,
    target: &Path,
    log: &(dyn Fn(&str) + Sync),
) -> Result<FetchSummary> {
    fetch_with(cfg, storage, name, target, &FetchOptions::default(), log)
}

/// Restore backup `name` ("LATEST" allowed) into `target`, which must not exist or be empty,
/// its tablespaces where `opts` says (tablespaces.rs; each directory absent or empty), only the
/// databases it names if it names any (partial.rs).
/// A delta backup is restored with its whole chain (chain.rs). Every check of README "What is
/// verified" runs, for every backup of the chain; on any failure after the target was written
/// to, it is left without global/pg_control, so it cannot be started, and the error says so.
pub fn fetch_with(
    cfg: &Config,
    storage: &Arc<dyn Storage>,
    name: &str,
    target: &Path,
    opts: &FetchOptions,
    log: &(dyn Fn(&str) + Sync),
) -> Result<FetchSummary> {
    let ts = &opts.tablespaces;
    let storage: &dyn Storage = storage.as_ref();
    let pipeline = cfg.pipeline();
    let backup = resolve_backup_name(storage, name)?;
    let steps = load_chain(storage, &backup, log)?;
    let step_files: Vec<StepFiles> = steps
        .iter()
        .map(|s| StepFiles { name: &s.name, is_delta: s.sentinel.is_delta(), files: s.plan.files.as_ref().map(|f| &f.files) })
        .collect();
    let mut needs = chain::assign(&step_files)?;
    let newest = &steps[0];
    if !opts.restore_only.is_empty() {
        let recorded = match &newest.plan.files {
            Some(r) => r.databases.clone(),
            None => BTreeMap::new(),
        };
        let ro = RestoreOnly::resolve(&partial::parse_names(&opts.restore_only), &recorded, &backup)?;
        // Older backups are not asked for what becomes a placeholder: their parts holding only
        // such files are not even read.
        for n in needs.iter_mut().skip(1) {
            n.files.retain(|name, _| !ro.is_placeholder(name));
        }
        needs[0].restore_only = Some(ro);
    }
    // The two small objects first, whole and verified: nothing is written if either is bad.
    let label_tar = read_small_part(&pipeline, storage, &newest.plan.label)?;
    let control_tar = read_small_part(&pipeline, storage, &newest.plan.control)?;
    let recorded = tablespaces::recorded(&backup, &newest.sentinel, &label_tar, &newest.plan.label.key, log)?;
    if recorded.is_empty() && (ts.restore_spec.as_ref().is_some_and(|s| !s.is_empty()) || !ts.relocate.is_empty()) {
        return Err(Error::InvalidArgument(format!("backup {backup} has no tablespaces; --restore-spec and --tablespace do not apply")));
    }
    let placed = tablespaces::place(&backup, &recorded, &newest.sentinel, ts, target, log)?;
    prepare_target(target)?;
    tablespaces::make_links(target, &placed)?;
    log(&format!(
        "restoring {backup} from {} into {}: {}",
        storage.describe(),
        target.display(),
        if steps.len() == 1 {
            format!("{} data parts", newest.plan.data.len())
        } else {
            format!("a chain of {} backups down to {}", steps.len(), steps[steps.len() - 1].name)
        }
    ));
    restore_planned(cfg, &pipeline, storage, &steps, &needs, &label_tar, &control_tar, target, &placed, log).map_err(|e| {
        // pg_control may only stay if everything succeeded.
        let _ = fs::remove_file(target.join("global/pg_control"));
        unstartable(e, target, log)
    })
}

/// Extract `parts` in parallel on `download_concurrency` threads; Err on the first failure.
fn extract_parts(
    cfg: &Config,
    pipeline: &Pipeline,
    storage: &dyn Storage,
    parts: &[&PartPlan],
    needs: &Needs,
    target: &Path,
    log: &(dyn Fn(&str) + Sync),
    add: &(dyn Fn(&ExtractStats) + Sync),
) -> Result<()> {
    let (tx, queue) = crossbeam_channel::unbounded();
    for p in parts {
        tx.send(*p).expect("queue open");
    }
    drop(tx);
    let stop = AtomicBool::new(false);
    let first_err: Mutex<Option<Error>> = Mutex::new(None);
    let threads = cfg.download_concurrency.max(1).min(parts.len().max(1));
    std::thread::scope(|scope| {
        for i in 0..threads {
            let (queue, stop, first_err) = (queue.clone(), &stop, &first_err);
            let spawned = spawn_scoped(scope, format!("walg-fetch-{i}"), move || {
                while let Ok(part) = queue.recv() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    log(&format!("extracting {}", part.key));
                    match catch_panic("restore worker", || extract_part(pipeline, storage, part, target, needs)) {
                        Ok(s) => add(&s),
                        Err(e) => {
                            stop.store(true, Ordering::Relaxed);
                            first_err.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
                            break;
                        }
                    }
                }
            });
            if let Err(e) = spawned {
                stop.store(true, Ordering::Relaxed);
                first_err.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(Error::io("(starting restore thread)", e));
                break;
            }
        }
    });
    match first_err.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[allow(clippy::too_many_arguments)]
fn restore_planned(
    cfg: &Config,
    pipeline: &Pipeline,
    storage: &dyn Storage,
    steps: &[Step],
    needs: &[Needs],
    label_tar: &[u8],
    control_tar: &[u8],
    target: &Path,
    placed: &[Tablespace],
    log: &(dyn Fn(&str) + Sync),
) -> Result<FetchSummary> {
    let newest = &steps[0];
    let total = Mutex::new(FetchSummary { backup: newest.name.clone(), files: 0, bytes: 0 });
    // Entry -> size of the file after the last whole copy or increment written so far. Steps run
    // oldest first, so a newer backup's write replaces an older one's.
    let final_sizes: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());
    let supplied: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let add = |s: &ExtractStats| {
        let mut t = total.lock().unwrap_or_else(|e| e.into_inner());
        t.files += s.files;
        t.bytes += s.bytes;
        let mut f = final_sizes.lock().unwrap_or_else(|e| e.into_inner());
        let mut sup = supplied.lock().unwrap_or_else(|e| e.into_inner());
        for (name, size) in &s.written {
            f.insert(name.clone(), *size);
            sup.insert(name.clone());
        }
    };

    for (step, need) in steps.iter().zip(needs).rev() {
        let parts: Vec<&PartPlan> =
            step.plan.data.iter().filter(|p| p.entries.as_ref().is_none_or(|e| need.wants_any(e))).collect();
        if steps.len() > 1 {
            log(&format!(
                "{}: {} of its {} data parts hold {}",
                step.name,
                parts.len(),
                step.plan.data.len(),
                if need.newest { "its own files".to_string() } else { format!("the {} files newer backups need from it", need.files.len()) }
            ));
        }
        supplied.lock().unwrap_or_else(|e| e.into_inner()).clear();
        extract_parts(cfg, pipeline, storage, &parts, need, target, log, &add)?;
        // Every file a newer backup takes from this one came out of it.
        let sup = supplied.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lost) = need.files.keys().find(|n| !sup.contains(*n)) {
            return Err(Error::corrupt(
                files_metadata_key(&step.name),
                format!("{lost:?} is needed from {} by a newer backup, but none of its tar parts held it", step.name),
            ));
        }
    }

    if let Some(ro) = &needs[0].restore_only {
        let mut sizes = final_sizes.lock().unwrap_or_else(|e| e.into_inner());
        // Files the newest delta records as unchanged come from no step now: placeholders too.
        if let Some(r) = &newest.plan.files {
            let missing: Vec<&String> = r.files.keys().filter(|n| ro.is_placeholder(n) && !sizes.contains_key(*n)).collect();
            for name in missing {
                let path = target.join(name.trim_start_matches('/'));
                crate::format::tar::create_parents(&path)?;
                fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
                sizes.insert(name.clone(), 0);
            }
        }
        let n = sizes.keys().filter(|n| ro.is_placeholder(n)).count();
        log(&format!(
            "partial restore: {n} relation files of the databases not asked for are empty placeholders; \
             those databases cannot be read: drop them once the server is up"
        ));
    }
    log(&format!("extracting {}", newest.plan.label.key));
    add(&extract_small(&newest.plan.label, label_tar, target)?);
    check_label(target, &newest.plan.label, &newest.sentinel)?;
    if !placed.is_empty() {
        tablespaces::rewrite_map(target, placed, &newest.plan.label.key)?;
    }
    if let Some(r) = &newest.plan.files {
        let sizes = final_sizes.lock().unwrap_or_else(|e| e.into_inner());
        check_files(target, &r.fm_key, &r.files, &r.where_is, &sizes)?;
    }
    // Last: only now can the directory be started.
    log(&format!("extracting {}", newest.plan.control.key));
    add(&extract_small(&newest.plan.control, control_tar, target)?);
    match fs::symlink_metadata(target.join("global/pg_control")) {
        Ok(m) if m.is_file() && m.len() == PG_CONTROL_SIZE => {}
        Ok(m) => {
            return Err(Error::corrupt(
                &newest.plan.control.key,
                format!("global/pg_control came out with {} bytes, not {PG_CONTROL_SIZE}", m.len()),
            ))
        }
        Err(_) => return Err(Error::corrupt(&newest.plan.control.key, "holds no global/pg_control")),
    }
    fsync_dirs(target)?;
    for t in placed {
        fsync_dirs(Path::new(&t.location))?;
    }
    let summary = total.into_inner().unwrap_or_else(|e| e.into_inner());
    log(&format!("restored {}: {} files, {} bytes, all checks passed", newest.name, summary.files, summary.bytes));
    Ok(summary)
}

/// PostgreSQL's PG_CONTROL_FILE_SIZE: the control file is always this long on disk.
const PG_CONTROL_SIZE: u64 = 8192;
