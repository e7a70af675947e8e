//! Point-in-time recovery set up by `walg-ext backup-fetch` alone (no hand-written
//! recovery.signal or restore_command): one source cluster archiving to file storage, two
//! backups, rows committed in steps with recorded times, LSNs, an xid and a restore point
//! between them; then a restore per target type (time, LSN, xid inclusive and exclusive, name,
//! immediate) into fresh clusters, each holding exactly the rows committed before its target;
//! refusals (a target before every backup, a named backup that ended after the target, targets
//! beyond the archive, a secret in the environment, a lost segment) that leave the directory
//! empty; `--dry-run`; and `--standby` following WAL archived after it started.

use std::time::Duration;

use walg_e2e::cmd::append_file;
use walg_e2e::storage::{list_dir, walg_ext};
use walg_e2e::{require_installed, Cluster, Outcome, Storage};

const T: Duration = Duration::from_secs(180);

/// The rows of the steps table, "0,1,2".
const ROWS: &str = "SELECT coalesce(string_agg(step::text, ',' ORDER BY step), '') FROM steps";

fn fetch(storage: &Storage, dir: &Cluster, backup: &str, args: &[&str], env_config: bool) -> Outcome {
    let target = dir.data.display().to_string();
    let mut all = vec!["backup-fetch", target.as_str(), backup];
    all.extend_from_slice(args);
    if env_config {
        storage.walg_ext_env(&all)
    } else {
        storage.walg_ext(&all)
    }
}

/// Restore with `args`, add this cluster's own port and socket (no archiving), start it.
fn restore(storage: &Storage, name: &str, backup: &str, args: &[&str], env_config: bool) -> (Cluster, Outcome) {
    let mut c = Cluster::empty(name);
    let out = fetch(storage, &c, backup, args, env_config);
    assert!(out.success(), "backup-fetch {backup} {args:?}\n{}", out.describe());
    assert!(c.data.join(if args.contains(&"--standby") { "standby.signal" } else { "recovery.signal" }).is_file());
    append_file(
        &c.data.join("postgresql.auto.conf"),
        &format!(
            "# test cluster\nport = {}\nlisten_addresses = ''\nunix_socket_directories = '{}'\narchive_mode = off\n",
            c.port,
            c.socket_dir()
        ),
    );
    c.start();
    (c, out)
}

/// A refused fetch: non-zero exit, the message, and nothing written into the directory.
/// Exit codes (README "Errors and exit codes"): 2 bad input, 4 refused (conflict).
fn refused(storage: &Storage, label: &str, backup: &str, args: &[&str], env: Option<&[(&str, &str)]>, expect: &str, code: i32) -> Outcome {
    let c = Cluster::empty(label);
    let out = match env {
        None => fetch(storage, &c, backup, args, false),
        Some(env) => {
            let target = c.data.display().to_string();
            let mut all = vec!["backup-fetch", target.as_str(), backup];
            all.extend_from_slice(args);
            walg_ext(&all, env)
        }
    };
    assert_eq!(out.code, Some(code), "{label}: backup-fetch {backup} {args:?} must be refused\n{}", out.describe());
    assert!(out.stderr.contains(expect), "{label}: expected {expect:?} in the message\n{}", out.describe());
    assert!(list_dir(&c.data).is_empty(), "{label}: a refused restore wrote {:?}", list_dir(&c.data));
    out
}

