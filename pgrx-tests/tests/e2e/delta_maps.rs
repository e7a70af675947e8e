//! Deltas whose pages come from the WAL block maps (issue 11), proved on a real cluster: with
//! `walg.delta_map_check = on` each map-planned delta also reads every page of the files it
//! increments and fails if a page changed within its WAL range is missing from the maps. A
//! workload mix runs before each delta (COPY, bulk UPDATE and DELETE, VACUUM, VACUUM FULL,
//! TRUNCATE, CLUSTER, an index of every type, DROP TABLE, CREATE DATABASE with both strategies,
//! sequences, unlogged-to-logged, pgbench), WAL is archived with look-ahead, and the server
//! crashes (immediate stop) in the middle of the second delta's range. Both deltas must record
//! `WalgExtDeltaPages = wal-maps` (else this test proves nothing); the chain restored with
//! `walg-ext backup-fetch LATEST` replays to a `pg_dumpall` equal to the source, and amcheck passes.

use std::time::Duration;

use walg_e2e::{assert_dumps_equal, require_installed, Cluster, Storage};

/// One round of the mix; `r` keeps names apart between rounds.
fn workload(c: &Cluster, r: u32) {
    // One statement at a time: VACUUM and CREATE DATABASE refuse a transaction block.
    let sql = format!(
        "CREATE TABLE mix{r} (id int PRIMARY KEY, v text, n numeric);
         INSERT INTO mix{r} SELECT g, md5(g::text), g FROM generate_series(1, 20000) g;
         CREATE TABLE cp{r} (x int);
         COPY cp{r} FROM PROGRAM 'seq 1 30000';
         UPDATE mix{r} SET n = n + 1 WHERE id % 3 = 0;
         UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 5000 = 0;
         DELETE FROM mix{r} WHERE id % 7 = 0;
         VACUUM mix{r};
         VACUUM FULL cp{r};
         CREATE TABLE tr{r} AS SELECT g FROM generate_series(1, 5000) g;
         TRUNCATE tr{r};
         INSERT INTO tr{r} SELECT generate_series(1, 100);
         CREATE TABLE docs{r} (id int, t tsvector, p point, rg int4range);
         INSERT INTO docs{r} SELECT g, to_tsvector(md5(g::text)), point(g, g % 97), int4range(g, g + 10) FROM generate_series(1, 5000) g;
         CREATE INDEX ON docs{r} USING gin (t);
         CREATE INDEX ON docs{r} USING gist (p);
         CREATE INDEX ON docs{r} USING spgist (p);
         CREATE INDEX ON docs{r} USING brin (id);
         CREATE INDEX ON docs{r} USING hash (id);
         CREATE INDEX ON docs{r} USING gist (rg);
         CREATE INDEX ON mix{r} (v);
         CLUSTER mix{r} USING mix{r}_pkey;
         CREATE SEQUENCE seq{r};
         SELECT count(nextval('seq{r}')) FROM generate_series(1, 500);
         CREATE UNLOGGED TABLE ul{r} AS SELECT g FROM generate_series(1, 5000) g;
         ALTER TABLE ul{r} SET LOGGED;
         CREATE TABLE gone{r} AS SELECT g FROM generate_series(1, 3000) g;
         DROP TABLE gone{r};"
    );
    for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        c.psql(stmt);
    }
    c.psql(&format!("CREATE DATABASE db{r}_wal STRATEGY WAL_LOG"));
    c.psql(&format!("CREATE DATABASE db{r}_copy STRATEGY FILE_COPY"));
    for db in [format!("db{r}_wal"), format!("db{r}_copy")] {
        c.psql_db(&db, "CREATE TABLE t AS SELECT g, md5(g::text) m FROM generate_series(1, 4000) g; CREATE INDEX ON t (m)");
    }
}

