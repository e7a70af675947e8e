//! `walg_health()`: one row per problem found now, each with a severity and what to do. Empty =
//! healthy. Cheap by construction: the inputs are shared-memory counters, a count of `.ready`
//! files and a cached storage check ([`StorageCheck`], refreshed by the scheduler every
//! `walg.health_check_interval`; its age is in every row that depends on it). Nothing here
//! lists storage.
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::cron::CronSchedule;
use super::plan::{Outcome, State, Which};
use crate::catalog::wal_verify::{self, CurrentSegment, IntegrityOptions, SegmentStatus};
use crate::catalog::{list_backups, BackupInfo};
use crate::codec::Pipeline;
use crate::storage::Storage;

/// `.ready` files waiting: from this many a warning, from CRITICAL_READY on critical.
pub const WARN_READY: u64 = 10;
pub const CRITICAL_READY: u64 = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub severity: Severity,
    /// Stable identifier: archiving_failing, archive_lag, storage_unreachable, storage_error,
    /// no_backup, backup_overdue, scheduled_backup_failed, retention_failing, wal_gap, drill_failed,
    /// scheduled_drill_not_run,
    /// bad_schedule, bad_retention, storage_not_checked, health_check_stale.
    pub problem: &'static str,
    pub detail: String,
    pub action: String,
    /// When the fact was observed (the cache's time for storage facts).
    pub observed_at: Option<DateTime<Utc>>,
}

/// A run of lost WAL segments (wal-verify's MISSING_LOST).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LostRun {
    pub start_segment: String,
    pub end_segment: String,
    pub segments_count: u64,
    /// At or after the latest backup's start segment: point-in-time recovery from the latest
    /// backup stops at the gap.
    pub after_latest_backup: bool,
}

/// What storage said at `checked_at` (the cache `walg_health()` reads).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StorageCheck {
    pub checked_at: DateTime<Utc>,
    /// The check failed: the error, and its kind's name (`unreachable`, `corrupt`, ...).
    pub error: Option<String>,
    pub error_kind: Option<String>,
    pub latest_backup: Option<String>,
    pub latest_backup_finish: Option<DateTime<Utc>>,
    pub backups_count: u64,
    pub lost_wal: Vec<LostRun>,
    /// Backups whose last restore drill (`walg-ext restore-drill`) failed.
    #[serde(default)]
    pub failed_drills: Vec<FailedDrill>,
}

/// A backup whose last restore drill failed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FailedDrill {
    pub backup: String,
    pub failed_step: String,
    pub finished_at: DateTime<Utc>,
    /// It is the latest backup: the one a restore would use.
    pub latest: bool,
}

/// List backups and run wal-verify's integrity check up to `current` (the server's position),
/// once; the scheduler calls this every `walg.health_check_interval`.
pub fn check_storage(
    storage: &dyn Storage,
    pipeline: &Pipeline,
    current: Option<CurrentSegment>,
    opt: IntegrityOptions,
    now: DateTime<Utc>,
) -> StorageCheck {
    let mut c = StorageCheck { checked_at: now, ..Default::default() };
    let fail = |c: &mut StorageCheck, e: crate::Error| {
        c.error_kind = Some(e.kind().name().to_string());
        c.error = Some(e.to_string());
    };
    let backups: Vec<BackupInfo> = match list_backups(storage) {
        Ok(b) => b,
        Err(e) => {
            fail(&mut c, e);
            return c;
        }
    };
    c.backups_count = backups.len() as u64;
    let latest = backups.iter().max_by_key(|b| b.sentinel.start_time);
    c.latest_backup = latest.map(|b| b.name.clone());
    c.latest_backup_finish = latest.map(|b| b.sentinel.finish_time);
    c.failed_drills = backups
        .iter()
        .filter_map(|b| {
            let d = b.drill.as_ref().filter(|d| !d.passed)?;
            Some(FailedDrill {
                backup: b.name.clone(),
                failed_step: d.failed_step.clone().unwrap_or_else(|| "?".into()),
                finished_at: d.finished_at,
                latest: Some(&b.name) == c.latest_backup.as_ref(),
            })
        })
        .collect();
    if let (Some(current), false) = (current, backups.is_empty()) {
        match wal_verify::integrity(storage, pipeline, &backups, current, opt) {
            Ok(report) => {
                let latest_wal = latest.map(|b| b.wal_file_name.as_str()).unwrap_or("");
                c.lost_wal = report
                    .details
                    .iter()
                    .filter(|r| r.status == SegmentStatus::MissingLost)
                    .map(|r| LostRun {
                        start_segment: r.start_segment.clone(),
                        end_segment: r.end_segment.clone(),
                        segments_count: r.segments_count,
                        // Names compare in WAL order (timeline first, then position).
                        after_latest_backup: r.end_segment.as_str() >= latest_wal,
                    })
                    .collect();
            }
            Err(e) => fail(&mut c, e),
        }
    }
    c
}

