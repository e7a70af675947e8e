//! Partial restore (`walg-ext backup-fetch --restore-only`, WAL-G's option) on a real cluster:
//! three databases written to before and after the backup; restoring only one of them gives a
//! server that replays the WAL of all three, serves the one asked for exactly as the source
//! (contents, amcheck), and lets the others be dropped. A name the backup does not know is
//! refused before anything is written.

use std::time::Duration;

use walg_e2e::{require_installed, Cluster, Storage};

const DBS: [&str; 3] = ["shop", "crm", "logs"];

fn fill(a: &Cluster, db: &str, from: i32, to: i32) {
    a.psql_db(
        db,
        &format!(
            "CREATE TABLE IF NOT EXISTS t(id int PRIMARY KEY, v text); \
             INSERT INTO t SELECT g, md5(g::text) FROM generate_series({from}, {to}) g; \
             UPDATE t SET v = v || '!' WHERE id % 7 = 0"
        ),
    );
}

fn digest(c: &Cluster, db: &str) -> String {
    c.psql_db(db, "SELECT count(*) || ':' || md5(string_agg(id || v, ',' ORDER BY id)) FROM t")
}

#[test]
fn restore_only_one_database_of_three() {
    require_installed();
    let storage = Storage::new("partial", "lz4");
    let mut a = Cluster::init("partial-a", &storage.extension_conf());
    a.start();
    a.psql("CREATE EXTENSION walg_ext");
    for db in DBS {
        a.psql(&format!("CREATE DATABASE {db}"));
        fill(&a, db, 1, 20_000);
    }
    let name = a.psql("SELECT walg_backup_push()");
    // Written after the backup: replayed from WAL, in every database.
    for db in DBS {
        fill(&a, db, 20_001, 25_000);
    }
    let crm = digest(&a, "crm");
    let last = a.switch_wal();
    a.wait_archived(&last, Duration::from_secs(180));
    a.stop();

    let fm: serde_json::Value =
        serde_json::from_slice(&storage.read(&format!("basebackups_005/{name}/files_metadata.json"))).unwrap();
    for db in DBS {
        assert!(fm["WalgExtDatabases"][db].as_u64().is_some(), "the backup records {db}'s OID: {}", fm["WalgExtDatabases"]);
    }

    // Unknown name: refused, nothing written.
    let target = format!("/tmp/walg-e2e-partial-bad-{}", std::process::id());
    let out = storage.walg_ext(&["backup-fetch", &target, &name, "--restore-only", "nope"]);
    assert_eq!(out.code, Some(2), "{}", out.describe());
    assert!(out.stderr.contains("nope") && out.stderr.contains("crm"), "{}", out.describe());
    assert!(!std::path::Path::new(&target).exists());

    let mut b = Cluster::empty("partial-b");
    let out = storage.walg_ext(&["backup-fetch", &b.data.display().to_string(), &name, "--restore-only", "crm"]);
    assert!(out.success(), "{}", out.describe());
    assert!(out.stderr.contains("placeholder"), "the restore says what it left out\n{}", out.describe());
    b.configure_recovery(&storage.restore_command(), "");
    b.start();
    b.wait_recovery_done(Duration::from_secs(300));
    assert_eq!(digest(&b, "crm"), crm, "the database asked for is whole, with the WAL replayed");
    b.psql_db("crm", "CREATE EXTENSION amcheck; SELECT bt_index_check(i.indexrelid, true) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam WHERE am.amname = 'btree'");
    // The others hold placeholders: their tables cannot be read, and they can be dropped.
    assert!(b.try_psql_db("shop", "SELECT count(*) FROM t").is_err(), "shop's table is a placeholder");
    for db in ["shop", "logs"] {
        b.psql(&format!("DROP DATABASE {db}"));
    }
    assert_eq!(b.psql("SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database WHERE datname IN ('shop','crm','logs')"), "crm");
    b.stop();
}
