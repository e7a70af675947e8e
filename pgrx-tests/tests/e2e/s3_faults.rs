//! S3 faults: the endpoint goes away while PostgreSQL archives under load and during a backup;
//! wrong credentials and a missing bucket. Nothing may be lost, and every error must say what to
//! fix: to the SQL caller, in the server log (archiver) and from the CLI.

use std::time::{Duration, Instant};

use walg_e2e::{assert_dumps_equal, require_installed, wait_until, Backend, Cluster, Storage};

/// (timeline, segment number) of a WAL file name (16 MiB segments).
fn segno(name: &str) -> (u32, u64) {
    let tli = u32::from_str_radix(&name[0..8], 16).unwrap();
    let log = u64::from_str_radix(&name[8..16], 16).unwrap();
    let seg = u64::from_str_radix(&name[16..24], 16).unwrap();
    (tli, log * 0x100 + seg)
}

fn ready_files(a: &Cluster) -> Vec<String> {
    let mut v: Vec<String> = walg_e2e::storage::list_dir(&a.pg_wal().join("archive_status"))
        .into_iter()
        .filter_map(|n| n.strip_suffix(".ready").map(str::to_string))
        .collect();
    v.sort();
    v
}

#[test]
fn archiving_survives_an_s3_outage_under_load() {
    require_installed();
    let storage = Storage::s3("s3-outage", "lz4");
    let server = storage.s3_server();
    let mut a = Cluster::init("s3-outage-a", &format!("{}max_wal_size = '1GB'\n", storage.extension_conf()));
    a.start();
    a.pgbench_init(2);
    a.psql("CREATE EXTENSION walg_ext");
    let backup = a.psql("SELECT walg_backup_push()");
    let first_needed = backup["base_".len()..].to_string();

    let mut failed_segments = Vec::new();
    std::thread::scope(|scope| {
        let load = scope.spawn(|| a.pgbench(&["-n", "-T", "30", "-c", "2"]));
        std::thread::sleep(Duration::from_secs(3));
        server.stop_endpoint();
        let outage = Instant::now();
        // Archiving fails while the endpoint is gone, and PostgreSQL keeps the WAL.
        let (_, _, failed, last_failed) = wait_until("archive failures during the outage", Duration::from_secs(90), || {
            a.switch_wal();
            let st = a.archiver_stats().ok()?;
            (st.2 > 0).then_some(st)
        });
        assert!(failed > 0);
        let ready = wait_until("segments waiting in pg_wal", Duration::from_secs(60), || {
            let r = ready_files(&a);
            (!r.is_empty()).then_some(r)
        });
        for seg in &ready {
            assert!(a.pg_wal().join(seg).is_file(), "{seg} is .ready but not in pg_wal");
        }
        failed_segments = ready;
        failed_segments.push(last_failed);
        // Keep it down for a while under load.
        while outage.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(200));
        }
        server.start_endpoint();
        load.join().expect("pgbench thread");
    });

    let last = a.switch_wal();
    a.wait_archived(&last, Duration::from_secs(240));
    let log = a.log_text();
    let warning = log
        .lines()
        .find(|l| l.contains("WARNING:") && l.contains("walg_ext: could not archive"))
        .unwrap_or_else(|| panic!("no archiver WARNING in the server log; tail:\n{}", a.log_tail(40)));
    assert!(
        warning.contains("cannot reach endpoint") && warning.contains(&server.endpoint()),
        "the WARNING should say the endpoint cannot be reached: {warning}"
    );

    // Every segment from the backup's first one to the last is stored: nothing was lost.
    let stored: Vec<(u32, u64)> = storage
        .wal_objects()
        .iter()
        .filter(|n| n.len() >= 24 && n[..24].chars().all(|c| c.is_ascii_hexdigit()))
        .map(|n| segno(&n[..24]))
        .collect();
    let (tli, from) = segno(&first_needed);
    let (_, to) = segno(&last);
    let missing: Vec<u64> = (from..=to).filter(|s| !stored.contains(&(tli, *s))).collect();
    assert!(missing.is_empty(), "segments missing from storage: {missing:X?}; stored {}", stored.len());
    eprintln!(
        "outage: {} segments waited in pg_wal, {} segments {first_needed}..{last} all stored; log: {warning}",
        failed_segments.len(),
        to - from + 1
    );
    for seg in &failed_segments {
        assert!(storage.wal_object(seg).is_some(), "{seg} failed during the outage but was never archived");
    }

    let dump_a = a.dumpall();
    let mut b = Cluster::restore_into("s3-outage-b", &storage, "LATEST", "");
    b.start();
    b.wait_recovery_done(Duration::from_secs(300));
    assert_dumps_equal(&dump_a, &b.dumpall(), "s3 outage: A vs restored B");
    b.stop();
    a.stop();
}

fn worker_pid(a: &Cluster) -> Option<i32> {
    a.try_psql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'walg_ext backup'")
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
}

