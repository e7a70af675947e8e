//! Self-test of the harness, without walg_ext: plain `archive_command = 'cp ...'` archiving,
//! pg_basebackup and `restore_command = 'cp ...'` recovery. If this fails, the problem is the
//! machine or the harness, not the extension.

use std::time::Duration;

use walg_e2e::{as_postgres, assert_dumps_equal, pg_bin, require_postgres, Cluster, ScratchDir};

#[test]
fn harness_self_test_without_extension() {
    require_postgres();
    let archive = ScratchDir::new("harness-archive");
    let arch = archive.path().display().to_string();
    let mut a = Cluster::init(
        "harness-a",
        &format!(
            "archive_mode = on\n\
             archive_command = 'test ! -f {arch}/%f && cp %p {arch}/%f'\n"
        ),
    );
    a.start();
    assert_eq!(a.psql("SELECT 1"), "1");
    assert_eq!(a.psql("SELECT 1; SELECT 2"), "1\n2", "every statement's output is returned");
    let err = a.try_psql("SELECT no_such_column").unwrap_err();
    assert!(err.contains("no_such_column"), "try_psql error carries stderr: {err}");
    assert_eq!(a.psql("SELECT current_setting('data_checksums')"), "on");

    a.pgbench_init(1);
    a.psql("CHECKPOINT");

    // Base backup while the cluster runs.
    let mut b = Cluster::empty("harness-b");
    let mut cmd = as_postgres(pg_bin("pg_basebackup"));
    cmd.current_dir("/tmp")
        .args(["-h", &a.socket_dir(), "-p", &a.port.to_string(), "-U", "postgres"])
        .args(["-X", "none", "-c", "fast", "-D"])
        .arg(&b.data);
    walg_e2e::cmd::run_ok(&mut cmd, "pg_basebackup", Duration::from_secs(300));

    a.pgbench(&["-n", "-t", "200", "-c", "2"]);
    a.psql("CREATE TABLE after_backup(id int PRIMARY KEY, note text)");
    a.psql("INSERT INTO after_backup SELECT g, md5(g::text) FROM generate_series(1, 1000) g");
    let seg = a.switch_wal();
    assert_eq!(seg.len(), 24, "switch_wal returns a segment name: {seg:?}");
    a.wait_archived(&seg, Duration::from_secs(60));
    assert!(archive.path().join(&seg).is_file(), "{seg} is in the archive directory");
    let (_, archived, failed, _) = a.archiver_stats().unwrap();
    assert!(archived >= 1 && failed == 0, "archived {archived}, failed {failed}");
    let dump_a = a.dumpall();
    assert!(dump_a.contains("after_backup"), "dump has the new table");
    assert!(!dump_a.contains("\\restrict"), "restrict keys are stripped");

    b.configure_recovery(&format!("cp {arch}/%f %p"), "");
    b.start();
    b.wait_recovery_done(Duration::from_secs(180));
    assert_eq!(b.psql("SELECT count(*) FROM after_backup"), "1000");
    assert_dumps_equal(&dump_a, &b.dumpall(), "harness self-test");
    assert_ne!(a.port, b.port);

    b.stop();
    a.stop();
}

/// The mechanics backup_kill.rs relies on, on an ordinary backend: a background psql, finding the
/// process in pg_stat_activity, pg_terminate_backend, kill -9 and the crash restart.
#[test]
fn harness_background_psql_terminate_and_sigkill() {
    require_postgres();
    let mut a = Cluster::init("harness-kill", "");
    a.start();
    let pid_sql = "SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(600)%'";

    let mut caller = a.psql_background("SELECT pg_sleep(600)");
    let pid = walg_e2e::wait_until("the sleeping backend", Duration::from_secs(30), || {
        a.psql(pid_sql).lines().next().map(str::to_string)
    });
    assert!(!caller.is_finished());
    assert_eq!(a.psql(&format!("SELECT pg_terminate_backend({pid})")), "t");
    let out = caller.wait(Duration::from_secs(30));
    assert!(!out.success(), "terminated caller fails: {}", out.describe());
    assert!(out.stderr.contains("terminat"), "{}", out.describe());

    let caller = a.psql_background("SELECT pg_sleep(600)");
    let pid = walg_e2e::wait_until("the sleeping backend", Duration::from_secs(30), || {
        a.psql(pid_sql).lines().next().map(str::to_string)
    });
    let st = std::process::Command::new("kill").args(["-9", &pid]).status().unwrap();
    assert!(st.success());
    let out = caller.wait(Duration::from_secs(60));
    assert!(!out.success(), "killed caller fails: {}", out.describe());
    a.wait_ready(Duration::from_secs(60));
    assert!(a.log_text().contains("terminated by signal 9"), "{}", a.log_tail(20));
    assert_eq!(a.psql("SELECT 1"), "1");
    a.stop();
}
