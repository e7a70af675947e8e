//! walg_wal_show and walg_wal_verify.
use super::{ok, open, wal_segment_size};
use crate::pg_lsn::PgLsn;
use pgrx::prelude::*;
use walg_core::catalog::wal_verify::{self, Check, IntegrityOptions};
use walg_core::catalog::{self, wal_show};

/// WAL-G's wal-show: per timeline in storage, its parent and switch point (from the history
/// file), first and last segment, how many are there and which are missing, and its backups.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::type_complexity)]
fn walg_wal_show() -> TableIterator<
    'static,
    (
        name!(tli, i64),
        name!(parent_tli, i64),
        name!(switchpoint_lsn, PgLsn),
        name!(start_segment, String),
        name!(end_segment, String),
        name!(segment_range, i64),
        name!(segments_count, i64),
        name!(status, String),
        name!(backups_count, i64),
        name!(missing_segments, Vec<String>),
        name!(backups, Vec<String>),
    ),
> {
    let (cfg, storage) = open();
    let backups = ok(catalog::list_backups(storage.as_ref()));
    let rows = ok(wal_show::wal_show(storage.as_ref(), &cfg.pipeline(), &backups, wal_segment_size()));
    TableIterator::new(
        rows.into_iter()
            .map(|t| {
                (
                    t.id as i64,
                    t.parent_id as i64,
                    PgLsn(t.switch_point_lsn),
                    t.start_segment,
                    t.end_segment,
                    t.segment_range_size as i64,
                    t.segments_count as i64,
                    t.status.to_string(),
                    t.backups.len() as i64,
                    t.missing_segments,
                    t.backups,
                )
            })
            .collect::<Vec<_>>(),
    )
}

/// WAL-G's wal-verify. `checks`: `integrity`, `timeline`, or both separated by spaces or
/// commas. Integrity: one row per run of segments with the same timeline and status (FOUND,
/// MISSING_DELAYED, MISSING_UPLOADING, MISSING_LOST) from the earliest backup to the current
/// segment; timeline: one row comparing the server's timeline with the highest in storage.
/// `status` is the check's overall OK / WARNING / FAILURE.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::type_complexity)]
fn walg_wal_verify(
    checks: default!(&str, "'integrity timeline'"),
) -> TableIterator<
    'static,
    (
        name!(check_name, String),
        name!(status, String),
        name!(timeline_id, Option<i64>),
        name!(start_segment, Option<String>),
        name!(end_segment, Option<String>),
        name!(segments_count, Option<i64>),
        name!(segment_status, Option<String>),
        name!(highest_storage_timeline_id, Option<i64>),
    ),
> {
    let parsed: Vec<Check> = ok(checks
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|s| !s.is_empty())
        .map(Check::parse)
        .collect::<walg_core::Result<Vec<_>>>());
    if parsed.is_empty() {
        ok::<()>(Err(walg_core::Error::InvalidArgument("no check given: use 'integrity' and/or 'timeline'".into())));
    }
    let (cfg, storage) = open();
    let current = ok(crate::pg_lsn::current_segment().map_err(walg_core::Error::Internal));
    let mut rows = Vec::new();
    for check in parsed {
        match check {
            Check::Integrity => {
                let backups = ok(catalog::list_backups(storage.as_ref()));
                let opt = IntegrityOptions {
                    wal_segment_size: wal_segment_size(),
                    max_delayed: 0,
                    uploading: cfg.upload_concurrency,
                };
                let r = ok(wal_verify::integrity(storage.as_ref(), &cfg.pipeline(), &backups, current, opt));
                let status = r.status.as_str().to_string();
                if r.details.is_empty() {
                    rows.push(("integrity".into(), status.clone(), None, None, None, None, None, None));
                }
                for d in r.details {
                    rows.push((
                        "integrity".into(),
                        status.clone(),
                        Some(d.timeline_id as i64),
                        Some(d.start_segment),
                        Some(d.end_segment),
                        Some(d.segments_count as i64),
                        Some(d.status.as_str().to_string()),
                        None,
                    ));
                }
            }
            Check::Timeline => {
                let r = ok(wal_verify::timeline(storage.as_ref(), current.timeline));
                rows.push((
                    "timeline".into(),
                    r.status.as_str().to_string(),
                    Some(r.current_timeline_id as i64),
                    None,
                    None,
                    None,
                    None,
                    r.highest_storage_timeline_id.map(|t| t as i64),
                ));
            }
        }
    }
    TableIterator::new(rows)
}
