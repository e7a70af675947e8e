//! walg_schedule_status() (behind the view walg_schedule), walg_health(), walg_metrics(). All
//! three read shared memory only (the scheduler's published snapshot and the archiver's
//! counters) and count `.ready` files: cheap enough to call every few seconds.
use super::{chrono_to_tstz, error_with, status::ready_count};
use crate::shmem::{self, ARCHIVER_STATS, BACKUP_JOB, SCHEDULER};
use chrono::{DateTime, Utc};
use pgrx::datum::Interval;
use pgrx::prelude::*;
use walg_core::schedule::health::{self, ArchiveView, HealthInputs, Problem, Severity};
use walg_core::schedule::metrics::{self, Gauges};
use walg_core::schedule::{Snapshot, Which};

fn require_preload() {
    if !shmem::available() {
        error_with(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "walg_ext is not loaded through shared_preload_libraries",
            "Add walg_ext to shared_preload_libraries in postgresql.conf and restart the server: the scheduler runs only then.",
        );
    }
}

/// The scheduler's latest snapshot (None until it has published one).
fn snapshot() -> Option<Snapshot> {
    let json = SCHEDULER.share().snapshot_json()?;
    serde_json::from_str(&json).ok()
}

fn micros_to_utc(m: i64) -> Option<DateTime<Utc>> {
    (m != 0).then(|| DateTime::from_timestamp_micros(m)).flatten()
}

fn ms_interval(ms: Option<i64>) -> Option<Interval> {
    ms.map(|ms| Interval::from_micros(ms * 1000))
}

/// Rows of the view walg_schedule: one per schedule (`backup`, `full_backup`, `drill`: the
/// scheduled restore drills, `last_backup` the backup drilled) and one for `retention` (applied
/// after each successful scheduled backup).
#[pg_extern(volatile, parallel_safe)]
#[allow(clippy::type_complexity)]
fn walg_schedule_status() -> TableIterator<
    'static,
    (
        name!(schedule, String),
        name!(setting, String),
        name!(expression, Option<String>),
        name!(next_run, Option<TimestampWithTimeZone>),
        name!(last_run, Option<TimestampWithTimeZone>),
        name!(last_outcome, Option<String>),
        name!(last_error, Option<String>),
        name!(last_duration, Option<Interval>),
        name!(last_backup, Option<String>),
        name!(retry_attempt, Option<i32>),
    ),
> {
    require_preload();
    let Some(s) = snapshot() else { return TableIterator::new(vec![]) };
    let nonempty = |e: &str| (!e.is_empty()).then(|| e.to_string());
    let mut rows: Vec<_> = Which::ALL
        .into_iter()
        .map(|w| {
            let r = s.state.record(w);
            (
                w.name().to_string(),
                w.setting().to_string(),
                nonempty(&r.expression),
                s.next_run(w).as_ref().and_then(chrono_to_tstz),
                r.last_run.as_ref().and_then(chrono_to_tstz),
                r.last_outcome.map(|o| o.name().to_string()),
                r.last_error.clone(),
                ms_interval(r.last_duration_ms),
                r.last_backup.clone(),
                (r.attempt > 1).then_some(r.attempt as i32 - 1),
            )
        })
        .collect();
    let d = &s.state.drill;
    rows.push((
        "drill".into(),
        "walg.drill_schedule".into(),
        nonempty(&d.expression),
        s.next_drill.as_ref().and_then(chrono_to_tstz),
        d.last_run.as_ref().and_then(chrono_to_tstz),
        d.last_outcome.map(|o| o.name().to_string()),
        d.last_error.clone(),
        ms_interval(d.last_duration_ms),
        d.last_backup.clone(),
        None,
    ));
    let r = &s.state.retention;
    rows.push((
        "retention".into(),
        "walg.retain".into(),
        nonempty(&r.policy),
        None,
        r.last_run.as_ref().and_then(chrono_to_tstz),
        r.last_outcome.map(|o| o.name().to_string()),
        r.last_error.clone(),
        ms_interval(r.last_duration_ms),
        None,
        None,
    ));
    TableIterator::new(rows)
}

/// archive_library = 'walg_ext' with archiving on: only then the archiver's statistics mean
/// something.
fn archiving_through_walg() -> bool {
    let lib = unsafe {
        let p = pg_sys::GetConfigOption(c"archive_library".as_ptr(), true, false);
        if p.is_null() { String::new() } else { std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned() }
    };
    lib == "walg_ext" && unsafe { pg_sys::XLogArchiveMode } != pg_sys::ArchiveMode::ARCHIVE_MODE_OFF as i32
}

fn problems(snap: Option<&Snapshot>) -> Vec<Problem> {
    let a = *ARCHIVER_STATS.share();
    let archive = archiving_through_walg().then(|| ArchiveView {
        last_archived_at: micros_to_utc(a.last_archived_at),
        last_archived_wal: Some(a.last_archived()).filter(|s| !s.is_empty()),
        failing_since: micros_to_utc(a.failing_since),
        last_failed_at: micros_to_utc(a.last_failed_at),
        last_failed_wal: Some(a.last_failed()).filter(|s| !s.is_empty()),
        last_error: Some(a.last_error()).filter(|s| !s.is_empty()),
    });
    let none = Vec::new();
    let inputs = HealthInputs {
        now: Utc::now(),
        archive,
        ready_count: ready_count().map(|n| n as u64),
        storage: snap.and_then(|s| s.storage.as_ref()),
        state: snap.map(|s| &s.state),
        due_by: snap.and_then(|s| s.due_by),
        config_errors: snap.map(|s| &s.config_errors).unwrap_or(&none),
        backups_expected: snap.is_none_or(|s| !s.standby_idle),
        check_interval: chrono::Duration::seconds(snap.map_or(60, |s| s.check_interval_secs) as i64),
    };
    health::assess(&inputs)
}

