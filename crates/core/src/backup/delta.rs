//! Delta backups: choosing the base (WAL-G's rules) and what a delta stores of each file.
//!
//! Base choice, as WAL-G's `RegularDeltaBackupConfigurator` does it (a full is taken instead,
//! and the reason said, when): `WALG_DELTA_MAX_STEPS` is 0; there is no backup yet; the new
//! delta would be step `max + 1` (counted from the selected backup's `DeltaCount`, before
//! `LATEST_FULL` moves to its full, as WAL-G counts); the base has no start LSN; the base is
//! permanent and the new backup is not (with `LATEST` only); the base has no files metadata.
//! Once `pg_backup_start` gave the start LSN: a base whose `FinishLSN` is after it ("from the
//! future") or from another system (system identifier) is refused when the caller named the base
//! (`delta_from`, `delta_from_user_data`), and replaced by a full when it was chosen
//! automatically (WAL-G stops with an error in both cases; a scheduled backup should not).
//!
//! Per file (push.rs asks `plan_file`): unchanged since the base (same mtime as the base
//! records, and that mtime at least `SKIP_MARGIN` before the base started, so a write in the
//! same clock tick as the base's read cannot hide) is skipped; a relation segment the base has
//! is stored as a "wi1" increment of its pages with LSN >= the base's start LSN (and new pages);
//! everything else whole.

use std::collections::BTreeMap;
use std::time::SystemTime;

use chrono::{DateTime, Utc};

use crate::catalog::list::{latest_backup, list_backups, BackupInfo};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::format::increment::is_paged_file;
use crate::format::names::{files_metadata_key, lsn_to_string, sentinel_key};
use crate::format::sentinel::{FileDescription, FilesMetadata};
use crate::storage::{get_bytes, Storage};

/// A file's mtime must be this much older than the base's start to be skipped as unchanged.
pub const SKIP_MARGIN: std::time::Duration = std::time::Duration::from_secs(1);

/// The backup a delta is taken from, with what the delta needs of it.
#[derive(Clone, Debug, PartialEq)]
pub struct DeltaBase {
    /// DeltaFrom.
    pub name: String,
    /// DeltaFullName: the full backup at the root of the chain.
    pub full_name: String,
    /// DeltaCount of the new delta.
    pub count: i64,
    /// DeltaLSN: the base's start LSN; pages at or after it go into increments.
    pub start_lsn: u64,
    pub finish_lsn: u64,
    pub start_time: DateTime<Utc>,
    pub system_identifier: Option<u64>,
    /// The base's `Files` (mtimes decide what is unchanged).
    pub files: BTreeMap<String, FileDescription>,
}

/// What the caller asked for (`walg_backup_push(full, delta_from, delta_from_user_data)`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeltaRequest {
    /// WAL-G's `--full`.
    pub full: bool,
    /// WAL-G's `--delta-from-name`.
    pub from_name: Option<String>,
    /// WAL-G's `--delta-from-user-data`: the backup whose user data equals this JSON.
    pub from_user_data: Option<serde_json::Value>,
}

impl DeltaRequest {
    fn explicit(&self) -> bool {
        self.from_name.is_some() || self.from_user_data.is_some()
    }
}

/// The decision before `pg_backup_start`.
#[derive(Clone, Debug, PartialEq)]
pub enum BaseChoice {
    Full { reason: String },
    Delta { base: Box<DeltaBase>, explicit: bool },
}

fn full(reason: impl Into<String>) -> Result<BaseChoice> {
    Ok(BaseChoice::Full { reason: reason.into() })
}

/// The selected backup: LATEST, by name or by user data.
fn select(storage: &dyn Storage, req: &DeltaRequest) -> Result<Option<BackupInfo>> {
    if let Some(name) = &req.from_name {
        let all = list_backups(storage)?;
        return crate::catalog::list::find(&all, name).map(|b| Some(b.clone()));
    }
    if let Some(ud) = &req.from_user_data {
        let all = list_backups(storage)?;
        let found: Vec<&BackupInfo> = all.iter().filter(|b| b.user_data() == Some(ud)).collect();
        return match found.as_slice() {
            [one] => Ok(Some((*one).clone())),
            [] => Err(Error::NotFound(format!("no backup in {} has the user data {ud}", storage.describe()))),
            many => Err(Error::InvalidArgument(format!(
                "{} backups have the user data {ud} ({}): delta_from_user_data must pick exactly one",
                many.len(),
                many.iter().map(|b| b.name.as_str()).collect::<Vec<_>>().join(", ")
            ))),
        };
    }
    latest_backup(storage)
}

