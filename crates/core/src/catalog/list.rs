//! Backup listing: what exists is what has a sentinel. Order is by start time (from the
//! sentinel), never by name: a cluster re-initialised into the same prefix starts its WAL names
//! over, and its new backups must still count as the newest.

use std::time::SystemTime;

use crate::error::Result;
use crate::format::names::{backup_of_sentinel_key, backup_wal_file_name, metadata_key, sentinel_key, BACKUP_PREFIX};
use crate::format::{BackupMetadata, Sentinel};
use crate::storage::{get_bytes, Storage};

#[derive(Clone, Debug)]
pub struct BackupInfo {
    pub name: String,
    /// Modification time of the sentinel object.
    pub modified: SystemTime,
    /// The 24 hex start segment of the backup's own name.
    pub wal_file_name: String,
    pub sentinel: Sentinel,
    pub metadata: Option<BackupMetadata>,
    /// From metadata.json when present (authoritative), else from the sentinel.
    pub is_permanent: bool,
    /// The last restore drill's report (`<backup>/walg_drill.json`), read only when the listing
    /// shows one; a damaged one is treated as absent (it is ours, not part of the backup).
    pub drill: Option<crate::backup::drill::DrillReport>,
}

/// Sentinel objects: (backup name, sentinel modification time, whether a drill report exists).
fn sentinels(storage: &dyn Storage) -> Result<Vec<(String, SystemTime, bool)>> {
    let objects = storage.list(BACKUP_PREFIX)?;
    let drills: std::collections::HashSet<&str> = objects
        .iter()
        .filter_map(|o| o.key.strip_prefix(BACKUP_PREFIX)?.strip_suffix(crate::backup::drill::DRILL_OBJECT)?.strip_suffix('/'))
        .collect();
    Ok(objects
        .iter()
        .filter_map(|o| backup_of_sentinel_key(&o.key).map(|n| (n.to_string(), o.modified, drills.contains(n))))
        .collect())
}

fn load(storage: &dyn Storage, name: &str, modified: SystemTime, has_drill: bool) -> Result<Option<BackupInfo>> {
    let key = sentinel_key(name);
    let Some(data) = get_bytes(storage, &key)? else { return Ok(None) }; // deleted meanwhile
    let sentinel = Sentinel::from_json(&data, &key)?;
    let mkey = metadata_key(name);
    let metadata = match get_bytes(storage, &mkey)? {
        Some(d) => Some(BackupMetadata::from_json(&d, &mkey)?),
        None => None,
    };
    let is_permanent = metadata.as_ref().map(|m| m.is_permanent).unwrap_or(sentinel.is_permanent);
    let drill = if has_drill { crate::backup::drill::read_report(storage, name).ok().flatten() } else { None };
    Ok(Some(BackupInfo {
        name: name.to_string(),
        modified,
        wal_file_name: backup_wal_file_name(name).to_string(),
        sentinel,
        metadata,
        is_permanent,
        drill,
    }))
}

impl BackupInfo {
    pub fn is_full(&self) -> bool {
        !self.sentinel.is_delta()
    }
    /// The backup this delta was taken from (None for a full backup).
    pub fn delta_from(&self) -> Option<&str> {
        self.sentinel.delta_from.as_deref()
    }
    /// User data: metadata.json's when present, else the sentinel's.
    pub fn user_data(&self) -> Option<&serde_json::Value> {
        self.metadata.as_ref().and_then(|m| m.user_data.as_ref()).or(self.sentinel.user_data.as_ref())
    }
    /// Timeline of the start segment (from the name).
    pub fn timeline(&self) -> u32 {
        u32::from_str_radix(self.wal_file_name.get(..8).unwrap_or("0"), 16).unwrap_or(0)
    }

    /// WAL-G's `backup-list --detail --json` fields, plus walg_ext's (is_full, delta_from,
    /// delta_full_name, delta_count, delta_pages (how a delta chose its pages: wal-maps or
    /// full-scan), user_data, last_drill, corrupt_pages: pages with a wrong
    /// checksum the backup found, null when it did not verify them). The CLI prints exactly this.
    pub fn detail_json(&self) -> serde_json::Value {
        let s = &self.sentinel;
        let t = |t: SystemTime| {
            chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        };
        serde_json::json!({
            "backup_name": self.name,
            "time": t(self.modified),
            "wal_file_name": self.wal_file_name,
            "storage_name": "default",
            "start_time": crate::format::sentinel::rfc3339::format(&s.start_time),
            "finish_time": crate::format::sentinel::rfc3339::format(&s.finish_time),
            "hostname": s.hostname,
            "data_dir": s.data_dir,
            "pg_version": s.pg_version,
            "start_lsn": s.lsn,
            "finish_lsn": s.finish_lsn,
            "is_permanent": self.is_permanent,
            "system_identifier": s.system_identifier,
            "uncompressed_size": s.uncompressed_size,
            "compressed_size": s.compressed_size,
            "is_full": self.is_full(),
            "delta_from": s.delta_from,
            "delta_full_name": s.delta_full_name,
            "delta_count": s.delta_count,
            "delta_pages": s.walg_ext_delta_pages,
            "user_data": self.user_data(),
            "last_drill": self.drill.as_ref().map(|d| d.list_json()),
            "corrupt_pages": s.walg_ext_corrupt_pages,
        })
    }
}

