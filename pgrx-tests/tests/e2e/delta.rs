//! Delta backups on a real cluster (full-scan page choice, `walg.delta_wal_maps = off`; the maps
//! are delta_maps.rs): with `walg.delta_max_steps = 3`, a
//! full, a delta after pgbench, and a delta taken while pgbench runs; the chain restored with
//! `walg-ext backup-fetch LATEST` replays to a `pg_dumpall` equal to the source. The list shows
//! base, chain root and step; the files metadata marks increments and skipped files. A delta whose
//! base was deleted is refused (NotFound, exit 3, naming the base) and nothing is written.

use std::time::Duration;

use walg_e2e::{assert_dumps_equal, require_installed, Cluster, Storage};

#[test]
fn full_delta_delta_under_pgbench_restores_the_chain() {
    require_installed();
    let storage = Storage::new("delta", "lz4");
    let conf = format!("{}walg.delta_max_steps = 3\nwalg.delta_wal_maps = off\n", storage.extension_conf());
    let mut a = Cluster::init("delta-a", &conf);
    a.start();
    a.pgbench_init(2);
    a.psql("CREATE EXTENSION walg_ext");
    assert_eq!(a.psql("SHOW walg.delta_max_steps"), "3");
    assert_eq!(a.psql("SHOW walg.delta_origin"), "LATEST");

    let full = a.psql("SELECT walg_backup_push()");
    assert!(full.starts_with("base_") && !full.contains("_D_"), "the first backup is full: {full}");

    a.pgbench(&["-n", "-t", "200", "-c", "2"]);
    let d1 = a.psql("SELECT walg_backup_push()");
    assert!(d1.ends_with(&format!("_D_{}", &full[5..29])), "{d1} should be a delta from {full}");

    // A delta taken while pgbench writes.
    let d2 = std::thread::scope(|s| {
        let bench = s.spawn(|| a.pgbench(&["-n", "-T", "8", "-c", "2"]));
        std::thread::sleep(Duration::from_secs(2));
        let d2 = a.psql("SELECT walg_backup_push()");
        bench.join().expect("pgbench thread");
        d2
    });
    assert!(d2.ends_with(&format!("_D_{}", &d1[5..29])), "{d2} should be a delta from {d1}");
    // Page checksums were verified on every page the deltas scanned, and pages pgbench wrote
    // during d2 are no corruption (page_checksums.rs has the damaged case).
    assert_eq!(
        a.psql(&format!("SELECT string_agg(corrupt_pages::text, ',') FROM walg_backup_list(true) WHERE backup_name IN ('{d1}', '{d2}')")),
        "0,0"
    );

    // The list: base, chain root, step.
    let rows = a.psql(
        "SELECT backup_name, is_full, coalesce(delta_from, '-'), coalesce(delta_full_name, '-'), coalesce(delta_count, 0) \
         FROM walg_backup_list() ORDER BY start_lsn",
    );
    assert_eq!(rows, format!("{full}|t|-|-|0\n{d1}|f|{full}|{full}|1\n{d2}|f|{d1}|{full}|2"), "walg_backup_list()");
    let out = storage.walg_ext(&["backup-list", "--detail"]);
    assert!(out.success() && out.stdout.contains("delta_full_name") && out.stdout.contains(&d2), "{}", out.describe());

    // What the deltas hold: increments of changed relation files, unchanged files skipped, the
    // four Delta* keys together.
    let fm: serde_json::Value =
        serde_json::from_slice(&storage.read(&format!("basebackups_005/{d1}/files_metadata.json"))).unwrap();
    let files = fm["Files"].as_object().unwrap();
    let inc = files.values().filter(|d| d["IsIncremented"] == true).count();
    let skipped = files.values().filter(|d| d["IsSkipped"] == true).count();
    assert!(inc > 0 && skipped > 0, "{d1}: {inc} increments, {skipped} skipped of {} files", files.len());
    let s: serde_json::Value = serde_json::from_slice(&storage.read(&storage.sentinel(&d2))).unwrap();
    assert_eq!((s["DeltaFrom"].as_str(), s["DeltaFullName"].as_str(), s["DeltaCount"].as_i64()), (Some(d1.as_str()), Some(full.as_str()), Some(2)));
    assert!(s["DeltaLSN"].as_u64().is_some());
    let size = |n: &str| -> i64 {
        let s: serde_json::Value = serde_json::from_slice(&storage.read(&storage.sentinel(n))).unwrap();
        s["UncompressedSize"].as_i64().unwrap()
    };
    assert!(size(&d1) * 3 < size(&full), "a delta after 400 transactions is much smaller than the full: {} vs {}", size(&d1), size(&full));

    // Changes after the last delta come from WAL replay.
    a.psql("CREATE TABLE after_delta AS SELECT g AS id FROM generate_series(1, 3000) g");
    let last = a.switch_wal();
    a.wait_archived(&last, Duration::from_secs(180));
    let dump_a = a.dumpall();

    let mut b = Cluster::restore_into("delta-b", &storage, "LATEST", "");
    b.start();
    b.wait_recovery_done(Duration::from_secs(300));
    assert_eq!(b.psql("SELECT count(*) FROM after_delta"), "3000");
    assert_dumps_equal(&dump_a, &b.dumpall(), "delta chain: A vs restored B");
    b.stop();

    // Bad requests: refused before anything starts, or by the worker, naming the problem.
    let err = a.try_psql(&format!("SELECT walg_backup_push(full => true, delta_from => '{full}')")).unwrap_err();
    assert!(err.contains("exclude each other"), "{err}");
    let err = a.try_psql("SELECT walg_backup_push(delta_from => 'not a name')").unwrap_err();
    assert!(err.contains("not a backup name"), "{err}");
    let err = a.try_psql("SELECT walg_backup_push(delta_from => 'base_0000000100000000000000AA')").unwrap_err();
    assert!(err.contains("base_0000000100000000000000AA") && err.contains("does not exist"), "{err}");
    // By name: a delta from the full (step 1 again).
    let from_full = a.psql(&format!("SELECT walg_backup_push(delta_from => '{full}')"));
    assert!(from_full.ends_with(&format!("_D_{}", &full[5..29])), "{from_full}");

    // full => true forces a full backup.
    let forced = a.psql("SELECT walg_backup_push(full => true)");
    assert!(!forced.contains("_D_"), "{forced}");
    a.stop();

    // The base of d2 deleted: refused as not found, naming it; nothing written.
    storage.delete(&storage.sentinel(&d1));
    let target = std::path::PathBuf::from(format!("/tmp/walg-e2e-delta-nobase-{}", std::process::id()));
    let out = storage.walg_ext(&["backup-fetch", &target.display().to_string(), &d2]);
    assert_eq!(out.code, Some(3), "a delta without its base\n{}", out.describe());
    assert!(out.stderr.contains(&d1) && out.stderr.contains("chain"), "{}", out.describe());
    assert!(!target.exists(), "nothing may be written for a chain that cannot be restored");
}
