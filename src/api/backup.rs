//! walg_backup_push, walg_backup_list, walg_backup_mark.
use super::{chrono_to_tstz, error_with, ok, open, to_tstz};
use crate::pg_lsn::PgLsn;
use crate::shmem::USER_DATA_MAX;
use crate::worker::backup::{run, BackupOptions};
use pgrx::prelude::*;
use pgrx::JsonB;
use walg_core::catalog;

/// Take a base backup in a background worker: a delta when `walg.delta_max_steps` allows one
/// (WAL-G's rules), else full. `full` forces a full backup (WAL-G's `--full`); `delta_from`
/// names the base (`--delta-from-name`), `delta_from_user_data` finds it by its user data
/// (`--delta-from-user-data`). With `wait` (the default), return its name once it is committed
/// (sentinel written); cancelling the call cancels the backup. Without, return NULL at once:
/// the job's progress, name and outcome are in walg_status().
#[pg_extern(volatile, parallel_unsafe)]
fn walg_backup_push(
    permanent: default!(bool, false),
    user_data: default!(Option<JsonB>, "NULL"),
    wait: default!(bool, true),
    full: default!(bool, false),
    delta_from: default!(Option<&str>, "NULL"),
    delta_from_user_data: default!(Option<JsonB>, "NULL"),
) -> Option<String> {
    let check_len = |what: &str, text: &Option<String>| {
        if let Some(text) = text {
            if text.len() > USER_DATA_MAX {
                error_with(
                    PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                    &format!("walg_ext: {what} is {} bytes of JSON text; at most {USER_DATA_MAX} are allowed", text.len()),
                    "Store a reference (an id, a URL) instead of the data itself.",
                );
            }
        }
    };
    let user_data = user_data.map(|j| j.0.to_string());
    check_len("user_data", &user_data);
    let delta_from_user_data = delta_from_user_data.map(|j| j.0.to_string());
    check_len("delta_from_user_data", &delta_from_user_data);
    let named = [delta_from.is_some(), delta_from_user_data.is_some()].iter().filter(|&&b| b).count();
    if named > 1 || (full && named > 0) {
        error_with(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "walg_ext: full, delta_from and delta_from_user_data exclude each other",
            "Give at most one of them.",
        );
    }
    if let Some(name) = delta_from {
        if !walg_core::format::names::is_backup_name(name) {
            error_with(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                &format!("walg_ext: delta_from {name:?} is not a backup name"),
                "Use a name from walg_backup_list(), e.g. base_000000010000000000000004.",
            );
        }
    }
    run(&BackupOptions {
        permanent,
        user_data,
        wait,
        full,
        delta_from: delta_from.map(str::to_string),
        delta_from_user_data,
    })
}

/// One row per committed backup (one with a sentinel), oldest start time first. `detail` adds
/// the host, data directory, version, system identifier, delta chain and user data columns
/// (NULL without it), like WAL-G's `backup-list --detail`, and `corrupt_pages`: pages with a wrong
/// checksum the backup found (NULL when it did not verify them). `delta_pages` (deltas): how the
/// pages were chosen, `wal-maps` or `full-scan`. `last_drill` (always): the
/// backup's last restore drill (`walg-ext restore-drill`): passed, finished_at, failed_step,
/// restore_seconds, recovery_seconds; NULL when never drilled.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::type_complexity)]
fn walg_backup_list(
    detail: default!(bool, false),
) -> TableIterator<
    'static,
    (
        name!(backup_name, String),
        name!(modified, Option<TimestampWithTimeZone>),
        name!(wal_file_name, String),
        name!(storage_name, String),
        name!(start_lsn, PgLsn),
        name!(finish_lsn, PgLsn),
        name!(start_time, Option<TimestampWithTimeZone>),
        name!(finish_time, Option<TimestampWithTimeZone>),
        name!(uncompressed_size, i64),
        name!(compressed_size, i64),
        name!(is_permanent, bool),
        name!(is_full, bool),
        name!(delta_from, Option<String>),
        name!(delta_full_name, Option<String>),
        name!(delta_count, Option<i64>),
        name!(delta_pages, Option<String>),
        name!(hostname, Option<String>),
        name!(data_dir, Option<String>),
        name!(pg_version, Option<i32>),
        name!(system_identifier, Option<i64>),
        name!(user_data, Option<JsonB>),
        name!(corrupt_pages, Option<i64>),
        name!(last_drill, Option<JsonB>),
    ),
> {
    let (_, storage) = open();
    let backups = ok(catalog::list_backups(storage.as_ref()));
    let rows: Vec<_> = backups
        .into_iter()
        .map(|b| {
            let s = &b.sentinel;
            let d = |v| if detail { Some(v) } else { None };
            (
                b.name.clone(),
                to_tstz(b.modified),
                b.wal_file_name.clone(),
                "default".to_string(),
                PgLsn(s.lsn),
                PgLsn(s.finish_lsn),
                chrono_to_tstz(&s.start_time),
                chrono_to_tstz(&s.finish_time),
                s.uncompressed_size,
                s.compressed_size,
                b.is_permanent,
                b.is_full(),
                s.delta_from.clone(),
                s.delta_full_name.clone(),
                s.delta_count,
                s.walg_ext_delta_pages.clone(),
                d(s.hostname.clone()),
                d(s.data_dir.clone()),
                detail.then_some(s.pg_version),
                if detail { s.system_identifier.map(|v| v as i64) } else { None },
                if detail { b.user_data().cloned().map(JsonB) } else { None },
                if detail { s.walg_ext_corrupt_pages.map(|n| n as i64) } else { None },
                b.drill.as_ref().map(|d| JsonB(d.list_json())),
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// Mark a backup permanent (with its delta ancestors) or not permanent (refused while a
/// permanent delta depends on it). Returns the backups whose flag changed.
#[pg_extern(volatile, parallel_unsafe)]
fn walg_backup_mark(
    backup_name: &str,
    permanent: default!(bool, true),
) -> TableIterator<'static, (name!(backup_name, String), name!(is_permanent, bool))> {
    let (_, storage) = open();
    let changed = ok(catalog::mark::mark(storage.as_ref(), backup_name, permanent));
    TableIterator::new(changed.into_iter().map(move |n| (n, permanent)).collect::<Vec<_>>())
}
