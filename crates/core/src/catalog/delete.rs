//! WAL-G's `delete`: retain, before, everything, garbage, target. A plan is computed first (the
//! dry run shows it); `execute` removes sentinels first, so a half-deleted backup is never listed.
//!
//! Rules kept by every mode: backups are ordered by start time, not by name; permanent backups
//! and the WAL from their start to their finish segment are never deleted (except by
//! `everything FORCE`); a delta chain is never cut: a kept backup keeps all its ancestors, and a
//! request that would delete one fails (or, with FIND_FULL, moves back to the chain's full
//! backup); WAL is only deleted before the oldest kept backup's start segment, so a cluster
//! re-initialised into the same prefix (whose WAL names start over) keeps what its backups need.
//!
//! Delete never races a backup (backup/in_progress.rs writes the markers). The plan is made in
//! this order: list sentinels, backup objects, WAL and unfinished uploads FIRST, then read the
//! in-progress markers. Why the order matters: a backup writes its marker before anything
//! else. If its marker is not seen, it was written after the marker read, so every object of
//! that backup is newer than the listings and cannot be in the plan (delete removes only what it
//! listed). Reading markers first would let a backup start, write parts and be listed as a
//! marker-less leftover in between. Listings must see completed writes (file storage and S3
//! both do). With fresh markers (not abandoned, refreshed within backup::in_progress::STALE_AFTER):
//! - objects of the named backups, and of their delta parents' chains, are never deleted;
//! - WAL at or after the earliest marker's start segment (any timeline) is never deleted, and
//!   a marker that has no start yet (the backup is inside pg_backup_start) keeps all WAL;
//! - `everything` is refused, FORCE or not (FORCE overrides permanence, never a running backup);
//!   `target` of a backup that a running one depends on is refused.
//!
//! `execute` reads the markers once more right before deleting WAL, and keeps the WAL that a
//! backup started since the plan needs. A stale or abandoned marker is garbage, with the
//! objects of its backup if that has no sentinel.
//!
//! Changed-block maps (`walg_ext_blockmaps_005/<segment>`, wal/blocks/stored.rs) follow their
//! segments: every rule above that keeps or deletes the WAL segment at a position keeps or
//! deletes the map of that position too (`wal_before`, `execute`), and `everything` removes them
//! all. A map without its segment (WAL deleted by WAL-G) goes when its position does.
//!
//! Unfinished uploads (temp files of file storage, S3 multipart uploads) are garbage once their
//! last activity is older than `PENDING_UPLOAD_MIN_AGE` (24 h): far longer than any one object
//! takes to upload, so a live upload is never aborted. Process ids in temp file names are not
//! used: storage may be shared by hosts whose pids mean nothing here.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;

use super::list::{chain, descendants, find, list_backups, BackupInfo};
use super::walfiles::{list_maps, list_wal, position_of, position_of_lsn, WalKind, WalObject};
use crate::backup::in_progress::{read_markers, MarkerState};
use crate::error::{Error, Result};
use crate::format::names::{backup_of_sentinel_key, is_backup_name, BACKUP_PREFIX, IN_PROGRESS_PREFIX, WAL_PREFIX};
use crate::storage::{ObjectInfo, PendingUpload, Storage};
use crate::wal::blocks::stored::MAP_PREFIX;

/// Unfinished uploads younger than this (since their last known activity) are left alone.
pub const PENDING_UPLOAD_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

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
    /// An unfinished upload, aborted rather than deleted: S3's upload id ("" for a temp file of
    /// file storage, whose `key` is the temp file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_id: Option<String>,
}

impl DeleteObject {
    fn object(key: &str, size: u64, backup: Option<&str>) -> DeleteObject {
        DeleteObject { key: key.to_string(), size, backup: backup.map(str::to_string), upload_id: None }
    }