/// What the archive module reports (shared memory).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ArchiveView {
    pub last_archived_at: Option<DateTime<Utc>>,
    pub last_archived_wal: Option<String>,
    /// Start of the current run of failures (None: the latest attempt succeeded).
    pub failing_since: Option<DateTime<Utc>>,
    pub last_failed_at: Option<DateTime<Utc>>,
    pub last_failed_wal: Option<String>,
    pub last_error: Option<String>,
}

/// Everything `assess` looks at.
pub struct HealthInputs<'a> {
    pub now: DateTime<Utc>,
    /// None: archive_library is not walg_ext or the statistics are not available.
    pub archive: Option<ArchiveView>,
    pub ready_count: Option<u64>,
    pub storage: Option<&'a StorageCheck>,
    pub state: Option<&'a State>,
    /// A backup should have finished after this ([`overdue_threshold`], computed by the
    /// scheduler in the server's time zone).
    pub due_by: Option<DateTime<Utc>>,
    /// Settings the scheduler could not use (setting, message): bad cron expression, bad retain.
    pub config_errors: &'a [(String, String)],
    /// False on a standby that does not take backups (walg.backup_on_standby off).
    pub backups_expected: bool,
    pub check_interval: Duration,
}

fn ago(now: DateTime<Utc>, t: DateTime<Utc>) -> String {
    let s = (now - t).num_seconds().max(0);
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} days", s / 86400),
    }
}

/// The time a backup should have finished by, for the schedules given, at `now`: the tick
/// before the latest one (the latest may still be running), if it lies after the schedule took
/// effect. Computed in `now`'s time zone (the server's).
pub fn overdue_threshold<Tz: TimeZone>(schedules: &[(Which, CronSchedule)], state: Option<&State>, now: &DateTime<Tz>) -> Option<DateTime<Utc>> {
    schedules
        .iter()
        .filter_map(|(w, s)| {
            let t1 = s.latest_at_or_before(now)?;
            let t0 = s.latest_at_or_before(&(t1 - Duration::seconds(1)).with_timezone(&now.timezone()))?;
            let since = state.and_then(|st| st.record(*w).since);
            since.is_none_or(|since| t0 >= since).then_some(t0)
        })
        .max()
}

