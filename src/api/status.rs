//! walg_status(): the archiver (what the archive module did since the server started, and how
//! many .ready files wait), the backup job (running or last), and the latest backup in storage.
use super::{chrono_to_tstz, to_timestamp_micros};
use crate::shmem::{self, ArchiverStats, BackupJob, ARCHIVER_STATS, BACKUP_JOB};
use pgrx::datum::Interval;
use pgrx::prelude::*;
use walg_core::backup::push;
use walg_core::catalog;

fn phase_name(p: u32) -> &'static str {
    match p {
        push::PHASE_IDLE => "idle",
        push::PHASE_WALKING => "walking",
        push::PHASE_UPLOADING => "uploading",
        push::PHASE_PG_CONTROL => "pg_control",
        push::PHASE_FINISHING => "finishing",
        push::PHASE_DONE => "done",
        push::PHASE_WAITING_WAL => "waiting_wal",
        _ => "unknown",
    }
}

fn state_name(job: &BackupJob) -> &'static str {
    use shmem::JobState as S;
    match job.state() {
        S::Idle => "idle",
        // A job whose process is gone without settling was killed.
        S::Starting | S::Running if !job.is_active() => "failed",
        S::Starting => "starting",
        S::Running => "running",
        S::Succeeded => "succeeded",
        S::Failed => "failed",
    }
}

/// `pg_wal/archive_status/*.ready`: segments waiting for the archiver.
pub(crate) fn ready_count() -> Option<i64> {
    let dir = crate::settings::data_dir().join("pg_wal/archive_status");
    let rd = std::fs::read_dir(dir).ok()?;
    Some(rd.filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().ends_with(".ready")).count() as i64)
}

fn nonempty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn at(micros: i64) -> Option<TimestampWithTimeZone> {
    (micros != 0).then(|| to_timestamp_micros(micros)).flatten()
}

/// One row. Archiver and backup columns need shared_preload_libraries (NULL otherwise); the
/// latest-backup columns read storage (`storage_error` says why they are NULL if that failed).
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::type_complexity)]
fn walg_status() -> TableIterator<
    'static,
    (
        name!(last_archived_wal, Option<String>),
        name!(last_archived_time, Option<TimestampWithTimeZone>),
        name!(last_failed_wal, Option<String>),
        name!(last_failed_time, Option<TimestampWithTimeZone>),
        name!(last_failure, Option<String>),
        name!(ready_count, Option<i64>),
        name!(archived_count, Option<i64>),
        name!(archived_bytes, Option<i64>),
        name!(already_archived_count, Option<i64>),
        name!(failed_count, Option<i64>),
        name!(backup_state, Option<String>),
        name!(backup_name, Option<String>),
        name!(backup_phase, Option<String>),
        name!(backup_bytes_done, Option<i64>),
        name!(backup_bytes_total, Option<i64>),
        name!(backup_files_done, Option<i64>),
        name!(backup_files_total, Option<i64>),
        name!(backup_error, Option<String>),
        name!(latest_backup, Option<String>),
        name!(latest_backup_finish_time, Option<TimestampWithTimeZone>),
        name!(latest_backup_age, Option<Interval>),
        name!(latest_backup_corrupt_pages, Option<i64>),
        name!(storage_error, Option<String>),
    ),
> {
    let (a, job): (Option<ArchiverStats>, Option<BackupJob>) = if shmem::available() {
        (Some(*ARCHIVER_STATS.share()), Some(*BACKUP_JOB.share()))
    } else {
        (None, None)
    };
    let latest = crate::settings::load_config()
        .and_then(|c| c.open_storage())
        .and_then(|s| catalog::latest_backup(s.as_ref()));
    let (latest, storage_error) = match latest {
        Ok(l) => (l, None),
        Err(e) => (None, Some(e.to_string())),
    };
    let finish = latest.as_ref().map(|b| b.sentinel.finish_time);
    let age = finish.and_then(|f| {
        let micros = (chrono::Utc::now() - f).num_microseconds()?;
        Some(Interval::from_micros(micros))
    });
    let job_ok = job.filter(|j| j.state() != shmem::JobState::Idle);
    let row = (
        a.and_then(|a| nonempty(a.last_archived())),
        a.and_then(|a| at(a.last_archived_at)),
        a.and_then(|a| nonempty(a.last_failed())),
        a.and_then(|a| at(a.last_failed_at)),
        a.and_then(|a| nonempty(a.last_error())),
        ready_count(),
        a.map(|a| a.archived_files as i64),
        a.map(|a| a.archived_bytes as i64),
        a.map(|a| a.already_archived_files as i64),
        a.map(|a| a.failed_count as i64),
        job.map(|j| state_name(&j).to_string()),
        job_ok.and_then(|j| nonempty(j.name())),
        job_ok.map(|j| phase_name(j.phase).to_string()),
        job_ok.map(|j| j.bytes_done as i64),
        job_ok.map(|j| j.bytes_total as i64),
        job_ok.map(|j| j.files_done as i64),
        job_ok.map(|j| j.files_total as i64),
        // Prefixed with the error's kind (unreachable, corrupt, conflict, ...) when known.
        job_ok.and_then(|j| nonempty(j.error())).map(|e| match job_ok.and_then(|j| j.error_kind()) {
            Some(k) => format!("{}: {e}", k.name()),
            None => e,
        }),
        latest.as_ref().map(|b| b.name.clone()),
        finish.as_ref().and_then(chrono_to_tstz),
        age,
        latest.as_ref().and_then(|b| b.sentinel.walg_ext_corrupt_pages).map(|n| n as i64),
        storage_error,
    );
    TableIterator::new(vec![row])
}
