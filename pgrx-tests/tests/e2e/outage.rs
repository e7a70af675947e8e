//! Storage outages, on every remote backend: a backup is taken under load, then the endpoint goes
//! away while PostgreSQL archives under load and a second backup is running. Nothing may be lost: the backup fails with an error that
//! names the unreachable endpoint (to the SQL caller), archiving fails with the same in the
//! server log while PostgreSQL keeps the WAL, and once the endpoint is back every segment is
//! stored, the next backup works, and a restore from the backup taken before the outage replays
//! through it to the same data.

use std::time::{Duration, Instant};

use walg_core::format::parse_wal_file_name;
use walg_e2e::{assert_dumps_equal, require_installed, wait_until, Backend, Cluster, Storage};

/// walg.disk_rate_limit (as SHOW prints it) for the backup caught by the outage: pgbench scale 5
/// (~110 MB of data files) takes ~25 s, so it is still running when the endpoint goes.
const SLOW_RATE: &str = "4MB";

fn outage_story(backend: Backend) {
    require_installed();
    let label = format!("outage-{backend:?}").to_lowercase();
    let storage = Storage::with_backend(backend, &label, "lz4", &[]);
    let endpoint = storage.endpoint_addr();
    let mut a = Cluster::init(&format!("{label}-a"), &format!("{}max_wal_size = '1GB'\n", storage.extension_conf()));
    a.start();
    a.pgbench_init(5);
    a.psql("CREATE EXTENSION walg_ext");
    // The first backup is taken under load (pgbench writing all through it).
    let before = a.backup_under_pgbench(6, Duration::from_secs(1));
    let first_needed = before["base_".len()..].to_string();

    a.set_and_reload("walg.disk_rate_limit", &format!("'{SLOW_RATE}'"));
    a.wait_for_value("SHOW walg.disk_rate_limit", SLOW_RATE, Duration::from_secs(30));
    let caller = a.psql_background("SELECT walg_backup_push()");
    wait_until("the backup worker", Duration::from_secs(60), || a.backup_worker_pid());

    let mut failed_segments = Vec::new();
    let backup_out = std::thread::scope(|scope| {
        let load = scope.spawn(|| a.pgbench(&["-n", "-T", "20", "-c", "2"]));
        std::thread::sleep(Duration::from_secs(3));
        storage.stop_endpoint();
        let outage = Instant::now();
        let backup_out = caller.wait(Duration::from_secs(300));
        // Archiving fails while the endpoint is gone, and PostgreSQL keeps the WAL.
        let (_, _, failed, last_failed) = wait_until("archive failures during the outage", Duration::from_secs(90), || {
            a.switch_wal();
            let st = a.archiver_stats().ok()?;
            (st.2 > 0).then_some(st)
        });
        assert!(failed > 0);
        let ready = wait_until("segments waiting in pg_wal", Duration::from_secs(60), || {
            let r = a.ready_segments();
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
        storage.start_endpoint();
        load.join().expect("pgbench thread");
        backup_out
    });

    // The backup caught by the outage failed, saying which endpoint it could not reach.
    assert!(!backup_out.success(), "walg_backup_push() must fail when {backend:?} goes away\n{}", backup_out.describe());
    // A connection cut in the middle of an upload is "lost" rather than "cannot reach" on SFTP.
    let unreachable = |s: &str| s.contains("cannot reach") || s.contains("lost the SSH connection");
    assert!(
        backup_out.stderr.contains("walg_ext backup failed")
            && unreachable(&backup_out.stderr)
            && backup_out.stderr.contains(&endpoint),
        "the SQL caller should get a clear error naming the unreachable endpoint {endpoint}\n{}",
        backup_out.describe()
    );
    wait_until("the backup worker to be gone", Duration::from_secs(60), || a.backup_worker_pid().is_none().then_some(()));

    // Archiving caught up, and its WARNING said what was wrong.
    let last = a.switch_wal();
    a.wait_archived(&last, Duration::from_secs(240));
    let log = a.log_text();
    let warning = log
        .lines()
        .find(|l| l.contains("WARNING:") && l.contains("walg_ext: could not archive"))
        .unwrap_or_else(|| panic!("no archiver WARNING in the server log; tail:\n{}", a.log_tail(40)));
    assert!(
        unreachable(warning) && warning.contains(&endpoint),
        "the WARNING should say the endpoint {endpoint} cannot be reached: {warning}"
    );

    // Every segment from the first backup's first one to the last is stored: nothing was lost.
    let stored: Vec<(u32, u64)> =
        storage.wal_objects().iter().filter_map(|n| n.get(..24).and_then(parse_wal_file_name)).collect();
    let (tli, from) = parse_wal_file_name(&first_needed).expect("first backup's WAL name");
    let (_, to) = parse_wal_file_name(&last).expect("last WAL name");
    let missing: Vec<u64> = (from..=to).filter(|s| !stored.contains(&(tli, *s))).collect();
    assert!(missing.is_empty(), "segments missing from storage: {missing:X?}; stored {}", stored.len());
    for seg in &failed_segments {
        assert!(storage.wal_object(seg).is_some(), "{seg} failed during the outage but was never archived");
    }
    eprintln!(
        "{backend:?} outage: backup error: {}; {} segments waited in pg_wal; {first_needed}..{last} all stored; log: {warning}",
        backup_out.stderr.trim(),
        failed_segments.len()
    );

    // The failed backup left no sentinel; the next one works.
    assert_eq!(storage.sentinel_backups(), vec![before.clone()], "no sentinel for the failed backup");
    a.set_and_reload("walg.disk_rate_limit", "0");
    a.wait_for_value("SHOW walg.disk_rate_limit", "0", Duration::from_secs(30));
    let after = a.psql("SELECT walg_backup_push()");
    assert!(after.starts_with("base_"), "walg_backup_push() returned {after:?}");
    let mut both = vec![before.clone(), after];
    both.sort();
    let mut listed = storage.sentinel_backups();
    listed.sort();
    assert_eq!(listed, both);

    // The backup from before the outage replays through it to the same data.
    let dump_a = a.dumpall();
    let mut b = Cluster::restore_into(&format!("{label}-b"), &storage, &before, "");
    b.start();
    b.wait_recovery_done(Duration::from_secs(300));
    assert_dumps_equal(&dump_a, &b.dumpall(), &format!("{backend:?} outage: A vs B restored from {before}"));
    b.stop();
    a.stop();
}

#[test]
fn outage_s3() {
    outage_story(Backend::S3);
}

#[test]
fn outage_azure() {
    outage_story(Backend::Azure);
}

#[test]
fn outage_gcs() {
    outage_story(Backend::Gcs);
}

#[test]
fn outage_swift() {
    outage_story(Backend::Swift);
}

#[test]
fn outage_sftp() {
    outage_story(Backend::Sftp);
}
