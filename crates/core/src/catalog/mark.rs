//! WAL-G's `backup-mark`: permanence lives in `metadata.json` (the sentinel keeps the value it
//! had at push time). Marking a delta permanent marks its whole chain, since the delta cannot be
//! restored without its ancestors; unmarking is refused while a permanent delta depends on it.

use super::list::{chain, descendants, find, list_backups, BackupInfo};
use crate::error::{Error, Result};
use crate::format::names::metadata_key;
use crate::format::BackupMetadata;
use crate::storage::Storage;

/// The metadata.json to write for `b`: the stored one, or one rebuilt from the sentinel.
fn metadata_of(b: &BackupInfo) -> BackupMetadata {
    b.metadata.clone().unwrap_or_else(|| {
        let s = &b.sentinel;
        BackupMetadata {
            start_time: s.start_time,
            finish_time: s.finish_time,
            date_fmt: s.date_fmt.clone(),
            hostname: s.hostname.clone(),
            data_dir: s.data_dir.clone(),
            pg_version: s.pg_version,
            start_lsn: s.lsn,
            finish_lsn: s.finish_lsn,
            is_permanent: s.is_permanent,
            system_identifier: s.system_identifier,
            uncompressed_size: s.uncompressed_size,
            compressed_size: s.compressed_size,
            user_data: s.user_data.clone(),
        }
    })
}

/// Mark `name` permanent (and its delta ancestors) or not permanent. Returns the backups whose
/// flag changed, oldest first (empty when nothing had to change).
pub fn mark(storage: &dyn Storage, name: &str, permanent: bool) -> Result<Vec<String>> {
    let all = list_backups(storage)?;
    find(&all, name)?;
    let targets: Vec<&BackupInfo> = if permanent {
        chain(&all, name)
    } else {
        let pinned: Vec<String> =
            descendants(&all, name).into_iter().filter(|d| d.is_permanent).map(|d| d.name.clone()).collect();
        if !pinned.is_empty() {
            return Err(Error::Refused(format!(
                "cannot mark {name} not permanent: the permanent delta backups {} depend on it; unmark them first",
                pinned.join(", ")
            )));
        }
        vec![find(&all, name)?]
    };
    let mut changed = Vec::new();
    for b in targets.into_iter().rev() {
        if b.is_permanent == permanent {
            continue;
        }
        let mut m = metadata_of(b);
        m.is_permanent = permanent;
        storage.put(&metadata_key(&b.name), &m.to_json())?;
        changed.push(b.name.clone());
    }
    Ok(changed)
}
