//! Backup listing: what exists is what has a sentinel.

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
}

/// Sentinel objects: (backup name, sentinel modification time).
fn sentinels(storage: &dyn Storage) -> Result<Vec<(String, SystemTime)>> {
    Ok(storage
        .list(BACKUP_PREFIX)?
        .into_iter()
        .filter_map(|o| backup_of_sentinel_key(&o.key).map(|n| (n.to_string(), o.modified)))
        .collect())
}

fn load(storage: &dyn Storage, name: &str, modified: SystemTime) -> Result<Option<BackupInfo>> {
    let key = sentinel_key(name);
    let Some(data) = get_bytes(storage, &key)? else { return Ok(None) }; // deleted meanwhile
    let sentinel = Sentinel::from_json(&data, &key)?;
    let mkey = metadata_key(name);
    let metadata = match get_bytes(storage, &mkey)? {
        Some(d) => Some(BackupMetadata::from_json(&d, &mkey)?),
        None => None,
    };
    let is_permanent = metadata.as_ref().map(|m| m.is_permanent).unwrap_or(sentinel.is_permanent);
    Ok(Some(BackupInfo {
        name: name.to_string(),
        modified,
        wal_file_name: backup_wal_file_name(name).to_string(),
        sentinel,
        metadata,
        is_permanent,
    }))
}

/// Every backup, sorted by start time, then name. A corrupt sentinel or metadata.json is an
/// error naming the object.
pub fn list_backups(storage: &dyn Storage) -> Result<Vec<BackupInfo>> {
    let mut out = Vec::new();
    for (name, modified) in sentinels(storage)? {
        if let Some(info) = load(storage, &name, modified)? {
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
    while let Some((name, modified)) = all.pop() {
        if let Some(info) = load(storage, &name, modified)? {
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
        assert!(latest_backup(&FsStorage::new(dir.path().join("empty"))).unwrap().is_none());
    }
}
