//! Nothing is lost when storage fails under the archiver: the callback fails with a WARNING,
//! PostgreSQL keeps the WAL and retries, and once storage is back every segment is archived.
//! Also: a server without storage settings archives nothing and says why, and the extension
//! reads its storage from walg.config_file.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use walg_e2e::{require_installed, wait_until, Cluster, ScratchDir, Storage};

#[test]
fn unwritable_storage_keeps_wal_until_it_recovers() {
    require_installed();
    let storage = Storage::new("faults-unwritable", "lz4");
    let mut a = Cluster::init("faults-unwritable-a", &storage.extension_conf());
    a.start();
    a.psql("CREATE TABLE t(x int)");
    let first = a.switch_wal();
    a.wait_archived(&first, Duration::from_secs(60));

    // Storage goes read-only: every archive attempt must fail, and the WAL must stay.
    let wal_dir = storage.wal_dir();
    std::fs::set_permissions(&wal_dir, std::fs::Permissions::from_mode(0o500)).unwrap();
    let mut switched = Vec::new();
    for i in 0..4 {
        a.psql(&format!("INSERT INTO t SELECT g FROM generate_series(1, 20000) g; -- {i}"));
        switched.push(a.switch_wal());
    }
    wait_until("archive failures to be counted", Duration::from_secs(60), || {
        let (_, _, failed, _) = a.archiver_stats().ok()?;
        (failed > 0).then_some(())
    });
    assert!(a.ready_segments().len() >= 1, "WAL waiting for the archiver must stay .ready");
    for seg in &switched {
        assert!(a.pg_wal().join(seg).is_file(), "{seg} must be kept in pg_wal while archiving fails");
        assert!(storage.wal_object(seg).is_none(), "{seg} cannot be in read-only storage");
    }
    let log = a.log_text();
    assert!(
        log.contains("WARNING:  walg_ext: could not archive"),
        "the archiver logs a WARNING saying what failed; log tail:\n{}",
        a.log_tail(30)
    );
    assert!(
        !log.contains("archiver process (PID"),
        "the archiver must not die on a failed upload; log tail:\n{}",
        a.log_tail(30)
    );

    // Storage is back: every segment gets archived, in full, with no gaps.
    std::fs::set_permissions(&wal_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let last = switched.last().unwrap().clone();
    a.wait_archived(&last, Duration::from_secs(120));
    // A fresh directory: wal-fetch prefetches beside its destination (the project once fetched
    // into /tmp here and was served another run's prefetched segment of the same name).
    let scratch = ScratchDir::new("faults-unwritable-fetch");
    let dest = scratch.path().join("seg");
    for seg in &switched {
        assert!(storage.wal_object(seg).is_some(), "{seg} archived after storage came back");
        let out = storage.walg_ext(&["wal-fetch", seg, &dest.display().to_string()]);
        assert!(out.success(), "wal-fetch {seg}\n{}", out.describe());
        let fetched = std::fs::read(&dest).unwrap();
        std::fs::remove_file(&dest).ok();
        // The server may have recycled the segment by now; compare when it is still there.
        if let Ok(local) = std::fs::read(a.pg_wal().join(seg)) {
            assert!(fetched == local, "{seg}: archived content differs from pg_wal");
        }
        assert_eq!(fetched.len(), 16 * 1024 * 1024, "{seg} is a whole segment");
    }
    wait_until("no .ready files left", Duration::from_secs(60), || (a.ready_segments().len() == 0).then_some(()));
    a.stop();
}

#[test]
fn unconfigured_storage_is_a_clear_error() {
    require_installed();
    let mut a = Cluster::init(
        "faults-unconfigured",
        "shared_preload_libraries = 'walg_ext'\narchive_mode = on\narchive_library = 'walg_ext'\n",
    );
    a.start();
    a.psql("CREATE EXTENSION walg_ext");
    for f in ["SELECT walg_backup_push()", "SELECT * FROM walg_backup_list()"] {
        let err = a.try_psql(f).expect_err("must fail without storage");
        assert!(
            err.contains("no storage configured") && err.contains("WALG_FILE_PREFIX"),
            "{f}: the error says what to set; got: {err}"
        );
    }
    let seg = a.switch_wal();
    wait_until("the archiver to report it is not configured", Duration::from_secs(60), || {
        a.log_text().contains("walg_ext: WAL archiving is not configured").then_some(())
    });
    assert!(a.pg_wal().join(&seg).is_file(), "{seg} is kept while archiving is not configured");
    assert!(a.ready_segments().len() >= 1, "{seg} stays .ready");
    a.stop();
}

#[test]
fn extension_reads_walg_config_file() {
    require_installed();
    // Only walg.config_file names the storage (a WAL-G YAML file); zstd comes from it too.
    let storage = Storage::new("config-file", "zstd");
    let conf = storage.config_file_only_conf();
    let mut a = Cluster::init("config-file-a", &conf);
    a.start();
    a.psql("CREATE EXTENSION walg_ext");
    let seg = a.switch_wal();
    a.wait_archived(&seg, Duration::from_secs(60));
    let obj = storage.wal_object(&seg).expect("archived into the file's prefix");
    assert!(obj.ends_with(".zst"), "compression from the file: {obj}");
    let name = a.psql("SELECT walg_backup_push()");
    assert_eq!(a.psql("SELECT backup_name FROM walg_backup_list()"), name);
    assert!(
        storage.tar_partitions(&name).iter().any(|p| p.ends_with(".tar.zst")),
        "tar parts use the file's compression: {:?}",
        storage.tar_partitions(&name)
    );
    // A setting in postgresql.conf overrides the file.
    a.set_and_reload("walg.compression_method", "lz4");
    a.wait_for_value("SHOW walg.compression_method", "lz4", Duration::from_secs(30));
    let seg = a.switch_wal();
    a.wait_archived(&seg, Duration::from_secs(60));
    let obj = storage.wal_object(&seg).expect("archived");
    assert!(obj.ends_with(".lz4"), "the GUC overrides the file: {obj}");
    a.stop();
}

#[test]
fn backup_is_committed_only_once_its_wal_is_archived() {
    require_installed();
    let storage = Storage::new("faults-backup-wal", "lz4");
    let mut a = Cluster::init("faults-backup-wal-a", &storage.extension_conf());
    a.start();
    a.psql("CREATE EXTENSION walg_ext");
    a.pgbench_init(1);
    let seg = a.switch_wal();
    a.wait_archived(&seg, Duration::from_secs(60));

    // WAL cannot be archived: the data is copied, but the backup must not be committed.
    let wal_dir = storage.wal_dir();
    std::fs::set_permissions(&wal_dir, std::fs::Permissions::from_mode(0o500)).unwrap();
    let mut caller = a.psql_background("SELECT walg_backup_push()");
    std::thread::sleep(Duration::from_secs(6));
    assert!(!caller.is_finished(), "walg_backup_push() must wait for the WAL the backup needs");
    assert!(storage.sentinel_backups().is_empty(), "no sentinel before the backup's WAL is archived");

    std::fs::set_permissions(&wal_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    // After repeated failures PostgreSQL's archiver sleeps up to a minute; a reload wakes it.
    a.psql("SELECT pg_reload_conf()");
    let out = caller.wait(Duration::from_secs(120));
    assert!(out.success(), "the backup completes once archiving works\n{}", out.describe());
    let name = out.stdout.trim().to_string();
    assert_eq!(storage.sentinel_backups(), vec![name.clone()]);
    // Everything the backup needs is in storage: a restore with nothing more archived works.
    let dump = a.dumpall();
    a.stop();
    let mut b = Cluster::restore_into("faults-backup-wal-b", &storage, &name, "");
    b.start();
    b.wait_recovery_done(Duration::from_secs(120));
    walg_e2e::assert_dumps_equal(&dump, &b.dumpall(), "restored from a backup committed after a WAL outage");
    b.stop();
}
