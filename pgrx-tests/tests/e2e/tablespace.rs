//! Tablespaces on a real cluster (issue 12): two tablespaces (directories under the cluster's
//! scratch directory), tables and indexes in each, a backup taken while rows are written into
//! them. The sentinel records WAL-G's Spec. A restore to the original locations is refused while
//! the source runs (they are not empty); restored with `--tablespace NAME=DIR` and
//! `--tablespace OID=DIR` into new directories on the same host while the source keeps running,
//! the copy replays, every table matches the source (count and hash), pg_dumpall is identical
//! but for the tablespace locations, amcheck passes on every B-tree index, and the source's
//! tablespace directories were not touched. `--restore-spec` (WAL-G's file) places them too.
//! restore-drill passes with the tablespaces inside its scratch directory. Then a delta backup (increments of tablespace files) restored with `--tablespace` and a
//! `--target-lsn`: the chain lands in the new directories and stops exactly at the target.

use std::path::{Path, PathBuf};
use std::time::Duration;

use walg_e2e::{assert_dumps_equal, require_installed, Cluster, Storage};

const T: Duration = Duration::from_secs(300);

fn postgres_dir(p: &Path) -> PathBuf {
    std::fs::create_dir_all(p).unwrap();
    walg_e2e::scratch::set_mode(p, 0o700);
    walg_e2e::cmd::chown_postgres(p);
    p.to_path_buf()
}

const TABLES: &[&str] = &["t_fast", "t_slow", "t_default"];

/// Per table: row count and an order-independent hash of the rows.
fn table_sums(c: &Cluster) -> Vec<String> {
    TABLES
        .iter()
        .map(|t| c.psql(&format!("SELECT '{t}:' || count(*) || ':' || coalesce(sum(hashtext(x::text)::bigint), 0) FROM {t} x")))
        .collect()
}

