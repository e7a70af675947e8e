//! Managing backups from SQL and the CLI on real backups: list (detail, user data), push options
//! (permanent, user_data, wait => false), mark, status, wal-show, wal-verify (a segment deleted
//! by hand is reported lost), delete retain (dry run, then confirm; permanent backups and their
//! WAL kept), a timeline switch (restore, promote, archive into the same prefix), privileges,
//! and every bad input with its SQLSTATE. The CLI must agree with SQL.

use std::time::Duration;

use walg_e2e::{require_installed, wait_until, Cluster, Storage};

/// SQLSTATE (and message) of a statement, "ok" if it succeeds.
const STATE_FN: &str = "CREATE FUNCTION walg_state(q text) RETURNS text LANGUAGE plpgsql AS $$ \
    BEGIN EXECUTE q; RETURN 'ok'; EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE || ' ' || SQLERRM; END $$";

fn state(c: &Cluster, q: &str) -> String {
    c.psql(&format!("SELECT walg_state($q${q}$q$)"))
}

fn assert_state(c: &Cluster, q: &str, code: &str, text: &str) {
    let got = state(c, q);
    assert!(got.starts_with(code) && got.contains(text), "{q}: got {got:?}, expected {code} ... {text}");
}

fn write_and_switch(c: &Cluster, n: usize) -> String {
    let mut last = String::new();
    for _ in 0..n {
        c.psql("INSERT INTO t SELECT generate_series(1, 2000)");
        last = c.switch_wal();
    }
    last
}

