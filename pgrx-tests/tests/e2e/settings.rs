//! walg.* settings against walg.config_file on a real server: a GUC left at PostgreSQL's
//! default defers to the file; one written with ALTER SYSTEM wins even when it equals the
//! built-in default; units; a typo or a bad value in the file is a clear error naming the key.

use std::time::Duration;
use walg_e2e::cmd::write_as_postgres;
use walg_e2e::{require_installed, Backend, Cluster, Storage};

fn archive_one(a: &Cluster, table: &str) -> String {
    a.psql(&format!("CREATE TABLE {table} AS SELECT g FROM generate_series(1, 1000) g"));
    let seg = a.switch_wal();
    a.wait_archived(&seg, Duration::from_secs(60));
    seg
}

#[test]
fn gucs_defer_to_the_file_until_set() {
    require_installed();
    // The file says zstd and carries a WAL-G key walg_ext does not support.
    let storage = Storage::with_backend(Backend::File, "settings", "zstd", &[("WALG_USE_WAL_DELTA", "true")]);
    let conf = storage.config_file_only_conf();
    let mut a = Cluster::init("settings", &conf);
    a.start();
    a.psql("CREATE EXTENSION walg_ext");

    // walg.compression_method is at PostgreSQL's default (SHOW says lz4): the file's zstd wins.
    assert_eq!(a.psql("SHOW walg.compression_method"), "lz4");
    let seg = archive_one(&a, "t1");
    let key = storage.wal_object(&seg).expect("segment archived");
    assert!(key.ends_with(".zst"), "the file's WALG_COMPRESSION_METHOD applies: {key}");
    assert!(
        a.log_text().contains("WALG_USE_WAL_DELTA in the config file is a WAL-G setting that walg_ext does not support"),
        "the ignored key is logged"
    );

    // Written in postgresql.auto.conf, even the built-in default wins over the file.
    a.set_and_reload("walg.compression_method", "'lz4'");
    std::thread::sleep(Duration::from_secs(1));
    let seg = archive_one(&a, "t2");
    let key = storage.wal_object(&seg).expect("segment archived");
    assert!(key.ends_with(".lz4"), "the GUC set to lz4 wins over the file: {key}");

    // Sizes take PostgreSQL's units and are stored in bytes.
    a.set_and_reload("walg.tar_size_threshold", "'512MB'");
    a.wait_for_value(
        "SELECT setting || ' ' || unit FROM pg_settings WHERE name = 'walg.tar_size_threshold'",
        "536870912 B",
        Duration::from_secs(10),
    );
    assert_eq!(a.psql("SHOW walg.tar_size_threshold"), "512MB");
    let err = a.try_psql("ALTER SYSTEM SET walg.upload_concurrency = 0").expect_err("out of range");
    assert!(err.contains("walg.upload_concurrency"), "{err}");

    // A typo in the file: every call that loads the configuration says which key and what was meant.
    let text = std::fs::read_to_string(&storage.config).unwrap();
    write_as_postgres(&storage.config, &format!("{text}WALG_COMPRESION_METHOD: 'brotli'\n"));
    let err = a.try_psql("SELECT count(*) FROM walg_backup_list()").expect_err("typo refused");
    assert!(
        err.contains("unknown setting WALG_COMPRESION_METHOD") && err.contains("did you mean WALG_COMPRESSION_METHOD?"),
        "{err}"
    );
    // A bad value: key, value and what is allowed.
    write_as_postgres(&storage.config, &format!("{text}WALG_UPLOAD_CONCURRENCY: many\n"));
    let err = a.try_psql("SELECT count(*) FROM walg_backup_list()").expect_err("bad value refused");
    assert!(err.contains("WALG_UPLOAD_CONCURRENCY (walg.upload_concurrency)") && err.contains("\"many\""), "{err}");
    // Fixed file: works again.
    write_as_postgres(&storage.config, &text);
    assert_eq!(a.psql("SELECT count(*) FROM walg_backup_list()"), "0");
    a.stop();
}
