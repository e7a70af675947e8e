//! Fast replay and restore drills.
//!
//! - Prefetch: a restore replays several archived segments with `wal-fetch`; the server log shows
//!   segments served from `pg_wal/.wal-g/prefetch` (downloaded ahead by the background
//!   `wal-prefetch`), and the restored server matches the source.
//! - Drills (`walg-ext restore-drill`, run as root, which drops to postgres): a good backup
//!   passes (every database connected, B-tree indexes and tables amchecked, report stored beside
//!   the backup, `backup-list` shows it); a backup holding a damaged index page fails at
//!   `amcheck` with the reason; a backup with a removed tar part fails at `restore`. The
//!   throwaway copies archive nothing (no `00000002.history` appears although each promotes),
//!   and the scratch directories are removed.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use walg_e2e::cmd::{append_file, run, Outcome};
use walg_e2e::storage::walg_ext_bin;
use walg_e2e::{require_installed, Cluster, Storage};

const T: Duration = Duration::from_secs(180);

/// `walg-ext --config <storage> <args>` as root (the drill drops to postgres itself).
fn as_root(storage: &Storage, args: &[&str]) -> Outcome {
    let mut cmd = Command::new(walg_ext_bin());
    cmd.arg("--config").arg(&storage.config).args(args).current_dir("/tmp");
    for (var, _) in std::env::vars_os() {
        let v = var.to_string_lossy();
        if v.starts_with("WALG_") || v.starts_with("AWS_") {
            cmd.env_remove(&var);
        }
    }
    run(&mut cmd, None, Duration::from_secs(600))
}

fn report(out: &Outcome) -> serde_json::Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("drill --json printed no report ({e})\n{}", out.describe()))
}

fn drill(storage: &Storage, backup: &str, work: &Path) -> Outcome {
    let w = work.display().to_string();
    let out = as_root(storage, &["restore-drill", backup, "--json", "--work-dir", &w]);
    eprintln!("--- drill {backup} ---\n{}", out.describe());
    assert!(std::fs::read_dir(work).unwrap().next().is_none(), "the drill left files in {w}");
    out
}

#[test]
fn prefetch_serves_replay_from_local_disk() {
    require_installed();
    let storage = Storage::new("prefetch", "lz4");
    let mut a = Cluster::init("prefetch-src", &storage.extension_conf());
    a.start();
    a.psql("CREATE EXTENSION walg_ext");
    a.psql("CREATE TABLE t(id int PRIMARY KEY, v text)");
    let b = a.psql("SELECT walg_backup_push()");
    // Several segments of WAL after the backup, each with rows in it.
    let mut last = String::new();
    for i in 0..8 {
        a.psql(&format!("INSERT INTO t SELECT g, md5(g::text) FROM generate_series({}, {}) g", i * 1000, i * 1000 + 999));
        last = a.switch_wal();
    }
    a.wait_archived(&last, T);
    let expected = a.psql("SELECT count(*), sum(hashtext(v)) FROM t");

    let mut c = Cluster::empty("prefetch-dst");
    let target = c.data.display().to_string();
    let cfg = storage.config.display().to_string();
    // The restore_command carries the environment's WAL-G settings: 3 segments ahead.
    let out = walg_e2e::walg_ext(
        &["--config", &cfg, "backup-fetch", &target, &b, "--recovery"],
        &[("WALG_DOWNLOAD_CONCURRENCY", "3")],
    );
    assert!(out.success(), "{}", out.describe());
    append_file(
        &c.data.join("postgresql.auto.conf"),
        &format!("port = {}\nlisten_addresses = ''\nunix_socket_directories = '{}'\narchive_mode = off\n", c.port, c.socket_dir()),
    );
    c.start();
    c.wait_recovery_done(T);
    assert_eq!(c.psql("SELECT count(*), sum(hashtext(v)) FROM t"), expected, "the restored server matches the source");
    let log = c.log_text();
    let served = log.matches("served from the prefetch directory").count();
    let restored = log.matches("restored log file").count();
    eprintln!("{served} of {restored} segments served from the prefetch directory");
    assert!(served >= 4, "replay should be served from prefetch ({served} of {restored})\n{}", c.log_tail(60));
    assert!(c.data.join("pg_wal/.wal-g/prefetch/running").is_dir(), "WAL-G's layout under pg_wal");
    assert!(!log.contains("prefetched copy rejected"), "{}", c.log_tail(60));
}

