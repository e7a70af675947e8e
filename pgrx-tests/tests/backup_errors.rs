//! An ERROR raised by PostgreSQL inside the backup worker reaches the SQL caller as a message,
//! and leaves nothing behind.

use walg_e2e::{require_installed, Cluster, Storage};

#[test]
fn pg_backup_start_error_reaches_the_caller() {
    require_installed();
    let storage = Storage::new("backup-errors", "lz4");
    // wal_level = minimal: pg_backup_start refuses to run.
    let conf = format!(
        "shared_preload_libraries = 'walg_ext'\nwal_level = minimal\nmax_wal_senders = 0\n\
         archive_mode = off\nwalg.file_prefix = '{}'\n",
        storage.file_prefix().display()
    );
    let mut a = Cluster::init("backup-errors-a", &conf);
    a.start();
    a.psql("CREATE EXTENSION walg_ext");
    let err = a.try_psql("SELECT walg_backup_push()").expect_err("no online backup at wal_level minimal");
    assert!(
        err.contains("walg_ext backup failed") && err.contains("WAL level not sufficient"),
        "the worker's ERROR is the caller's message; got: {err}"
    );
    assert!(storage.sentinel_backups().is_empty(), "nothing committed");
    // The job slot is free again: the next call fails the same way, not with "already running".
    let err = a.try_psql("SELECT walg_backup_push()").expect_err("still refused");
    assert!(err.contains("WAL level not sufficient"), "got: {err}");
    a.stop();
}
