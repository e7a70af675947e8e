//! The PGDATA walk: what goes into a base backup (FORMAT.md exclusions).

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::{Error, Result};

/// Directories whose contents are skipped anywhere in the tree (the directory entry is kept,
/// so PostgreSQL finds them after restore).
pub const EXCLUDED_DIR_CONTENTS: &[&str] = &[
    "log", "pg_log", "pg_xlog", "pg_wal", "pgsql_tmp", "pg_dynshmem", "pg_notify", "pg_replslot",
    "pg_serial", "pg_stat_tmp", "pg_snapshots", "pg_subtrans",
];

/// Files skipped anywhere in the tree. `walg_ext.state*` is the scheduler's state file
/// (schedule/state.rs): a restored copy must not inherit the source's schedule records.
pub const EXCLUDED_FILES: &[&str] = &[
    "postgresql.auto.conf.tmp", "postmaster.pid", "postmaster.opts", "recovery.conf", "standby.signal",
    crate::schedule::state::STATE_FILE, crate::schedule::state::STATE_TEMP_FILE,
];

/// Files skipped at the top of PGDATA: they come from pg_backup_stop, in backup_label.tar.
pub const EXCLUDED_TOP_FILES: &[&str] = &["backup_label", "tablespace_map"];

/// Entry name of the control file; it goes into pg_control.tar only, after all data parts.
pub const PG_CONTROL_NAME: &str = "/global/pg_control";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
}

#[derive(Clone, Debug)]
pub struct WalkEntry {
    /// Tar entry name: "/" + path relative to PGDATA.
    pub name: String,
    pub path: PathBuf,
    pub kind: EntryKind,
    /// Size at stat time (0 for directories); the file is read up to this size.
    pub size: u64,
    pub mode: u32,
    pub mtime: SystemTime,
}

#[derive(Debug, Default)]
pub struct Walk {
    /// Directories and files to put into data parts, in walk order.
    pub entries: Vec<WalkEntry>,
    pub pg_control: Option<WalkEntry>,
    /// Sum of the sizes of all walked files (pg_control included).
    pub data_catalog_size: u64,
    /// Symbolic links in pg_tblspc to directories: (link name, i.e. OID; link target as read).
    pub tablespaces: Vec<(String, String)>,
}

fn entry(name: String, path: PathBuf, meta: &fs::Metadata) -> WalkEntry {
    let kind = if meta.is_dir() { EntryKind::Dir } else { EntryKind::File };
    WalkEntry {
        name,
        path,
        kind,
        size: if kind == EntryKind::File { meta.len() } else { 0 },
        mode: meta.permissions().mode() & 0o7777,
        mtime: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
    }
}