/// The problems now.
pub fn assess(inputs: &HealthInputs) -> Vec<Problem> {
    let now = inputs.now;
    let mut out = Vec::new();
    let mut push = |severity, problem, detail: String, action: &str, observed_at| {
        out.push(Problem { severity, problem, detail, action: action.to_string(), observed_at })
    };

    for (setting, msg) in inputs.config_errors {
        push(
            Severity::Critical,
            if setting == "walg.retain" { "bad_retention" } else { "bad_schedule" },
            msg.clone(),
            &format!("Fix {setting} in postgresql.conf and reload; until then it is not applied."),
            Some(now),
        );
    }

    if let Some(a) = &inputs.archive {
        if let Some(since) = a.failing_since {
            push(
                Severity::Critical,
                "archiving_failing",
                format!(
                    "WAL archiving has failed since {} ({} ago); last failed segment {}: {}",
                    since.format("%Y-%m-%d %H:%M:%S UTC"),
                    ago(now, since),
                    a.last_failed_wal.as_deref().unwrap_or("?"),
                    a.last_error.as_deref().unwrap_or("?")
                ),
                "Fix what the error names (storage, settings, key); PostgreSQL keeps the WAL in pg_wal and retries: watch its disk space.",
                a.last_failed_at,
            );
        }
    }
    if let Some(n) = inputs.ready_count.filter(|&n| n >= WARN_READY) {
        push(
            if n >= CRITICAL_READY { Severity::Critical } else { Severity::Warning },
            "archive_lag",
            format!("{n} WAL segments wait for the archiver (.ready files in pg_wal/archive_status)"),
            "If archiving fails, see archiving_failing; otherwise storage is slower than WAL is written: raise walg.upload_concurrency or check the network.",
            Some(now),
        );
    }

    match inputs.storage {
        None => push(
            Severity::Warning,
            "storage_not_checked",
            "the scheduler has not checked storage yet".into(),
            "Wait walg.health_check_interval; if it stays, check that walg_ext is in shared_preload_libraries and the walg_ext scheduler runs (pg_stat_activity).",
            None,
        ),
        Some(c) => {
            let at = Some(c.checked_at);
            let age = now - c.checked_at;
            if age > inputs.check_interval * 3 + Duration::seconds(30) {
                push(
                    Severity::Warning,
                    "health_check_stale",
                    format!("the storage facts below are {} old", ago(now, c.checked_at)),
                    "The walg_ext scheduler is not refreshing them: check the server log and pg_stat_activity for 'walg_ext scheduler'.",
                    at,
                );
            }
            if let Some(e) = &c.error {
                let unreachable = c.error_kind.as_deref() == Some("unreachable");
                push(
                    Severity::Critical,
                    if unreachable { "storage_unreachable" } else { "storage_error" },
                    format!("checked {} ago: {e}", ago(now, c.checked_at)),
                    if unreachable {
                        "Make the storage reachable (mount, network, bucket, credentials); backups and archiving fail until then."
                    } else {
                        "Read the error: storage answered with something walg_ext cannot use."
                    },
                    at,
                );
            } else {
                match (&c.latest_backup, c.latest_backup_finish) {
                    (None, _) => push(
                        Severity::Critical,
                        "no_backup",
                        "storage holds no backup: nothing can be restored".into(),
                        "Take one: SELECT walg_backup_push(); and set walg.backup_schedule.",
                        at,
                    ),
                    (Some(name), Some(finish)) if inputs.backups_expected => {
                        if let Some(due) = inputs.due_by.filter(|d| finish < *d) {
                            push(
                                Severity::Warning,
                                "backup_overdue",
                                format!(
                                    "the latest backup {name} finished {} ago, before {} when the schedule implies a newer one",
                                    ago(now, finish),
                                    due.format("%Y-%m-%d %H:%M:%S UTC")
                                ),
                                "See walg_schedule for the last outcome and error; the server log has the details.",
                                at,
                            );
                        }
                    }
                    _ => {}
                }
                for d in &c.failed_drills {
                    push(
                        if d.latest { Severity::Critical } else { Severity::Warning },
                        "drill_failed",
                        format!(
                            "backup {}{} failed its last restore drill at step {} ({})",
                            d.backup,
                            if d.latest { ", the latest," } else { "" },
                            d.failed_step,
                            d.finished_at.format("%Y-%m-%d %H:%M:%S UTC")
                        ),
                        "Read basebackups_005/<backup>/walg_drill.json (or walg-ext backup-list --json) for the reason; drill it again; \
                         if it fails again, take a new full backup now (SELECT walg_backup_push(full => true)).",
                        at,
                    );
                }
                for r in &c.lost_wal {
                    push(
                        if r.after_latest_backup { Severity::Critical } else { Severity::Warning },
                        "wal_gap",
                        format!(
                            "{} WAL segment(s) {}..{} are missing from storage{}",
                            r.segments_count,
                            r.start_segment,
                            r.end_segment,
                            if r.after_latest_backup { " after the latest backup: recovery stops there" } else { " (before the latest backup: older backups cannot be recovered past it)" }
                        ),
                        "Take a new full backup now (SELECT walg_backup_push()); if the segments are still in pg_wal, find out why they were not archived.",
                        at,
                    );
                }
            }
        }
    }

    if let Some(st) = inputs.state {
        for w in Which::ALL {
            let r = st.record(w);
            if r.expression.is_empty() {
                continue;
            }
            if r.last_outcome == Some(Outcome::Failed) {
                let retry = r.retry_at.map(|t| format!("; retry {} at {}", r.attempt, t.format("%Y-%m-%d %H:%M:%S UTC")));
                push(
                    if retry.is_some() { Severity::Warning } else { Severity::Critical },
                    "scheduled_backup_failed",
                    format!(
                        "the last {} backup ({}) failed: {}{}",
                        w.name(),
                        r.last_run.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string()).unwrap_or_default(),
                        r.last_error.as_deref().unwrap_or("?"),
                        retry.unwrap_or_else(|| "; no retry left until the next tick".into())
                    ),
                    "Fix what the error names; the next tick (or retry) tries again. walg_schedule shows the outcome.",
                    r.last_run,
                );
            }
        }
        let d = &st.drill;
        if !d.expression.is_empty() && d.last_outcome == Some(Outcome::Failed) {
            if let Some(why) = d.last_error.as_deref().and_then(|e| e.strip_prefix(super::drill::NOT_RUN_PREFIX)) {
                // A drill that ran and failed is drill_failed (from its report in storage); this
                // is one that never produced a report, so nothing else would say so.
                push(
                    Severity::Warning,
                    "scheduled_drill_not_run",
                    format!(
                        "the scheduled restore drill ({}) did not run: {why}",
                        d.last_run.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string()).unwrap_or_default()
                    ),
                    "Fix what the error names (space in walg.drill_work_dir, walg.cli_path, the PostgreSQL binaries); the next tick of walg.drill_schedule tries again, or run SELECT walg_restore_drill().",
                    d.last_run,
                );
            }
        }
        let r = &st.retention;
        if r.last_outcome == Some(Outcome::Failed) {
            push(
                Severity::Warning,
                "retention_failing",
                format!("retention '{}' failed: {}", r.policy, r.last_error.as_deref().unwrap_or("?")),
                "Fix what the error names; storage keeps growing until retention succeeds (it runs after each scheduled backup).",
                r.last_run,
            );
        }
    }
    out.sort_by_key(|p| std::cmp::Reverse(p.severity));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::plan::{Record, RetentionRecord};

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }
    fn daily() -> Vec<(Which, CronSchedule)> {
        vec![(Which::Backup, CronSchedule::parse("x", "0 3 * * *").unwrap().unwrap())]
    }
    fn healthy_storage(now: DateTime<Utc>) -> StorageCheck {
        StorageCheck {
            checked_at: now - Duration::seconds(20),
            latest_backup: Some("base_000000010000000000000010".into()),
            latest_backup_finish: Some(t("2026-11-29T03:10:00Z")),
            backups_count: 3,
            ..Default::default()
        }
    }
    fn inputs<'a>(now: DateTime<Utc>, storage: Option<&'a StorageCheck>, state: Option<&'a State>, schedules: &'a [(Which, CronSchedule)]) -> HealthInputs<'a> {
        HealthInputs {
            now,
            archive: Some(ArchiveView::default()),
            ready_count: Some(0),
            storage,
            state,
            due_by: overdue_threshold(schedules, state, &now),
            config_errors: &[],
            backups_expected: true,
            check_interval: Duration::seconds(60),
        }
    }
    fn names(p: &[Problem]) -> Vec<&'static str> {
        p.iter().map(|p| p.problem).collect()
    }

    #[test]
    fn healthy_is_empty() {
        let now = t("2026-11-29T17:00:00Z");
        let s = healthy_storage(now);
        let sch = daily();
        assert_eq!(assess(&inputs(now, Some(&s), None, &sch)), vec![]);
    }

    #[test]
    fn archiving_failing_and_lag() {
        let now = t("2026-11-29T17:00:00Z");
        let s = healthy_storage(now);
        let mut i = inputs(now, Some(&s), None, &[]);
        i.archive = Some(ArchiveView {
            failing_since: Some(t("2026-11-29T16:30:00Z")),
            last_failed_at: Some(t("2026-11-29T16:59:00Z")),
            last_failed_wal: Some("000000010000000000000042".into()),
            last_error: Some("storage unreachable: prefix gone".into()),
            ..Default::default()
        });
        i.ready_count = Some(12);
        let p = assess(&i);
        assert_eq!(names(&p), vec!["archiving_failing", "archive_lag"]);
        assert_eq!(p[0].severity, Severity::Critical);
        assert!(p[0].detail.contains("16:30:00") && p[0].detail.contains("30 min ago") && p[0].detail.contains("000000010000000000000042") && p[0].detail.contains("prefix gone"), "{}", p[0].detail);
        assert_eq!(p[1].severity, Severity::Warning);
        i.ready_count = Some(CRITICAL_READY);
        assert_eq!(assess(&i)[1].severity, Severity::Critical);
        i.ready_count = Some(WARN_READY - 1);
        assert_eq!(names(&assess(&i)), vec!["archiving_failing"]);
    }

    #[test]
    fn storage_unreachable_other_errors_and_no_backup() {
        let now = t("2026-11-29T17:00:00Z");
        let s = StorageCheck { checked_at: now, error: Some("storage unreachable: x".into()), error_kind: Some("unreachable".into()), ..Default::default() };
        let p = assess(&inputs(now, Some(&s), None, &[]));
        assert_eq!(names(&p), vec!["storage_unreachable"]);
        assert_eq!(p[0].observed_at, Some(now));
        let s = StorageCheck { checked_at: now, error: Some("corrupt x".into()), error_kind: Some("corrupt".into()), ..Default::default() };
        assert_eq!(names(&assess(&inputs(now, Some(&s), None, &[]))), vec!["storage_error"]);
        let s = StorageCheck { checked_at: now, ..Default::default() };
        assert_eq!(names(&assess(&inputs(now, Some(&s), None, &[]))), vec!["no_backup"]);
        assert_eq!(names(&assess(&inputs(now, None, None, &[]))), vec!["storage_not_checked"]);
    }

    #[test]
    fn a_stale_cache_says_so() {
        let now = t("2026-11-29T17:00:00Z");
        let mut s = healthy_storage(now);
        s.checked_at = now - Duration::seconds(400);
        let p = assess(&inputs(now, Some(&s), None, &[]));
        assert_eq!(names(&p), vec!["health_check_stale"]);
        assert!(p[0].detail.contains("400 s") || p[0].detail.contains("6 min"), "{}", p[0].detail);
    }

    #[test]
    fn backup_overdue_follows_the_schedule() {
        let sch = daily();
        // Latest finished 2026-11-29 03:10. At 11-30 05:00 the 11-30 03:00 tick may still run:
        // fine. At 12-01 04:00 the 11-30 tick should have produced one: overdue.
        let now = t("2026-11-30T05:00:00Z");
        let s = healthy_storage(now);
        assert_eq!(names(&assess(&inputs(now, Some(&s), None, &sch))), Vec::<&str>::new());
        let now = t("2026-12-01T04:00:00Z");
        let s = StorageCheck { checked_at: now, ..healthy_storage(now) };
        let p = assess(&inputs(now, Some(&s), None, &sch));
        assert_eq!(names(&p), vec!["backup_overdue"]);
        assert!(p[0].detail.contains("2026-11-30 03:00:00"), "{}", p[0].detail);
        // Not when the schedule took effect after that tick, nor on a standby without backups.
        let mut st = State::default();
        st.backup = Record { since: Some(t("2026-11-30T12:00:00Z")), ..Default::default() };
        assert_eq!(names(&assess(&inputs(now, Some(&s), Some(&st), &sch))), Vec::<&str>::new());
        let mut i = inputs(now, Some(&s), None, &sch);
        i.backups_expected = false;
        assert_eq!(names(&assess(&i)), Vec::<&str>::new());
    }

    #[test]
    fn failed_backups_retention_and_bad_settings() {
        let now = t("2026-11-29T17:00:00Z");
        let s = healthy_storage(now);
        let sch = daily();
        let mut st = State::default();
        st.backup = Record {
            expression: "0 3 * * *".into(),
            last_outcome: Some(Outcome::Failed),
            last_error: Some("storage unreachable: gone".into()),
            last_run: Some(t("2026-11-29T16:00:00Z")),
            retry_at: Some(t("2026-11-29T17:02:00Z")),
            attempt: 2,
            ..Default::default()
        };
        st.retention = RetentionRecord { policy: "FULL 7".into(), last_outcome: Some(Outcome::Failed), last_error: Some("boom".into()), ..Default::default() };
        st.drill = Record {
            expression: "0 5 * * *".into(),
            last_outcome: Some(Outcome::Failed),
            last_error: Some(format!("{}conflict: not enough free space for a restore drill", crate::schedule::drill::NOT_RUN_PREFIX)),
            ..Default::default()
        };
        let p = assess(&inputs(now, Some(&s), Some(&st), &sch));
        assert_eq!(names(&p), vec!["scheduled_backup_failed", "scheduled_drill_not_run", "retention_failing"]);
        assert!(p[1].detail.contains("did not run: conflict: not enough free space"), "{}", p[1].detail);
        // A drill that ran and failed is drill_failed's (from storage), not this.
        st.drill.last_error = Some("base_1 failed the drill at amcheck: ...".into());
        let p = assess(&inputs(now, Some(&s), Some(&st), &sch));
        assert_eq!(names(&p), vec!["scheduled_backup_failed", "retention_failing"]);
        assert_eq!(p[0].severity, Severity::Warning, "a retry is pending");
        assert!(p[0].detail.contains("retry 2 at 2026-11-29 17:02:00") && p[0].detail.contains("gone"), "{}", p[0].detail);
        st.backup.retry_at = None;
        let p = assess(&inputs(now, Some(&s), Some(&st), &sch));
        assert_eq!(p[0].severity, Severity::Critical);
        let errors = [("walg.backup_schedule".to_string(), "walg.backup_schedule: \"61 * * * *\" is not valid".to_string()), ("walg.retain".to_string(), "walg.retain: bad".to_string())];
        let mut i = inputs(now, Some(&s), None, &sch);
        i.config_errors = &errors;
        assert_eq!(names(&assess(&i)), vec!["bad_schedule", "bad_retention"]);
    }

    #[test]
    fn failed_drills_are_reported_critical_for_the_latest_backup() {
        let now = t("2026-11-29T17:00:00Z");
        let mut s = healthy_storage(now);
        let at = t("2026-11-29T12:00:00Z");
        s.failed_drills = vec![
            FailedDrill { backup: "base_000000010000000000000004".into(), failed_step: "restore".into(), finished_at: at, latest: false },
            FailedDrill { backup: "base_000000010000000000000010".into(), failed_step: "amcheck".into(), finished_at: at, latest: true },
        ];
        let p = assess(&inputs(now, Some(&s), None, &[]));
        assert_eq!(names(&p), vec!["drill_failed", "drill_failed"]);
        assert_eq!(p[0].severity, Severity::Critical, "critical first");
        assert!(p[0].detail.contains("base_000000010000000000000010, the latest,") && p[0].detail.contains("amcheck"), "{}", p[0].detail);
        assert_eq!(p[1].severity, Severity::Warning);
    }

    #[test]
    fn wal_gaps_after_the_latest_backup_are_critical() {
        let now = t("2026-11-29T17:00:00Z");
        let mut s = healthy_storage(now);
        s.lost_wal = vec![
            LostRun { start_segment: "000000010000000000000005".into(), end_segment: "000000010000000000000005".into(), segments_count: 1, after_latest_backup: false },
            LostRun { start_segment: "000000010000000000000012".into(), end_segment: "000000010000000000000013".into(), segments_count: 2, after_latest_backup: true },
        ];
        let p = assess(&inputs(now, Some(&s), None, &[]));
        assert_eq!(names(&p), vec!["wal_gap", "wal_gap"]);
        assert_eq!(p[0].severity, Severity::Critical, "critical first");
        assert!(p[0].detail.contains("000000010000000000000012..000000010000000000000013"), "{}", p[0].detail);
        assert_eq!(p[1].severity, Severity::Warning);
    }
    /// The cached check on a real file storage: unreachable, empty, damaged, and WAL lost
    /// before and after the latest backup.
    #[test]
    fn storage_check_on_file_storage() {
        use crate::catalog::walfiles::name_of_position;
        use crate::format::names::{metadata_key, sentinel_key};
        use crate::format::{BackupMetadata, Sentinel};
        use crate::storage::FsStorage;
        const SEG: u64 = 16 << 20;
        let now = t("2026-11-29T17:00:00Z");
        let pipeline = Pipeline::new(crate::codec::Compression::Lz4, None);
        let opt = IntegrityOptions { wal_segment_size: SEG, max_delayed: 0, uploading: 1 };
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("bucket");
        let s = FsStorage::new(root.clone());

        let c = check_storage(&s, &pipeline, None, opt, now);
        assert_eq!((c.error_kind.as_deref(), c.latest_backup.as_ref()), (Some("unreachable"), None), "{c:?}");
        assert_eq!(c.checked_at, now);

        std::fs::create_dir(&root).unwrap();
        let c = check_storage(&s, &pipeline, None, opt, now);
        assert_eq!((c.error.as_ref(), c.backups_count, c.latest_backup.as_ref()), (None, 0, None));

        let backup = |pos: u64, start: i64| {
            let name = format!("base_{}", name_of_position(1, pos));
            let sentinel = Sentinel {
                lsn: pos * SEG + 0x28,
                finish_lsn: (pos + 1) * SEG + 0x100,
                start_time: chrono::TimeZone::timestamp_opt(&Utc, start, 0).unwrap(),
                finish_time: chrono::TimeZone::timestamp_opt(&Utc, start + 10, 0).unwrap(),
                version: 2,
                pg_version: 150000,
                ..Default::default()
            };
            s.put(&format!("basebackups_005/{name}/tar_partitions/part_001.tar.lz4"), b"data").unwrap();
            let m = BackupMetadata { start_time: sentinel.start_time, ..Default::default() };
            s.put(&metadata_key(&name), &m.to_json()).unwrap();
            s.put(&sentinel_key(&name), &sentinel.to_json()).unwrap();
            name
        };
        backup(2, 100);
        let latest = backup(6, 200);
        for p in (2..=9).filter(|p| *p != 4 && *p != 7) {
            s.put(&format!("wal_005/{}.lz4", name_of_position(1, p)), b"w").unwrap();
        }
        // The server writes segment 11: 10 is "uploading"; 7 (after the latest backup) and 4
        // (before it) are lost.
        let current = CurrentSegment { timeline: 1, lsn: 11 * SEG + 5 };
        let c = check_storage(&s, &pipeline, Some(current), opt, now);
        assert_eq!(c.error, None, "{c:?}");
        assert_eq!((c.backups_count, c.latest_backup.as_deref()), (2, Some(latest.as_str())));
        assert_eq!(c.latest_backup_finish, Some(chrono::TimeZone::timestamp_opt(&Utc, 210, 0).unwrap()));
        let lost: Vec<(&str, bool)> = c.lost_wal.iter().map(|r| (r.start_segment.as_str(), r.after_latest_backup)).collect();
        assert_eq!(lost, vec![("000000010000000000000004", false), ("000000010000000000000007", true)]);
        assert!(c.failed_drills.is_empty());

        // Drills: the older backup passed, the latest failed at amcheck.
        let report = |backup: &str, passed: bool| crate::backup::drill::DrillReport {
            backup: backup.to_string(),
            passed,
            started_at: now,
            finished_at: now,
            target: "end of backup".into(),
            failed_step: (!passed).then(|| "amcheck".to_string()),
            error: None,
            steps: Vec::new(),
            databases: Vec::new(),
            btree_indexes_checked: 0,
            tables_checked: 0,
            host: String::new(),
            walg_ext_version: String::new(),
        };
        crate::backup::drill::write_report(&s, &report(&format!("base_{}", name_of_position(1, 2)), true)).unwrap();
        crate::backup::drill::write_report(&s, &report(&latest, false)).unwrap();
        let c = check_storage(&s, &pipeline, Some(current), opt, now);
        let failed: Vec<(&str, &str, bool)> =
            c.failed_drills.iter().map(|d| (d.backup.as_str(), d.failed_step.as_str(), d.latest)).collect();
        assert_eq!(failed, vec![(latest.as_str(), "amcheck", true)]);

        // A damaged sentinel: the check reports it (corrupt), not "no backup".
        s.put(&sentinel_key(&latest), b"{not json").unwrap();
        let c = check_storage(&s, &pipeline, Some(current), opt, now);
        assert_eq!(c.error_kind.as_deref(), Some("corrupt"), "{c:?}");
        let i = HealthInputs { storage: Some(&c), ..inputs(now, None, None, &[]) };
        assert_eq!(names(&assess(&i)), vec!["storage_error"]);
    }
}
