//! Where a restore puts tablespaces (format/tablespace.rs has the stored form).
//!
//! Each tablespace the backup recorded goes to its original location, or to the directory
//! given by WAL-G's `--restore-spec FILE` or our `--tablespace OID_OR_NAME=DIR`. Before anything
//! is written every chosen directory must be absent or empty (a non-empty one is refused, named),
//! and no two may overlap each other or the target. Then `pg_tblspc/<oid>` links are made in the
//! target, so the data parts' `/pg_tblspc/<oid>/...` entries land in the chosen directories and
//! every restore check (entries, file sizes, increments of a delta chain) sees them there.
//!
//! tablespace_map is rewritten with the chosen directories. PostgreSQL 15, starting from a
//! backup_label, reads tablespace_map and for each line replaces `pg_tblspc/<oid>` with a link to
//! the path in the map (xlogrecovery.c, InitWalRecovery), then renames the map away. Left as
//! stored, it would point the links back at the original directories, i.e. at the running
//! source cluster's files when restoring on the same host. Removing it would also work (the links
//! we made stay), but rewriting keeps the restored directory self-describing and lets
//! PostgreSQL itself check and make the links, as for any backup.

use std::collections::BTreeMap;
use std::fs::{self, DirBuilder};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::names::sentinel_key;
use crate::format::sentinel::Sentinel;
use crate::format::tablespace::{is_oid, parse_tablespace_map, render_tablespace_map, Tablespace, TablespaceSpec, TABLESPACE_DIR};

/// The restore's tablespace choices (README, backup-fetch).
#[derive(Clone, Debug, Default)]
pub struct TablespaceOptions {
    /// Every tablespace into `<dir>/<oid>` (restore-drill: inside its scratch directory);
    /// applied first, so the two options below still choose for the ones they name.
    pub under: Option<PathBuf>,
    /// WAL-G's `--restore-spec FILE`, parsed (`read_restore_spec`).
    pub restore_spec: Option<TablespaceSpec>,
    /// `--tablespace OID_OR_NAME=DIR`, applied after the restore spec, in order.
    pub relocate: Vec<(String, PathBuf)>,
}

/// Parse `--tablespace OID_OR_NAME=DIR`.
pub fn parse_relocation(arg: &str) -> Result<(String, PathBuf)> {
    let (k, d) = arg
        .split_once('=')
        .filter(|(k, d)| !k.is_empty() && !d.is_empty())
        .ok_or_else(|| Error::InvalidArgument(format!("--tablespace {arg:?}: expected OID_OR_NAME=DIR")))?;
    Ok((k.to_string(), PathBuf::from(d)))
}

/// Read WAL-G's restore spec file (the sentinel's `Spec` shape).
pub fn read_restore_spec(path: &Path) -> Result<TablespaceSpec> {
    let data = fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |m: String| Error::InvalidArgument(format!("restore spec {}: {m}", path.display()));
    let v: serde_json::Value = serde_json::from_slice(&data).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    TablespaceSpec::from_json(&v, &bad)
}

/// The content of `tablespace_map` in backup_label.tar (already read and verified), if any.
fn map_in_label_tar(label_tar: &[u8], label_key: &str) -> Result<Option<String>> {
    let mut a = tar::Archive::new(label_tar);
    let bad = |e: io::Error| Error::corrupt(label_key, format!("unreadable tar: {e}"));
    for entry in a.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if name.trim_start_matches('/') == "tablespace_map" {
            let mut s = String::new();
            entry.read_to_string(&mut s).map_err(|_| Error::corrupt(label_key, "tablespace_map is not readable text"))?;
            return Ok(Some(s));
        }
    }
    Ok(None)
}

/// The tablespaces the backup recorded: the sentinel's `Spec` (WAL-G's and ours). A backup
/// without `Spec` but with tablespace_map entries (walg_ext before tablespace support stored
/// the same `/pg_tblspc/<oid>/...` entries) takes the locations from tablespace_map. Every
/// tablespace in tablespace_map must be in `Spec`: one that is not could not be placed.
pub(crate) fn recorded(
    backup: &str,
    sentinel: &Sentinel,
    label_tar: &[u8],
    label_key: &str,
    log: &(dyn Fn(&str) + Sync),
) -> Result<Vec<Tablespace>> {
    let skey = sentinel_key(backup);
    let spec = match &sentinel.spec {
        Some(v) => TablespaceSpec::from_json(v, &|m| Error::corrupt(&skey, format!("Spec: {m}")))?,
        None => TablespaceSpec::default(),
    };
    let map = match map_in_label_tar(label_tar, label_key)? {
        Some(text) => parse_tablespace_map(&text, label_key)?,
        None => Vec::new(),
    };
    if spec.is_empty() {
        if !map.is_empty() {
            log(&format!("{skey} has no tablespace Spec; taking the tablespaces' locations from tablespace_map"));
        }
        return map
            .iter()
            .map(|(oid, path)| {
                if !path.starts_with('/') {
                    return Err(Error::corrupt(label_key, format!("tablespace_map: tablespace {oid}'s location {path:?} is not absolute")));
                }
                Ok(Tablespace::new(oid, path))
            })
            .collect();
    }
    if let Some((oid, _)) = map.iter().find(|(oid, _)| spec.get(oid).is_none()) {
        return Err(Error::corrupt(label_key, format!("tablespace_map names tablespace {oid}, which the Spec of {skey} does not record")));
    }
    Ok(spec.tablespaces)
}

fn describe(t: &Tablespace, names: &BTreeMap<String, String>) -> String {
    match names.get(&t.oid) {
        Some(n) => format!("tablespace {} ({n})", t.oid),
        None => format!("tablespace {}", t.oid),
    }
}

fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// Decide where each recorded tablespace goes and check every choice, before anything is
/// written: known tablespaces only, absolute directories, no overlaps, each absent or empty.
pub(crate) fn place(
    backup: &str,
    recorded: &[Tablespace],
    sentinel: &Sentinel,
    opts: &TablespaceOptions,
    target: &Path,
    log: &(dyn Fn(&str) + Sync),
) -> Result<Vec<Tablespace>> {
    let names = sentinel.walg_ext_tablespace_names.clone().unwrap_or_default();
    let has = || {
        let all: Vec<String> = recorded.iter().map(|t| describe(t, &names)).collect();
        if all.is_empty() { "it has none".to_string() } else { format!("it has {}", all.join(", ")) }
    };
    let mut placed: Vec<Tablespace> = recorded.to_vec();
    if let Some(dir) = &opts.under {
        let dir = std::path::absolute(dir).map_err(|e| Error::io(dir, e))?;
        for p in placed.iter_mut() {
            p.location = dir.join(&p.oid).display().to_string();
        }
    }
    if let Some(spec) = &opts.restore_spec {
        if !spec.base_prefix.is_empty() && Path::new(&spec.base_prefix) != target {
            log(&format!(
                "the restore spec's base_prefix {} is not the restore target; the links are made in {}",
                spec.base_prefix,
                target.display()
            ));
        }
        for t in &spec.tablespaces {
            let p = placed.iter_mut().find(|p| p.oid == t.oid).ok_or_else(|| {
                Error::InvalidArgument(format!("the restore spec names tablespace {}, which backup {backup} does not have ({})", t.oid, has()))
            })?;
            p.location = t.location.clone();
        }
    }
    for (key, dir) in &opts.relocate {
        let oid = if is_oid(key) {
            key.clone()
        } else {
            let found: Vec<&String> = names.iter().filter(|(_, n)| *n == key).map(|(o, _)| o).collect();
            match found.as_slice() {
                [one] => (*one).clone(),
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "--tablespace {key}: backup {backup} records no tablespace named {key:?} ({}); give its OID",
                        has()
                    )))
                }
            }
        };
        let p = placed.iter_mut().find(|p| p.oid == oid).ok_or_else(|| {
            Error::InvalidArgument(format!("--tablespace {key}: backup {backup} has no tablespace {oid} ({})", has()))
        })?;
        let Some(d) = dir.to_str().filter(|d| d.starts_with('/')) else {
            return Err(Error::InvalidArgument(format!("--tablespace {key}={}: the directory must be an absolute path", dir.display())));
        };
        p.location = Tablespace::new(&oid, d).location;
    }
    for (i, t) in placed.iter().enumerate() {
        let loc = Path::new(&t.location);
        if overlaps(loc, target) {
            return Err(Error::InvalidArgument(format!(
                "{} would be restored into {}, which overlaps the restore target {}",
                describe(t, &names),
                t.location,
                target.display()
            )));
        }
        if let Some(o) = placed[..i].iter().find(|o| overlaps(Path::new(&o.location), loc)) {
            return Err(Error::InvalidArgument(format!(
                "{} and {} would be restored into overlapping directories {} and {}",
                describe(o, &names),
                describe(t, &names),
                o.location,
                t.location
            )));
        }
        match fs::symlink_metadata(loc) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(loc, e)),
            Ok(m) if !m.is_dir() => {
                return Err(Error::io(
                    loc,
                    io::Error::new(io::ErrorKind::AlreadyExists, format!("{}'s restore directory exists and is not a directory", describe(t, &names))),
                ))
            }
            Ok(_) => {
                if fs::read_dir(loc).map_err(|e| Error::io(loc, e))?.next().is_some() {
                    return Err(Error::io(
                        loc,
                        io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            format!(
                                "{}'s restore directory is not empty (restore it elsewhere with --tablespace {}=DIR or --restore-spec FILE)",
                                describe(t, &names),
                                t.oid
                            ),
                        ),
                    ));
                }
            }
        }
        log(&format!("{} -> {}", describe(t, &names), t.location));
    }
    Ok(placed)
}

/// Create each chosen directory (0700) and its `pg_tblspc/<oid>` link in `target`.
pub(crate) fn make_links(target: &Path, placed: &[Tablespace]) -> Result<()> {
    if placed.is_empty() {
        return Ok(());
    }
    let dir = target.join(TABLESPACE_DIR);
    DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(|e| Error::io(&dir, e))?;
    for t in placed {
        let loc = Path::new(&t.location);
        DirBuilder::new().recursive(true).mode(0o700).create(loc).map_err(|e| Error::io(loc, e))?;
        fs::set_permissions(loc, fs::Permissions::from_mode(0o700)).map_err(|e| Error::io(loc, e))?;
        let link = target.join(&t.link);
        std::os::unix::fs::symlink(loc, &link).map_err(|e| Error::io(&link, e))?;
    }
    Ok(())
}

/// Rewrite `target/tablespace_map` (if the backup has one) with the chosen directories.
pub(crate) fn rewrite_map(target: &Path, placed: &[Tablespace], label_key: &str) -> Result<()> {
    let path = target.join("tablespace_map");
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let mut entries = parse_tablespace_map(&text, label_key)?;
    for (oid, loc) in entries.iter_mut() {
        let t = placed
            .iter()
            .find(|t| &t.oid == oid)
            .ok_or_else(|| Error::corrupt(label_key, format!("tablespace_map names tablespace {oid}, which this restore did not place")))?;
        *loc = t.location.clone();
    }
    let tmp = target.join("tablespace_map.walg-ext.tmp");
    let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(render_tablespace_map(&entries).as_bytes()).and_then(|_| f.sync_all()).map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
}