#[test]
fn manage_backups_from_sql_and_cli() {
    require_installed();
    let storage = Storage::new("manage", "lz4");
    let conf = format!("{}walg.upload_concurrency = 2\n", storage.extension_conf());
    let mut a = Cluster::init("manage-a", &conf);
    a.start();
    a.psql("CREATE EXTENSION walg_ext");
    a.psql(STATE_FN);
    a.psql("CREATE TABLE t(x int)");
    write_and_switch(&a, 1);

    // --- push options: permanent with user data; plain; and one without waiting.
    let b1 = a.psql("SELECT walg_backup_push(permanent => true, user_data => '{\"purpose\": \"monthly\"}')");
    write_and_switch(&a, 2);
    let b2 = a.psql("SELECT walg_backup_push()");
    write_and_switch(&a, 6);
    assert_eq!(a.psql("SELECT walg_backup_push(wait => false) IS NULL"), "t", "wait => false returns NULL");
    let b3 = wait_until("the background backup to succeed", Duration::from_secs(300), || {
        let row = a.psql("SELECT backup_state || '|' || coalesce(backup_name, '') || '|' || coalesce(backup_error, '') FROM walg_status()");
        let f: Vec<&str> = row.split('|').collect();
        assert_ne!(f[0], "failed", "background backup failed: {row}");
        (f[0] == "succeeded").then(|| f[1].to_string())
    });
    assert!(b3.starts_with("base_") && b3 != b2, "{b3}");
    let last = write_and_switch(&a, 1);
    a.wait_archived(&last, Duration::from_secs(120));

    // --- list, in start order, with detail.
    let rows = a.psql(
        "SELECT backup_name, is_permanent, is_full, user_data->>'purpose', hostname IS NOT NULL, \
                pg_version >= 150000, system_identifier IS NOT NULL, storage_name \
         FROM walg_backup_list(detail => true)",
    );
    assert_eq!(
        rows,
        format!("{b1}|t|t|monthly|t|t|t|default\n{b2}|f|t||t|t|t|default\n{b3}|f|t||t|t|t|default")
    );
    assert_eq!(
        a.psql("SELECT count(*) FROM walg_backup_list() WHERE hostname IS NULL AND user_data IS NULL"),
        "3",
        "without detail the detail columns are NULL"
    );

    // --- status.
    let st = a.psql(&format!(
        "SELECT last_archived_wal >= '{last}', archived_count > 0, archived_bytes > 0, \
                ready_count >= 0, failed_count, latest_backup, latest_backup_age < interval '1 hour', \
                backup_state, storage_error IS NULL FROM walg_status()"
    ));
    assert_eq!(st, format!("t|t|t|t|0|{b3}|t|succeeded|t"));

    // --- mark: permanent and back; a missing backup.
    assert_eq!(a.psql(&format!("SELECT * FROM walg_backup_mark('{b2}', true)")), format!("{b2}|t"));
    assert_eq!(a.psql(&format!("SELECT is_permanent FROM walg_backup_list() WHERE backup_name = '{b2}'")), "t");
    assert_eq!(a.psql(&format!("SELECT count(*) FROM walg_backup_mark('{b2}', true)")), "0", "no change");
    let out = storage.walg_ext(&["backup-mark", &b2, "-i"]);
    assert!(out.success() && out.stdout.contains(&b2), "CLI backup-mark -i\n{}", out.describe());
    assert_eq!(a.psql(&format!("SELECT is_permanent FROM walg_backup_list() WHERE backup_name = '{b2}'")), "f");

    // --- CLI parity: the same list.
    let out = storage.walg_ext(&["backup-list", "--detail", "--json"]);
    assert!(out.success(), "{}", out.describe());
    let json: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("JSON");
    let cli: Vec<(String, bool, bool)> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (b["backup_name"].as_str().unwrap().to_string(), b["is_permanent"].as_bool().unwrap(), b["is_full"].as_bool().unwrap())
        })
        .collect();
    assert_eq!(cli, vec![(b1.clone(), true, true), (b2.clone(), false, true), (b3.clone(), false, true)]);
    assert_eq!(json[0]["user_data"]["purpose"], "monthly");
    let out = storage.walg_ext(&["st", "ls", "basebackups_005/"]);
    assert!(out.success() && out.stdout.contains(&format!("{b1}_backup_stop_sentinel.json")), "{}", out.describe());

    // --- wal-show and wal-verify on a complete archive.
    let show = a.psql("SELECT tli, parent_tli, status, backups_count, segments_count = segment_range, cardinality(missing_segments) FROM walg_wal_show()");
    assert_eq!(show, "1|0|OK|3|t|0");
    let current = a.psql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    let v = a.psql("SELECT DISTINCT check_name, status, coalesce(segment_status, '-') FROM walg_wal_verify('integrity timeline') ORDER BY 1");
    assert_eq!(v, "integrity|OK|FOUND\ntimeline|OK|-");
    let out = storage.walg_ext(&["wal-verify", "integrity", "timeline", "--current-segment", &current]);
    assert!(out.success() && out.stdout.contains("integrity check status: OK"), "{}", out.describe());

    // --- a segment lost by hand: after b2, well before the current one.
    let lost = a.psql(&format!(
        "SELECT pg_walfile_name(start_lsn + 16 * 1024 * 1024) FROM walg_backup_list() WHERE backup_name = '{b2}'"
    ));
    let obj = storage.wal_object(&lost).unwrap_or_else(|| panic!("{lost} should be archived"));
    storage.delete(&obj);
    let v = a.psql("SELECT status, start_segment, segments_count FROM walg_wal_verify('integrity') WHERE segment_status = 'MISSING_LOST'");
    assert_eq!(v, format!("FAILURE|{lost}|1"));
    assert_eq!(a.psql("SELECT status, missing_segments::text FROM walg_wal_show()"), format!("LOST_SEGMENTS|{{{lost}}}"));
    let current = a.psql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    let out = storage.walg_ext(&["wal-verify", "integrity", "--current-segment", &current]);
    assert!(!out.success() && out.stdout.contains("MISSING_LOST") && out.stdout.contains(&lost), "{}", out.describe());
    let out = storage.walg_ext(&["wal-show"]);
    assert!(out.success() && out.stdout.contains("LOST_SEGMENTS") && out.stdout.contains(&lost), "{}", out.describe());

    // --- delete retain 1: dry run first (nothing changes), then confirm. b1 is permanent.
    let dry = a.psql(&format!(
        "SELECT count(*), count(*) FILTER (WHERE deleted), count(DISTINCT backup_name), \
                coalesce(bool_or(backup_name = '{b1}'), false) FROM walg_delete_retain(1)"
    ));
    assert_eq!(dry.split('|').nth(1), Some("0"), "dry run deletes nothing: {dry}");
    assert_eq!(dry.split('|').nth(2), Some("1"), "only b2's objects: {dry}");
    assert_eq!(dry.split('|').nth(3), Some("f"), "never the permanent b1: {dry}");
    assert!(storage.has(&storage.sentinel(&b2)), "dry run left b2");
    let cli_dry = storage.walg_ext(&["delete", "retain", "1"]);
    assert!(cli_dry.success() && cli_dry.stdout.contains(&format!("{b2}_backup_stop_sentinel.json")), "{}", cli_dry.describe());
    let n_dry: usize = dry.split('|').next().unwrap().parse().unwrap();
    assert_eq!(cli_dry.stdout.lines().filter(|l| l.starts_with("will be deleted: ")).count(), n_dry, "CLI and SQL plan the same");
    let b1_start = b1[5..].to_string();
    let done = a.psql("SELECT count(*) FILTER (WHERE deleted) FROM walg_delete_retain(1, confirm => true)");
    assert_eq!(done, n_dry.to_string());
    assert_eq!(a.psql("SELECT string_agg(backup_name, ',' ORDER BY start_time) FROM walg_backup_list()"), format!("{b1},{b3}"));
    assert!(storage.wal_object(&b1_start).is_some(), "the permanent backup's WAL stays");
    assert!(storage.wal_object(&b2[5..]).is_none(), "WAL between b1 and b3 went");

    // --- refusals: permanent in the way, unknown names, bad modes, bad counts, future times.
    assert_state(&a, "SELECT * FROM walg_delete_everything(confirm => true)", "55000", "permanent backups exist");
    assert_state(&a, &format!("SELECT * FROM walg_delete_target('{b1}', confirm => true)"), "55000", "permanent");
    assert_state(&a, "SELECT * FROM walg_delete_retain(0)", "22023", "at least 1");
    assert_state(&a, "SELECT * FROM walg_delete_retain(-1, confirm => true)", "22023", "at least 1");
    assert_state(&a, "SELECT * FROM walg_delete_retain(1, 'SOME')", "22023", "unknown retain modifier");
    assert_state(&a, "SELECT * FROM walg_delete('sideways 3')", "22023", "unknown delete mode");
    assert_state(&a, "SELECT * FROM walg_wal_verify('checksums')", "22023", "unknown wal-verify check");
    assert_state(&a, "SELECT * FROM walg_delete_before('2999-12-31T00:00:00Z', confirm => true)", "22023", "in the future");
    assert_state(&a, "SELECT * FROM walg_delete_target('base_0000000100000000000000EE')", "42704", "does not exist");
    assert_state(&a, "SELECT * FROM walg_backup_mark('base_0000000100000000000000EE', true)", "42704", "does not exist");
    assert_eq!(a.psql("SELECT count(*) FROM walg_backup_list()"), "2", "nothing changed by refusals");
    let out = storage.walg_ext(&["delete", "retain", "0", "--confirm"]);
    assert!(!out.success() && out.stderr.contains("at least 1"), "{}", out.describe());

    // --- privileges.
    a.psql("CREATE ROLE operator_x LOGIN");
    assert_state(&a, "SET ROLE operator_x; SELECT count(*) FROM walg_backup_list()", "42501", "permission denied");
    a.psql("RESET ROLE");
    assert_state(&a, "SET ROLE operator_x; SELECT * FROM walg_status()", "42501", "permission denied");
    a.psql("RESET ROLE; GRANT walg_admin TO operator_x");
    assert_eq!(
        a.psql("SET ROLE operator_x; SELECT count(*) FROM walg_backup_list(); RESET ROLE"),
        "2",
        "walg_admin may list"
    );
    assert_state(&a, "SET ROLE operator_x; SHOW walg.config_file", "42501", "");
    a.psql("RESET ROLE");

    // --- timeline switch: restore the latest backup, promote, archive into the same prefix.
    let mut b = Cluster::restore_into("manage-b", &storage, "LATEST", &conf);
    b.start();
    b.wait_recovery_done(Duration::from_secs(300));
    let tli2 = b.switch_wal();
    assert!(tli2.starts_with("00000002"), "B promoted to timeline 2: {tli2}");
    b.wait_archived(&tli2, Duration::from_secs(120));
    let b4 = b.psql("SELECT walg_backup_push()");
    assert!(b4.starts_with("base_00000002"), "{b4}");
    // Write first: right after pg_backup_stop a switch would name the segment already archived
    // (and the .backup file after it is archived later).
    let l = write_and_switch(&b, 1);
    b.wait_archived(&l, Duration::from_secs(120));
    let show = b.psql("SELECT tli, parent_tli, switchpoint_lsn > '0/0', backups_count FROM walg_wal_show() ORDER BY tli");
    assert_eq!(show, "1|0|f|2\n2|1|t|1");
    assert_eq!(b.psql("SELECT status, highest_storage_timeline_id FROM walg_wal_verify('timeline')"), "OK|2");
    // A still writes on timeline 1: the split brain shows.
    assert_eq!(a.psql("SELECT status, timeline_id, highest_storage_timeline_id FROM walg_wal_verify('timeline')"), "FAILURE|1|2");
    assert_eq!(
        b.psql("SELECT bool_and(segment_status = 'FOUND') FROM walg_wal_verify('integrity') WHERE timeline_id = 2"),
        "t",
        "timeline 2's segments all found: {}",
        b.psql("SELECT * FROM walg_wal_verify('integrity')")
    );
    let out = storage.walg_ext(&["wal-show", "--json"]);
    let json: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("wal-show --json");
    assert_eq!(json[1]["id"], 2);
    assert_eq!(json[1]["parent_id"], 1);
    b.stop();

    // --- storage unreachable, then not configured: clear errors; status still answers.
    a.set_and_reload("walg.file_prefix", "'/etc/passwd/walg'");
    a.wait_for_value("SHOW walg.file_prefix", "/etc/passwd/walg", Duration::from_secs(30));
    assert_state(&a, "SELECT count(*) FROM walg_backup_list()", "58030", "Not a directory");
    assert_state(&a, "SELECT * FROM walg_delete_retain(1)", "58030", "");
    assert!(a.psql("SELECT storage_error FROM walg_status()").contains("storage unreachable"));
    // A backup into it fails in the worker; the caller gets the kind's SQLSTATE and hint, not
    // 38000 for everything.
    assert_state(&a, "SELECT walg_backup_push()", "58030", "walg_ext backup failed: storage unreachable");
    let err = a.try_psql("SELECT walg_backup_push()").expect_err("backup into an unusable prefix");
    assert!(err.contains("HINT:") && err.contains("Check that the storage is reachable"), "{err}");
    assert!(
        a.psql("SELECT backup_state || ' ' || backup_error FROM walg_status()").starts_with("failed unreachable: "),
        "walg_status shows the kind"
    );
    // A prefix that does not exist (an unmounted share, a typo): "unreachable", never "no backups".
    let gone = storage.file_prefix().with_file_name("walg-e2e-not-mounted");
    a.set_and_reload("walg.file_prefix", &format!("'{}'", gone.display()));
    a.wait_for_value("SHOW walg.file_prefix", &gone.display().to_string(), Duration::from_secs(30));
    assert_state(&a, "SELECT count(*) FROM walg_backup_list()", "58030", "unreachable");
    assert_state(&a, "SELECT count(*) FROM walg_backup_list()", "58030", "does not exist");
    assert_state(&a, "SELECT * FROM walg_wal_show()", "58030", "does not exist");
    assert!(!gone.exists(), "readers never create the prefix");
    let out = walg_e2e::walg_ext(&["backup-list"], &[("WALG_FILE_PREFIX", &gone.display().to_string())]);
    assert_eq!(out.code, Some(6), "backup-list on a missing prefix: exit 6 (unreachable)\n{}", out.describe());
    assert!(out.stderr.contains("storage unreachable") && !out.stderr.contains("no backups"), "{}", out.describe());
    a.set_and_reload("walg.file_prefix", "''");
    a.wait_for_value("SHOW walg.file_prefix", "", Duration::from_secs(30));
    assert_state(&a, "SELECT count(*) FROM walg_backup_list()", "F0000", "no storage configured");
    assert_state(&a, "SELECT * FROM walg_wal_show()", "F0000", "no storage configured");
    a.stop();
}