/// Choose full or delta before the backup starts (WAL-G's rules, module header).
pub fn choose_base(cfg: &Config, storage: &dyn Storage, req: &DeltaRequest, permanent: bool) -> Result<BaseChoice> {
    if req.full {
        return full("a full backup was asked for");
    }
    if cfg.delta_max_steps == 0 {
        return full("WALG_DELTA_MAX_STEPS (walg.delta_max_steps) is 0");
    }
    // A new file prefix is created by the backup anyway; listing it must not fail first.
    storage.prepare_write()?;
    let Some(selected) = select(storage, req)? else {
        return full(format!("no backup in {} to take a delta from", storage.describe()));
    };
    let count = selected.sentinel.delta_count.map(|c| c + 1).unwrap_or(1);
    if count > cfg.delta_max_steps as i64 {
        return full(format!(
            "{} is step {} of its chain and WALG_DELTA_MAX_STEPS is {}",
            selected.name,
            count - 1,
            cfg.delta_max_steps
        ));
    }
    if selected.sentinel.lsn == 0 {
        return full(format!("{} records no start LSN", selected.name));
    }
    if !permanent && !cfg.delta_from_full && selected.is_permanent {
        return full(format!("{} is permanent and the new backup is not", selected.name));
    }
    let base = if cfg.delta_from_full {
        match selected.sentinel.delta_full_name.clone() {
            Some(root) if root != selected.name => {
                let all = list_backups(storage)?;
                crate::catalog::list::find(&all, &root)
                    .map_err(|_| {
                        Error::NotFound(format!(
                            "{} names {root} as its full backup (WALG_DELTA_ORIGIN is LATEST_FULL), but {} has no {}",
                            selected.name,
                            storage.describe(),
                            sentinel_key(&root)
                        ))
                    })?
                    .clone()
            }
            _ => selected,
        }
    } else {
        selected
    };
    let fm_key = files_metadata_key(&base.name);
    let files = match get_bytes(storage, &fm_key)? {
        Some(b) if !base.sentinel.files_metadata_disabled => FilesMetadata::from_json(&b, &fm_key)?.files,
        _ => return full(format!("{} has no files metadata to compare files with", base.name)),
    };
    let full_name = base.sentinel.delta_full_name.clone().unwrap_or_else(|| base.name.clone());
    Ok(BaseChoice::Delta {
        base: Box::new(DeltaBase {
            name: base.name.clone(),
            full_name,
            count,
            start_lsn: base.sentinel.lsn,
            finish_lsn: base.sentinel.finish_lsn,
            start_time: base.sentinel.start_time,
            system_identifier: base.sentinel.system_identifier,
            files,
        }),
        explicit: req.explicit(),
    })
}

/// After `pg_backup_start`: Ok(None) if `base` may be used, Ok(Some(reason)) to take a full
/// instead (automatic choice), Err(Conflict) when the caller named this base.
///
/// A base on another timeline is never used: after a restore and promotion, the abandoned
/// timeline's backups may end below the present LSN while holding pages this timeline never had,
/// and the page-LSN rule would then miss pages changed on this timeline since the fork. WAL-G
/// does not check this; a full backup is the safe answer.
pub fn check_base_at_start(
    base: &DeltaBase,
    explicit: bool,
    start_lsn: u64,
    timeline: u32,
    system_identifier: u64,
) -> Result<Option<String>> {
    let base_timeline = crate::format::names::parse_wal_file_name(crate::format::names::backup_wal_file_name(&base.name))
        .map(|(tl, _)| tl);
    let problem = if base_timeline != Some(timeline) {
        Some(format!(
            "{} is on timeline {}, this backup on timeline {timeline}: a delta is taken only from a backup of the same timeline",
            base.name,
            base_timeline.map_or("unknown".to_string(), |t| t.to_string())
        ))
    } else if base.finish_lsn > start_lsn {
        Some(format!(
            "{} finished at {}, after this backup's start {}: it is not an ancestor of this cluster's present (restored from a later backup?)",
            base.name,
            lsn_to_string(base.finish_lsn),
            lsn_to_string(start_lsn)
        ))
    } else if base.system_identifier.is_some_and(|s| s != system_identifier) {
        Some(format!(
            "{} is from another database system (system identifier {}, this one is {system_identifier})",
            base.name,
            base.system_identifier.unwrap_or_default()
        ))
    } else {
        None
    };
    match problem {
        Some(p) if explicit => Err(Error::Conflict(format!("cannot take a delta from {p}"))),
        other => Ok(other),
    }
}

