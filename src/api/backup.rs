//! walg_backup_push() and walg_backup_list().
use super::raise;
use crate::pg_lsn::PgLsn;
use crate::settings;
use crate::worker::backup::run_and_wait;
use pgrx::prelude::*;
use std::time::{SystemTime, UNIX_EPOCH};
use walg_core::catalog;

/// Take a full base backup now, in a background worker, and return its name once it is
/// committed (sentinel written). Cancelling the call cancels the backup.
#[pg_extern(volatile, parallel_unsafe)]
fn walg_backup_push() -> String {
    run_and_wait()
}

fn to_tstz(t: SystemTime) -> Option<TimestampWithTimeZone> {
    let micros = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i64,
        Err(e) => -(e.duration().as_micros() as i64),
    };
    to_timestamp_micros(micros)
}

fn chrono_to_tstz(t: &chrono::DateTime<chrono::Utc>) -> Option<TimestampWithTimeZone> {
    to_timestamp_micros(t.timestamp_micros())
}

/// Unix microseconds to timestamptz (PostgreSQL's epoch is 2000-01-01).
fn to_timestamp_micros(unix_micros: i64) -> Option<TimestampWithTimeZone> {
    const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;
    TimestampWithTimeZone::try_from(unix_micros - PG_EPOCH_OFFSET_MICROS).ok()
}



/// One row per committed backup (one with a sentinel), oldest first.
#[pg_extern(volatile, parallel_unsafe)]
fn walg_backup_list() -> TableIterator<
    'static,
    (
        name!(backup_name, String),
        name!(modified, Option<TimestampWithTimeZone>),
        name!(wal_file_name, String),
        name!(start_lsn, PgLsn),
        name!(finish_lsn, PgLsn),
        name!(start_time, Option<TimestampWithTimeZone>),
        name!(finish_time, Option<TimestampWithTimeZone>),
        name!(uncompressed_size, i64),
        name!(compressed_size, i64),
        name!(is_permanent, bool),
    ),
> {
    let cfg = settings::load_config().unwrap_or_else(|e| raise(e));
    let storage = cfg.open_storage().unwrap_or_else(|e| raise(e));
    let backups = catalog::list_backups(storage.as_ref()).unwrap_or_else(|e| raise(e));
    let rows: Vec<_> = backups
        .into_iter()
        .map(|b| {
            let s = &b.sentinel;
            (
                b.name.clone(),
                to_tstz(b.modified),
                b.wal_file_name.clone(),
                PgLsn(s.lsn),
                PgLsn(s.finish_lsn),
                chrono_to_tstz(&s.start_time),
                chrono_to_tstz(&s.finish_time),
                s.uncompressed_size,
                s.compressed_size,
                b.is_permanent,
            )
        })
        .collect();
    TableIterator::new(rows)
}