/// (segments, parsed here from pg_wal or the archived WAL) of the worker's log line for `name`.
fn maps_used(c: &Cluster, name: &str) -> (u32, u32) {
    let log = c.log_text();
    let line = log
        .lines()
        .find(|l| l.contains(&format!("delta {name} reads the pages named by the WAL maps of")))
        .unwrap_or_else(|| panic!("no planner line for {name}\n{}", c.log_tail(30)));
    let nums: Vec<u32> = line
        .split(|ch: char| !ch.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .map(|w| w.parse().unwrap_or(0))
        .collect();
    // "... WAL maps of N segments (L parsed from pg_wal, A from archived WAL): P pages".
    let n = nums.len();
    (nums[n - 4], nums[n - 3] + nums[n - 2])
}

fn pages_method(storage: &Storage, name: &str) -> String {
    let s: serde_json::Value = serde_json::from_slice(&storage.read(&storage.sentinel(name))).unwrap();
    s["WalgExtDeltaPages"].as_str().unwrap_or("(none)").to_string()
}

#[test]
fn deltas_from_wal_maps_miss_no_page_across_a_workload_mix_and_a_crash() {
    require_installed();
    let storage = Storage::new("deltamaps", "lz4");
    let conf = format!(
        "{}walg.delta_max_steps = 5\nwalg.delta_map_check = on\nwalg.upload_concurrency = 4\nwal_compression = lz4\n",
        storage.extension_conf()
    );
    let mut a = Cluster::init("dmaps-a", &conf);
    a.start();
    a.pgbench_init(2);
    a.psql("CREATE EXTENSION walg_ext");
    let full = a.psql("SELECT walg_backup_push()");
    assert!(!full.contains("_D_"), "{full}");

    workload(&a, 1);
    a.pgbench(&["-n", "-t", "300", "-c", "2"]);
    let d1 = a.psql("SELECT walg_backup_push()");
    assert!(d1.contains("_D_"), "{d1}");
    assert_eq!(pages_method(&storage, &d1), "wal-maps", "{d1}: the maps must cover its range\n{}", a.log_tail(30));
    // The archiver stored maps, and the delta read most of them from storage (only the segments
    // not archived yet are parsed from pg_wal, and none should need the archived WAL).
    assert!(!storage.keys("walg_ext_blockmaps_005/").is_empty(), "no maps in storage");
    let (segments, local) = maps_used(&a, &d1);
    assert!(segments >= 3 && local < segments, "{d1}: {segments} segments, {local} parsed here");

    // A crash in the middle of the next range, then more changes, and the delta taken while
    // pgbench writes.
    workload(&a, 2);
    a.stop_immediate();
    a.start();
    workload(&a, 3);
    let d2 = a.backup_under_pgbench(8, Duration::from_secs(2));
    assert!(d2.ends_with(&format!("_D_{}", &d1[5..29])), "{d2} should be a delta from {d1}");
    assert_eq!(pages_method(&storage, &d2), "wal-maps", "{d2}: the maps must cover its range\n{}", a.log_tail(30));
    // The maps named only the changed pages of a big table: pgbench_accounts' increment in d1
    // holds a fraction of its pages (new tables and databases are copied whole, so the deltas
    // as a whole are not small here).
    let file = a.psql("SELECT '/' || pg_relation_filepath('pgbench_accounts')");
    let rel_size: u64 = a.psql("SELECT pg_relation_size('pgbench_accounts')").parse().unwrap();
    let fm: serde_json::Value =
        serde_json::from_slice(&storage.read(&format!("basebackups_005/{d1}/files_metadata.json"))).unwrap();
    let entry = &fm["Files"][&file];
    assert_eq!(entry["IsIncremented"], true, "{file} in {d1}: {entry}");
    let inc = entry["Size"].as_u64().unwrap();
    assert!(inc * 4 < rel_size, "{file}: an increment of {inc} bytes for a relation of {rel_size}");

    let last = a.switch_wal();
    a.wait_archived(&last, Duration::from_secs(180));
    let dump_a = a.dumpall();
    a.stop();

    let mut b = Cluster::restore_into("dmaps-b", &storage, "LATEST", "");
    b.start();
    b.wait_recovery_done(Duration::from_secs(300));
    assert_dumps_equal(&dump_a, &b.dumpall(), "deltas from WAL maps: A vs restored B");
    for db in ["postgres", "db1_wal", "db1_copy", "db3_wal", "db3_copy"] {
        b.psql_db(
            db,
            "CREATE EXTENSION IF NOT EXISTS amcheck; \
             SELECT count(bt_index_check(c.oid, true)) FROM pg_class c JOIN pg_am am ON am.oid = c.relam \
             WHERE am.amname = 'btree' AND c.relpersistence = 'p'",
        );
    }
    b.stop();
}
