//! The defect of issue 10 end to end: the storage goes away in the middle of archive recovery
//! (an NFS share unmounted, say). `wal-fetch` must exit 126, not 1: PostgreSQL then stops
//! recovery with a FATAL instead of ending it early and promoting, which would silently lose
//! every transaction after that point. Once the storage is back, recovery completes with all
//! the data.

use std::time::Duration;

use walg_e2e::cmd::{as_postgres, run, write_as_postgres};
use walg_e2e::{pg_bin, require_installed, wait_until, walg_ext_bin, Cluster, ScratchDir, Storage};

#[test]
fn storage_gone_mid_recovery_stops_recovery_instead_of_promoting() {
    require_installed();
    let storage = Storage::new("recovery-unreachable", "lz4");
    let mut a = Cluster::init("recovery-unreachable-a", &storage.extension_conf());
    a.start();
    a.psql("CREATE EXTENSION walg_ext; CREATE TABLE t(batch int, x int)");
    let name = a.psql("SELECT walg_backup_push()");
    assert!(name.starts_with("base_"), "{name}");
    // Three batches, each in its own archived segment.
    let mut segs = Vec::new();
    for batch in 1..=3 {
        a.psql(&format!("INSERT INTO t SELECT {batch}, g FROM generate_series(1, 1000) g"));
        segs.push(a.switch_wal());
    }
    a.wait_archived(&segs[2], Duration::from_secs(120));
    a.stop();

    // B restores through a symlink to the storage, which the restore_command removes (the share
    // "unmounts") right before the segment holding batch 2 is fetched.
    let mnt = ScratchDir::new("recovery-unreachable-mnt");
    let link = mnt.path().join("prefix");
    std::os::unix::fs::symlink(storage.file_prefix(), &link).unwrap();
    let script = mnt.path().join("restore.sh");
    write_as_postgres(
        &script,
        &format!(
            "#!/bin/sh\nif [ \"$1\" = \"{seg}\" ]; then rm -f '{link}'; fi\n\
             WALG_FILE_PREFIX='{link}' exec {bin} --config {cfg} wal-fetch \"$1\" \"$2\"\n",
            seg = segs[1],
            link = link.display(),
            bin = walg_ext_bin(),
            cfg = storage.config.display(),
        ),
    );
    walg_e2e::scratch::set_mode(&script, 0o755);

    let b = Cluster::empty("recovery-unreachable-b");
    let out = storage.walg_ext(&["backup-fetch", &b.data.display().to_string(), &name]);
    assert!(out.success(), "backup-fetch\n{}", out.describe());
    b.configure_recovery(&format!("{} %f %p", script.display()), "");

    // Start without waiting (pg_ctl -w returns as soon as recovery is consistent), then wait for
    // the server to end on its own: the startup process's FATAL takes the postmaster down.
    let mut start = as_postgres(pg_bin("pg_ctl"));
    start.current_dir(b.dir()).arg("-D").arg(&b.data).args(["-l", &b.log.display().to_string(), "-W", "start"]);
    let out = run(&mut start, None, Duration::from_secs(60));
    assert!(out.success(), "pg_ctl start -W\n{}", out.describe());
    wait_until("the server to stop on its own", Duration::from_secs(120), || {
        let log = b.log_text();
        (log.contains("database system is shut down") && !b.data.join("postmaster.pid").exists()).then_some(())
    });
    let log = b.log_text();
    // PostgreSQL words exit status 126 as "command not executable"; it is FATAL either way. The
    // segment is segs[1] or a later one: segments prefetched (and verified) before the share went
    // away are rightly served from local disk, so recovery stops at the first one that is not.
    let fatal = "FATAL:  could not restore file \"";
    let stopped_at = log
        .lines()
        .find_map(|l| l.split_once(fatal).and_then(|(_, rest)| rest.strip_suffix("\" from archive: command not executable")))
        .unwrap_or_else(|| panic!("recovery stopped with wal-fetch's 126\n{}", b.log_tail(40)))
        .to_string();
    assert!(stopped_at.as_str() >= segs[1].as_str(), "stopped at {stopped_at}, the share went away at {}", segs[1]);
    assert!(log.contains("storage unreachable") && log.contains("does not exist"), "wal-fetch said why\n{}", b.log_tail(40));
    for promoted in ["selected new timeline ID", "archive recovery complete", "database system is ready to accept connections"] {
        assert!(!log.contains(promoted), "must not promote ({promoted:?})\n{}", b.log_tail(40));
    }
    assert!(!b.pg_wal().join("00000002.history").exists(), "no new timeline");

    // The share is back: recovery resumes and completes with every batch.
    std::os::unix::fs::symlink(storage.file_prefix(), &link).unwrap();
    std::fs::write(&script, format!(
        "#!/bin/sh\nexec {} --config {} wal-fetch \"$1\" \"$2\"\n",
        walg_ext_bin(),
        storage.config.display()
    ))
    .unwrap();
    let mut b = b;
    b.start();
    b.wait_recovery_done(Duration::from_secs(120));
    assert_eq!(b.psql("SELECT string_agg(batch || ':' || n, ',' ORDER BY batch) FROM (SELECT batch, count(*) n FROM t GROUP BY batch) s"), "1:1000,2:1000,3:1000");
    b.stop();
}
