//! Restore drills asked of the server: `walg_restore_drill()` and `walg.drill_schedule`.
//!
//! - A refusal starts nothing: `walg.cli_path` at a missing binary is an ERROR naming it, and no
//!   report is written.
//! - `SELECT walg_restore_drill()` of a good backup returns passed with the timings, and
//!   `walg_backup_list()`'s last_drill shows it; the scratch directory (`walg.drill_work_dir`)
//!   is left empty. Cancelled mid-restore, it leaves nothing behind and writes no report; so
//!   does a drill cancelled while its throwaway server runs (that server is stopped).
//! - Of a backup holding a damaged index page: passed false, failed at amcheck with the reason;
//!   `walg_health()` reports `drill_failed`.
//! - `walg.drill_schedule` runs a drill of the latest backup unattended: the `drill` row of
//!   `walg_schedule` shows it running (a drill asked meanwhile is refused: one at a time), then
//!   failed with the reason and the backup drilled.
use std::time::Duration;

use walg_e2e::{require_installed, Cluster, Storage};

const T: Duration = Duration::from_secs(180);

fn outcome(a: &Cluster, sql: &str) -> serde_json::Value {
    let text = a.psql(sql);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{sql} returned no JSON ({e}): {text}"))
}

#[test]
fn walg_restore_drill_and_the_drill_schedule() {
    require_installed();
    let storage = Storage::new("drillsql", "lz4");
    let work = walg_e2e::ScratchDir::new("dsql");
    let mut a = Cluster::init(
        "drillsql",
        &format!("{}walg.health_check_interval = 1\nwalg.drill_work_dir = '{}'\n", storage.extension_conf(), work.path().display()),
    );
    a.start();
    a.psql("CREATE EXTENSION walg_ext");
    a.psql("CREATE DATABASE app");
    a.psql_db("app", "CREATE TABLE t(id int PRIMARY KEY, v text); CREATE INDEX t_v ON t(v); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g; CHECKPOINT");
    let good = a.psql("SELECT walg_backup_push()");
    a.psql("SELECT txid_current()");
    let last = a.switch_wal();
    a.wait_archived(&last, T);
    let report_of = |b: &str| storage.backups_dir().join(b).join("walg_drill.json");

    // --- Refused before anything starts: no walg-ext binary there.
    a.set_and_reload("walg.cli_path", "'/nonexistent/walg-ext'");
    let err = a.try_psql("SELECT walg_restore_drill()").unwrap_err();
    assert!(err.contains("no walg-ext binary at /nonexistent/walg-ext") && err.contains("walg.cli_path"), "{err}");
    assert!(!report_of(&good).exists(), "a refusal records nothing");
    a.psql("ALTER SYSTEM RESET walg.cli_path");
    a.psql("SELECT pg_reload_conf()");

    // --- A good backup passes; the outcome has the timings; last_drill shows it.
    let r = outcome(&a, &format!("SELECT walg_restore_drill('{good}')"));
    assert_eq!((r["passed"].as_bool(), r["backup"].as_str()), (Some(true), Some(good.as_str())), "{r}");
    assert!(r["reason"].is_null(), "{r}");
    for step in ["restore", "recovery", "amcheck"] {
        assert!(r["timings"][step].as_f64().is_some(), "{step}: {r}");
    }
    assert!(r["btree_indexes_checked"].as_u64().unwrap() > 100, "{r}");
    assert!(report_of(&good).is_file());
    assert_eq!(
        a.psql(&format!("SELECT last_drill->>'passed' FROM walg_backup_list() WHERE backup_name = '{good}'")),
        "true",
        "walg_backup_list() shows the drill"
    );
    assert!(std::fs::read_dir(work.path()).unwrap().next().is_none(), "the drill left files in walg.drill_work_dir");

    // --- Cancelled (statement_timeout, mid-restore): the child is killed, its scratch copy
    // removed, no report written, and the slot is free again.
    let before = std::fs::read(report_of(&good)).unwrap();
    let err = a.try_psql(&format!("SET statement_timeout = '400ms'; SELECT walg_restore_drill('{good}')")).unwrap_err();
    assert!(err.contains("cancel"), "{err}");
    walg_e2e::wait_until("the drill slot to be free after the cancel", T, || {
        let probe = a.try_psql("SELECT walg_restore_drill('base_00000001000000000000FFFF')").unwrap_err();
        (!probe.contains("already running")).then_some(())
    });
    assert!(std::fs::read_dir(work.path()).unwrap().next().is_none(), "the cancelled drill's copy is removed");
    assert_eq!(std::fs::read(report_of(&good)).unwrap(), before, "a cancelled drill writes no report");

    // --- Cancelled while its throwaway server runs (pg_cancel_backend of the waiting call): that
    // server is stopped too (pg_ctl gave it its own session, so killing the child alone would
    // leave it running), its copy removed, no report written.
    let mut call = a.psql_background(&format!("SELECT walg_restore_drill('{good}')"));
    let postmaster = walg_e2e::wait_until("the drill's throwaway server to run", T, || {
        let dir = std::fs::read_dir(work.path()).ok()?.flatten().find(|e| e.file_name().to_string_lossy().starts_with("walg-drill-"))?;
        let pid_file = std::fs::read_to_string(dir.path().join("data/postmaster.pid")).ok()?;
        let pid: i32 = pid_file.lines().next()?.trim().parse().ok()?;
        std::path::Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
    });
    assert_eq!(
        a.psql("SELECT count(*) FILTER (WHERE pg_cancel_backend(pid)) FROM pg_stat_activity WHERE query LIKE 'SELECT walg_restore_drill(%' AND pid <> pg_backend_pid()"),
        "1"
    );
    let out = call.wait_timeout(T).expect("the cancelled drill call returns");
    assert!(out.code != Some(0) && out.stderr.contains("cancel"), "{out:?}");
    walg_e2e::wait_until("the throwaway server to be stopped after the cancel", T, || {
        (!std::path::Path::new(&format!("/proc/{postmaster}")).exists()).then_some(())
    });
    walg_e2e::wait_until("the drill slot to be free after the cancel", T, || {
        let probe = a.try_psql("SELECT walg_restore_drill('base_00000001000000000000FFFF')").unwrap_err();
        (!probe.contains("already running")).then_some(())
    });
    assert!(std::fs::read_dir(work.path()).unwrap().next().is_none(), "the cancelled drill's copy is removed");
    assert_eq!(std::fs::read(report_of(&good)).unwrap(), before, "a drill cancelled while its server ran writes no report");

    // --- A backup holding a damaged index page fails at amcheck, with the reason.
    let file = a.psql_db("app", "SELECT current_setting('data_directory') || '/' || pg_relation_filepath('t_v')");
    a.stop();
    let mut bytes = std::fs::read(&file).unwrap();
    for b in &mut bytes[2 * 8192 + 1000..2 * 8192 + 1400] {
        *b = 0x5A;
    }
    std::fs::write(&file, &bytes).unwrap();
    a.start();
    let bad = a.psql("SELECT walg_backup_push()");
    a.psql("SELECT txid_current()");
    let last = a.switch_wal();
    a.wait_archived(&last, T);
    let r = outcome(&a, "SELECT walg_restore_drill()");
    assert_eq!((r["passed"].as_bool(), r["backup"].as_str(), r["failed_step"].as_str()), (Some(false), Some(bad.as_str()), Some("amcheck")), "LATEST: {r}");
    let why = r["reason"].as_str().unwrap();
    assert!(why.starts_with("failed at amcheck: ") && why.contains("database app") && why.contains("block 2"), "{why}");
    let row = walg_e2e::wait_until("walg_health() to report the failed drill", T, || {
        let row = a.psql("SELECT severity || ' ' || detail FROM walg_health() WHERE problem = 'drill_failed'");
        (!row.is_empty()).then_some(row)
    });
    assert!(row.starts_with("critical") && row.contains(&bad), "{row}");

    // --- Unattended: walg.drill_schedule drills the latest backup; one drill at a time.
    a.set_and_reload("walg.drill_schedule", "'*/3 * * * * *'");
    walg_e2e::wait_until("the scheduled drill to start", T, || {
        (a.psql("SELECT last_outcome FROM walg_schedule WHERE schedule = 'drill'") == "running").then_some(())
    });
    // (A drill takes seconds: restore, start, recovery, amcheck of three databases.)
    let e = a.try_psql("SELECT walg_restore_drill()").unwrap_err();
    assert!(e.contains("already running") && e.contains("one drill at a time"), "{e}");
    let row = walg_e2e::wait_until("the scheduled drill to end", T, || {
        let row = a.psql("SELECT last_outcome || '|' || last_backup || '|' || coalesce(last_error, '') FROM walg_schedule WHERE schedule = 'drill'");
        (!row.starts_with("running")).then_some(row)
    });
    a.set_and_reload("walg.drill_schedule", "''");
    assert!(row.starts_with(&format!("failed|{bad}|")) && row.contains("failed the drill at amcheck"), "{row}");
    assert_eq!(a.psql("SELECT setting FROM walg_schedule WHERE schedule = 'drill'"), "walg.drill_schedule");
}