#[test]
fn point_in_time_recovery_every_target() {
    require_installed();
    let storage = Storage::new("pitr", "lz4");
    let mut a = Cluster::init("pitr-src", &storage.extension_conf());
    a.start();
    a.psql("CREATE EXTENSION walg_ext");
    a.psql("CREATE TABLE steps(step int PRIMARY KEY)");
    let step = |k: u32| a.psql(&format!("INSERT INTO steps VALUES ({k})"));
    let now_rfc3339 = || a.psql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')");

    let t0 = now_rfc3339();
    step(0);
    let b1 = a.psql("SELECT walg_backup_push()");
    step(1);
    let t1 = a.psql("SELECT clock_timestamp()::text"); // PostgreSQL's text, with its zone
    std::thread::sleep(Duration::from_millis(50));
    let x2 = a.psql("BEGIN; INSERT INTO steps VALUES (2); SELECT pg_current_xact_id(); COMMIT;");
    let b2 = a.psql("SELECT walg_backup_push()");
    step(3);
    let l3 = a.psql("SELECT pg_current_wal_lsn()");
    let l3_segment = a.psql(&format!("SELECT pg_walfile_name('{l3}')"));
    a.psql("SELECT pg_create_restore_point('before_4')");
    step(4);
    let last = a.switch_wal();
    a.wait_archived(&last, T);
    assert_ne!(b1, b2);
    eprintln!("b1 {b1}, t1 {t1}, xid {x2}, b2 {b2}, lsn {l3} in {l3_segment}");

    // --- Refusals first: nothing may be written.
    refused(&storage, "pitr-before", "LATEST", &["--target-time", &t0], None, "before every backup", 4);
    refused(&storage, "pitr-named", &b2, &["--target-time", &t1], None, "after the target time", 4);
    refused(&storage, "pitr-future", "LATEST", &["--target-time", "2999-01-01 00:00:00+00"], None, "beyond the archived WAL", 4);
    refused(&storage, "pitr-far-lsn", "LATEST", &["--target-lsn", "FF/0"], None, "beyond the archived WAL", 4);
    let prefix = storage.file_prefix().display().to_string();
    let out = refused(
        &storage,
        "pitr-secret",
        "LATEST",
        &["--recovery"],
        Some(&[("WALG_FILE_PREFIX", &prefix), ("AWS_ACCESS_KEY_ID", "AKIAPITR"), ("AWS_SECRET_ACCESS_KEY", "pitr-s3cr3t")]),
        "AWS_SECRET_ACCESS_KEY",
        2,
    );
    assert!(out.stderr.contains("--config") && !out.all_output().contains("pitr-s3cr3t"), "{}", out.describe());
    let out = storage.walg_ext(&["backup-fetch", "/tmp/walg-e2e-pitr-never", "LATEST", "--target-xid", "5", "--standby"]);
    assert_eq!(out.code, Some(2), "clap refuses --standby with a target\n{}", out.describe());

    // --- Dry run: the plan, and nothing written.
    let c = Cluster::empty("pitr-dry");
    let out = fetch(&storage, &c, "LATEST", &["--target-lsn", &l3, "--dry-run"], false);
    assert!(out.success(), "{}", out.describe());
    eprintln!("--- dry run ---\n{}", out.stdout);
    for want in [format!("backup:     {b2}"), "in storage: all".into(), format!("recovery_target_lsn = '{l3}'"), "dry run: nothing written".into()] {
        assert!(out.stdout.contains(&want), "dry run should print {want:?}\n{}", out.describe());
    }
    assert!(list_dir(&c.data).is_empty(), "dry run wrote {:?}", list_dir(&c.data));
    drop(c);

    // --- Time (PostgreSQL text): LATEST is b1, the newest backup that finished before it.
    let (c, out) = restore(&storage, "pitr-time", "LATEST", &["--target-time", &t1, "--target-action", "promote"], false);
    assert!(out.stderr.contains(&format!("backup:     {b1}")), "{}", out.describe());
    c.wait_recovery_done(T);
    assert_eq!(c.psql(ROWS), "0,1", "time target {t1}");
    let auto = std::fs::read_to_string(c.data.join("postgresql.auto.conf")).unwrap();
    eprintln!("--- postgresql.auto.conf ---\n{auto}");
    assert!(auto.contains("restore_command = '/") && auto.contains("--config") && auto.contains("recovery_target_time = '"), "{auto}");
    // A directory that is not empty is refused up front (local I/O, exit 7).
    let out = fetch(&storage, &c, "LATEST", &["--recovery"], false);
    assert!(out.code == Some(7) && out.stderr.contains("not empty"), "{}", out.describe());
    drop(c);

    // --- LSN, configuration from the environment (settings as assignments, no --config).
    let (c, out) = restore(&storage, "pitr-lsn", "LATEST", &["--target-lsn", &l3, "--target-action", "promote"], true);
    assert!(out.stderr.contains(&format!("backup:     {b2}")), "{}", out.describe());
    c.wait_recovery_done(T);
    assert_eq!(c.psql(ROWS), "0,1,2,3", "LSN target {l3}");
    let auto = std::fs::read_to_string(c.data.join("postgresql.auto.conf")).unwrap();
    assert!(auto.contains("WALG_FILE_PREFIX=") && !auto.contains("--config"), "{auto}");
    drop(c);

    // --- xid, inclusive then exclusive, from b1 by name.
    let (c, _) = restore(&storage, "pitr-xid", &b1, &["--target-xid", &x2, "--target-action", "promote"], false);
    c.wait_recovery_done(T);
    assert_eq!(c.psql(ROWS), "0,1,2", "xid target {x2}, inclusive");
    drop(c);
    let (c, _) = restore(&storage, "pitr-xid-excl", &b1, &["--target-xid", &x2, "--target-exclusive", "--target-action", "promote", "--target-timeline", "current"], false);
    c.wait_recovery_done(T);
    assert_eq!(c.psql(ROWS), "0,1", "xid target {x2}, exclusive");
    drop(c);

    // --- Restore point, PostgreSQL's default action (pause): still in recovery, paused.
    let (c, out) = restore(&storage, "pitr-name", "LATEST", &["--target-name", "before_4"], false);
    assert!(out.stderr.contains("restore point name gives no position"), "{}", out.describe());
    c.wait_for_value("SELECT pg_get_wal_replay_pause_state()", "paused", T);
    assert_eq!(c.psql("SELECT pg_is_in_recovery()"), "t");
    assert_eq!(c.psql(ROWS), "0,1,2,3", "restore point before_4");
    drop(c);

    // --- Immediate: b2's end, so step 2 but not 3.
    let (c, _) = restore(&storage, "pitr-immediate", "LATEST", &["--target-immediate", "--target-action", "promote"], false);
    c.wait_recovery_done(T);
    assert_eq!(c.psql(ROWS), "0,1,2", "immediate from {b2}");
    drop(c);

    // --- Standby: in recovery, replays what is archived, then follows new WAL.
    let (s, _) = restore(&storage, "pitr-standby", "LATEST", &["--standby"], false);
    assert_eq!(s.psql("SELECT pg_is_in_recovery()"), "t");
    s.wait_for_value(ROWS, "0,1,2,3,4", T);
    step(5);
    let last = a.switch_wal();
    a.wait_archived(&last, T);
    s.wait_for_value(ROWS, "0,1,2,3,4,5", T);
    assert_eq!(s.psql("SELECT pg_is_in_recovery()"), "t");
    drop(s);

    // --- A lost segment after b2: the dry run lists it, recovery to the end is refused, a
    // target before it still restores.
    let key = storage.wal_object(&l3_segment).unwrap_or_else(|| panic!("{l3_segment} not archived: {:?}", storage.wal_objects()));
    storage.delete(&key);
    let c = Cluster::empty("pitr-gap-dry");
    let out = fetch(&storage, &c, "LATEST", &["--recovery", "--dry-run"], false);
    eprintln!("--- dry run with a lost segment ---\n{}", out.stdout);
    assert!(out.code == Some(4) && out.stdout.contains("MISSING 1") && out.stdout.contains(&l3_segment), "{}", out.describe());
    assert!(list_dir(&c.data).is_empty());
    drop(c);
    refused(&storage, "pitr-gap", "LATEST", &["--recovery"], None, &l3_segment, 4);
    let (c, _) = restore(&storage, "pitr-gap-immediate", "LATEST", &["--target-immediate", "--target-action", "promote"], false);
    c.wait_recovery_done(T);
    assert_eq!(c.psql(ROWS), "0,1,2");
    drop(c);
    a.stop();
}