    /// The key as shown to the user: an S3 multipart upload says so (its key is not an object).
    pub fn display_key(&self) -> String {
        match self.upload_id.as_deref() {
            Some(id) if !id.is_empty() => format!("{} (unfinished multipart upload {id})", self.key),
            _ => self.key.clone(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DeletePlan {
    /// Backups that lose their sentinel, oldest first.
    pub backups: Vec<String>,
    /// Every object, sorted by key.
    pub objects: Vec<DeleteObject>,
    /// Backups in progress whose objects and WAL were kept (fresh markers, described).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub in_progress: Vec<String>,
    /// Things the user should know (e.g. unfinished uploads could not be listed, so none are
    /// in the plan).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

struct Catalog {
    all: Vec<BackupInfo>,
    /// Backup name (first path component under basebackups_005/) -> its objects.
    backup_objects: BTreeMap<String, Vec<ObjectInfo>>,
    wal: Vec<WalObject>,
    /// Changed-block maps, classified by their segment's name; deleted with that segment.
    maps: Vec<WalObject>,
    /// Unfinished uploads anywhere under the prefix (listed for garbage and everything only).
    uploads: Vec<PendingUpload>,
    notes: Vec<String>,
    /// Read after every listing above (see the module header).
    markers: Vec<MarkerState>,
    wal_segment_size: u64,
    now: std::time::SystemTime,
}

/// What fresh markers protect.
struct Guard {
    /// Backups in progress and their delta parents' chains.
    names: BTreeSet<String>,
    /// WAL at or after this position (any timeline) is kept; Some(0) keeps all.
    wal_floor: Option<u64>,
}

/// WAL floor of fresh markers: the earliest start position; 0 when one has no start yet.
fn wal_floor(markers: &[MarkerState]) -> Option<u64> {
    markers
        .iter()
        .filter(|m| m.fresh)
        .map(|m| m.marker.as_ref().and_then(|mk| mk.start_position()).unwrap_or(0))
        .min()
}

fn owner_of(key: &str) -> Option<String> {
    if let Some(n) = backup_of_sentinel_key(key) {
        return Some(n.to_string());
    }
    let rest = key.strip_prefix(BACKUP_PREFIX)?;
    rest.split_once('/').map(|(n, _)| n.to_string())
}

impl Catalog {
    fn load(storage: &dyn Storage, wal_segment_size: u64, now: std::time::SystemTime, want_uploads: bool) -> Result<Catalog> {
        let all = list_backups(storage)?;
        let mut backup_objects: BTreeMap<String, Vec<ObjectInfo>> = BTreeMap::new();
        for o in storage.list(BACKUP_PREFIX)? {
            if o.key.starts_with(IN_PROGRESS_PREFIX) {
                continue; // markers are read below, after every listing
            }
            if let Some(owner) = owner_of(&o.key) {
                backup_objects.entry(owner).or_default().push(o);
            }
        }
        let wal = list_wal(storage)?;
        let maps = list_maps(storage)?;
        let mut notes = Vec::new();
        let uploads = if want_uploads {
            // Deleting less is safe: a storage that will not list unfinished uploads (an S3
            // policy without s3:ListBucketMultipartUploads) only loses that part of the garbage.
            storage.pending_uploads("").unwrap_or_else(|e| {
                notes.push(format!("unfinished uploads could not be listed, none are removed: {e}"));
                Vec::new()
            })
        } else {
            Vec::new()
        };
        // LAST: after every listing (module header).
        let markers = read_markers(storage, now)?;
        Ok(Catalog { all, backup_objects, wal, maps, uploads, notes, markers, wal_segment_size, now })
    }

    fn guard(&self) -> Guard {
        let mut names = BTreeSet::new();
        for m in self.markers.iter().filter(|m| m.fresh).filter_map(|m| m.marker.as_ref()) {
            names.extend(m.backup_name.clone());
            if let Some(parent) = &m.delta_from {
                names.extend(chain(&self.all, parent).iter().map(|b| b.name.clone()));
                names.insert(parent.clone());
            }
        }
        Guard { names, wal_floor: wal_floor(&self.markers) }
    }

    fn in_progress(&self) -> Vec<String> {
        self.markers.iter().filter(|m| m.fresh).map(|m| m.describe()).collect()
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
                self.backup_objects.get(n).into_iter().flatten().map(move |o| DeleteObject::object(&o.key, o.size, Some(n)))
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
    /// those a permanent backup or a backup in progress needs, and the changed-block maps of the
    /// same positions. Timeline history files are always kept.
    fn wal_before(&self, boundary: u64) -> Vec<DeleteObject> {
        let protected = self.permanent_ranges();
        let floor = self.guard().wal_floor;
        self.wal
            .iter()
            .chain(&self.maps)
            .filter(|o| matches!(o.kind, WalKind::Segment | WalKind::BackupHistory | WalKind::Partial))
            .filter(|o| o.position < boundary)
            .filter(|o| floor.is_none_or(|f| o.position < f))
            .filter(|o| !protected.iter().any(|(t, s, f)| *t == o.timeline && o.position >= *s && o.position <= *f))
            .map(|o| DeleteObject::object(&o.key, o.size, None))
            .collect()
    }

    /// Garbage that is not WAL and not an unmarked leftover: stale or abandoned markers (with
    /// the objects of their backup when it never got a sentinel), and unfinished uploads idle
    /// for `PENDING_UPLOAD_MIN_AGE` under `prefix`.
    fn dead_work(&self, prefix: &str, guard: &Guard) -> Vec<DeleteObject> {
        let mut out = Vec::new();
        if BACKUP_PREFIX.starts_with(prefix) {
            for m in self.markers.iter().filter(|m| !m.fresh) {
                let name = m.marker.as_ref().and_then(|mk| mk.backup_name.clone());
                out.push(DeleteObject::object(&m.key, m.size, name.as_deref()));
                let Some(name) = name else { continue };
                if guard.names.contains(&name) || self.all.iter().any(|b| b.name == name) {
                    continue; // restarted under the same name, or committed: not garbage
                }
                out.extend(self.objects_of(&[name]));
            }
        }
        for u in self.uploads.iter().filter(|u| u.key.starts_with(prefix)) {
            let idle = self.now.duration_since(u.last_activity).unwrap_or_default();
            let owner = owner_of(&u.key);
            if idle < PENDING_UPLOAD_MIN_AGE || owner.as_ref().is_some_and(|o| guard.names.contains(o)) {
                continue;
            }
            out.push(DeleteObject { key: u.key.clone(), size: u.size, backup: owner, upload_id: Some(u.upload_id.clone()) });
        }
        out
    }

    /// Delete the non-permanent backups before index `keep_from` and the WAL before every kept
    /// backup. Err(Refused) if a kept backup depends on one that would go.
    fn before_index(&self, keep_from: usize) -> Result<DeletePlan> {
        let guard = self.guard();
        let doomed: BTreeSet<&str> = self.all[..keep_from]
            .iter()
            .filter(|b| !b.is_permanent && !guard.names.contains(&b.name))
            .map(|b| b.name.as_str())
            .collect();
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
                let running = self.in_progress();
                if !running.is_empty() {
                    return Err(Error::Refused(format!(
                        "a backup is in progress ({}): delete everything would remove its objects and WAL; wait for it \
                         to finish or cancel it (FORCE does not override this; the marker of a killed backup goes \
                         stale after {} minutes)",
                        running.join("; "),
                        crate::backup::in_progress::STALE_AFTER.as_secs() / 60
                    )));
                }
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
                    .flat_map(|(n, objs)| objs.iter().map(move |o| DeleteObject::object(&o.key, o.size, Some(n))))
                    .collect();
                objects.extend(self.wal.iter().chain(&self.maps).map(|o| DeleteObject::object(&o.key, o.size, None)));
                // Stale markers, and unfinished uploads idle long enough.
                objects.extend(self.dead_work("", &self.guard()));
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
                let guard = self.guard();
                let needed: Vec<&str> =
                    set.iter().filter(|b| guard.names.contains(&b.name)).map(|b| b.name.as_str()).collect();
                if !needed.is_empty() {
                    return Err(Error::Refused(format!(
                        "{} is needed by a backup in progress ({}); wait for it to finish",
                        needed.join(", "),
                        self.in_progress().join("; ")
                    )));
                }
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
                let guard = self.guard();
                let first = self.all.iter().position(|b| !b.is_permanent);
                let mut objects = Vec::new();
                if let (Some(first), true) = (first, *scope != GarbageScope::Backups) {
                    if let Some(boundary) = self.all[first..].iter().filter_map(|b| position_of(&b.wal_file_name)).min() {
                        objects.extend(self.wal_before(boundary));
                    }
                }
                if let (Some(first), true) = (first, *scope != GarbageScope::Archives) {
                    // Leftovers: objects of a backup without sentinel, all older than the earliest
                    // non-permanent backup's start (a backup running now is newer and stays; one
                    // with a fresh marker stays whatever its age).
                    let since: std::time::SystemTime = self.all[first].sentinel.start_time.into();
                    for (owner, objs) in &self.backup_objects {
                        if self.all.iter().any(|b| &b.name == owner)
                            || guard.names.contains(owner)
                            || objs.iter().any(|o| o.modified >= since)
                        {
                            continue;
                        }
                        objects.extend(objs.iter().map(|o| DeleteObject::object(&o.key, o.size, Some(owner))));
                    }
                }
                let prefix = match scope {
                    GarbageScope::All => "",
                    GarbageScope::Archives => WAL_PREFIX,
                    GarbageScope::Backups => BACKUP_PREFIX,
                };
                objects.extend(self.dead_work(prefix, &guard));
                if first.is_none() && objects.is_empty() {
                    return Err(Error::Refused(
                        "garbage is what lies before the earliest backup that is not permanent, and there is none".into(),
                    ));
                }
                Ok(finish_plan(Vec::new(), objects))
            }
        }
    }
}

fn finish_plan(backups: Vec<String>, mut objects: Vec<DeleteObject>) -> DeletePlan {
    objects.sort_by(|a, b| a.key.cmp(&b.key).then_with(|| a.upload_id.cmp(&b.upload_id)));
    objects.dedup_by(|a, b| a.key == b.key && a.upload_id == b.upload_id);
    DeletePlan { backups, objects, in_progress: Vec::new(), notes: Vec::new() }
}

/// What `req` would delete. Nothing is changed. `wal_segment_size` locates the finish segment
/// of permanent backups (whose WAL is kept).
pub fn plan(storage: &dyn Storage, req: &DeleteRequest, wal_segment_size: u64) -> Result<DeletePlan> {
    plan_at(storage, req, wal_segment_size, std::time::SystemTime::now())
}

/// `plan` with the clock given (markers' freshness, unfinished uploads' age).
pub fn plan_at(storage: &dyn Storage, req: &DeleteRequest, wal_segment_size: u64, now: std::time::SystemTime) -> Result<DeletePlan> {
    let want_uploads = matches!(req, DeleteRequest::Garbage { .. } | DeleteRequest::Everything { .. });
    let catalog = Catalog::load(storage, wal_segment_size, now, want_uploads)?;
    let mut p = catalog.plan(req)?;
    p.in_progress = catalog.in_progress();
    p.notes = catalog.notes.clone();
    Ok(p)
}

/// Delete what `plan` lists: sentinels first (the backups disappear from the list at once), then
/// the rest of the backups' objects, then unfinished uploads, then WAL and its maps, except the
/// WAL (and maps) that a backup started since the plan needs (markers are read again just
/// before). Returns the keys of the planned WAL objects and maps it kept for that reason.
pub fn execute(storage: &dyn Storage, plan: &DeletePlan) -> Result<Vec<String>> {
    let is_sentinel = |k: &str| backup_of_sentinel_key(k).is_some();
    let is_upload = |o: &DeleteObject| o.upload_id.is_some();
    for o in plan.objects.iter().filter(|o| !is_upload(o) && is_sentinel(&o.key)) {
        storage.delete(&o.key)?;
    }
    for o in plan.objects.iter().filter(|o| !is_upload(o) && !is_sentinel(&o.key) && o.key.starts_with(BACKUP_PREFIX)) {
        storage.delete(&o.key)?;
    }
    for o in plan.objects.iter().filter(|o| is_upload(o)) {
        let upload = PendingUpload {
            key: o.key.clone(),
            upload_id: o.upload_id.clone().unwrap_or_default(),
            last_activity: std::time::UNIX_EPOCH,
            size: o.size,
        };
        storage.abort_upload(&upload)?;
    }
    let wal_file = |key: &str| key.strip_prefix(WAL_PREFIX).or_else(|| key.strip_prefix(MAP_PREFIX)).map(str::to_string);
    let wal: Vec<&DeleteObject> = plan.objects.iter().filter(|o| !is_upload(o) && wal_file(&o.key).is_some()).collect();
    if wal.is_empty() {
        return Ok(Vec::new());
    }
    let markers = read_markers(storage, std::time::SystemTime::now())?;
    let floor = wal_floor(&markers);
    let mut kept = Vec::new();
    for o in wal {
        let file = wal_file(&o.key).unwrap_or_default();
        let (kind, _, position) = super::walfiles::classify(super::walfiles::strip_extension(&file));
        let needed = floor.is_some_and(|f| kind == WalKind::Other || kind == WalKind::History || position >= f);
        if needed {
            kept.push(o.key.clone());
        } else {
            storage.delete(&o.key)?;
        }
    }
    Ok(kept)
}

/// Plan, and delete when `confirm` (otherwise a dry run). Returns the plan either way; after a
/// confirmed run it lists only what was deleted (WAL kept for a backup started meanwhile is
/// taken out, and that backup is named in `in_progress`).
pub fn run(storage: &dyn Storage, req: &DeleteRequest, wal_segment_size: u64, confirm: bool) -> Result<DeletePlan> {
    let mut p = plan(storage, req, wal_segment_size)?;
    if confirm {
        let kept = execute(storage, &p)?;
        if !kept.is_empty() {
            p.objects.retain(|o| !kept.contains(&o.key));
            for m in read_markers(storage, std::time::SystemTime::now())?.into_iter().filter(|m| m.fresh) {
                if !p.in_progress.iter().any(|d| d.starts_with(&m.key)) {
                    p.in_progress.push(m.describe());
                }
            }
        }
    }
    Ok(p)
}
