//! WAL-G's `delete`: retain, before, everything, garbage, target. A plan is computed first (the
//! dry run shows it); `execute` removes sentinels first, so a half-deleted backup is never listed.
//!
//! Rules kept by every mode: backups are ordered by start time, not by name; permanent backups
//! and the WAL from their start to their finish segment are never deleted (except by
//! `everything FORCE`); a delta chain is never cut: a kept backup keeps all its ancestors, and a
//! request that would delete one fails (or, with FIND_FULL, moves back to the chain's full
//! backup); WAL is only deleted before the oldest kept backup's start segment, so a cluster
//! re-initialised into the same prefix (whose WAL names start over) keeps what its backups need.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;

use super::list::{chain, descendants, find, list_backups, BackupInfo};
use super::walfiles::{list_wal, position_of, position_of_lsn, WalKind, WalObject};
use crate::error::{Error, Result};
use crate::format::names::{backup_of_sentinel_key, is_backup_name, BACKUP_PREFIX, WAL_PREFIX};
use crate::storage::{ObjectInfo, Storage};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Modifier {
    /// Count every backup; fail rather than cut a delta chain.
    Plain,
    /// Count full backups only.
    Full,
    /// Count every backup, then move back to the full backup the boundary depends on.
    FindFull,
}

impl Modifier {
    pub fn parse(s: Option<&str>) -> Result<Modifier> {
        match s.map(|s| s.trim().to_ascii_uppercase()).as_deref() {
            None | Some("") => Ok(Modifier::Plain),
            Some("FULL") => Ok(Modifier::Full),
            Some("FIND_FULL") => Ok(Modifier::FindFull),
            Some(other) => Err(Error::InvalidArgument(format!(
                "unknown retain modifier {other:?}: use FULL, FIND_FULL or nothing"
            ))),
        }
    }
}

/// A backup name or a point in time.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    Name(String),
    Time(DateTime<Utc>),
}

impl Target {
    /// A backup name (base_...), or a time: RFC 3339 (`2024-01-01T00:00:00Z`) or without a zone
    /// (`2024-01-01T00:00:00`, `2024-01-01 00:00:00`, taken as UTC). A time after `now` is refused.
    pub fn parse(s: &str, now: DateTime<Utc>) -> Result<Target> {
        let s = s.trim();
        if s.starts_with("base_") {
            if !is_backup_name(s) {
                return Err(Error::InvalidArgument(format!("{s:?} is not a valid backup name")));
            }
            return Ok(Target::Name(s.to_string()));
        }
        let t = DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .ok()
            .or_else(|| {
                ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]
                    .iter()
                    .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
                    .map(|n| n.and_utc())
            })
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "{s:?} is neither a backup name nor a time (use e.g. 2024-01-31T12:00:00Z)"
                ))
            })?;
        if t > now {
            return Err(Error::InvalidArgument(format!(
                "target time {} is in the future (now is {}): nothing could be kept",
                t.to_rfc3339(),
                now.to_rfc3339()
            )));
        }
        Ok(Target::Time(t))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GarbageScope {
    All,
    /// Only WAL before the earliest backup that is not permanent.
    Archives,
    /// Only leftovers of backups that never finished or were partly deleted.
    Backups,
}

