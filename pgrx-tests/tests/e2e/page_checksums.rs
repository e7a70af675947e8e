//! Page checksum verification on a real cluster (initdb --data-checksums): a backup of the whole
//! cluster taken while pgbench writes finds no corrupt page (no false positive on any catalog,
//! index, FSM or VM page, nor on pages written during the backup);
//! then, with the server stopped, bytes of one block of a table's file are flipped (tuple data,
//! not the header's LSN): the next backup completes, the worker's WARNING names the file and the
//! block, files_metadata.json has WAL-G's `CorruptBlocks` for that file only, and the count shows
//! in `walg_backup_list(detail)` and `walg_status()`. With `walg.fail_on_corrupt_pages = on` the
//! backup fails naming file and block and commits nothing; with `walg.verify_page_checksums = off`
//! nothing is checked (corrupt_pages NULL).

use std::os::unix::fs::FileExt;
use std::time::Duration;

use walg_e2e::{require_installed, Cluster, Storage};

#[test]
fn corrupt_page_is_found_recorded_and_can_fail_the_backup() {
    require_installed();
    let storage = Storage::new("page-checksums", "lz4");
    // No autovacuum: nothing but the backup reads the damaged page.
    let conf = format!("{}autovacuum = off\n", storage.extension_conf());
    let mut a = Cluster::init("page-checksums-a", &conf);
    a.start();
    a.psql("CREATE EXTENSION walg_ext");
    assert_eq!(a.psql("SHOW data_checksums"), "on");
    assert_eq!(a.psql("SHOW walg.verify_page_checksums"), "on");
    assert_eq!(a.psql("SHOW walg.fail_on_corrupt_pages"), "off");
    a.psql("CREATE TABLE t AS SELECT g AS id, repeat(md5(g::text), 6) AS pad FROM generate_series(1, 3000) g");
    a.psql("CREATE INDEX t_id ON t (id)");
    a.psql("VACUUM (FREEZE, ANALYZE) t");
    a.psql("CHECKPOINT");
    let rel = a.psql("SELECT pg_relation_filepath('t')");
    let pages: u64 = a.psql("SELECT pg_relation_size('t') / 8192").parse().unwrap();
    assert!(pages > 20 && pages < 131072, "{pages} pages");

    // A clean cluster, backed up while pgbench writes (pages change under the reads: torn reads
    // and pages newer than the start must not count): every page of every relation file verifies.
    a.pgbench_init(2);
    let clean = a.backup_under_pgbench(8, Duration::from_secs(2));
    assert_eq!(a.psql(&format!("SELECT corrupt_pages FROM walg_backup_list(true) WHERE backup_name = '{clean}'")), "0");
    assert!(!a.log_text().contains("page checksum verification failed"), "{}", a.log_tail(30));
    let fm = String::from_utf8(storage.read(&format!("basebackups_005/{clean}/files_metadata.json"))).unwrap();
    assert!(!fm.contains("CorruptBlocks"), "a clean cluster has no corrupt block");

    // Damage block 3 of the table: bytes in the tuple area, the header (and its LSN) untouched.
    a.stop();
    let path = a.data.join(&rel);
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    let off = 3 * 8192 + 5000;
    let mut b = [0u8; 16];
    f.read_exact_at(&mut b, off).unwrap();
    for x in b.iter_mut() {
        *x ^= 0x5A;
    }
    f.write_all_at(&b, off).unwrap();
    f.sync_all().unwrap();
    drop(f);
    a.start();

    let damaged = a.psql("SELECT walg_backup_push()");
    let log = a.log_text();
    let warning = format!("page checksum verification failed in relation file {rel}, block 3");
    assert!(log.contains(&warning) && log.contains("WARNING"), "the worker's log names file and block:\n{}", a.log_tail(30));
    let fm: serde_json::Value =
        serde_json::from_slice(&storage.read(&format!("basebackups_005/{damaged}/files_metadata.json"))).unwrap();
    let files = fm["Files"].as_object().unwrap();
    assert_eq!(
        files[&format!("/{rel}")]["CorruptBlocks"],
        serde_json::json!({"CorruptBlocksCount": 1, "SomeCorruptBlocks": [3]}),
        "WAL-G's CorruptBlocks field"
    );
    let with_corrupt: Vec<&String> = files.iter().filter(|(_, d)| d.get("CorruptBlocks").is_some()).map(|(k, _)| k).collect();
    assert_eq!(with_corrupt, vec![&format!("/{rel}")]);
    assert_eq!(a.psql(&format!("SELECT corrupt_pages FROM walg_backup_list(true) WHERE backup_name = '{damaged}'")), "1");
    assert_eq!(a.psql(&format!("SELECT coalesce(corrupt_pages::text, 'null') FROM walg_backup_list() WHERE backup_name = '{damaged}'")), "null", "a detail column");
    assert_eq!(a.psql("SELECT latest_backup, latest_backup_corrupt_pages FROM walg_status()"), format!("{damaged}|1"));
    let out = storage.walg_ext(&["backup-list", "--detail", "--json"]);
    assert!(out.success(), "{}", out.describe());
    let list: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let row = list.as_array().unwrap().iter().find(|r| r["backup_name"] == damaged.as_str()).unwrap();
    assert_eq!(row["corrupt_pages"], 1, "backup-list --detail --json");

    // walg.fail_on_corrupt_pages: the backup fails naming file and block; nothing committed.
    a.set_and_reload("walg.fail_on_corrupt_pages", "on");
    a.wait_for_value("SHOW walg.fail_on_corrupt_pages", "on", Duration::from_secs(10));
    let before = storage.sentinel_backups();
    let err = a.try_psql("SELECT walg_backup_push()").expect_err("a corrupt page fails the backup");
    assert!(
        err.contains(&format!("{rel} block 3")) && err.contains("fail_on_corrupt_pages"),
        "the error names file and block: {err}"
    );
    assert!(a.psql("SELECT backup_error FROM walg_status()").starts_with("corrupt: "), "kind corrupt");
    assert_eq!(storage.sentinel_backups(), before, "nothing committed");

    // Verification off: the backup completes and checked nothing.
    a.set_and_reload("walg.fail_on_corrupt_pages", "off");
    a.set_and_reload("walg.verify_page_checksums", "off");
    a.wait_for_value("SHOW walg.verify_page_checksums", "off", Duration::from_secs(10));
    let unchecked = a.psql("SELECT walg_backup_push()");
    assert_eq!(
        a.psql(&format!("SELECT coalesce(corrupt_pages::text, 'null') FROM walg_backup_list(true) WHERE backup_name = '{unchecked}'")),
        "null"
    );
    let fm = String::from_utf8(storage.read(&format!("basebackups_005/{unchecked}/files_metadata.json"))).unwrap();
    assert!(!fm.contains("CorruptBlocks"));
    a.stop();
}
