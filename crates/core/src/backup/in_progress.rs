//! In-progress markers: how a running backup keeps `delete` away from its objects and its WAL,
//! whichever server or process runs the delete.
//!
//! A backup writes `basebackups_005/walg_ext_in_progress/<host>-<pid>-<start ms>.json` FIRST,
//! before `pg_backup_start` (so before any object or WAL it needs can matter), rewrites it with
//! its name and start LSN as soon as it has them (still before its first tar part), rewrites it
//! at least every `HEARTBEAT_INTERVAL` while it runs (the `heartbeat` field and the object's
//! modification time both move), and deletes it after the sentinel is written. A backup that
//! fails marks its marker `abandoned`; a killed one leaves it as is, and it goes stale.
//!
//! WAL-G never reads this folder (backups are found by their sentinels, and this folder has
//! none), and walg_ext never lists it as a backup.
//!
//! A marker is fresh while it is not abandoned and its heartbeat (the writer's clock) or its
//! modification time (storage's clock), whichever is later, is younger than `STALE_AFTER`
//! (15 minutes: fifteen missed heartbeats, and room for clock skew between hosts). What delete
//! does with fresh markers is in catalog/delete.rs. Before committing, the backup checks that it
//! never went longer than `COMMIT_MARGIN` without a successful heartbeat and that its marker
//! is still there: a process frozen longer than that (or a marker removed by hand or by another
//! tool) may have lost objects to a delete, and the backup fails instead of committing.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::names::IN_PROGRESS_PREFIX;
use crate::storage::{get_bytes, Storage};

/// How often a running backup rewrites its marker.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(60);
/// A marker not refreshed for this long belongs to a dead backup.
pub const STALE_AFTER: Duration = Duration::from_secs(15 * 60);
/// A backup that went this long without a successful heartbeat does not commit.
pub const COMMIT_MARGIN: Duration = Duration::from_secs(10 * 60);

/// The marker's content (JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Marker {
    pub host: String,
    pub pid: u32,
    pub started: DateTime<Utc>,
    pub heartbeat: DateTime<Utc>,
    /// Known after pg_backup_start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_lsn: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_segment_size: Option<u64>,
    /// For a delta backup: its parent, whose chain must stay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_from: Option<String>,
    /// The backup failed and stopped writing: nothing to protect any more.
    #[serde(default)]
    pub abandoned: bool,
}

impl Marker {
    /// WAL position (`(log << 32) | seg`, as catalog::walfiles) of the start segment, if known.
    pub fn start_position(&self) -> Option<u64> {
        let (lsn, seg) = (self.start_lsn?, self.wal_segment_size?);
        Some(crate::catalog::walfiles::position_of_lsn(lsn, seg))
    }
}

/// One marker as read by delete.
#[derive(Clone, Debug)]
pub struct MarkerState {
    pub key: String,
    pub size: u64,
    /// None when the object could not be parsed (then only its modification time counts).
    pub marker: Option<Marker>,
    pub fresh: bool,
}

impl MarkerState {
    /// One line for messages: key, host, pid, backup, heartbeat.
    pub fn describe(&self) -> String {
        match &self.marker {
            Some(m) => format!(
                "{} (host {}, pid {}, backup {}, started {}, heartbeat {})",
                self.key,
                m.host,
                m.pid,
                m.backup_name.as_deref().unwrap_or("not named yet"),
                m.started.to_rfc3339(),
                m.heartbeat.to_rfc3339()
            ),
            None => format!("{} (unreadable marker)", self.key),
        }
    }
}

/// Read every marker; `now` decides freshness. Call this AFTER listing the objects a delete
/// may remove (see catalog/delete.rs).
pub fn read_markers(storage: &dyn Storage, now: SystemTime) -> Result<Vec<MarkerState>> {
    let mut out = Vec::new();
    for o in storage.list(IN_PROGRESS_PREFIX)? {
        let Some(data) = get_bytes(storage, &o.key)? else { continue }; // removed meanwhile
        let marker: Option<Marker> = serde_json::from_slice(&data).ok();
        let last = match &marker {
            Some(m) => o.modified.max(SystemTime::from(m.heartbeat)),
            None => o.modified,
        };
        let young = now.duration_since(last).map(|age| age < STALE_AFTER).unwrap_or(true);
        let fresh = young && !marker.as_ref().is_some_and(|m| m.abandoned);
        out.push(MarkerState { key: o.key, size: o.size, marker, fresh });
    }
    Ok(out)
}

