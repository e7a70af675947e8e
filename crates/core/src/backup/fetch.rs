//! Base backup restore: data parts in parallel, then backup_label.tar, then pg_control.tar, so
//! an interrupted restore never looks like a startable cluster.

use std::fs::{self, DirBuilder, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::threads::{catch_panic, spawn_scoped};
use crate::catalog::latest_backup;
use crate::codec::{read_error, Pipeline};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::format::names::{sentinel_key, tar_partitions_prefix};
use crate::format::sentinel::Sentinel;
use crate::format::tar::{extract_tar_from, ExtractStats};
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

/// Download, decompress and extract one tar object.
fn extract_part(pipeline: &Pipeline, storage: &dyn Storage, key: &str, target: &Path) -> Result<ExtractStats> {
    extract_decoded(pipeline, storage, key, target).map_err(|e| pipeline.explain(e))
}

fn extract_decoded(pipeline: &Pipeline, storage: &dyn Storage, key: &str, target: &Path) -> Result<ExtractStats> {
    let mut r = pipeline.open(storage, key)?.ok_or_else(|| Error::NotFound(key.to_string()))?;
    let stats = extract_tar_from(&mut r, target, true, key)?;
    // Read to the end of the stream so frame checksums are verified.
    io::copy(&mut r, &mut io::sink()).map_err(|e| read_error(key, e))?;
    Ok(stats)
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

/// Restore backup `name` ("LATEST" allowed) into `target`, which must not exist or be empty.
pub fn fetch(
    cfg: &Config,
    storage: &Arc<dyn Storage>,
    name: &str,
    target: &Path,
    log: &(dyn Fn(&str) + Sync),
) -> Result<FetchSummary> {
    let storage: &dyn Storage = storage.as_ref();
    let pipeline = cfg.pipeline();
    let backup = resolve_backup_name(storage, name)?;
    let skey = sentinel_key(&backup);
    let data = get_bytes(storage, &skey)?.ok_or_else(|| Error::NotFound(skey.clone()))?;
    let sentinel = Sentinel::from_json(&data, &skey)?;
    if sentinel.is_delta() {
        return Err(Error::Format(format!(
            "backup {backup} is a delta backup (from {}); delta restore is not supported yet",
            sentinel.delta_from.as_deref().unwrap_or("?")
        )));
    }

    let prefix = tar_partitions_prefix(&backup);
    let objects = storage.list(&prefix)?;
    let file_name = |key: &str| key[prefix.len()..].to_string();
    let mut data_parts = Vec::new();
    let (mut label, mut control) = (None, None);
    for o in &objects {
        let base = file_name(&o.key);
        if base.contains('/') {
            continue;
        }
        if base.starts_with("part_") {
            data_parts.push(o.key.clone());
        } else if base == "backup_label.tar" || base.starts_with("backup_label.tar.") {
            label = Some(o.key.clone());
        } else if base == "pg_control.tar" || base.starts_with("pg_control.tar.") {
            control = Some(o.key.clone());
        }
    }
    let control = control.ok_or_else(|| {
        Error::NotFound(format!("{prefix}pg_control.tar.*: backup {backup} is incomplete"))
    })?;
    prepare_target(target)?;
    log(&format!("restoring {backup} from {} into {}: {} data parts", storage.describe(), target.display(), data_parts.len()));

    let total = Mutex::new(FetchSummary { backup: backup.clone(), files: 0, bytes: 0 });
    let add = |s: &ExtractStats| {
        let mut t = total.lock().unwrap_or_else(|e| e.into_inner());
        t.files += s.files;
        t.bytes += s.bytes;
    };

    let (tx, queue) = crossbeam_channel::unbounded();
    for k in &data_parts {
        tx.send(k.clone()).expect("queue open");
    }
    drop(tx);
    let stop = AtomicBool::new(false);
    let first_err: Mutex<Option<Error>> = Mutex::new(None);
    let threads = cfg.download_concurrency.max(1).min(data_parts.len().max(1));
    std::thread::scope(|scope| {
        for i in 0..threads {
            let (queue, stop, first_err, add, pipeline) = (queue.clone(), &stop, &first_err, &add, &pipeline);
            let spawned = spawn_scoped(scope, format!("walg-fetch-{i}"), move || {
                while let Ok(key) = queue.recv() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    log(&format!("extracting {key}"));
                    match catch_panic("restore worker", || extract_part(pipeline, storage, &key, target)) {
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
    if let Some(e) = first_err.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }

    if let Some(key) = &label {
        log(&format!("extracting {key}"));
        add(&extract_part(&pipeline, storage, key, target)?);
    }
    log(&format!("extracting {control}"));
    add(&extract_part(&pipeline, storage, &control, target)?);
    fsync_dirs(target)?;
    let summary = total.into_inner().unwrap_or_else(|e| e.into_inner());
    log(&format!("restored {backup}: {} files, {} bytes", summary.files, summary.bytes));
    Ok(summary)
}
