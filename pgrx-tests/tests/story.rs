//! The demo story with assertions: archive through the extension, take a base backup from SQL,
//! write more, restore LATEST with `walg-ext backup-fetch` into a second cluster that replays the
//! archived WAL through `walg-ext wal-fetch`, and compare pg_dumpall of both.

use std::time::Duration;

use walg_e2e::{assert_dumps_equal, require_installed, Backend, Cluster, Storage};

fn story(backend: Backend, compression: &str) {
    require_installed();
    let ext = walg_e2e::storage::extension_for(compression);
    let label = format!("story-{backend:?}-{compression}").to_lowercase();
    let storage = Storage::with_backend(backend, &label, compression, &[]);
    let mut a = Cluster::init(&format!("{label}-a"), &storage.extension_conf());
    a.start();

    // Data before the backup.
    a.pgbench_init(2);
    a.psql("CREATE EXTENSION walg_ext");

    // Archiving works through the extension before any backup.
    let seg0 = a.switch_wal();
    a.wait_archived(&seg0, Duration::from_secs(120));
    let obj0 = storage.expected_wal_object(&seg0);
    assert!(
        storage.has(&obj0),
        "archived {seg0} should be stored as {obj0} in {}; wal_005 holds {:?}",
        storage.describe(),
        storage.wal_objects()
    );

    // Base backup from SQL.
    let name = a.psql("SELECT walg_backup_push()");
    assert!(
        name.starts_with("base_") && name.len() == "base_".len() + 24,
        "walg_backup_push() returned {name:?}, expected base_<24 hex digits>"
    );
    let listed = a.psql(
        "SELECT backup_name, wal_file_name = substr(backup_name, 6), \
                pg_walfile_name(start_lsn) = wal_file_name, start_lsn <= finish_lsn, \
                start_time <= finish_time, uncompressed_size > 0, compressed_size > 0, \
                is_permanent \
         FROM walg_backup_list()",
    );
    assert_eq!(
        listed,
        format!("{name}|t|t|t|t|t|t|f"),
        "walg_backup_list() must have exactly the new backup (name, wal_file_name matches, \
         start_lsn in it, start <= finish, sizes > 0, not permanent); full rows:\n{}",
        a.psql("SELECT * FROM walg_backup_list()")
    );
    assert!(
        storage.has(&storage.sentinel(&name)),
        "sentinel {} missing; basebackups_005 holds {:?}",
        storage.sentinel(&name),
        storage.keys("basebackups_005/")
    );
    let sentinel: serde_json::Value = serde_json::from_slice(
        &storage.read(&storage.sentinel(&name)),
    )
    .expect("the sentinel is plain JSON");
    assert!(sentinel.get("LSN").and_then(|v| v.as_u64()).is_some(), "sentinel LSN: {sentinel}");
    assert!(sentinel.get("FinishLSN").and_then(|v| v.as_u64()).is_some(), "FinishLSN: {sentinel}");
    let parts = storage.tar_partitions(&name);
    assert!(
        parts.contains(&format!("part_001.tar.{ext}").trim_end_matches('.').to_string()),
        "tar_partitions of {name} should hold part_001.tar.{ext}; has {parts:?}"
    );

    // Changes after the backup, which only WAL replay can bring back.
    a.pgbench(&["-n", "-t", "300", "-c", "2"]);
    a.psql(
        "CREATE TABLE after_backup(id int PRIMARY KEY, note text); \
         INSERT INTO after_backup SELECT g, md5(g::text) FROM generate_series(1, 5000) g; \
         UPDATE pgbench_branches SET filler = 'after backup' WHERE bid = 1",
    );
    let last = a.switch_wal();
    a.wait_archived(&last, Duration::from_secs(180));
    assert!(
        storage.has(&storage.expected_wal_object(&last)),
        "{last} archived but {} is missing",
        storage.expected_wal_object(&last)
    );
    let backup_history = format!(".backup.{ext}");
    assert!(
        storage.wal_objects().iter().any(|o| o.ends_with(backup_history.trim_end_matches('.'))),
        "the backup history file (<segment>.<offset>.backup) is archived too: {:?}",
        storage.wal_objects()
    );
    let (_, archived, failed, last_failed) = a.archiver_stats().unwrap();
    assert_eq!(failed, 0, "archiver failures (last failed {last_failed}); archived {archived}");
    let dump_a = a.dumpall();
    let history_a = a.psql("SELECT count(*) FROM pgbench_history");
    assert_eq!(history_a, "600", "2 clients x 300 transactions");

    // The CLI sees the backup.
    let out = storage.walg_ext(&["backup-list"]);
    assert!(out.success(), "walg-ext backup-list\n{}", out.describe());
    assert!(out.stdout.contains(&name), "backup-list shows {name}:\n{}", out.stdout);
    let out = storage.walg_ext(&["backup-list", "--json"]);
    assert!(out.success(), "walg-ext backup-list --json\n{}", out.describe());
    let json: serde_json::Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("backup-list --json is not JSON ({e}):\n{}", out.stdout));
    let arr = json.as_array().unwrap_or_else(|| panic!("backup-list --json is not an array: {json}"));
    assert_eq!(arr.len(), 1, "exactly one backup listed: {json}");
    assert!(json.to_string().contains(&name), "backup-list --json lists {name}: {json}");
    // The environment configuration works as well as the config file.
    let out = storage.walg_ext_env(&["backup-list"]);
    assert!(out.success() && out.stdout.contains(&name), "backup-list via the environment\n{}", out.describe());

    // Restore LATEST into B and replay.
    let mut b = Cluster::restore_into(&format!("{label}-b"), &storage, "LATEST", "");
    b.start();
    b.wait_recovery_done(Duration::from_secs(300));
    assert_eq!(b.psql("SELECT count(*) FROM pgbench_history"), history_a);
    assert_eq!(b.psql("SELECT count(*) FROM after_backup"), "5000");
    assert_eq!(b.psql("SELECT count(*) FROM pgbench_accounts"), "200000");
    assert_dumps_equal(&dump_a, &b.dumpall(), &format!("{label}: A vs restored B"));
    // The restored server promoted to a new timeline and is writable.
    assert_ne!(
        b.psql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"),
        "00000001",
        "B should run on a new timeline after promotion"
    );
    b.psql("CREATE TABLE written_on_b(x int); INSERT INTO written_on_b VALUES (1)");

    b.stop();
    a.stop();
}

#[test]
fn story_lz4() {
    story(Backend::File, "lz4");
}

#[test]
fn story_zstd() {
    story(Backend::File, "zstd");
}

#[test]
fn story_s3_lz4() {
    story(Backend::S3, "lz4");
}

#[test]
fn story_s3_zstd() {
    story(Backend::S3, "zstd");
}
