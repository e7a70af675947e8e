//! Restore drills: prove that a backup restores. The sequence (restore into a scratch
//! directory, start a throwaway server, recover, connect to every database, amcheck every B-tree
//! index and every table, stop, remove everything) runs here against a [`DrillHost`] that does
//! the PostgreSQL-specific work (the CLI's `restore-drill` starts `pg_ctl` and `psql`); each step
//! is timed, and the outcome is a [`DrillReport`] kept beside the backup in storage.
//!
//! Invariants:
//! - A drill passes only if every step ran and succeeded; the first failure ends it, names the
//!   step and keeps the error text. Nothing after a failed restore is attempted.
//! - Once the server was started, it is stopped whatever happened; the scratch directory is
//!   removed whatever happened (a failure to remove it is reported, never hidden).
//! - The report is written to `basebackups_005/<backup>/walg_drill.json`: inside the backup's
//!   own folder, so deleting the backup deletes it, and WAL-G (which reads only the sentinel,
//!   `metadata.json`, `files_metadata.json` and `tar_partitions/`) ignores it. Plain JSON,
//!   never compressed or encrypted, like the other metadata files.

use std::path::Path;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::names::BACKUP_PREFIX;
use crate::storage::{get_bytes, Storage};

/// Name of the report object inside the backup's folder.
pub const DRILL_OBJECT: &str = "walg_drill.json";

/// `basebackups_005/<backup>/walg_drill.json`.
pub fn drill_key(backup: &str) -> String {
    format!("{BACKUP_PREFIX}{backup}/{DRILL_OBJECT}")
}

/// One timed step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    pub seconds: f64,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The outcome of one drill, as stored beside the backup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DrillReport {
    pub backup: String,
    pub passed: bool,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// What recovery aimed at: "end of backup" or the target.
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub steps: Vec<Step>,
    /// Databases that accepted a connection.
    #[serde(default)]
    pub databases: Vec<String>,
    #[serde(default)]
    pub btree_indexes_checked: u64,
    #[serde(default)]
    pub tables_checked: u64,
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub walg_ext_version: String,
}

impl DrillReport {
    /// Seconds of the named step (if it ran).
    pub fn step_seconds(&self, name: &str) -> Option<f64> {
        self.steps.iter().find(|s| s.name == name).map(|s| s.seconds)
    }

    /// One line for listings: "passed 2026-11-29T18:00:00Z (restore 3.1 s, recovery 1.2 s)" or
    /// "FAILED at amcheck 2026-...".
    pub fn summary(&self) -> String {
        let when = self.finished_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let t = |n: &str| self.step_seconds(n).map(|s| format!("{n} {s:.1} s")).unwrap_or_default();
        if self.passed {
            format!("passed {when} ({}, {})", t("restore"), t("recovery"))
        } else {
            format!("FAILED at {} {when}", self.failed_step.as_deref().unwrap_or("?"))
        }
    }

    /// The fields `backup-list` shows.
    pub fn list_json(&self) -> serde_json::Value {
        serde_json::json!({
            "passed": self.passed,
            "finished_at": self.finished_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "failed_step": self.failed_step,
            "restore_seconds": self.step_seconds("restore"),
            "recovery_seconds": self.step_seconds("recovery"),
        })
    }
}

/// Store `report` beside its backup (replacing the previous drill's).
pub fn write_report(storage: &dyn Storage, report: &DrillReport) -> Result<()> {
    let data = serde_json::to_vec_pretty(report).map_err(|e| Error::Internal(format!("drill report: {e}")))?;
    storage.put(&drill_key(&report.backup), &data)
}

/// The last drill of `backup`, if one was recorded. A damaged record is an error naming it.
pub fn read_report(storage: &dyn Storage, backup: &str) -> Result<Option<DrillReport>> {
    let key = drill_key(backup);
    match get_bytes(storage, &key)? {
        None => Ok(None),
        Some(d) => serde_json::from_slice(&d).map(Some).map_err(|e| Error::Format(format!("{key}: {e}"))),
    }
}

/// The PostgreSQL side of a drill. Each call either succeeds or says what went wrong.
pub trait DrillHost {
    /// Restore the backup into `data` (an empty directory) with the recovery set-up; returns a
    /// line for the log.
    fn restore(&mut self, data: &Path) -> Result<String>;
    /// Start the throwaway server on `data` (private socket, no TCP, no archiving).
    fn start(&mut self, data: &Path) -> Result<()>;
    /// Wait until recovery has reached its target and the server accepts writes.
    fn wait_recovered(&mut self) -> Result<()>;
    /// Run `sql` in database `db`; the rows, one per line, columns separated by `|`.
    fn query(&mut self, db: &str, sql: &str) -> Result<String>;
    /// Stop the server (fast).
    fn stop(&mut self) -> Result<()>;
}