#[test]
fn backup_fails_clearly_when_s3_stops_and_the_next_one_succeeds() {
    require_installed();
    let storage = Storage::s3("s3-backup-outage", "lz4");
    let server = storage.s3_server();
    // ~110 MB of data files at 4 MB/s: the backup runs long enough to lose its endpoint.
    let mut a = Cluster::init(
        "s3-backup-outage-a",
        &format!("{}walg.disk_rate_limit = {}\n", storage.extension_conf(), 4 << 20),
    );
    a.start();
    a.pgbench_init(5);
    a.psql("CREATE EXTENSION walg_ext");

    let caller = a.psql_background("SELECT walg_backup_push()");
    wait_until("the backup worker", Duration::from_secs(60), || worker_pid(&a));
    std::thread::sleep(Duration::from_secs(4));
    server.stop_endpoint();
    let out = caller.wait(Duration::from_secs(300));
    server.start_endpoint();
    assert!(!out.success(), "walg_backup_push() must fail when S3 goes away\n{}", out.describe());
    assert!(
        out.stderr.contains("walg_ext backup failed") && out.stderr.contains("cannot reach endpoint"),
        "the SQL caller should get a clear error naming the unreachable endpoint\n{}",
        out.describe()
    );
    eprintln!("backup during outage: {}", out.stderr.trim());
    wait_until("the backup worker to be gone", Duration::from_secs(60), || worker_pid(&a).is_none().then_some(()));
    assert_eq!(storage.sentinel_backups(), Vec::<String>::new(), "no sentinel for the failed backup");
    assert_eq!(a.psql("SELECT count(*) FROM walg_backup_list()"), "0");

    a.set_and_reload("walg.disk_rate_limit", "0");
    a.wait_for_value("SHOW walg.disk_rate_limit", "0", Duration::from_secs(30));
    let name = a.psql("SELECT walg_backup_push()");
    assert!(name.starts_with("base_"), "walg_backup_push() returned {name:?}");
    assert_eq!(a.psql("SELECT backup_name FROM walg_backup_list()"), name);
    assert_eq!(storage.sentinel_backups(), vec![name]);
    a.stop();
}

/// Waits for an archiver WARNING containing all of `needles` in the server log.
fn wait_for_archive_warning(a: &Cluster, needles: &[&str]) -> String {
    wait_until(&format!("an archiver WARNING mentioning {needles:?}"), Duration::from_secs(60), || {
        a.log_text()
            .lines()
            .find(|l| l.contains("WARNING:") && l.contains("could not archive") && needles.iter().all(|n| l.contains(n)))
            .map(str::to_string)
    })
}

#[test]
fn wrong_credentials_and_missing_bucket_are_reported_everywhere() {
    require_installed();
    let storage = Storage::with_backend(Backend::S3, "s3-badcred", "lz4", &[("AWS_SECRET_ACCESS_KEY", "wrong-secret")]);
    let mut a = Cluster::init("s3-badcred-a", &storage.extension_conf());
    a.start();
    a.psql("CREATE EXTENSION walg_ext");

    // SQL.
    for sql in ["SELECT count(*) FROM walg_backup_list()", "SELECT walg_backup_push()"] {
        let err = a.try_psql(sql).expect_err(sql);
        assert!(err.contains("fix AWS_SECRET_ACCESS_KEY"), "{sql} should say to fix the secret key:\n{err}");
        assert!(!err.contains("wrong-secret"), "never print the secret:\n{err}");
    }
    // Server log (archiver).
    a.switch_wal();
    let w = wait_for_archive_warning(&a, &["fix AWS_SECRET_ACCESS_KEY"]);
    assert!(!w.contains("wrong-secret"), "never log the secret: {w}");
    // CLI.
    let out = storage.walg_ext(&["backup-list"]);
    assert!(out.code == Some(6) && out.stderr.contains("fix AWS_SECRET_ACCESS_KEY"), "exit 6: unreachable\n{}", out.describe());
    let out = storage.walg_ext(&["wal-fetch", "000000010000000000000001", "/tmp/walg-never-written"]);
    assert!(
        out.code == Some(126) && out.stderr.contains("AWS_SECRET_ACCESS_KEY"),
        "wal-fetch must fail with an error, not report 'not found' (exit 1)\n{}",
        out.describe()
    );

    // A missing bucket (walg.s3_prefix and the config file name it; the keys are right now).
    let storage2 = Storage::with_backend(Backend::S3, "s3-nobucket", "lz4", &[("WALG_S3_PREFIX", "s3://walg-no-such-bucket/x")]);
    let mut b = Cluster::init("s3-nobucket-b", &storage2.extension_conf());
    b.start();
    b.psql("CREATE EXTENSION walg_ext");
    assert_eq!(b.psql("SHOW walg.s3_prefix"), "s3://walg-no-such-bucket/x");
    let expect = "bucket walg-no-such-bucket does not exist";
    for sql in ["SELECT count(*) FROM walg_backup_list()", "SELECT walg_backup_push()"] {
        let err = b.try_psql(sql).expect_err(sql);
        assert!(err.contains(expect) && err.contains("WALG_S3_PREFIX"), "{sql}:\n{err}");
    }
    b.switch_wal();
    wait_for_archive_warning(&b, &[expect, "WALG_S3_PREFIX"]);
    let out = storage2.walg_ext(&["backup-list"]);
    assert!(out.code == Some(6) && out.stderr.contains(expect), "exit 6: unreachable\n{}", out.describe());
    let out = storage2.walg_ext(&["wal-fetch", "000000010000000000000001", "/tmp/walg-never-written"]);
    assert!(out.code == Some(126) && out.stderr.contains(expect), "a wrong bucket is not 'not in storage'\n{}", out.describe());
    let out = storage2.walg_ext_env(&["backup-list"]);
    assert!(!out.success() && out.stderr.contains(expect), "{}", out.describe());

    b.stop();
    a.stop();
}