#[test]
fn two_tablespaces_restore_into_new_locations_while_the_source_runs() {
    require_installed();
    let storage = Storage::new("tblspc", "lz4");
    let conf = format!("{}walg.delta_max_steps = 2\n", storage.extension_conf());
    let mut a = Cluster::init("tblspc-a", &conf);
    a.start();
    let fast_dir = postgres_dir(&a.dir().join("ts_fast"));
    let slow_dir = postgres_dir(&a.dir().join("ts_slow"));
    a.psql(&format!("CREATE TABLESPACE fast LOCATION '{}'", fast_dir.display()));
    a.psql(&format!("CREATE TABLESPACE slow LOCATION '{}'", slow_dir.display()));
    a.psql("CREATE EXTENSION walg_ext");
    a.psql(
        "CREATE TABLE t_fast (id int PRIMARY KEY USING INDEX TABLESPACE slow, v text) TABLESPACE fast;
         CREATE INDEX t_fast_v ON t_fast (v) TABLESPACE slow;
         CREATE TABLE t_slow (id int PRIMARY KEY USING INDEX TABLESPACE fast, v text) TABLESPACE slow;
         CREATE INDEX t_slow_v ON t_slow (v) TABLESPACE fast;
         CREATE TABLE t_default (id int PRIMARY KEY, v text);
         CREATE INDEX t_default_v ON t_default (v) TABLESPACE fast;
         INSERT INTO t_fast SELECT g, md5(g::text) FROM generate_series(1, 40000) g;
         INSERT INTO t_slow SELECT g, md5((g * 7)::text) FROM generate_series(1, 30000) g;
         INSERT INTO t_default SELECT g, md5((g * 3)::text) FROM generate_series(1, 10000) g;",
    );
    let oid = |name: &str| a.psql(&format!("SELECT oid FROM pg_tablespace WHERE spcname = '{name}'"));
    let (fast_oid, slow_oid) = (oid("fast"), oid("slow"));

    // The backup, while rows go into both tablespaces.
    let load = a.psql_background(
        "DO $$ BEGIN FOR i IN 1..150 LOOP
           INSERT INTO t_fast SELECT 100000 + i * 100 + g, md5(g::text) FROM generate_series(1, 100) g;
           UPDATE t_slow SET v = md5(v) WHERE id % 150 = i;
           COMMIT; PERFORM pg_sleep(0.02); END LOOP; END $$;",
    );
    std::thread::sleep(Duration::from_millis(500));
    let backup = a.psql("SELECT walg_backup_push()");
    let done = load.wait(T);
    assert!(done.success(), "load during the backup\n{}", done.describe());
    // Changes after the backup come from WAL replay.
    a.psql("DELETE FROM t_slow WHERE id % 10 = 0; INSERT INTO t_default SELECT g, 'after' FROM generate_series(10001, 12000) g");
    a.psql("SELECT txid_current()");
    let last = a.switch_wal();
    a.wait_archived(&last, T);

    // WAL-G's Spec and our names in the sentinel.
    let s: serde_json::Value = serde_json::from_slice(&storage.read(&storage.sentinel(&backup))).unwrap();
    let spec = &s["Spec"];
    assert_eq!(spec["base_prefix"], a.data.display().to_string(), "{s}");
    assert_eq!(spec["tablespaces"].as_array().map(|v| v.len()), Some(2), "{s}");
    assert_eq!(spec[&fast_oid]["loc"], fast_dir.display().to_string(), "{s}");
    assert_eq!(spec[&slow_oid]["link"], format!("pg_tblspc/{slow_oid}"), "{s}");
    assert_eq!(s["WalgExtTablespaceNames"][&fast_oid], "fast", "{s}");
    let fm: serde_json::Value =
        serde_json::from_slice(&storage.read(&format!("basebackups_005/{backup}/files_metadata.json"))).unwrap();
    let prefix = format!("/pg_tblspc/{fast_oid}/PG_15_");
    assert!(fm["Files"].as_object().unwrap().keys().any(|k| k.starts_with(&prefix)), "tablespace files named as WAL-G does");
    assert!(!fm["Files"].as_object().unwrap().contains_key(&format!("/pg_tblspc/{fast_oid}")));

    let want = table_sums(&a);
    let dump_a = a.dumpall();

    // The original locations are the running source's: refused, naming the tablespace.
    let mut b = Cluster::empty("tblspc-b");
    let target = b.data.display().to_string();
    let out = storage.walg_ext(&["backup-fetch", &target, &backup]);
    assert!(!out.success(), "{}", out.describe());
    assert!(out.stderr.contains(&format!("tablespace {fast_oid} (fast)")) && out.stderr.contains("not empty"), "{}", out.describe());
    assert!(std::fs::read_dir(&b.data).unwrap().next().is_none(), "nothing written");

    // New locations: by name and by OID.
    let new_fast = b.dir().join("new_fast");
    let new_slow = b.dir().join("new_slow");
    let out = storage.walg_ext(&[
        "backup-fetch",
        &target,
        &backup,
        "--tablespace",
        &format!("fast={}", new_fast.display()),
        "--tablespace",
        &format!("{slow_oid}={}", new_slow.display()),
    ]);
    assert!(out.success(), "{}", out.describe());
    assert_eq!(std::fs::read_link(b.data.join("pg_tblspc").join(&fast_oid)).unwrap(), new_fast);
    let map = std::fs::read_to_string(b.data.join("tablespace_map")).unwrap();
    assert!(map.contains(&format!("{fast_oid} {}\n", new_fast.display())) && !map.contains(&fast_dir.display().to_string()), "{map}");
    b.configure_recovery(&storage.restore_command(), "");
    b.start();
    b.wait_recovery_done(T);
    assert_eq!(b.psql("SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'fast'"), new_fast.display().to_string());
    assert_eq!(b.psql("SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'slow'"), new_slow.display().to_string());
    assert_eq!(table_sums(&b), want, "every table as in the source");
    let dump_b = b
        .dumpall()
        .replace(&new_fast.display().to_string(), &fast_dir.display().to_string())
        .replace(&new_slow.display().to_string(), &slow_dir.display().to_string());
    assert_dumps_equal(&dump_a, &dump_b, "source vs restored with relocated tablespaces");
    b.psql("CREATE EXTENSION amcheck");
    let checked = b.psql(
        "SELECT count(bt_index_check(c.oid, true)) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         JOIN pg_am am ON am.oid = c.relam WHERE am.amname = 'btree' AND c.relnamespace = 'public'::regnamespace",
    );
    assert_eq!(checked, "6", "amcheck on every index of the three tables");
    b.psql("SELECT count(bt_index_check(c.oid)) FROM pg_class c JOIN pg_am am ON am.oid = c.relam WHERE am.amname = 'btree'");
    // Writes on the copy go to its own directories; the source is untouched and still right.
    b.psql("INSERT INTO t_fast SELECT g, 'copy' FROM generate_series(900001, 900100) g; CHECKPOINT");
    b.stop();
    assert_eq!(table_sums(&a), want, "the source is unchanged");
    assert_eq!(a.psql("SELECT count(*) FROM t_fast WHERE v = 'copy'"), "0");

    // WAL-G's --restore-spec places them too (restored, not started).
    let c = Cluster::empty("tblspc-c");
    let spec_file = c.dir().join("spec.json");
    let (c_fast, c_slow) = (c.dir().join("c_fast"), c.dir().join("c_slow"));
    let spec = serde_json::json!({
        "base_prefix": c.data.display().to_string(), "tablespaces": [fast_oid.clone(), slow_oid.clone()],
        fast_oid.clone(): {"loc": c_fast.display().to_string(), "link": format!("pg_tblspc/{fast_oid}")},
        slow_oid.clone(): {"loc": c_slow.display().to_string(), "link": format!("pg_tblspc/{slow_oid}")},
    });
    walg_e2e::cmd::write_as_postgres(&spec_file, &spec.to_string());
    let out = storage.walg_ext(&["backup-fetch", &c.data.display().to_string(), &backup, "--restore-spec", &spec_file.display().to_string()]);
    assert!(out.success(), "{}", out.describe());
    assert_eq!(std::fs::read_link(c.data.join("pg_tblspc").join(&slow_oid)).unwrap(), c_slow);
    assert!(std::fs::read_dir(&c_slow).unwrap().next().is_some());

    // restore-drill puts the tablespaces inside its scratch directory (the originals are in use)
    // and leaves nothing behind.
    let work = walg_e2e::ScratchDir::new("tblspc-drill");
    let w = work.path().display().to_string();
    let out = storage.walg_ext(&["restore-drill", &backup, "--json", "--work-dir", &w]);
    assert!(out.success(), "{}", out.describe());
    let r: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", out.describe()));
    assert_eq!(r["passed"], true, "{r}");
    assert!(std::fs::read_dir(work.path()).unwrap().next().is_none(), "the drill left files in {w}");

    // A delta: pages changed in both tablespaces since the full backup, increments stored under
    // the tablespaces' names.
    a.psql("UPDATE t_fast SET v = 'delta' WHERE id % 97 = 0; INSERT INTO t_slow SELECT g, 'delta' FROM generate_series(200001, 201000) g");
    let delta = a.psql("SELECT walg_backup_push()");
    assert!(delta.contains("_D_"), "a delta: {delta}");
    let fm: serde_json::Value =
        serde_json::from_slice(&storage.read(&format!("basebackups_005/{delta}/files_metadata.json"))).unwrap();
    let files = fm["Files"].as_object().unwrap();
    for oid in [&fast_oid, &slow_oid] {
        let p = format!("/pg_tblspc/{oid}/");
        assert!(files.iter().any(|(k, d)| k.starts_with(&p) && d["IsIncremented"] == true), "increments in tablespace {oid}");
    }
    a.psql("INSERT INTO t_fast SELECT g, 'before' FROM generate_series(300001, 300500) g");
    let want_at_target = table_sums(&a);
    let target_lsn = a.psql("SELECT pg_current_wal_lsn()");
    a.psql("INSERT INTO t_fast SELECT g, 'after' FROM generate_series(400001, 400500) g");
    let last = a.switch_wal();
    a.wait_archived(&last, T);
    let mut d = Cluster::empty("tblspc-d");
    let (d_fast, d_slow) = (d.dir().join("d_fast"), d.dir().join("d_slow"));
    let out = storage.walg_ext(&[
        "backup-fetch",
        &d.data.display().to_string(),
        "LATEST",
        "--tablespace",
        &format!("fast={}", d_fast.display()),
        "--tablespace",
        &format!("slow={}", d_slow.display()),
        "--target-lsn",
        &target_lsn,
        "--target-action",
        "promote",
    ]);
    assert!(out.success(), "{}", out.describe());
    assert!(out.stderr.contains(&delta), "{}", out.describe());
    walg_e2e::cmd::append_file(
        &d.data.join("postgresql.auto.conf"),
        &format!(
            "# test cluster\nport = {}\nlisten_addresses = ''\nunix_socket_directories = '{}'\narchive_mode = off\n",
            d.port,
            d.socket_dir()
        ),
    );
    d.start();
    d.wait_recovery_done(T);
    assert_eq!(table_sums(&d), want_at_target, "the chain plus WAL up to the target LSN");
    assert_eq!(d.psql("SELECT count(*) FROM t_fast WHERE v = 'after'"), "0");
    assert_eq!(d.psql("SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'slow'"), d_slow.display().to_string());
    d.psql("CREATE EXTENSION amcheck");
    assert_eq!(
        d.psql(
            "SELECT count(bt_index_check(c.oid, true)) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             JOIN pg_am am ON am.oid = c.relam WHERE am.amname = 'btree' AND c.relnamespace = 'public'::regnamespace"
        ),
        "6"
    );
    d.stop();
    a.stop();
}