/// Databases to check: every one that allows connections.
pub const SQL_DATABASES: &str = "SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname";
/// Every valid B-tree index that is not another session's temporary index, checked; one row each.
/// (In the select list, so it runs only on rows that passed every condition.)
pub const SQL_BTREE: &str = "SELECT c.oid::regclass::text, bt_index_check(c.oid)::text FROM pg_index i \
     JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam \
     WHERE a.amname = 'btree' AND c.relpersistence <> 't' AND i.indisready AND i.indisvalid ORDER BY c.oid";
/// Tables, materialized views and TOAST tables that verify_heapam checks.
pub const SQL_TABLES: &str = "SELECT count(*) FROM pg_class WHERE relkind IN ('r', 'm', 't') AND relpersistence <> 't'";
/// verify_heapam's findings (none on a sound copy), at most 20.
pub const SQL_HEAP: &str = "SELECT c.oid::regclass::text || coalesce(' block ' || v.blkno, '') || ': ' || v.msg \
     FROM pg_class c CROSS JOIN LATERAL verify_heapam(c.oid) v \
     WHERE c.relkind IN ('r', 'm', 't') AND c.relpersistence <> 't' LIMIT 20";

struct Run<'a> {
    report: DrillReport,
    /// The first failure itself (its kind decides the CLI's exit code).
    first: Option<Error>,
    log: &'a dyn Fn(&str),
}

impl Run<'_> {
    /// Time `f` as step `name`; on failure record it and return None.
    fn step<T>(&mut self, name: &str, f: impl FnOnce() -> Result<(T, Option<String>)>) -> Option<T> {
        let t = Instant::now();
        let r = f();
        let seconds = (t.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
        match r {
            Ok((v, detail)) => {
                (self.log)(&format!("drill: {name}: ok in {seconds:.1} s{}", detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default()));
                self.report.steps.push(Step { name: name.into(), seconds, ok: true, detail });
                Some(v)
            }
            Err(e) => {
                (self.log)(&format!("drill: {name}: FAILED after {seconds:.1} s: {e}"));
                self.report.steps.push(Step { name: name.into(), seconds, ok: false, detail: Some(e.to_string()) });
                if self.report.failed_step.is_none() {
                    self.report.failed_step = Some(name.into());
                    self.report.error = Some(e.to_string());
                    self.first = Some(e);
                }
                None
            }
        }
    }
}

fn lines(s: &str) -> impl Iterator<Item = &str> {
    s.lines().map(str::trim).filter(|l| !l.is_empty())
}