/// The marker of one running backup. Dropped without `end()`, it is marked abandoned (best
/// effort: a failed rewrite leaves it to go stale).
pub struct InProgress {
    storage: Arc<dyn Storage>,
    key: String,
    marker: Marker,
    last_beat: Instant,
    interval: Duration,
    ended: bool,
}

fn safe_host(h: &str) -> String {
    let s: String = h.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect();
    if s.is_empty() { "host".into() } else { s }
}

impl InProgress {
    /// Write the marker (the first thing a backup writes).
    pub fn begin(storage: Arc<dyn Storage>, host: &str, pid: u32) -> Result<InProgress> {
        Self::begin_with_interval(storage, host, pid, HEARTBEAT_INTERVAL)
    }

    pub fn begin_with_interval(storage: Arc<dyn Storage>, host: &str, pid: u32, interval: Duration) -> Result<InProgress> {
        let now = Utc::now();
        let key = format!("{IN_PROGRESS_PREFIX}{}-{pid}-{}.json", safe_host(host), now.timestamp_millis());
        let marker = Marker {
            host: host.to_string(),
            pid,
            started: now,
            heartbeat: now,
            backup_name: None,
            start_lsn: None,
            timeline: None,
            wal_segment_size: None,
            delta_from: None,
            abandoned: false,
        };
        let p = InProgress { storage, key, marker, last_beat: Instant::now(), interval, ended: false };
        p.write()?;
        Ok(p)
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    fn write(&self) -> Result<()> {
        let json = serde_json::to_vec_pretty(&self.marker).expect("marker is plain data");
        self.storage.put(&self.key, &json)
    }

    fn beat(&mut self) -> Result<()> {
        let at = Instant::now();
        self.marker.heartbeat = Utc::now();
        self.write()?;
        self.last_beat = at;
        Ok(())
    }

    /// Name the backup and its WAL start (before its first object is written).
    pub fn set_backup(&mut self, name: &str, start_lsn: u64, timeline: u32, wal_segment_size: u64, delta_from: Option<&str>) -> Result<()> {
        self.marker.backup_name = Some(name.to_string());
        self.marker.start_lsn = Some(start_lsn);
        self.marker.timeline = Some(timeline);
        self.marker.wal_segment_size = Some(wal_segment_size);
        self.marker.delta_from = delta_from.map(str::to_string);
        self.beat()
    }

    /// Rewrite the marker if the interval has passed since the last rewrite. Call it often
    /// (every poll); it writes at most once per interval.
    pub fn heartbeat(&mut self) -> Result<()> {
        if self.last_beat.elapsed() >= self.interval {
            self.beat()?;
        }
        Ok(())
    }

    /// Just before the sentinel: the heartbeat never lapsed long enough for a delete to take
    /// the marker for stale, and the marker is still in storage.
    pub fn ensure_fresh(&mut self) -> Result<()> {
        self.ensure_fresh_within(COMMIT_MARGIN)
    }

    pub fn ensure_fresh_within(&mut self, margin: Duration) -> Result<()> {
        let since = self.last_beat.elapsed();
        if since >= margin {
            return Err(Error::Conflict(format!(
                "the backup's in-progress marker {} was not refreshed for {} s (more than {} s): a concurrent delete \
                 may have taken it for a dead backup's and removed objects; not committing",
                self.key,
                since.as_secs(),
                margin.as_secs()
            )));
        }
        if !self.storage.exists(&self.key)? {
            return Err(Error::Conflict(format!(
                "the backup's in-progress marker {} is gone from {} (removed by hand or by another tool): its objects \
                 may be gone too; not committing",
                self.key,
                self.storage.describe()
            )));
        }
        self.beat()
    }

    /// The backup is committed: remove the marker.
    pub fn end(mut self) -> Result<()> {
        self.ended = true;
        self.storage.delete(&self.key)
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        if !self.ended {
            self.marker.abandoned = true;
            self.marker.heartbeat = Utc::now();
            let _ = self.write();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::FsStorage;

    #[test]
    fn begin_name_heartbeat_end_and_abandon() {
        let dir = tempfile::tempdir().unwrap();
        let s: Arc<dyn Storage> = Arc::new(FsStorage::new(dir.path()));
        let mut p = InProgress::begin_with_interval(s.clone(), "db host/1", 4242, Duration::from_secs(1)).unwrap();
        assert!(p.key().starts_with("basebackups_005/walg_ext_in_progress/db_host_1-4242-"), "{}", p.key());
        let now = SystemTime::now();
        let m = read_markers(s.as_ref(), now).unwrap();
        assert_eq!(m.len(), 1);
        assert!(m[0].fresh);
        assert_eq!(m[0].marker.as_ref().unwrap().backup_name, None);
        p.set_backup("base_000000010000000000000002", 0x0200_0028, 1, 16 << 20, None).unwrap();
        let m = read_markers(s.as_ref(), now).unwrap();
        let mk = m[0].marker.clone().unwrap();
        assert_eq!(mk.backup_name.as_deref(), Some("base_000000010000000000000002"));
        assert_eq!(mk.start_position(), Some(2));
        // Heartbeat writes only once the interval has passed.
        let hb = mk.heartbeat;
        p.heartbeat().unwrap();
        assert_eq!(read_markers(s.as_ref(), now).unwrap()[0].marker.as_ref().unwrap().heartbeat, hb);
        // (An interval of a second: with 30 ms a loaded machine passed it before the first check.)
        std::thread::sleep(Duration::from_millis(1100));
        p.heartbeat().unwrap();
        assert!(read_markers(s.as_ref(), now).unwrap()[0].marker.as_ref().unwrap().heartbeat > hb);
        // Stale after the limit (as seen from a later clock).
        let later = SystemTime::now() + STALE_AFTER + Duration::from_secs(1);
        assert!(!read_markers(s.as_ref(), later).unwrap()[0].fresh);
        p.ensure_fresh().unwrap();
        p.end().unwrap();
        assert!(read_markers(s.as_ref(), now).unwrap().is_empty());

        // A failed backup: dropped without end, abandoned at once.
        let p = InProgress::begin(s.clone(), "h", 1).unwrap();
        let key = p.key().to_string();
        drop(p);
        let m = read_markers(s.as_ref(), SystemTime::now()).unwrap();
        assert_eq!(m.len(), 1);
        assert!(m[0].marker.as_ref().unwrap().abandoned && !m[0].fresh, "{:?}", m[0]);
        s.delete(&key).unwrap();

        // Unparsable: fresh by its modification time only.
        s.put(&format!("{IN_PROGRESS_PREFIX}junk.json"), b"{").unwrap();
        let m = read_markers(s.as_ref(), SystemTime::now()).unwrap();
        assert!(m[0].fresh && m[0].marker.is_none());
        assert!(!read_markers(s.as_ref(), later).unwrap()[0].fresh);
    }

    #[test]
    fn commit_refused_after_a_lapsed_heartbeat_or_a_removed_marker() {
        let dir = tempfile::tempdir().unwrap();
        let s: Arc<dyn Storage> = Arc::new(FsStorage::new(dir.path()));
        let mut p = InProgress::begin(s.clone(), "h", 1).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        let err = p.ensure_fresh_within(Duration::from_millis(20)).unwrap_err();
        assert!(matches!(err, Error::Conflict(_)) && err.to_string().contains("not refreshed"), "{err}");
        s.delete(p.key()).unwrap();
        let err = p.ensure_fresh().unwrap_err();
        assert!(err.to_string().contains("is gone"), "{err}");
    }
}