/// One row per problem found now (none = healthy): severity (`critical`, `warning`), problem
/// (a stable name), detail, what to do, and when the underlying fact was observed (storage
/// facts come from the scheduler's cached check, at most walg.health_check_interval old).
#[pg_extern(volatile, parallel_safe)]
#[allow(clippy::type_complexity)]
fn walg_health() -> TableIterator<
    'static,
    (
        name!(severity, String),
        name!(problem, String),
        name!(detail, String),
        name!(action, String),
        name!(observed_at, Option<TimestampWithTimeZone>),
    ),
> {
    require_preload();
    let snap = snapshot();
    let rows: Vec<_> = problems(snap.as_ref())
        .into_iter()
        .map(|p| (p.severity.name().to_string(), p.problem.to_string(), p.detail, p.action, p.observed_at.as_ref().and_then(chrono_to_tstz)))
        .collect();
    TableIterator::new(rows)
}

/// Prometheus text exposition of walg_status()'s counters (which survive restarts), the
/// scheduler's counters, and a few gauges; for postgres_exporter custom queries or a textfile
/// collector.
#[pg_extern(volatile, parallel_safe)]
fn walg_metrics() -> String {
    require_preload();
    let snap = snapshot();
    let a = *ARCHIVER_STATS.share();
    let mut c = snap.as_ref().map(|s| s.state.counters).unwrap_or_default();
    c.archived_files = a.archived_files;
    c.archived_bytes = a.archived_bytes;
    c.already_archived_files = a.already_archived_files;
    c.archive_failures = a.failed_count;
    let now = Utc::now();
    let finish = snap.as_ref().and_then(|s| s.storage.as_ref()).and_then(|s| s.latest_backup_finish);
    let problems = problems(snap.as_ref());
    let count = |sev| problems.iter().filter(|p| p.severity == sev).count() as u64;
    let g = Gauges {
        ready_files: ready_count().map(|n| n as u64),
        archive_failing: a.failing_since != 0,
        last_archived_unix: micros_to_utc(a.last_archived_at).map(|t| t.timestamp_micros() as f64 / 1e6),
        latest_backup_finish_unix: finish.map(|t| t.timestamp_micros() as f64 / 1e6),
        latest_backup_age_seconds: finish.map(|t| (now - t).num_milliseconds() as f64 / 1e3),
        backup_running: BACKUP_JOB.share().is_active(),
        health_critical: count(Severity::Critical),
        health_warning: count(Severity::Warning),
    };
    metrics::render(&c, &g)
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// The test cluster preloads walg_ext, so its scheduler runs (with no schedule set) and
    /// publishes; the view, walg_health and walg_metrics read that.
    #[pg_test]
    fn schedule_view_health_and_metrics_read_the_scheduler() {
        let mut rows = 0;
        for _ in 0..100 {
            rows = Spi::get_one::<i64>("SELECT count(*) FROM walg_schedule").unwrap().unwrap_or(0);
            if rows == 4 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert_eq!(rows, 4, "backup, full_backup, drill, retention");
        let off = Spi::get_one::<String>(
            "SELECT string_agg(schedule || ':' || setting || ':' || coalesce(expression, 'off') || ':' || (next_run IS NULL)::text, ',' ORDER BY schedule) FROM walg_schedule",
        )
        .unwrap()
        .unwrap();
        assert_eq!(off, "backup:walg.backup_schedule:off:true,drill:walg.drill_schedule:off:true,full_backup:walg.full_backup_schedule:off:true,retention:walg.retain:off:true");
        let text = Spi::get_one::<String>("SELECT walg_metrics()").unwrap().unwrap();
        assert!(text.contains("# TYPE walg_archived_files_total counter\nwalg_archived_files_total "), "{text}");
        assert!(text.contains("walg_scheduled_backups_total{outcome=\"succeeded\"} 0\n"), "{text}");
        let odd = Spi::get_one::<i64>(
            "SELECT count(*) FROM walg_health() WHERE severity NOT IN ('critical', 'warning') OR detail = '' OR action = ''",
        )
        .unwrap();
        assert_eq!(odd, Some(0));
    }

    #[pg_test]
    fn new_settings_are_gucs_with_their_units() {
        let show = |q: &str| Spi::get_one::<String>(&format!("SELECT current_setting('{q}')")).unwrap().unwrap();
        assert_eq!(show("walg.backup_schedule"), "");
        assert_eq!(show("walg.retain"), "");
        assert_eq!(show("walg.backup_retries"), "2");
        assert_eq!(show("walg.backup_retry_delay"), "1min");
        assert_eq!(show("walg.health_check_interval"), "1min");
        assert_eq!(show("walg.backup_on_standby"), "off");
        assert_eq!((show("walg.drill_schedule"), show("walg.drill_work_dir"), show("walg.cli_path")), (String::new(), String::new(), String::new()));
    }
}
