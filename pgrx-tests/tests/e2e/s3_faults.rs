//! S3 faults: wrong credentials and a missing bucket. Every error must say what to fix: to the
//! SQL caller, in the server log (archiver) and from the CLI. (The endpoint going away is in
//! outage.rs, for every remote backend.)

use std::time::Duration;

use walg_e2e::{require_installed, wait_until, Backend, Cluster, Storage};

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
