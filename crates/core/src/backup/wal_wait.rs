//! A backup is committed only when its WAL is in storage: every segment from the one holding
//! the start LSN to the one holding the last byte before the stop LSN must exist as
//! `wal_005/<segment>[.<ext>]`, checked in storage itself. Local `pg_wal/archive_status/*.done`
//! files prove nothing: a standby's WAL receiver marks segments `.done` without archiving them,
//! and another tool may archive somewhere else.
//!
//! Invariants:
//! - `wait_for_wal` returns Ok only after storage answered "exists" for every segment of the
//!   range; it never returns Ok early (no timeout that turns into success).
//! - Found segments are not probed again: each round probes the first missing segment, then
//!   the next ones while they are found (archiving is in order), so a round costs one probe
//!   (times the codec extensions) while waiting, never a full listing.
//! - Between rounds the `poll` callback runs (interrupts, cancel); its Err ends the wait with
//!   that Err. A storage error ends it too (the backup fails, it does not commit).
//! - Rounds start 20 ms apart and back off to 1 s; every 30 s a line names the segment waited
//!   for, as `pg_backup_stop` does.
//!
//! Timeline: the segments are looked for on the backup's start timeline (the timeline in its
//! name, `START TIMELINE` in backup_label). On a primary that is the only timeline. On a standby
//! whose upstream switched timelines during the backup, the segments after the switch exist only
//! on the new timeline: the wait alone would never find them (it never commits early); the
//! worker's poll checks the standby's replay timeline (`standby::check_replay_timeline`) and
//! fails the backup with a clear error instead.

use std::time::{Duration, Instant};

use super::super::wal::find_object;
use crate::error::Result;
use crate::format::names::{wal_file_name_for_segno, WAL_PREFIX};
use crate::storage::Storage;

/// The WAL a backup needs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WalRange {
    pub timeline: u32,
    pub start_lsn: u64,
    /// The stop LSN from pg_backup_stop; the last segment needed holds `finish_lsn - 1`.
    pub finish_lsn: u64,
    pub wal_segment_size: u64,
}

impl WalRange {
    /// Segment numbers of the first and last segment needed.
    pub fn segnos(&self) -> (u64, u64) {
        let first = self.start_lsn / self.wal_segment_size;
        let last = (self.finish_lsn.saturating_sub(1) / self.wal_segment_size).max(first);
        (first, last)
    }

    /// The 24-hex names of every segment needed, in order.
    pub fn segment_names(&self) -> Vec<String> {
        let (first, last) = self.segnos();
        (first..=last).map(|s| wal_file_name_for_segno(self.timeline, s, self.wal_segment_size)).collect()
    }
}

/// How often to look and to report.
#[derive(Clone, Copy, Debug)]
pub struct WaitTiming {
    pub first_interval: Duration,
    pub max_interval: Duration,
    pub log_every: Duration,
}

impl Default for WaitTiming {
    fn default() -> Self {
        WaitTiming {
            first_interval: Duration::from_millis(20),
            max_interval: Duration::from_secs(1),
            log_every: Duration::from_secs(30),
        }
    }
}