/// Run the drill of `backup` in `scratch` (created empty; removed at the end, whatever
/// happened). `target` describes what recovery aims at, for the report. The report says
/// whether it passed (and the first error, when it did not); storing it is the caller's
/// (`write_report`).
pub fn run(host: &mut dyn DrillHost, backup: &str, target: &str, scratch: &Path, log: &dyn Fn(&str)) -> (DrillReport, Option<Error>) {
    let report = DrillReport {
        backup: backup.to_string(),
        passed: false,
        started_at: Utc::now(),
        finished_at: Utc::now(),
        target: target.to_string(),
        failed_step: None,
        error: None,
        steps: Vec::new(),
        databases: Vec::new(),
        btree_indexes_checked: 0,
        tables_checked: 0,
        host: hostname(),
        walg_ext_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let mut run = Run { report, first: None, log };
    let data = scratch.join("data");
    let restored = run.step("restore", || {
        std::fs::create_dir_all(&data).map_err(|e| Error::io(&data, e))?;
        host.restore(&data).map(|line| ((), Some(line)))
    });
    let mut started = false;
    if restored.is_some() {
        started = run.step("start", || host.start(&data).map(|()| ((), None))).is_some();
    }
    if started && run.step("recovery", || host.wait_recovered().map(|()| ((), None))).is_some() {
        checks(&mut run, host);
    }
    if started {
        run.step("stop", || host.stop().map(|()| ((), None)));
    }
    run.step("cleanup", || remove_scratch(scratch).map(|()| ((), None)));
    let mut report = run.report;
    report.passed = report.failed_step.is_none();
    report.finished_at = Utc::now();
    (report, run.first)
}

/// Remove the scratch directory; a few tries, since a prefetcher started by the copy's
/// restore_command may still be finishing a download into its pg_wal.
fn remove_scratch(scratch: &Path) -> Result<()> {
    let mut last = None;
    for _ in 0..20 {
        match std::fs::remove_dir_all(scratch) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    Err(Error::io(scratch, last.expect("an error after failed tries")))
}

/// Connections and amcheck, as two steps.
fn checks(run: &mut Run, host: &mut dyn DrillHost) {
    let dbs = run.step("connect", || {
        let dbs: Vec<String> = lines(&host.query("template1", SQL_DATABASES)?).map(String::from).collect();
        if dbs.is_empty() {
            return Err(Error::corrupt("restored cluster", "no database accepts connections"));
        }
        for db in &dbs {
            let one = host.query(db, "SELECT 1")?;
            if one.trim() != "1" {
                return Err(Error::corrupt("restored cluster", format!("database {db}: SELECT 1 returned {one:?}")));
            }
        }
        let n = dbs.len();
        Ok((dbs, Some(format!("{n} database(s)"))))
    });
    let Some(dbs) = dbs else { return };
    run.report.databases = dbs.clone();
    let counts = run.step("amcheck", || {
        let (mut indexes, mut tables) = (0u64, 0u64);
        for db in &dbs {
            let in_db = |e: Error| match e {
                Error::Corrupt { object, msg } => Error::Corrupt { object, msg: format!("database {db}: {msg}") },
                other => other,
            };
            host.query(db, "CREATE EXTENSION IF NOT EXISTS amcheck").map_err(in_db)?;
            indexes += lines(&host.query(db, SQL_BTREE).map_err(in_db)?).count() as u64;
            tables += host.query(db, SQL_TABLES).map_err(in_db)?.trim().parse::<u64>().unwrap_or(0);
            let found: Vec<String> = lines(&host.query(db, SQL_HEAP).map_err(in_db)?).map(String::from).collect();
            if !found.is_empty() {
                return Err(Error::corrupt(
                    "restored cluster",
                    format!("database {db}: verify_heapam found corruption: {}", found.join("; ")),
                ));
            }
        }
        Ok(((indexes, tables), Some(format!("{indexes} B-tree indexes, {tables} tables"))))
    });
    if let Some((i, t)) = counts {
        run.report.btree_indexes_checked = i;
        run.report.tables_checked = t;
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::FsStorage;
    use std::cell::RefCell;

    /// A host that answers from a script and records the calls.
    #[derive(Default)]
    struct Fake {
        fail_restore: bool,
        fail_start: bool,
        heap_findings: &'static str,
        btree_error: bool,
        calls: RefCell<Vec<String>>,
    }

    impl DrillHost for Fake {
        fn restore(&mut self, data: &Path) -> Result<String> {
            self.calls.borrow_mut().push("restore".into());
            std::fs::write(data.join("PG_VERSION"), "15\n").unwrap();
            if self.fail_restore {
                return Err(Error::corrupt("basebackups_005/b/tar_partitions/part_001.tar.lz4", "missing"));
            }
            Ok("restored".into())
        }
        fn start(&mut self, _: &Path) -> Result<()> {
            self.calls.borrow_mut().push("start".into());
            if self.fail_start {
                return Err(Error::corrupt("restored cluster", "server did not start: log says PANIC"));
            }
            Ok(())
        }
        fn wait_recovered(&mut self) -> Result<()> {
            self.calls.borrow_mut().push("wait".into());
            Ok(())
        }
        fn query(&mut self, db: &str, sql: &str) -> Result<String> {
            self.calls.borrow_mut().push(format!("query {db}"));
            Ok(match sql {
                SQL_DATABASES => "app\npostgres\ntemplate1\n".into(),
                "SELECT 1" => "1".into(),
                SQL_BTREE if self.btree_error && db == "app" => {
                    return Err(Error::corrupt("restored cluster", "ERROR: index \"t_pkey\" is not a btree"))
                }
                SQL_BTREE => "a_pkey|\nb_idx|\n".into(),
                SQL_TABLES => "7".into(),
                SQL_HEAP if db == "app" => self.heap_findings.into(),
                _ => String::new(),
            })
        }
        fn stop(&mut self) -> Result<()> {
            self.calls.borrow_mut().push("stop".into());
            Ok(())
        }
    }

    fn drill(host: &mut Fake) -> (DrillReport, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let scratch = dir.path().join("scratch");
        let (r, first) = run(host, "base_000000010000000000000002", "end of backup", &scratch, &|_| {});
        assert!(!scratch.exists(), "the scratch directory is removed whatever happened");
        assert_eq!(first.is_none(), r.passed);
        (r, dir)
    }

    #[test]
    fn a_sound_copy_passes_with_every_step_timed_and_counted() {
        let mut h = Fake::default();
        let (r, _d) = drill(&mut h);
        assert!(r.passed && r.failed_step.is_none() && r.error.is_none(), "{r:?}");
        let names: Vec<&str> = r.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["restore", "start", "recovery", "connect", "amcheck", "stop", "cleanup"]);
        assert!(r.steps.iter().all(|s| s.ok && s.seconds >= 0.0));
        assert_eq!(r.databases, ["app", "postgres", "template1"]);
        assert_eq!((r.btree_indexes_checked, r.tables_checked), (6, 21));
        assert!(r.summary().starts_with("passed "), "{}", r.summary());
        // amcheck is created in every database of the copy.
        assert_eq!(h.calls.borrow().iter().filter(|c| c.starts_with("query")).count(), 1 + 3 + 3 * 4);
    }

    #[test]
    fn a_failed_restore_stops_there_and_says_why() {
        let mut h = Fake { fail_restore: true, ..Default::default() };
        let (r, _d) = drill(&mut h);
        assert!(!r.passed);
        assert_eq!(r.failed_step.as_deref(), Some("restore"));
        assert!(r.error.as_deref().unwrap().contains("part_001.tar.lz4"), "{r:?}");
        assert_eq!(*h.calls.borrow(), ["restore"], "nothing is started after a failed restore");
        assert!(r.summary().starts_with("FAILED at restore"));
    }

    #[test]
    fn a_server_that_does_not_start_fails_and_is_not_stopped() {
        let mut h = Fake { fail_start: true, ..Default::default() };
        let (r, _d) = drill(&mut h);
        assert_eq!(r.failed_step.as_deref(), Some("start"));
        assert!(!h.calls.borrow().contains(&"stop".to_string()));
    }

    #[test]
    fn corruption_found_by_amcheck_fails_and_the_server_is_still_stopped() {
        for h in [
            Fake { heap_findings: "t block 3: line pointer redirection to item at offset 99 exceeds maximum offset 4\n", ..Default::default() },
            Fake { btree_error: true, ..Default::default() },
        ] {
            let mut h = h;
            let (r, _d) = drill(&mut h);
            assert!(!r.passed);
            assert_eq!(r.failed_step.as_deref(), Some("amcheck"), "{r:?}");
            let e = r.error.as_deref().unwrap();
            assert!(e.contains("database app") && (e.contains("block 3") || e.contains("not a btree")), "{e}");
            assert_eq!(h.calls.borrow().last().map(String::as_str), Some("stop"));
            let last = r.steps.last().unwrap();
            assert!(last.name == "cleanup" && last.ok);
        }
    }

    #[test]
    fn the_report_is_stored_beside_the_backup_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStorage::new(dir.path());
        let mut h = Fake { fail_restore: true, ..Default::default() };
        let (r, _d) = drill(&mut h);
        write_report(&s, &r).unwrap();
        assert!(dir.path().join("basebackups_005/base_000000010000000000000002/walg_drill.json").is_file());
        assert_eq!(read_report(&s, &r.backup).unwrap().unwrap(), r);
        assert!(read_report(&s, "base_000000010000000000000004").unwrap().is_none());
        // It is not a sentinel: listings do not see a backup in it, but show it with its backup.
        assert!(crate::catalog::list_backups(&s).unwrap().is_empty());
        let sentinel = crate::format::Sentinel { version: 2, ..Default::default() };
        s.put(&crate::format::names::sentinel_key(&r.backup), &sentinel.to_json()).unwrap();
        let listed = crate::catalog::list_backups(&s).unwrap();
        assert_eq!(listed[0].drill.as_ref(), Some(&r));
        assert_eq!(listed[0].detail_json()["last_drill"]["failed_step"], "restore");
        s.put(&drill_key("base_000000010000000000000004"), b"{").unwrap();
        assert!(read_report(&s, "base_000000010000000000000004").unwrap_err().to_string().contains("walg_drill.json"));
        let j = r.list_json();
        assert_eq!(j["passed"], false);
        assert_eq!(j["failed_step"], "restore");
    }
}
