//! A backup is committed only when its WAL is in storage, checked in storage (not through local
//! `.done` files), and a concurrent `delete` never takes a running backup's objects.
//! 1. Archiving that marks segments `.done` without storing them (`archive_command = 'true'`):
//!    the backup waits (phase `waiting_wal`, a WARNING naming the segment), `delete everything
//!    FORCE` is refused and `delete garbage` keeps its parts meanwhile; once the segments are
//!    pushed by hand it commits.
//! 2. A backup on a streaming standby (`archive_mode = on`: its WAL receiver marks segments
//!    `.done`) while the primary cannot archive: it waits, can be cancelled and leaves no
//!    sentinel; once the primary archives again (and switches segments), it commits and restores.
//! 3. A standby promoted during its backup: a clear error, nothing committed.
//! 4. A standby with replay paused is refused with nothing written; a standby that follows a new
//!    timeline during its backup fails it (55000, both timelines named, nothing committed) and
//!    its next backup, on the new timeline, commits.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use walg_e2e::{require_installed, wait_until, Cluster, Storage};

fn status(c: &Cluster, col: &str) -> String {
    c.try_psql(&format!("SELECT coalesce({col}, '') FROM walg_status()")).unwrap_or_default()
}

fn markers(storage: &Storage) -> Vec<String> {
    storage.keys("basebackups_005/walg_ext_in_progress/")
}

#[test]
fn backup_waits_for_wal_in_storage_not_for_done_files() {
    require_installed();
    let storage = Storage::new("commit-done", "lz4");
    // The archiver "archives" into nothing: every segment becomes .done, none reaches storage.
    let conf = format!(
        "{}archive_library = ''\narchive_command = 'true'\ncheckpoint_timeout = '1h'\nmax_wal_size = '4GB'\n",
        storage.extension_conf()
    );
    let mut a = Cluster::init("commit-done-a", &conf);
    a.start();
    a.psql("CREATE EXTENSION walg_ext");
    a.pgbench_init(1);

    let mut caller = a.psql_background("SELECT walg_backup_push()");
    wait_until("the backup to wait for its WAL", Duration::from_secs(180), || {
        if caller.is_finished() {
            panic!("walg_backup_push() finished without its WAL in storage\n{}", caller.wait_timeout(Duration::from_secs(5)).unwrap().describe());
        }
        (status(&a, "backup_phase") == "waiting_wal").then_some(())
    });
    let name = status(&a, "backup_name");
    assert!(name.starts_with("base_"), "{name:?}");
    let start_seg = name["base_".len()..].to_string();
    assert!(
        a.pg_wal().join("archive_status").join(format!("{start_seg}.done")).exists(),
        "the start segment is marked .done locally (archive_command = true)"
    );
    assert!(storage.wal_object(&start_seg).is_none(), "and it is not in storage");
    assert!(storage.sentinel_backups().is_empty(), "no sentinel while the WAL is not in storage");

    // A running backup is protected from delete, whoever runs it (here: the CLI).
    let m = markers(&storage);
    assert_eq!(m.len(), 1, "one in-progress marker: {m:?}");
    let marker = String::from_utf8(storage.read(&m[0])).unwrap();
    assert!(marker.contains(&name), "the marker names the backup: {marker}");
    let out = storage.walg_ext(&["delete", "everything", "FORCE", "--confirm"]);
    assert!(!out.success() && out.stderr.contains("in progress"), "delete everything FORCE is refused\n{}", out.describe());
    let parts = storage.tar_partitions(&name);
    assert!(!parts.is_empty());
    let out = storage.walg_ext(&["delete", "garbage", "--confirm"]);
    // (No committed backup: garbage may have nothing to do and say so; it must not touch the parts.)
    assert_eq!(storage.tar_partitions(&name), parts, "delete garbage kept the running backup's parts\n{}", out.describe());
    assert!(!markers(&storage).is_empty(), "marker kept");

    // A WARNING every 30 s names the segment it waits for.
    wait_until("the still-waiting WARNING", Duration::from_secs(60), || {
        a.log_text().contains(&format!("still waiting for WAL segment {start_seg}")).then_some(())
    });
    assert!(!caller.is_finished(), "still waiting");
    assert!(storage.sentinel_backups().is_empty());

    // Push the segments by hand: the backup sees them in storage and commits.
    let status_dir = a.pg_wal().join("archive_status");
    let mut done: Vec<String> = std::fs::read_dir(&status_dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".done").map(str::to_string))
        .filter(|f| f.len() == 24 && f.as_str() >= start_seg.as_str())
        .collect();
    done.sort();
    for seg in &done {
        let path = a.pg_wal().join(seg).display().to_string();
        let out = storage.walg_ext(&["wal-push", &path]);
        assert!(out.success(), "wal-push {seg}\n{}", out.describe());
    }
    let out = caller.wait(Duration::from_secs(60));
    assert!(out.success(), "the backup commits once its WAL is in storage\n{}", out.describe());
    assert_eq!(out.stdout.trim(), name);
    assert_eq!(storage.sentinel_backups(), vec![name.clone()]);
    assert!(markers(&storage).is_empty(), "the marker is removed after the sentinel");
    a.stop();
}