impl GarbageScope {
    pub fn parse(s: Option<&str>) -> Result<GarbageScope> {
        match s.map(|s| s.trim().to_ascii_uppercase()).as_deref() {
            None | Some("") => Ok(GarbageScope::All),
            Some("ARCHIVES") => Ok(GarbageScope::Archives),
            Some("BACKUPS") => Ok(GarbageScope::Backups),
            Some(other) => Err(Error::InvalidArgument(format!(
                "unknown garbage scope {other:?}: use ARCHIVES, BACKUPS or nothing"
            ))),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum DeleteRequest {
    /// Keep the newest `count` backups (FULL: full backups), and with `after` also every backup
    /// from that name or time on; delete older backups and the WAL before them.
    Retain { modifier: Modifier, count: usize, after: Option<Target> },
    /// Delete backups before the named one (or before the first backup at or after a time).
    Before { find_full: bool, target: Target },
    /// Delete every backup and all WAL; refused when permanent backups exist unless `force`.
    Everything { force: bool },
    /// Delete WAL and leftover backup objects older than the earliest non-permanent backup.
    Garbage { scope: GarbageScope },
    /// Delete one backup and the deltas that depend on it (FIND_FULL: its whole chain family).
    /// No WAL is deleted.
    Target { find_full: bool, name: String },
}

impl DeleteRequest {
    pub fn retain(modifier: Option<&str>, count: i64, after: Option<&str>, now: DateTime<Utc>) -> Result<Self> {
        if count <= 0 {
            return Err(Error::InvalidArgument(format!(
                "retain count must be at least 1, got {count} (use delete everything to remove all backups)"
            )));
        }
        Ok(DeleteRequest::Retain {
            modifier: Modifier::parse(modifier)?,
            count: count as usize,
            after: after.map(|a| Target::parse(a, now)).transpose()?,
        })
    }

    pub fn before(find_full: bool, target: &str, now: DateTime<Utc>) -> Result<Self> {
        Ok(DeleteRequest::Before { find_full, target: Target::parse(target, now)? })
    }

    pub fn target(find_full: bool, name: &str) -> Result<Self> {
        if !is_backup_name(name) {
            return Err(Error::InvalidArgument(format!("{name:?} is not a valid backup name")));
        }
        Ok(DeleteRequest::Target { find_full, name: name.to_string() })
    }

    /// WAL-G's command line after `delete`: `retain [FULL|FIND_FULL] N`, `before [FIND_FULL]
    /// name|time`, `everything [FORCE]`, `garbage [ARCHIVES|BACKUPS]`, `target [FIND_FULL] name`.
    pub fn parse_args(args: &[String], after: Option<&str>, now: DateTime<Utc>) -> Result<Self> {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let upper = |s: &str| s.to_ascii_uppercase();
        let bad = || {
            Error::InvalidArgument(format!(
                "unknown delete mode {:?}: use retain [FULL|FIND_FULL] N [--after name|time], before [FIND_FULL] name|time, \
                 everything [FORCE], garbage [ARCHIVES|BACKUPS] or target [FIND_FULL] name",
                a.join(" ")
            ))
        };
        if after.is_some() && a.first().map(|m| upper(m)) != Some("RETAIN".into()) {
            return Err(Error::InvalidArgument("--after is only valid with retain".into()));
        }
        match a.as_slice() {
            [m, rest @ ..] if upper(m) == "RETAIN" => {
                let (modifier, n) = match rest {
                    [n] => (None, *n),
                    [md, n] => (Some(*md), *n),
                    _ => return Err(bad()),
                };
                let count: i64 = n.parse().map_err(|_| {
                    Error::InvalidArgument(format!("retain count {n:?} is not a number"))
                })?;
                DeleteRequest::retain(modifier, count, after, now)
            }
            [m, f, t] if upper(m) == "BEFORE" && upper(f) == "FIND_FULL" => DeleteRequest::before(true, t, now),
            [m, t] if upper(m) == "BEFORE" => DeleteRequest::before(false, t, now),
            [m] if upper(m) == "EVERYTHING" => Ok(DeleteRequest::Everything { force: false }),
            [m, f] if upper(m) == "EVERYTHING" && upper(f) == "FORCE" => Ok(DeleteRequest::Everything { force: true }),
            [m] if upper(m) == "GARBAGE" => Ok(DeleteRequest::Garbage { scope: GarbageScope::All }),
            [m, s] if upper(m) == "GARBAGE" => Ok(DeleteRequest::Garbage { scope: GarbageScope::parse(Some(s))? }),
            [m, f, n] if upper(m) == "TARGET" && upper(f) == "FIND_FULL" => DeleteRequest::target(true, n),
            [m, n] if upper(m) == "TARGET" => DeleteRequest::target(false, n),
            _ => Err(bad()),
        }
    }
}

/// One object to delete; `backup` names the backup it belongs to (None for WAL).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeleteObject {
    pub key: String,
    pub size: u64,
    pub backup: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DeletePlan {
    /// Backups that lose their sentinel, oldest first.
    pub backups: Vec<String>,
    /// Every object, sorted by key.
    pub objects: Vec<DeleteObject>,
}

struct Catalog {
    all: Vec<BackupInfo>,
    /// Backup name (first path component under basebackups_005/) -> its objects.
    backup_objects: BTreeMap<String, Vec<ObjectInfo>>,
    wal: Vec<WalObject>,
    wal_segment_size: u64,
}

fn owner_of(key: &str) -> Option<String> {
    if let Some(n) = backup_of_sentinel_key(key) {
        return Some(n.to_string());
    }
    let rest = key.strip_prefix(BACKUP_PREFIX)?;
    rest.split_once('/').map(|(n, _)| n.to_string())
}

impl Catalog {
    fn load(storage: &dyn Storage, wal_segment_size: u64) -> Result<Catalog> {
        let all = list_backups(storage)?;
        let mut backup_objects: BTreeMap<String, Vec<ObjectInfo>> = BTreeMap::new();
        for o in storage.list(BACKUP_PREFIX)? {
            if let Some(owner) = owner_of(&o.key) {
                backup_objects.entry(owner).or_default().push(o);
            }
        }
        Ok(Catalog { all, backup_objects, wal: list_wal(storage)?, wal_segment_size })
    }

    fn index(&self, name: &str) -> Result<usize> {
        find(&self.all, name)?;
        Ok(self.all.iter().position(|b| b.name == name).expect("found above"))
    }

    /// Index of the first backup that starts at or after `t`.
    fn first_at_or_after(&self, t: DateTime<Utc>) -> Option<usize> {
        self.all.iter().position(|b| b.sentinel.start_time >= t)
    }

    fn target_index(&self, t: &Target) -> Result<Option<usize>> {
        match t {
            Target::Name(n) => self.index(n).map(Some),
            Target::Time(t) => Ok(self.first_at_or_after(*t)),
        }
    }

    /// Index of the full backup at the root of `idx`'s chain (itself when full).
    fn full_of(&self, idx: usize) -> usize {
        let root = chain(&self.all, &self.all[idx].name).last().map(|b| b.name.clone());
        root.and_then(|r| self.all.iter().position(|b| b.name == r)).unwrap_or(idx)
    }

    fn objects_of(&self, names: &[String]) -> Vec<DeleteObject> {
        names
            .iter()
            .flat_map(|n| {
                self.backup_objects.get(n).into_iter().flatten().map(move |o| DeleteObject {
                    key: o.key.clone(),
                    size: o.size,
                    backup: Some(n.clone()),
                })
            })
            .collect()
    }

    /// WAL positions protected by a permanent backup: (timeline, first, last) segment.
    fn permanent_ranges(&self) -> Vec<(u32, u64, u64)> {
        self.all
            .iter()
            .filter(|b| b.is_permanent)
            .filter_map(|b| {
                let start = position_of(&b.wal_file_name)?;
                let finish = position_of_lsn(b.sentinel.finish_lsn, self.wal_segment_size).max(start);
                Some((b.timeline(), start, finish))
            })
            .collect()
    }

    /// WAL objects (segments, backup history files, partial segments) before `boundary`, except
    /// those a permanent backup needs. Timeline history files are always kept.
    fn wal_before(&self, boundary: u64) -> Vec<DeleteObject> {
        let protected = self.permanent_ranges();
        self.wal
            .iter()
            .filter(|o| matches!(o.kind, WalKind::Segment | WalKind::BackupHistory | WalKind::Partial))
            .filter(|o| o.position < boundary)
            .filter(|o| !protected.iter().any(|(t, s, f)| *t == o.timeline && o.position >= *s && o.position <= *f))
            .map(|o| DeleteObject { key: o.key.clone(), size: o.size, backup: None })
            .collect()
    }

    /// Delete the non-permanent backups before index `keep_from` and the WAL before every kept
    /// backup. Err(Refused) if a kept backup depends on one that would go.
    fn before_index(&self, keep_from: usize) -> Result<DeletePlan> {
        let doomed: BTreeSet<&str> =
            self.all[..keep_from].iter().filter(|b| !b.is_permanent).map(|b| b.name.as_str()).collect();
        let kept = self.all.iter().filter(|b| !doomed.contains(b.name.as_str()));
        for k in kept {
            let cut: Vec<&str> =
                chain(&self.all, &k.name).iter().map(|c| c.name.as_str()).filter(|c| doomed.contains(c)).collect();
            if !cut.is_empty() {
                return Err(Error::Refused(format!(
                    "deleting {} would leave {} without its delta parents; use FIND_FULL (or FULL for retain) \
                     to keep the whole chain",
                    cut.join(", "),
                    k.name
                )));
            }
        }
        let boundary = self.all[keep_from..].iter().filter_map(|b| position_of(&b.wal_file_name)).min();
        let backups: Vec<String> =
            self.all[..keep_from].iter().filter(|b| doomed.contains(b.name.as_str())).map(|b| b.name.clone()).collect();
        let mut objects = self.objects_of(&backups);
        if let Some(boundary) = boundary {
            objects.extend(self.wal_before(boundary));
        }
        Ok(finish_plan(backups, objects))
    }

    fn plan(&self, req: &DeleteRequest) -> Result<DeletePlan> {
        let n = self.all.len();
        match req {
            DeleteRequest::Retain { modifier, count, after } => {
                if n == 0 {
                    return Ok(DeletePlan::default());
                }
                // With fewer backups than asked for, all are kept (and the WAL before the oldest goes).
                let mut keep_from = match modifier {
                    Modifier::Full => {
                        let fulls: Vec<usize> = (0..n).filter(|&i| self.all[i].is_full()).collect();
                        fulls.get(fulls.len().saturating_sub(*count)).copied().unwrap_or(0)
                    }
                    _ => n.saturating_sub(*count),
                };
                if let Some(a) = after {
                    // Keep the union: the newest N and everything from `after` on.
                    let from_after = self.target_index(a)?.unwrap_or(n);
                    keep_from = keep_from.min(from_after);
                }
                if *modifier == Modifier::FindFull {
                    keep_from = self.full_of(keep_from);
                }
                self.before_index(keep_from)
            }
            DeleteRequest::Before { find_full, target } => {
                let Some(mut idx) = self.target_index(target)? else {
                    return Err(Error::Refused(
                        "no backup starts at or after that time: delete before would remove every backup; \
                         use delete everything for that"
                            .into(),
                    ));
                };
                if *find_full {
                    idx = self.full_of(idx);
                }
                self.before_index(idx)
            }
            DeleteRequest::Everything { force } => {
                let permanent: Vec<&str> =
                    self.all.iter().filter(|b| b.is_permanent).map(|b| b.name.as_str()).collect();
                if !permanent.is_empty() && !force {
                    return Err(Error::Refused(format!(
                        "permanent backups exist ({}): unmark them or use everything FORCE",
                        permanent.join(", ")
                    )));
                }
                let backups: Vec<String> = self.all.iter().map(|b| b.name.clone()).collect();
                let mut objects: Vec<DeleteObject> = self
                    .backup_objects
                    .iter()
                    .flat_map(|(n, objs)| {
                        objs.iter().map(move |o| DeleteObject { key: o.key.clone(), size: o.size, backup: Some(n.clone()) })
                    })
                    .collect();
                objects.extend(self.wal.iter().map(|o| DeleteObject { key: o.key.clone(), size: o.size, backup: None }));
                Ok(finish_plan(backups, objects))
            }
            DeleteRequest::Target { find_full, name } => {
                let idx = self.index(name)?;
                let set: Vec<&BackupInfo> = if *find_full {
                    let root = self.all[self.full_of(idx)].name.clone();
                    let mut v = descendants(&self.all, &root);
                    v.push(&self.all[self.full_of(idx)]);
                    v
                } else {
                    let mut v = descendants(&self.all, name);
                    v.push(&self.all[idx]);
                    v
                };
                let permanent: Vec<&str> = set.iter().filter(|b| b.is_permanent).map(|b| b.name.as_str()).collect();
                if !permanent.is_empty() {
                    return Err(Error::Refused(format!(
                        "cannot delete permanent backups {}: unmark them first (walg_backup_mark / backup-mark -i)",
                        permanent.join(", ")
                    )));
                }
                let names: BTreeSet<&str> = set.iter().map(|b| b.name.as_str()).collect();
                let backups: Vec<String> =
                    self.all.iter().filter(|b| names.contains(b.name.as_str())).map(|b| b.name.clone()).collect();
                Ok(finish_plan(backups.clone(), self.objects_of(&backups)))
            }
            DeleteRequest::Garbage { scope } => {
                let Some(first) = self.all.iter().position(|b| !b.is_permanent) else {
                    return Err(Error::Refused(
                        "garbage is what lies before the earliest backup that is not permanent, and there is none".into(),
                    ));
                };
                let mut objects = Vec::new();
                if *scope != GarbageScope::Backups {
                    if let Some(boundary) = self.all[first..].iter().filter_map(|b| position_of(&b.wal_file_name)).min() {
                        objects.extend(self.wal_before(boundary));
                    }
                }
                if *scope != GarbageScope::Archives {
                    // Leftovers: objects of a backup without sentinel, all older than the earliest
                    // non-permanent backup's start (a backup running now is newer and stays).
                    let since: std::time::SystemTime = self.all[first].sentinel.start_time.into();
                    for (owner, objs) in &self.backup_objects {
                        if self.all.iter().any(|b| &b.name == owner) || objs.iter().any(|o| o.modified >= since) {
                            continue;
                        }
                        objects.extend(objs.iter().map(|o| DeleteObject {
                            key: o.key.clone(),
                            size: o.size,
                            backup: Some(owner.clone()),
                        }));
                    }
                }
                Ok(finish_plan(Vec::new(), objects))
            }
        }
    }
}

fn finish_plan(backups: Vec<String>, mut objects: Vec<DeleteObject>) -> DeletePlan {
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    objects.dedup_by(|a, b| a.key == b.key);
    DeletePlan { backups, objects }
}

/// What `req` would delete. Nothing is changed. `wal_segment_size` locates the finish segment
/// of permanent backups (whose WAL is kept).
pub fn plan(storage: &dyn Storage, req: &DeleteRequest, wal_segment_size: u64) -> Result<DeletePlan> {
    Catalog::load(storage, wal_segment_size)?.plan(req)
}

/// Delete what `plan` lists: sentinels first (the backups disappear from the list at once), then
/// the rest of the backups' objects, then WAL.
pub fn execute(storage: &dyn Storage, plan: &DeletePlan) -> Result<()> {
    let is_sentinel = |k: &str| backup_of_sentinel_key(k).is_some();
    for o in plan.objects.iter().filter(|o| is_sentinel(&o.key)) {
        storage.delete(&o.key)?;
    }
    for o in plan.objects.iter().filter(|o| !is_sentinel(&o.key) && o.key.starts_with(BACKUP_PREFIX)) {
        storage.delete(&o.key)?;
    }
    for o in plan.objects.iter().filter(|o| o.key.starts_with(WAL_PREFIX)) {
        storage.delete(&o.key)?;
    }
    Ok(())
}

/// Plan, and delete when `confirm` (otherwise a dry run). Returns the plan either way.
pub fn run(storage: &dyn Storage, req: &DeleteRequest, wal_segment_size: u64, confirm: bool) -> Result<DeletePlan> {
    let p = plan(storage, req, wal_segment_size)?;
    if confirm {
        execute(storage, &p)?;
    }
    Ok(p)
}
