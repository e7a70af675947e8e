//! The server protects itself: the walg_ext scheduler (static worker) on a real cluster with a
//! fast 6-field schedule (every 10 seconds): backups appear on their own, retention `FULL 1`
//! trims to one backup and deletes the WAL before it, a storage made unreadable shows in
//! walg_health() and the failed tick is retried, a reload changes the schedule, a shutdown
//! cancels a running scheduled backup and the next start catches its tick up, a restart across
//! a tick catches it up once, and the counters survive restarts (walg_metrics).

use std::time::Duration;

use walg_e2e::{require_installed, scratch::set_mode, wait_until, Cluster, Storage};

fn schedule_row(c: &Cluster, cols: &str, which: &str) -> String {
    c.psql(&format!("SELECT {cols} FROM walg_schedule WHERE schedule = '{which}'"))
}

fn backups(c: &Cluster) -> Vec<String> {
    let out = c.psql("SELECT backup_name FROM walg_backup_list()");
    out.lines().filter(|l| !l.is_empty()).map(String::from).collect()
}

fn metric(c: &Cluster, name: &str) -> f64 {
    let text = c.psql("SELECT walg_metrics()");
    let line = text
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("no {name} in walg_metrics():\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

fn health(c: &Cluster) -> String {
    c.psql("SELECT severity || ' ' || problem || ': ' || detail FROM walg_health()")
}

#[test]
fn scheduled_backups_retention_health_reload_and_catch_up() {
    require_installed();
    let storage = Storage::new("schedule", "lz4");
    let conf = format!(
        "{}walg.upload_concurrency = 2\n\
         walg.backup_schedule = '*/10 * * * * *'\n\
         walg.retain = 'FULL 1'\n\
         walg.backup_retries = 1\n\
         walg.backup_retry_delay = 1\n\
         walg.health_check_interval = 2\n",
        storage.extension_conf()
    );
    let mut c = Cluster::init("schedule", &conf);
    c.start();
    c.psql("CREATE EXTENSION walg_ext");
    c.psql("CREATE TABLE t(x int); INSERT INTO t SELECT generate_series(1, 1000)");
    assert_eq!(
        schedule_row(&c, "expression || '|' || (next_run > now() - interval '1 s')::text", "backup"),
        "*/10 * * * * *|true"
    );
    assert_eq!(schedule_row(&c, "coalesce(expression, 'off')", "full_backup"), "off");

    // --- Backups appear on their own; retention FULL 1 keeps one, with WAL garbage removed.
    let first = wait_until("a first scheduled backup", Duration::from_secs(45), || {
        let row = schedule_row(&c, "coalesce(last_outcome, '') || '|' || coalesce(last_backup, '') || '|' || coalesce(last_error, '')", "backup");
        let f: Vec<&str> = row.split('|').collect();
        (f[0] == "succeeded").then(|| f[1].to_string())
    });
    assert!(first.starts_with("base_"), "{first}");
    c.psql("INSERT INTO t SELECT generate_series(1, 1000)");
    c.switch_wal();
    let kept = wait_until("a second scheduled backup and retention FULL 1", Duration::from_secs(45), || {
        let last = schedule_row(&c, "coalesce(last_backup, '')", "backup");
        let ret = schedule_row(&c, "coalesce(last_outcome, '') || '|' || coalesce(expression, '')", "retention");
        let list = backups(&c);
        (last != first && ret == "succeeded|FULL 1" && list == vec![last.clone()]).then_some(last)
    });
    assert!(!backups(&c).contains(&first), "retention deleted the first backup");
    // WAL before the kept backup's start segment is gone from storage (garbage), the rest stays.
    let kept_wal = &kept["base_".len()..];
    let wal: Vec<String> = std::fs::read_dir(storage.wal_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() >= 24 && n[..24].chars().all(|ch| ch.is_ascii_hexdigit()))
        .collect();
    assert!(wal.iter().any(|n| n[..24] >= *kept_wal), "the kept backup's WAL is there: {wal:?}");
    assert!(wal.iter().all(|n| n[..24] >= *kept_wal), "WAL before {kept_wal} was deleted: {wal:?}");
    assert_eq!(health(&c), "", "healthy");
    assert!(metric(&c, "walg_scheduled_backups_total{outcome=\"succeeded\"}") >= 2.0);
    assert!(metric(&c, "walg_retention_runs_total{outcome=\"succeeded\"}") >= 1.0);

    // --- Storage unreachable: walg_health says so, the tick fails and is retried.
    let prefix = storage.file_prefix();
    set_mode(&prefix, 0o000);
    let failed_before = metric(&c, "walg_scheduled_backups_total{outcome=\"failed\"}");
    wait_until("walg_health to report the storage", Duration::from_secs(30), || {
        health(&c).contains("critical storage_unreachable").then_some(())
    });
    wait_until("a failed scheduled backup and its retry", Duration::from_secs(40), || {
        (metric(&c, "walg_scheduled_backups_total{outcome=\"failed\"}") >= failed_before + 2.0).then_some(())
    });
    let row = schedule_row(&c, "last_outcome || '|' || last_error", "backup");
    assert!(row.starts_with("failed|unreachable: "), "{row}");
    assert!(health(&c).contains("scheduled_backup_failed"), "{}", health(&c));
    set_mode(&prefix, 0o700);
    wait_until("a scheduled backup after the storage is back, and health clear", Duration::from_secs(45), || {
        let ok = schedule_row(&c, "last_outcome", "backup") == "succeeded";
        (ok && health(&c).is_empty()).then_some(())
    });

    // --- A reload changes the schedule: once a year from now on, so nothing more runs.
    c.set_and_reload("walg.backup_schedule", "'0 0 1 1 *'");
    c.wait_for_value(
        "SELECT expression || '|' || (next_run > now() + interval '1 day')::text FROM walg_schedule WHERE schedule = 'backup'",
        "0 0 1 1 *|true",
        Duration::from_secs(10),
    );
    let succeeded = metric(&c, "walg_scheduled_backups_total{outcome=\"succeeded\"}");

    // --- Shutdown during a scheduled backup cancels it (no sentinel); its tick stays due and
    // the next start catches it up, once. The backup is slowed down to be caught running.
    c.psql("CREATE TABLE big AS SELECT g, repeat(md5(g::text), 20) AS v FROM generate_series(1, 40000) g");
    c.append_conf("walg.disk_rate_limit = 4000000");
    c.reload();
    let tick = c.psql("SELECT to_char(now() + interval '4 s', 'SS MI HH24 DD MM') || ' *'");
    c.set_and_reload("walg.backup_schedule", &format!("'{tick}'"));
    wait_until("the slow scheduled backup to run", Duration::from_secs(30), || {
        (schedule_row(&c, "coalesce(last_outcome, '')", "backup") == "running").then_some(())
    });
    let before = backups(&c);
    std::thread::sleep(Duration::from_secs(1));
    c.stop();
    assert!(c.log_text().contains("shutting down: cancelling the scheduled backup"), "{}", c.log_tail(30));
    c.append_conf("walg.disk_rate_limit = 0");
    c.start();
    wait_until("the cancelled tick caught up", Duration::from_secs(45), || {
        (metric(&c, "walg_scheduled_backups_total{outcome=\"succeeded\"}") == succeeded + 1.0).then_some(())
    });
    let after = backups(&c);
    assert_eq!(after.len(), 1, "FULL 1: {after:?}");
    assert!(!before.contains(&after[0]), "a new backup: {before:?} -> {after:?}");
    assert_eq!(c.log_text().matches("catching up a tick missed while the server was down").count(), 1);
    let succeeded = succeeded + 1.0;

    // --- A restart across a tick catches it up once. The tick: 8 s from now, once a year.
    let tick = c.psql("SELECT to_char(now() + interval '8 s', 'SS MI HH24 DD MM') || ' *'");
    c.set_and_reload("walg.backup_schedule", &format!("'{tick}'"));
    c.wait_for_value("SELECT expression FROM walg_schedule WHERE schedule = 'backup'", &tick, Duration::from_secs(10));
    let archived = c.psql("SELECT archived_count FROM walg_status()").parse::<i64>().unwrap();
    assert!(archived > 0);
    c.stop();
    std::thread::sleep(Duration::from_secs(10));
    c.start();
    wait_until("the missed tick caught up", Duration::from_secs(45), || {
        (metric(&c, "walg_scheduled_backups_total{outcome=\"succeeded\"}") == succeeded + 1.0).then_some(())
    });
    assert_eq!(c.log_text().matches("catching up a tick missed while the server was down").count(), 2);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(metric(&c, "walg_scheduled_backups_total{outcome=\"succeeded\"}"), succeeded + 1.0, "caught up once");
    // Counters survived the restart.
    let after = c.psql("SELECT archived_count FROM walg_status()").parse::<i64>().unwrap();
    assert!(after >= archived, "archived_count {after} after the restart, {archived} before");
    assert!(metric(&c, "walg_archived_files_total") >= archived as f64);
    c.stop();
}

/// One configuration for a primary and its streaming standby with `walg.backup_on_primary = off`
/// and `walg.backup_on_standby = on`: the standby takes the scheduled backups while pgbench runs
/// on the primary, and the primary skips its ticks, saying why.
#[test]
fn scheduled_backups_run_on_the_standby_only() {
    require_installed();
    let storage = Storage::new("schedule-standby", "lz4");
    let conf = format!(
        "{}walg.backup_schedule = '*/5 * * * * *'\n\
         walg.backup_on_standby = on\n\
         walg.backup_on_primary = off\n\
         walg.health_check_interval = 2\n",
        storage.extension_conf()
    );
    let mut p = Cluster::init("schedule-standby-p", &conf);
    p.start();
    p.psql("CREATE EXTENSION walg_ext");
    p.pgbench_init(1);
    let seg = p.switch_wal();
    p.wait_archived(&seg, std::time::Duration::from_secs(60));
    let mut s = Cluster::streaming_standby("schedule-standby-s", &p, "hot_standby_feedback = on\n");

    let backup = std::thread::scope(|sc| {
        let bench = sc.spawn(|| p.pgbench(&["-n", "-T", "15", "-c", "2"]));
        // The standby's backup ends once the primary has archived its last segment.
        let b = wait_until("a scheduled backup on the standby", Duration::from_secs(120), || {
            let _ = p.try_psql("SELECT pg_switch_wal()");
            let row = schedule_row(&s, "coalesce(last_outcome, '') || '|' || coalesce(last_backup, '')", "backup");
            let f: Vec<&str> = row.split('|').collect();
            (f[0] == "succeeded").then(|| f[1].to_string())
        });
        bench.join().expect("pgbench thread");
        b
    });
    let row = s.psql(&format!("SELECT data_dir FROM walg_backup_list(detail => true) WHERE backup_name = '{backup}'"));
    assert_eq!(row, s.data.display().to_string(), "the backup was taken on the standby");
    wait_until("the primary to skip a tick", Duration::from_secs(30), || {
        let row = schedule_row(&p, "coalesce(last_outcome, '') || '|' || coalesce(last_error, '')", "backup");
        (row.starts_with("skipped|") && row.contains("walg.backup_on_primary")).then_some(())
    });
    assert!(
        !p.psql("SELECT string_agg(data_dir, ',') FROM walg_backup_list(detail => true)").contains(&p.data.display().to_string()),
        "no backup from the primary"
    );
    // The standby's backup, taken under pgbench on the primary, restores to the primary's data.
    p.psql("CREATE TABLE after_backup AS SELECT g FROM generate_series(1, 1000) g");
    let last = p.switch_wal();
    p.wait_archived(&last, Duration::from_secs(120));
    let dump = p.dumpall();
    s.stop();
    p.stop();
    let mut r = Cluster::restore_into("schedule-standby-r", &storage, &backup, "walg.backup_schedule = ''\n");
    r.start();
    r.wait_recovery_done(Duration::from_secs(180));
    walg_e2e::assert_dumps_equal(&dump, &r.dumpall(), "restored from the standby's scheduled backup");
    r.stop();
}