#[test]
fn standby_backup_waits_for_the_primarys_archive_and_never_commits_early() {
    require_installed();
    let storage = Storage::new("commit-standby", "lz4");
    let mut p = Cluster::init("commit-standby-p", &storage.extension_conf());
    p.start();
    p.psql("CREATE EXTENSION walg_ext");
    p.pgbench_init(1);
    let seg = p.switch_wal();
    p.wait_archived(&seg, Duration::from_secs(60));

    // hot_standby_feedback: the caller waits in a statement on the standby, which recovery
    // would otherwise cancel (conflict with recovery) once the primary vacuums.
    let mut s = Cluster::streaming_standby("commit-standby-s", &p, "hot_standby_feedback = on\n");
    assert_eq!(s.psql("SELECT pg_is_in_recovery()"), "t");

    // The primary cannot archive any more.
    let wal_dir = storage.wal_dir();
    std::fs::set_permissions(&wal_dir, std::fs::Permissions::from_mode(0o500)).unwrap();
    p.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 50000) g");
    p.switch_wal();

    let mut caller = s.psql_background("SELECT walg_backup_push()");
    wait_until("the standby backup to wait for WAL", Duration::from_secs(180), || {
        if caller.is_finished() {
            panic!(
                "walg_backup_push() on the standby ended while the primary could not archive\n{}",
                caller.wait_timeout(Duration::from_secs(5)).unwrap().describe()
            );
        }
        (status(&s, "backup_phase") == "waiting_wal").then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert!(!caller.is_finished() && storage.sentinel_backups().is_empty(), "never commits early");
    let name = status(&s, "backup_name");
    eprintln!("standby backup {name} waits for WAL");

    // Cancel: an error, no sentinel, the marker marked abandoned.
    let caller_pid = s.psql(
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' AND query = 'SELECT walg_backup_push()'",
    );
    assert_eq!(s.psql(&format!("SELECT pg_cancel_backend({caller_pid})")), "t");
    let out = caller.wait(Duration::from_secs(60));
    assert!(!out.success() && out.stderr.contains("cancel"), "{}", out.describe());
    assert!(storage.sentinel_backups().is_empty());
    wait_until("the marker to be abandoned", Duration::from_secs(30), || {
        let m = markers(&storage);
        (!m.is_empty() && m.iter().all(|k| String::from_utf8_lossy(&storage.read(k)).contains("\"abandoned\": true")))
            .then_some(())
    });

    // The primary archives again; a standby backup's last segment is the one being written on
    // the primary, so it is archived only after a segment switch there.
    std::fs::set_permissions(&wal_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    p.psql("SELECT pg_reload_conf()");
    let mut caller = s.psql_background("SELECT walg_backup_push()");
    let out = wait_until("the standby backup to commit", Duration::from_secs(240), || {
        if let Some(out) = caller.wait_timeout(Duration::from_secs(2)) {
            return Some(out);
        }
        let _ = p.try_psql("SELECT pg_switch_wal()");
        None
    });
    assert!(out.success(), "the standby backup commits once the primary archived its WAL\n{}", out.describe());
    let name = out.stdout.trim().to_string();
    assert!(storage.sentinel_backups().contains(&name), "{:?}", storage.sentinel_backups());

    // Reading the WAL position on a server in recovery must not try to assign a transaction id
    // (the scheduler's health check did, and died at every start of a standby or a restore).
    let verify = s.psql("SELECT string_agg(DISTINCT status, ',') FROM walg_wal_verify('timeline')");
    assert!(!verify.is_empty(), "walg_wal_verify runs on the standby");
    wait_until("the standby's scheduler to run its first health check", Duration::from_secs(30), || {
        s.log_text().contains("walg_ext scheduler").then_some(())
    });
    let log = s.log_text();
    assert!(!log.contains("cannot assign TransactionIds"), "read-only SPI on a standby\n{}", s.log_tail(30));

    // It restores: everything it needs is in storage.
    p.psql("SELECT pg_switch_wal()");
    let dump = p.dumpall();
    s.stop();
    p.stop();
    let mut r = Cluster::restore_into("commit-standby-r", &storage, &name, "");
    r.start();
    r.wait_recovery_done(Duration::from_secs(180));
    walg_e2e::assert_dumps_equal(&dump, &r.dumpall(), "restored from a standby backup");
    r.stop();
}

/// A standby promoted while its backup copies data: the backup stops with a clear error at the
/// next progress check instead of copying the rest, and nothing is committed.
#[test]
fn standby_promoted_during_its_backup_fails_clearly_and_commits_nothing() {
    require_installed();
    let storage = Storage::new("commit-promote", "lz4");
    let mut p = Cluster::init("commit-promote-p", &storage.extension_conf());
    p.start();
    p.psql("CREATE EXTENSION walg_ext");
    p.pgbench_init(2);
    let seg = p.switch_wal();
    p.wait_archived(&seg, Duration::from_secs(60));
    // About 35 MB to copy at 2 MB/s: the backup is still copying when the promotion comes.
    let mut s = Cluster::streaming_standby("commit-promote-s", &p, "walg.disk_rate_limit = 2097152\n");
    let mut caller = s.psql_background("SELECT walg_backup_push()");
    wait_until("the standby backup to copy data", Duration::from_secs(60), || {
        let done: i64 = s.psql("SELECT coalesce(backup_bytes_done, 0) FROM walg_status()").parse().ok()?;
        (done > 0).then_some(())
    });
    assert_eq!(s.psql("SELECT pg_promote()"), "t");
    let out = caller.wait_timeout(Duration::from_secs(60)).expect("the backup stops soon after the promotion");
    assert!(!out.success(), "a backup spanning a promotion must fail\n{}", out.describe());
    assert!(out.stderr.contains("promoted during the backup"), "{}", out.describe());
    assert!(storage.sentinel_backups().is_empty(), "nothing committed: {:?}", storage.sentinel_backups());
    s.stop();
    p.stop();
}

/// A standby that could never finish a backup is refused before anything is written (replay
/// paused), and a standby that switches timeline during its backup fails it clearly instead of
/// waiting for ever: primary P, standbys S1 and S2 streaming from it; a slowed backup on S2;
/// P stops, S1 is promoted (timeline 2) and S2 is pointed at S1 and follows timeline 2. The
/// backup fails with 55000 naming both timelines, nothing is committed, and the next backup on
/// S2 (on timeline 2) succeeds.
#[test]
fn standby_backup_refused_when_paused_and_fails_clearly_on_a_timeline_switch() {
    require_installed();
    let storage = Storage::new("commit-tli", "lz4");
    let mut p = Cluster::init("commit-tli-p", &storage.extension_conf());
    p.start();
    p.psql("CREATE EXTENSION walg_ext");
    // SQLSTATE and message of a call, readable on the standbys too (replicated).
    p.psql(
        "CREATE FUNCTION walg_state(q text) RETURNS text LANGUAGE plpgsql AS $$ \
         BEGIN EXECUTE q; RETURN 'ok'; EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE || ' ' || SQLERRM; END $$",
    );
    p.pgbench_init(2);
    let seg = p.switch_wal();
    p.wait_archived(&seg, Duration::from_secs(60));
    let mut s1 = Cluster::streaming_standby("commit-tli-s1", &p, "");
    // About 35 MB to copy at 1 MB/s: the backup still copies when the switch reaches S2.
    let mut s2 = Cluster::streaming_standby(
        "commit-tli-s2",
        &p,
        "walg.disk_rate_limit = 1048576\nhot_standby_feedback = on\nwal_retrieve_retry_interval = '500ms'\n",
    );

    // Replay paused: refused before anything is written; the slot is free afterwards.
    s2.psql("SELECT pg_wal_replay_pause()");
    s2.wait_for_value("SELECT pg_get_wal_replay_pause_state()", "paused", Duration::from_secs(30));
    let state = s2.psql("SELECT walg_state('SELECT walg_backup_push()')");
    assert!(
        state.starts_with("55000 walg_ext backup failed: WAL replay on this standby is paused")
            && state.contains("pg_wal_replay_resume()"),
        "{state}"
    );
    assert!(storage.keys("basebackups_005/").is_empty(), "nothing written: {:?}", storage.keys("basebackups_005/"));
    s2.psql("SELECT pg_wal_replay_resume()");

    let mut caller = s2.psql_background("SELECT walg_state('SELECT walg_backup_push()')");
    wait_until("the standby backup to copy data", Duration::from_secs(60), || {
        let done: i64 = s2.psql("SELECT coalesce(backup_bytes_done, 0) FROM walg_status()").parse().ok()?;
        (done > 0).then_some(())
    });
    // A switchover: P stops (its standbys get all its WAL), S1 is promoted, S2 follows S1.
    p.stop();
    let replayed = |c: &Cluster| c.psql("SELECT pg_last_wal_replay_lsn()::text || ' ' || pg_last_wal_receive_lsn()::text");
    wait_until("both standbys to replay all of P's WAL", Duration::from_secs(60), || {
        let (a, b) = (replayed(&s1), replayed(&s2));
        let same = |x: &str| x.split(' ').collect::<Vec<_>>().windows(2).all(|w| w[0] == w[1]);
        (a == b && same(&a)).then_some(())
    });
    assert_eq!(s1.psql("SELECT pg_promote()"), "t");
    s2.set_and_reload("primary_conninfo", &format!("'host={} port={} user=postgres'", s1.socket_dir(), s1.port));
    let out = caller.wait_timeout(Duration::from_secs(120)).expect("the backup stops once S2 follows timeline 2");
    assert!(out.success(), "{}", out.describe());
    let state = out.stdout.trim();
    assert!(
        state.starts_with("55000 walg_ext backup failed: the standby switched from timeline 1 to timeline 2 during the backup")
            && state.contains("nothing committed"),
        "{state}"
    );
    assert!(storage.sentinel_backups().is_empty(), "nothing committed: {:?}", storage.sentinel_backups());
    assert_eq!(s2.psql("SELECT count(*) FROM walg_backup_list()"), "0");
    assert!(status(&s2, "backup_error").contains("switched from timeline 1 to timeline 2"), "{}", status(&s2, "backup_error"));

    // The worker is fine: the next backup on S2 starts on timeline 2 and commits once S1 has
    // archived its WAL.
    s2.set_and_reload("walg.disk_rate_limit", "0");
    s1.psql("CHECKPOINT");
    let mut caller = s2.psql_background("SELECT walg_backup_push()");
    let out = wait_until("the next standby backup to commit", Duration::from_secs(240), || {
        if let Some(out) = caller.wait_timeout(Duration::from_secs(2)) {
            return Some(out);
        }
        let _ = s1.try_psql("SELECT pg_switch_wal()");
        None
    });
    assert!(out.success(), "the next backup on the standby commits\n{}", out.describe());
    let name = out.stdout.trim().to_string();
    assert!(name.starts_with("base_00000002"), "{name}");
    assert_eq!(storage.sentinel_backups(), vec![name]);
    s2.stop();
    s1.stop();
}
