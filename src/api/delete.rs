//! walg_delete_*: WAL-G's delete modes. Dry run unless `confirm`; each returns the objects that
//! would be (or were) deleted, with the backup they belong to (NULL for WAL and its changed-block maps).
use super::{ok, open, wal_segment_size};
use pgrx::prelude::*;
use walg_core::catalog::delete::{self, DeleteRequest, GarbageScope};

// pgrx's SQL generator needs the full return type on each function (no alias).
type Rows = TableIterator<'static, (String, Option<String>, i64, bool)>;

fn run(req: DeleteRequest, confirm: bool) -> Rows {
    let (_, storage) = open();
    // Backups in progress (from any server) are protected by their markers in storage; core
    // refuses `everything` while one runs and keeps the rest of their objects and WAL.
    let plan = ok(delete::run(storage.as_ref(), &req, wal_segment_size(), confirm));
    for n in &plan.notes {
        notice!("walg_ext: {n}");
    }
    for m in &plan.in_progress {
        notice!("walg_ext: backup in progress, its objects and the WAL from its start are kept: {m}");
    }
    TableIterator::new(
        plan.objects.into_iter().map(|o| (o.display_key(), o.backup, o.size as i64, confirm)).collect::<Vec<_>>(),
    )
}

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

/// WAL-G's `delete retain [FULL|FIND_FULL] N [--after name|time]`.
#[pg_extern(volatile, parallel_unsafe)]
fn walg_delete_retain(
    retain_count: i64,
    modifier: default!(Option<&str>, "NULL"),
    after: default!(Option<&str>, "NULL"),
    confirm: default!(bool, false),
) -> TableIterator<
    'static,
    (name!(object_key, String), name!(backup_name, Option<String>), name!(size_bytes, i64), name!(deleted, bool)),
> {
    run(ok(DeleteRequest::retain(modifier, retain_count, after, now())), confirm)
}

/// WAL-G's `delete before [FIND_FULL] name|time`.
#[pg_extern(volatile, parallel_unsafe)]
fn walg_delete_before(target: &str, find_full: default!(bool, false), confirm: default!(bool, false)) -> TableIterator<
    'static,
    (name!(object_key, String), name!(backup_name, Option<String>), name!(size_bytes, i64), name!(deleted, bool)),
> {
    run(ok(DeleteRequest::before(find_full, target, now())), confirm)
}

/// WAL-G's `delete everything [FORCE]`.
#[pg_extern(volatile, parallel_unsafe)]
fn walg_delete_everything(force: default!(bool, false), confirm: default!(bool, false)) -> TableIterator<
    'static,
    (name!(object_key, String), name!(backup_name, Option<String>), name!(size_bytes, i64), name!(deleted, bool)),
> {
    run(DeleteRequest::Everything { force }, confirm)
}

/// WAL-G's `delete garbage [ARCHIVES|BACKUPS]`.
#[pg_extern(volatile, parallel_unsafe)]
fn walg_delete_garbage(scope: default!(Option<&str>, "NULL"), confirm: default!(bool, false)) -> TableIterator<
    'static,
    (name!(object_key, String), name!(backup_name, Option<String>), name!(size_bytes, i64), name!(deleted, bool)),
> {
    run(DeleteRequest::Garbage { scope: ok(GarbageScope::parse(scope)) }, confirm)
}

/// WAL-G's `delete target [FIND_FULL] name`: the backup and the deltas that depend on it.
#[pg_extern(volatile, parallel_unsafe)]
fn walg_delete_target(backup_name: &str, find_full: default!(bool, false), confirm: default!(bool, false)) -> TableIterator<
    'static,
    (name!(object_key, String), name!(backup_name, Option<String>), name!(size_bytes, i64), name!(deleted, bool)),
> {
    run(ok(DeleteRequest::target(find_full, backup_name)), confirm)
}

/// WAL-G's `delete` with its command-line words, e.g. `walg_delete('retain FULL 2')`.
#[pg_extern(volatile, parallel_unsafe)]
fn walg_delete(command: &str, after: default!(Option<&str>, "NULL"), confirm: default!(bool, false)) -> TableIterator<
    'static,
    (name!(object_key, String), name!(backup_name, Option<String>), name!(size_bytes, i64), name!(deleted, bool)),
> {
    let args: Vec<String> = command.split_whitespace().map(String::from).collect();
    run(ok(DeleteRequest::parse_args(&args, after, now())), confirm)
}
