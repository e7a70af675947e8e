//! Counters that survive restarts (kept in the state file) and the Prometheus text exposition
//! of them and of a few gauges, for `walg_metrics()`.
use serde::{Deserialize, Serialize};

/// Monotonic counters since the cluster first ran the scheduler (they survive restarts: the
/// state file holds them; a crash loses at most what happened since the last save).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    pub archived_files: u64,
    pub archived_bytes: u64,
    pub already_archived_files: u64,
    pub archive_failures: u64,
    pub backups_succeeded: u64,
    pub backups_failed: u64,
    pub backups_skipped: u64,
    pub retention_runs: u64,
    pub retention_failures: u64,
    pub deleted_objects: u64,
}

/// Point-in-time values (not persisted).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Gauges {
    pub ready_files: Option<u64>,
    pub archive_failing: bool,
    pub last_archived_unix: Option<f64>,
    pub latest_backup_finish_unix: Option<f64>,
    pub latest_backup_age_seconds: Option<f64>,
    pub backup_running: bool,
    pub health_critical: u64,
    pub health_warning: u64,
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(&str, f64)]) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
    for (labels, v) in samples {
        out.push_str(&format!("{name}{labels} {v}\n"));
    }
}

/// Prometheus text exposition format (version 0.0.4).
pub fn render(c: &Counters, g: &Gauges) -> String {
    let mut o = String::new();
    let f = |v: u64| v as f64;
    metric(&mut o, "walg_archived_files_total", "counter", "WAL files archived by the archive module.", &[("", f(c.archived_files))]);
    metric(&mut o, "walg_archived_bytes_total", "counter", "Bytes uploaded by the archive module.", &[("", f(c.archived_bytes))]);
    metric(&mut o, "walg_already_archived_files_total", "counter", "WAL files found already archived with identical content.", &[("", f(c.already_archived_files))]);
    metric(&mut o, "walg_archive_failures_total", "counter", "Failed attempts to archive a WAL file.", &[("", f(c.archive_failures))]);
    metric(
        &mut o,
        "walg_scheduled_backups_total",
        "counter",
        "Scheduled backup attempts by outcome.",
        &[
            ("{outcome=\"succeeded\"}", f(c.backups_succeeded)),
            ("{outcome=\"failed\"}", f(c.backups_failed)),
            ("{outcome=\"skipped\"}", f(c.backups_skipped)),
        ],
    );
    metric(
        &mut o,
        "walg_retention_runs_total",
        "counter",
        "Retention runs after scheduled backups by outcome.",
        &[("{outcome=\"succeeded\"}", f(c.retention_runs)), ("{outcome=\"failed\"}", f(c.retention_failures))],
    );
    metric(&mut o, "walg_deleted_objects_total", "counter", "Objects deleted by retention.", &[("", f(c.deleted_objects))]);
    if let Some(r) = g.ready_files {
        metric(&mut o, "walg_archive_ready_files", "gauge", "WAL files waiting for the archiver (.ready).", &[("", f(r))]);
    }
    metric(&mut o, "walg_archive_failing", "gauge", "1 while the latest archive attempt failed.", &[("", if g.archive_failing { 1.0 } else { 0.0 })]);
    if let Some(t) = g.last_archived_unix {
        metric(&mut o, "walg_last_archived_timestamp_seconds", "gauge", "When the last WAL file was archived.", &[("", t)]);
    }
    if let Some(t) = g.latest_backup_finish_unix {
        metric(&mut o, "walg_latest_backup_finish_timestamp_seconds", "gauge", "Finish time of the latest backup in storage (cached).", &[("", t)]);
    }
    if let Some(a) = g.latest_backup_age_seconds {
        metric(&mut o, "walg_latest_backup_age_seconds", "gauge", "Age of the latest backup in storage (cached).", &[("", a)]);
    }
    metric(&mut o, "walg_backup_running", "gauge", "1 while a backup runs.", &[("", if g.backup_running { 1.0 } else { 0.0 })]);
    metric(
        &mut o,
        "walg_health_problems",
        "gauge",
        "Problems walg_health() reports now, by severity.",
        &[("{severity=\"critical\"}", f(g.health_critical)), ("{severity=\"warning\"}", f(g.health_warning))],
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_text_has_help_type_and_samples() {
        let c = Counters { archived_files: 12, archived_bytes: 1 << 30, backups_succeeded: 3, backups_failed: 1, ..Default::default() };
        let g = Gauges { ready_files: Some(2), latest_backup_age_seconds: Some(61.5), health_warning: 1, ..Default::default() };
        let text = render(&c, &g);
        assert!(text.contains("# TYPE walg_archived_files_total counter\nwalg_archived_files_total 12\n"), "{text}");
        assert!(text.contains("walg_archived_bytes_total 1073741824\n"), "{text}");
        assert!(text.contains("walg_scheduled_backups_total{outcome=\"succeeded\"} 3\n"), "{text}");
        assert!(text.contains("walg_scheduled_backups_total{outcome=\"failed\"} 1\n"), "{text}");
        assert!(text.contains("walg_archive_ready_files 2\n"), "{text}");
        assert!(text.contains("walg_latest_backup_age_seconds 61.5\n"), "{text}");
        assert!(text.contains("walg_health_problems{severity=\"warning\"} 1\n"), "{text}");
        assert!(!text.contains("walg_last_archived_timestamp_seconds"), "absent gauges are left out");
        // Every sample line belongs to a declared metric.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(text.contains(&format!("# TYPE {name} ")), "{line}");
        }
    }

    #[test]
    fn counters_read_old_state_files() {
        let c: Counters = serde_json::from_str(r#"{"archived_files": 5}"#).unwrap();
        assert_eq!((c.archived_files, c.backups_failed), (5, 0));
    }
}
