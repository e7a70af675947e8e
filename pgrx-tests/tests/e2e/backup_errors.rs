//! An ERROR raised by PostgreSQL inside the backup worker reaches the SQL caller with its message
//! and its own SQLSTATE (not 38000 for everything), and leaves nothing behind.

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
    // PostgreSQL's own SQLSTATE for "WAL level not sufficient": object_not_in_prerequisite_state.
    a.psql(
        "CREATE FUNCTION walg_state(q text) RETURNS text LANGUAGE plpgsql AS $$ \
         BEGIN EXECUTE q; RETURN 'ok'; EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE || ' ' || SQLERRM; END $$",
    );
    let state = a.psql("SELECT walg_state('SELECT walg_backup_push()')");
    assert!(state.starts_with("55000 walg_ext backup failed: WAL level not sufficient"), "{state}");
    assert!(
        a.psql("SELECT backup_error FROM walg_status()").starts_with("conflict: WAL level not sufficient"),
        "walg_status shows the kind PostgreSQL's SQLSTATE stands for"
    );
    let err = a.try_psql("SELECT walg_backup_push()").expect_err("no online backup at wal_level minimal");
    assert!(err.contains("HINT:") && err.contains("Nothing was committed"), "{err}");
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