/// Walk `pgdata`. Symbolic links are followed. A link `pg_tblspc/<oid>` to a directory is a
/// tablespace (format/tablespace.rs): recorded in `tablespaces`, its contents named
/// `/pg_tblspc/<oid>/...` as WAL-G names them, no entry for the link itself (a restore makes
/// the link). A file or directory that vanishes during the walk is skipped.
pub fn walk_pgdata(pgdata: &Path) -> Result<Walk> {
    let root_meta = fs::metadata(pgdata).map_err(|e| Error::io(pgdata, e))?;
    if !root_meta.is_dir() {
        return Err(Error::io(pgdata, io::Error::new(io::ErrorKind::InvalidInput, "PGDATA is not a directory")));
    }
    let mut walk = Walk::default();
    let mut seen = HashSet::new(); // (dev, ino) of directories: guards against symlink loops
    seen.insert((root_meta.dev(), root_meta.ino()));
    let mut stack = vec![(pgdata.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let read = match fs::read_dir(&dir) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&dir, e)),
        };
        let mut names = Vec::new();
        for item in read {
            let item = item.map_err(|e| Error::io(&dir, e))?;
            names.push(item.file_name());
        }
        names.sort();
        let mut subdirs = Vec::new();
        for os_name in names {
            let Some(base) = os_name.to_str() else {
                return Err(Error::io(dir.join(&os_name), io::Error::new(io::ErrorKind::InvalidData, "file name is not UTF-8")));
            };
            let name = format!("{rel}/{base}");
            let path = dir.join(base);
            let meta = match fs::metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // vanished or dangling link
                Err(e) => return Err(Error::io(&path, e)),
            };
            if meta.is_dir() {
                let skip_contents = EXCLUDED_DIR_CONTENTS.contains(&base);
                let is_link = fs::symlink_metadata(&path).map(|m| m.file_type().is_symlink()).unwrap_or(false);
                if is_link && rel == "/pg_tblspc" {
                    let target = fs::read_link(&path).map_err(|e| Error::io(&path, e))?;
                    let Some(target) = target.to_str() else {
                        return Err(Error::io(&path, io::Error::new(io::ErrorKind::InvalidData, "tablespace link target is not UTF-8")));
                    };
                    if !crate::format::tablespace::is_oid(base) {
                        return Err(Error::io(&path, io::Error::new(io::ErrorKind::InvalidData, "a link in pg_tblspc whose name is not a tablespace OID")));
                    }
                    // PostgreSQL writes absolute targets; a relative one is resolved as the kernel does.
                    let target = if target.starts_with('/') { target.to_string() } else { dir.join(target).display().to_string() };
                    walk.tablespaces.push((base.to_string(), target));
                } else {
                    walk.entries.push(entry(name.clone(), path.clone(), &meta));
                }
                if !skip_contents && seen.insert((meta.dev(), meta.ino())) {
                    subdirs.push((path, name));
                }
            } else if meta.is_file() {
                if EXCLUDED_FILES.contains(&base) || (rel.is_empty() && EXCLUDED_TOP_FILES.contains(&base)) {
                    continue;
                }
                walk.data_catalog_size += meta.len();
                if name == PG_CONTROL_NAME {
                    walk.pg_control = Some(entry(name, path, &meta));
                } else {
                    walk.entries.push(entry(name, path, &meta));
                }
            }
            // Sockets, fifos and devices are not backed up.
        }
        // Reverse so the stack pops them in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(walk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusions() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        for d in ["base/1", "global", "pg_wal/archive_status", "pg_stat_tmp", "base/1/pgsql_tmp", "pg_tblspc"] {
            fs::create_dir_all(p.join(d)).unwrap();
        }
        for (f, n) in [
            ("base/1/1259", 100), ("global/pg_control", 8192), ("global/1262", 10),
            ("pg_wal/000000010000000000000001", 50), ("pg_wal/archive_status/x.ready", 0),
            ("pg_stat_tmp/global.stat", 5), ("base/1/pgsql_tmp/t1", 5), ("postmaster.pid", 3),
            ("postmaster.opts", 3), ("backup_label", 3), ("tablespace_map", 3), ("base/1/backup_label", 7),
            ("standby.signal", 0), ("PG_VERSION", 3), ("walg_ext.state", 9), ("walg_ext.state.tmp", 9),
        ] {
            fs::write(p.join(f), vec![1u8; n]).unwrap();
        }
        let w = walk_pgdata(p).unwrap();
        let names: Vec<_> = w.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            vec!["/PG_VERSION", "/base", "/global", "/pg_stat_tmp", "/pg_tblspc", "/pg_wal", "/base/1",
                 "/base/1/1259", "/base/1/backup_label", "/base/1/pgsql_tmp", "/global/1262"]
        );
        assert_eq!(w.pg_control.as_ref().unwrap().size, 8192);
        assert_eq!(w.data_catalog_size, 3 + 100 + 7 + 8192 + 10);
        let by_name = |n: &str| w.entries.iter().find(|e| e.name == n).unwrap();
        assert_eq!(by_name("/pg_wal").kind, EntryKind::Dir);
        assert_eq!(by_name("/pg_wal").size, 0);
        assert_eq!(by_name("/base/1/1259").kind, EntryKind::File);
        assert_eq!(by_name("/base/1/1259").size, 100);
    }
}