/// The backup named `name` among `all`, or NotFound naming it.
pub fn find<'a>(all: &'a [BackupInfo], name: &str) -> Result<&'a BackupInfo> {
    all.iter().find(|b| b.name == name).ok_or_else(|| {
        crate::Error::NotFound(format!(
            "backup {name:?} does not exist (no sentinel {}); see backup-list for the names",
            sentinel_key(name)
        ))
    })
}

/// `name` and its ancestors (delta parents), newest first. A parent that no longer exists ends
/// the chain.
pub fn chain<'a>(all: &'a [BackupInfo], name: &str) -> Vec<&'a BackupInfo> {
    let mut out: Vec<&BackupInfo> = Vec::new();
    let mut cur = all.iter().find(|b| b.name == name);
    while let Some(b) = cur {
        if out.iter().any(|o| o.name == b.name) {
            break; // a cycle in hand-edited sentinels
        }
        out.push(b);
        cur = b.delta_from().and_then(|p| all.iter().find(|x| x.name == p));
    }
    out
}

/// Every backup whose chain contains `name` (its delta descendants), excluding itself.
pub fn descendants<'a>(all: &'a [BackupInfo], name: &str) -> Vec<&'a BackupInfo> {
    all.iter().filter(|b| b.name != name && chain(all, &b.name).iter().any(|c| c.name == name)).collect()
}

/// Every backup, sorted by start time, then name. A corrupt sentinel or metadata.json is an
/// error naming the object.
pub fn list_backups(storage: &dyn Storage) -> Result<Vec<BackupInfo>> {
    let mut out = Vec::new();
    for (name, modified, has_drill) in sentinels(storage)? {
        if let Some(info) = load(storage, &name, modified, has_drill)? {
            out.push(info);
        }
    }
    out.sort_by(|a, b| a.sentinel.start_time.cmp(&b.sentinel.start_time).then_with(|| a.name.cmp(&b.name)));
    Ok(out)
}

/// The backup whose sentinel was modified last (WAL-G's LATEST).
pub fn latest_backup(storage: &dyn Storage) -> Result<Option<BackupInfo>> {
    let mut all = sentinels(storage)?;
    all.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    while let Some((name, modified, has_drill)) = all.pop() {
        if let Some(info) = load(storage, &name, modified, has_drill)? {
            return Ok(Some(info));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::FsStorage;
    use chrono::{TimeZone, Utc};

    fn sentinel(start_secs: i64, permanent: bool) -> Sentinel {
        Sentinel {
            start_time: Utc.timestamp_opt(start_secs, 0).unwrap(),
            finish_time: Utc.timestamp_opt(start_secs + 5, 0).unwrap(),
            version: 2,
            is_permanent: permanent,
            ..Default::default()
        }
    }

    #[test]
    fn lists_sorted_with_metadata_permanence_and_rejects_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStorage::new(dir.path());
        let a = "base_000000010000000000000004";
        let b = "base_000000010000000000000002";
        s.put(&sentinel_key(a), &sentinel(2000, false).to_json()).unwrap();
        s.put(&sentinel_key(b), &sentinel(1000, true).to_json()).unwrap();
        let meta = BackupMetadata { is_permanent: true, start_time: Utc.timestamp_opt(2000, 0).unwrap(), ..Default::default() };
        s.put(&metadata_key(a), &meta.to_json()).unwrap();
        // Not sentinels: a part, a nested json.
        s.put(&format!("{BACKUP_PREFIX}{a}/tar_partitions/part_001.tar.lz4"), b"x").unwrap();
        let list = list_backups(&s).unwrap();
        let names: Vec<_> = list.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, vec![b, a]);
        assert!(list[0].is_permanent && list[0].metadata.is_none());
        assert!(list[1].is_permanent, "metadata.json wins over the sentinel");
        assert_eq!(list[1].wal_file_name, "000000010000000000000004");

        // Sentinel modification time decides LATEST, not the name or start time.
        std::thread::sleep(std::time::Duration::from_millis(20));
        s.put(&sentinel_key(b), &sentinel(1000, true).to_json()).unwrap();
        assert_eq!(latest_backup(&s).unwrap().unwrap().name, b);

        s.put(&sentinel_key("base_000000010000000000000009"), b"{broken").unwrap();
        let err = list_backups(&s).unwrap_err().to_string();
        assert!(err.contains("base_000000010000000000000009_backup_stop_sentinel.json"), "{err}");
        // An empty prefix has no backups; a missing one is unreachable, never "no backups".
        std::fs::create_dir(dir.path().join("empty")).unwrap();
        assert!(latest_backup(&FsStorage::new(dir.path().join("empty"))).unwrap().is_none());
        assert!(list_backups(&FsStorage::new(dir.path().join("empty"))).unwrap().is_empty());
        let missing = FsStorage::new(dir.path().join("missing"));
        let e = latest_backup(&missing).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Unreachable, "{e}");
        let e = list_backups(&missing).unwrap_err();
        assert!(e.to_string().contains("storage unreachable") && e.to_string().contains("does not exist"), "{e}");
        let e = crate::backup::fetch::resolve_backup_name(&missing, "LATEST").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Unreachable, "LATEST on a missing prefix: {e}");
        let e = crate::backup::fetch::resolve_backup_name(&missing, "base_000000010000000000000002").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Unreachable, "a name on a missing prefix: {e}");
        let e = crate::backup::fetch::resolve_backup_name(&s, "base_0000000100000000000000AA").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::NotFound, "a name not in a reachable storage: {e}");
    }
}