/// Wait until every segment of `range` is in storage. `poll` runs between rounds (Err stops
/// the wait with that Err); `log` gets a line every `timing.log_every` while waiting. Returns
/// how long it waited.
pub fn wait_for_wal(
    storage: &dyn Storage,
    range: &WalRange,
    timing: WaitTiming,
    poll: &mut dyn FnMut() -> Result<()>,
    log: &mut dyn FnMut(&str),
) -> Result<Duration> {
    let names = range.segment_names();
    let started = Instant::now();
    let mut next = 0;
    let mut interval = timing.first_interval;
    let mut next_log = started + timing.log_every;
    loop {
        while next < names.len() && find_object(storage, &format!("{WAL_PREFIX}{}", names[next]))?.is_some() {
            next += 1;
        }
        if next == names.len() {
            return Ok(started.elapsed());
        }
        poll()?;
        let now = Instant::now();
        if now >= next_log {
            log(&format!(
                "still waiting for WAL segment {} to be archived in {} ({} of {} segments the backup needs are there, {} s); check the archiver",
                names[next],
                storage.describe(),
                next,
                names.len(),
                started.elapsed().as_secs()
            ));
            next_log = now + timing.log_every;
        }
        std::thread::sleep(interval);
        interval = (interval * 2).min(timing.max_interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::storage::{FsStorage, ObjectInfo, ObjectWriter};
    use std::io::Read;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    const SEG: u64 = 16 << 20;

    fn fast() -> WaitTiming {
        WaitTiming {
            first_interval: Duration::from_millis(1),
            max_interval: Duration::from_millis(5),
            log_every: Duration::from_millis(30),
        }
    }

    /// File storage that counts `exists` calls per key.
    struct Counting {
        inner: FsStorage,
        probes: Mutex<Vec<String>>,
        fail: AtomicUsize,
    }

    impl Storage for Counting {
        fn get(&self, key: &str) -> Result<Option<Box<dyn Read + Send>>> {
            self.inner.get(key)
        }
        fn put(&self, key: &str, data: &[u8]) -> Result<()> {
            self.inner.put(key, data)
        }
        fn writer(&self, key: &str) -> Result<Box<dyn ObjectWriter>> {
            self.inner.writer(key)
        }
        fn list(&self, _prefix: &str) -> Result<Vec<ObjectInfo>> {
            panic!("wait_for_wal must not list");
        }
        fn exists(&self, key: &str) -> Result<bool> {
            if self.fail.load(Ordering::SeqCst) > 0 {
                return Err(Error::Unreachable("storage went away".into()));
            }
            self.probes.lock().unwrap().push(key.to_string());
            self.inner.exists(key)
        }
        fn delete(&self, key: &str) -> Result<()> {
            self.inner.delete(key)
        }
        fn describe(&self) -> String {
            "counting".into()
        }
    }

    fn storage() -> (tempfile::TempDir, Counting) {
        let dir = tempfile::tempdir().unwrap();
        let s = Counting { inner: FsStorage::new(dir.path()), probes: Mutex::new(Vec::new()), fail: AtomicUsize::new(0) };
        (dir, s)
    }

    fn range() -> WalRange {
        // 0/2000028 .. 0/5000000: segments 2, 3, 4 (the stop LSN is the start of segment 5).
        WalRange { timeline: 1, start_lsn: 0x0200_0028, finish_lsn: 0x0500_0000, wal_segment_size: SEG }
    }

    #[test]
    fn range_names_start_to_the_segment_before_the_stop_point() {
        assert_eq!(
            range().segment_names(),
            vec!["000000010000000000000002", "000000010000000000000003", "000000010000000000000004"]
        );
        let one = WalRange { timeline: 3, start_lsn: 0x0200_0028, finish_lsn: 0x0200_0100, wal_segment_size: SEG };
        assert_eq!(one.segment_names(), vec!["000000030000000000000002"]);
        // Across an xlogid boundary.
        let r = WalRange { timeline: 1, start_lsn: 0xFF00_0000, finish_lsn: 0x1_0100_0000, wal_segment_size: SEG };
        assert_eq!(r.segment_names(), vec!["0000000100000000000000FF", "000000010000000100000000"]);
    }

    #[test]
    fn returns_at_once_when_everything_is_there_any_codec() {
        let (_d, s) = storage();
        s.put("wal_005/000000010000000000000002.lz4", b"x").unwrap();
        s.put("wal_005/000000010000000000000003.zst", b"x").unwrap();
        s.put("wal_005/000000010000000000000004", b"x").unwrap();
        let mut polls = 0;
        wait_for_wal(&s, &range(), fast(), &mut || { polls += 1; Ok(()) }, &mut |_| {}).unwrap();
        assert_eq!(polls, 0);
    }

    #[test]
    fn waits_until_the_segments_appear_probing_only_the_missing() {
        let (_d, s) = storage();
        s.put("wal_005/000000010000000000000002.lz4", b"x").unwrap();
        let mut polls = 0;
        let mut logs = Vec::new();
        let t0 = Instant::now();
        wait_for_wal(
            &s,
            &range(),
            fast(),
            &mut || {
                polls += 1;
                // The archiver catches up while we wait; nothing commits before the last one.
                if polls == 20 {
                    s.put("wal_005/000000010000000000000003.lz4", b"x").unwrap();
                }
                if polls == 40 {
                    s.put("wal_005/000000010000000000000004.lz4", b"x").unwrap();
                }
                Ok(())
            },
            &mut |l| logs.push(l.to_string()),
        )
        .unwrap();
        assert_eq!(polls, 40, "returned only after the last segment appeared");
        assert!(t0.elapsed() >= Duration::from_millis(40));
        let probes = s.probes.lock().unwrap();
        // Segment 2 was found once and never probed again.
        assert_eq!(probes.iter().filter(|k| k.contains("000000010000000000000002")).count(), 1);
        // Nothing past the first missing segment was probed while it was missing.
        let first_4 = probes.iter().position(|k| k.contains("000000010000000000000004")).unwrap();
        let last_3 = probes.iter().rposition(|k| k.contains("000000010000000000000003")).unwrap();
        assert!(first_4 > last_3, "segment 4 probed before 3 was found");
        assert!(logs.iter().any(|l| l.contains("000000010000000000000003")), "{logs:?}");
    }

    #[test]
    fn never_appearing_wal_waits_until_cancelled_and_logs_the_segment() {
        let (_d, s) = storage();
        s.put("wal_005/000000010000000000000002.lz4", b"x").unwrap();
        let mut logs = Vec::new();
        let t0 = Instant::now();
        let err = wait_for_wal(
            &s,
            &range(),
            fast(),
            &mut || {
                if t0.elapsed() > Duration::from_millis(200) {
                    Err(Error::Cancelled("asked to stop".into()))
                } else {
                    Ok(())
                }
            },
            &mut |l| logs.push(l.to_string()),
        )
        .unwrap_err();
        assert!(matches!(err, Error::Cancelled(_)), "{err}");
        assert!(logs.len() >= 2, "a line every log interval: {logs:?}");
        assert!(logs[0].contains("000000010000000000000003") && logs[0].contains("1 of 3"), "{logs:?}");
        // Backed off: far fewer probes than 1 ms rounds would make.
        assert!(s.probes.lock().unwrap().len() < 5 * 200, "{}", s.probes.lock().unwrap().len());
    }

    #[test]
    fn other_timeline_does_not_count_and_storage_errors_fail() {
        let (_d, s) = storage();
        for n in 2..=4 {
            s.put(&format!("wal_005/0000000200000000000000{n:02X}.lz4"), b"x").unwrap();
        }
        let mut polls = 0;
        let err = wait_for_wal(&s, &range(), fast(), &mut || {
            polls += 1;
            if polls > 10 { Err(Error::Cancelled("stop".into())) } else { Ok(()) }
        }, &mut |_| {})
        .unwrap_err();
        assert!(matches!(err, Error::Cancelled(_)), "timeline 2 segments are not the backup's: {err}");

        s.fail.store(1, Ordering::SeqCst);
        let err = wait_for_wal(&s, &range(), fast(), &mut || Ok(()), &mut |_| {}).unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::Unreachable, "{err}");
    }
}