#[test]
fn drill_passes_on_a_good_backup_and_fails_on_damaged_ones() {
    require_installed();
    let storage = Storage::new("drill", "lz4");
    let mut a = Cluster::init("drill-src", &format!("{}walg.health_check_interval = 1\n", storage.extension_conf()));
    a.start();
    a.psql("CREATE EXTENSION walg_ext");
    a.psql("CREATE DATABASE app");
    a.psql_db("app", "CREATE TABLE t(id int PRIMARY KEY, v text); CREATE INDEX t_v ON t(v); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g; CHECKPOINT");
    let good = a.psql("SELECT walg_backup_push()");
    // A commit record first: with nothing written since the backup's own switch, pg_switch_wal()
    // names the segment whose .backup file was archived last, and the wait would never end.
    a.psql("SELECT txid_current()");
    let last = a.switch_wal();
    a.wait_archived(&last, T);
    let work = walg_e2e::ScratchDir::new("drill-work");

    // --- A good backup passes.
    let out = drill(&storage, &good, work.path());
    assert!(out.success(), "{}", out.describe());
    let r = report(&out);
    assert_eq!(r["passed"], true, "{r}");
    assert_eq!(r["backup"], good.as_str());
    let dbs: Vec<&str> = r["databases"].as_array().unwrap().iter().map(|d| d.as_str().unwrap()).collect();
    assert_eq!(dbs, ["app", "postgres", "template1"]);
    assert!(r["btree_indexes_checked"].as_u64().unwrap() > 100, "catalog indexes of 3 databases plus t's: {r}");
    for step in ["restore", "start", "recovery", "connect", "amcheck", "stop", "cleanup"] {
        assert!(r["steps"].as_array().unwrap().iter().any(|s| s["name"] == step && s["ok"] == true), "{step}: {r}");
    }
    let stored = storage.backups_dir().join(&good).join("walg_drill.json");
    let on_storage: serde_json::Value = serde_json::from_slice(&std::fs::read(&stored).unwrap()).unwrap();
    assert_eq!(on_storage, r, "the report stored beside the backup is the one printed");
    let list = storage.walg_ext(&["backup-list"]);
    assert!(list.stdout.lines().any(|l| l.starts_with(&good) && l.contains("passed")), "{}", list.describe());
    let sql = a.psql(&format!(
        "SELECT (last_drill->>'passed') || ' ' || (last_drill->>'restore_seconds' IS NOT NULL) FROM walg_backup_list() \
         WHERE backup_name = '{good}'"
    ));
    assert_eq!(sql, "true true", "walg_backup_list() shows the last drill");

    // --- A backup holding a damaged index page (the source's disk went bad): restore cannot
    // see it, the drill's amcheck does.
    let file = a.psql_db("app", "SELECT current_setting('data_directory') || '/' || pg_relation_filepath('t_v')");
    a.stop();
    let mut bytes = std::fs::read(&file).unwrap();
    assert!(bytes.len() > 3 * 8192);
    for b in &mut bytes[2 * 8192 + 1000..2 * 8192 + 1400] {
        *b = 0x5A;
    }
    std::fs::write(&file, &bytes).unwrap();
    a.start();
    let bad = a.psql("SELECT walg_backup_push()");
    a.psql("SELECT txid_current()");
    let last = a.switch_wal();
    a.wait_archived(&last, T);
    let out = drill(&storage, &bad, work.path());
    assert_eq!(out.code, Some(5), "a corrupt copy: exit 5\n{}", out.describe());
    let r = report(&out);
    assert_eq!((r["passed"].as_bool(), r["failed_step"].as_str()), (Some(false), Some("amcheck")), "{r}");
    let why = r["error"].as_str().unwrap();
    assert!(why.contains("database app") && why.contains("block 2"), "{why}");
    assert!(out.stderr.contains("failed at amcheck"), "{}", out.describe());
    assert!(r["steps"].as_array().unwrap().iter().any(|s| s["name"] == "stop" && s["ok"] == true), "stopped after the failure: {r}");
    // walg_health() reports it: critical, the failed backup being the latest.
    let row = walg_e2e::wait_until("walg_health() to report the failed drill", T, || {
        let row = a.psql("SELECT severity || ' ' || detail FROM walg_health() WHERE problem = 'drill_failed'");
        (!row.is_empty()).then_some(row)
    });
    assert!(row.starts_with("critical") && row.contains(&bad) && row.contains("amcheck"), "{row}");

    // --- A removed tar part: the restore fails, nothing is started.
    let parts = storage.backups_dir().join(&good).join("tar_partitions");
    let part = std::fs::read_dir(&parts).unwrap().map(|e| e.unwrap().path()).find(|p| p.file_name().unwrap().to_string_lossy().starts_with("part_")).unwrap();
    std::fs::remove_file(&part).unwrap();
    let out = drill(&storage, &good, work.path());
    assert!(!out.success() && out.code != Some(1), "{}", out.describe());
    let r = report(&out);
    assert_eq!(r["failed_step"], "restore", "{r}");
    assert!(r["error"].as_str().unwrap().contains("part_"), "names the missing part: {r}");
    assert!(!r["steps"].as_array().unwrap().iter().any(|s| s["name"] == "start"), "{r}");

    // backup-list shows each backup's last drill; the copies archived nothing although each
    // promoted to timeline 2.
    let list = storage.walg_ext(&["backup-list", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    for row in rows.as_array().unwrap() {
        assert_eq!(row["last_drill"]["passed"], false, "{row}");
    }
    assert!(!storage.wal_dir().join("00000002.history.lz4").exists() && !storage.wal_dir().join("00000002.history").exists());
}
