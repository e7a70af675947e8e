//! walg_restore_drill(): a restore drill asked of the server, run by the drill worker
//! (worker/drill.rs) with `walg-ext restore-drill`, the one drill implementation.
use super::{error_with, raise, sqlstate_for_kind};
use crate::shmem;
use crate::worker::drill::{outcome, start, StartError, Started};
use pgrx::bgworkers::BackgroundWorkerStatus;
use pgrx::prelude::*;
use pgrx::JsonB;
use walg_core::backup::drill_request::outcome_json;

/// Run a restore drill of `backup` (a name or LATEST) in a background worker: everything about
/// the machine is checked first (a backup or drill running, the server's binaries and amcheck,
/// walg.cli_path, free space in walg.drill_work_dir), each refusal an ERROR that starts nothing.
/// With `wait` (the default) return the outcome once it ran: backup, passed, reason (NULL when
/// it passed), failed_step, started_at, finished_at, seconds, timings (per step), databases,
/// btree_indexes_checked, tables_checked, report (its key in storage). A drill that ran and
/// failed is an outcome, not an ERROR; one that could not run is an ERROR. Cancelling the call
/// cancels the drill. Without `wait`, return {"backup": ..., "started": true} at once; the
/// report lands in walg_backup_list()'s last_drill.
#[pg_extern(volatile, parallel_unsafe)]
fn walg_restore_drill(backup: default!(&str, "'LATEST'"), wait: default!(bool, true)) -> Option<JsonB> {
    if !shmem::available() {
        error_with(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "walg_ext is not loaded through shared_preload_libraries",
            "Add walg_ext to shared_preload_libraries in postgresql.conf and restart the server.",
        );
    }
    if backup != "LATEST" && !walg_core::format::names::is_backup_name(backup) {
        error_with(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            &format!("walg_ext: {backup:?} is not a backup name"),
            "Use LATEST or a name from walg_backup_list(), e.g. base_000000010000000000000004.",
        );
    }
    let Started { generation, worker, backup } = match start(backup) {
        Ok(s) => s,
        Err(StartError::Refused(e)) => raise(e),
        Err(StartError::Busy(why)) => error_with(
            PgSqlErrorCode::ERRCODE_OBJECT_IN_USE,
            &format!("walg_ext: {why}"),
            "Wait for it to finish and try again.",
        ),
        Err(StartError::NoWorker) => error_with(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_RESOURCES,
            "could not start the walg_ext drill worker",
            "Raise max_worker_processes.",
        ),
    };
    if !wait {
        return Some(JsonB(serde_json::json!({ "backup": backup, "started": true })));
    }
    loop {
        match worker.pid() {
            Err(BackgroundWorkerStatus::Stopped) => break,
            Err(BackgroundWorkerStatus::PostmasterDied) => error!("walg_ext: the postmaster died during the drill"),
            _ => {}
        }
        unsafe {
            pg_sys::WaitLatch(
                pg_sys::MyLatch,
                (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
                500,
                pg_sys::PG_WAIT_EXTENSION,
            );
            pg_sys::ResetLatch(pg_sys::MyLatch);
            if pg_sys::QueryCancelPending != 0 || pg_sys::ProcDiePending != 0 {
                // The caller gives up, so the drill stops too (its worker removes the copy).
                let _ = worker.terminate();
                pg_sys::check_for_interrupts!();
                error_with(PgSqlErrorCode::ERRCODE_QUERY_CANCELED, "walg_ext restore drill cancelled", "");
            }
        }
    }
    match outcome(generation) {
        Ok(report) => Some(JsonB(outcome_json(&report))),
        Err(f) => {
            let (code, hint) = sqlstate_for_kind(f.kind);
            error_with(code, &format!("walg_ext: the restore drill of {backup} did not run: {}", f.message), hint)
        }
    }
}
