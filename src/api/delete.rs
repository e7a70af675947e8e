//! walg_delete_*: WAL-G's delete modes. Dry run unless `confirm`; each returns the objects that
//! would be (or were) deleted, with the backup they belong to (NULL for WAL).
use super::{error_with, ok, open, wal_segment_size};
use crate::shmem::{self, BACKUP_JOB};
use pgrx::prelude::*;
use walg_core::catalog::delete::{self, DeleteRequest, GarbageScope};

// pgrx's SQL generator needs the full return type on each function (no alias).
type Rows = TableIterator<'static, (String, Option<String>, i64, bool)>;

fn run(req: DeleteRequest, confirm: bool) -> Rows {
    let (_, storage) = open();
    // A backup running on this server has no sentinel yet: its objects look like leftovers.
    let touches_leftovers = matches!(req, DeleteRequest::Everything { .. } | DeleteRequest::Garbage { .. });
    if confirm && touches_leftovers && shmem::available() && BACKUP_JOB.share().is_active() {
        error_with(
            PgSqlErrorCode::ERRCODE_OBJECT_IN_USE,
            "walg_ext: a backup is running on this server; its objects would be deleted",
            "Wait until walg_status() shows it finished, then try again.",
        );
    }
    let plan = ok(delete::run(storage.as_ref(), &req, wal_segment_size(), confirm));
    TableIterator::new(
        plan.objects.into_iter().map(|o| (o.key, o.backup, o.size as i64, confirm)).collect::<Vec<_>>(),
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