/// What a delta stores of one walked file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilePlan {
    Whole,
    /// Unchanged since the base: recorded with IsSkipped, not stored.
    Skip,
    /// A relation segment the base has: a "wi1" increment (or whole, if a page header is invalid).
    Increment,
}

/// The plan for a file `name` of `size` bytes modified at `mtime`.
pub fn plan_file(base: &DeltaBase, name: &str, size: u64, mtime: SystemTime) -> FilePlan {
    let Some(d) = base.files.get(name) else { return FilePlan::Whole };
    let mtime = DateTime::<Utc>::from(mtime);
    let margin = chrono::Duration::from_std(SKIP_MARGIN).expect("small duration");
    if d.mtime == mtime && mtime + margin <= base.start_time {
        return FilePlan::Skip;
    }
    if is_paged_file(name, size) {
        FilePlan::Increment
    } else {
        FilePlan::Whole
    }
}

/// The name of a delta: `<own name>_D_<base's 24-hex start segment>`.
pub fn delta_name(own: &str, base: &str) -> String {
    let seg = crate::format::names::backup_wal_file_name(base);
    format!("{own}_D_{seg}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn base() -> DeltaBase {
        let t0 = DateTime::<Utc>::from(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000));
        let mut files = BTreeMap::new();
        let fd = |secs: u64| FileDescription {
            is_incremented: false,
            is_skipped: false,
            mtime: DateTime::<Utc>::from(SystemTime::UNIX_EPOCH + Duration::from_secs(secs)),
            updates_count: 0,
            corrupt_blocks: None,
            size: None,
        };
        files.insert("/base/5/16384".to_string(), fd(500_000));
        files.insert("/base/5/16385".to_string(), fd(1_000_000)); // written as the base started
        files.insert("/PG_VERSION".to_string(), fd(400_000));
        DeltaBase {
            name: "base_000000010000000000000004".into(),
            full_name: "base_000000010000000000000004".into(),
            count: 1,
            start_lsn: 0x400_0028,
            finish_lsn: 0x400_0100,
            start_time: t0,
            system_identifier: Some(7),
            files,
        }
    }

    #[test]
    fn file_plans() {
        let b = base();
        let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(plan_file(&b, "/base/5/16384", 8192, at(500_000)), FilePlan::Skip);
        assert_eq!(plan_file(&b, "/base/5/16384", 8192, at(500_001)), FilePlan::Increment);
        // Same mtime, but within the margin of the base's start: not trusted.
        assert_eq!(plan_file(&b, "/base/5/16385", 8192, at(1_000_000)), FilePlan::Increment);
        assert_eq!(plan_file(&b, "/base/5/16384", 8000, at(600_000)), FilePlan::Whole);
        assert_eq!(plan_file(&b, "/base/5/99999", 8192, at(600_000)), FilePlan::Whole, "not in the base");
        assert_eq!(plan_file(&b, "/PG_VERSION", 3, at(400_000)), FilePlan::Skip);
        assert_eq!(plan_file(&b, "/PG_VERSION", 3, at(400_001)), FilePlan::Whole);
        assert_eq!(delta_name("base_000000010000000000000009", &b.name), "base_000000010000000000000009_D_000000010000000000000004");
        assert_eq!(delta_name("base_000000010000000000000009", "base_000000010000000000000006_D_000000010000000000000004"),
                   "base_000000010000000000000009_D_000000010000000000000006");
    }

    #[test]
    fn base_at_start() {
        let b = base();
        assert_eq!(check_base_at_start(&b, false, 0x500_0000, 1, 7).unwrap(), None);
        let r = check_base_at_start(&b, false, 0x400_0050, 1, 7).unwrap().unwrap();
        assert!(r.contains("after this backup's start"), "{r}");
        let r = check_base_at_start(&b, false, 0x500_0000, 1, 8).unwrap().unwrap();
        assert!(r.contains("another database system"), "{r}");
        let e = check_base_at_start(&b, true, 0x500_0000, 1, 8).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Conflict);
        // After a restore and promotion: the base (timeline 1) ends below the present LSN of
        // timeline 2, yet it is no ancestor of it. A full is taken; a named base is refused.
        let r = check_base_at_start(&b, false, 0x500_0000, 2, 7).unwrap().unwrap();
        assert!(r.contains("timeline 1") && r.contains("timeline 2"), "{r}");
        let e = check_base_at_start(&b, true, 0x500_0000, 2, 7).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Conflict);
    }
}
