//! The demo story with assertions: archive through the extension, take a base backup from SQL,
//! write more, restore LATEST with `walg-ext backup-fetch` into a second cluster that replays the
//! archived WAL through `walg-ext wal-fetch`, and compare pg_dumpall of both.

use std::time::Duration;

use walg_e2e::{assert_dumps_equal, require_installed, Backend, Cluster, Storage};

fn story(backend: Backend, compression: &str, level: Option<i32>, encrypted: bool) {
    require_installed();
    let ext = walg_e2e::storage::extension_for(compression);
    let enc = if encrypted { "-enc" } else { "" };
    let label = format!("story-{backend:?}-{compression}{enc}").to_lowercase();
    let storage = Storage::with_options(backend, &label, compression, level, encrypted, &[]);
    let mut a = Cluster::init(&format!("{label}-a"), &storage.extension_conf());
    a.start();

    // Data before the backup.
    a.pgbench_init(2);
    a.psql("CREATE EXTENSION walg_ext");

    // Archiving works through the extension before any backup.
    let seg0 = a.switch_wal();
    a.wait_archived(&seg0, Duration::from_secs(120));
    let obj0 = storage.expected_wal_object(&seg0);
    assert!(
        storage.has(&obj0),
        "archived {seg0} should be stored as {obj0} in {}; wal_005 holds {:?}",
        storage.describe(),
        storage.wal_objects()
    );

    // Base backup from SQL.
    let name = a.psql("SELECT walg_backup_push()");
    assert!(
        name.starts_with("base_") && name.len() == "base_".len() + 24,
        "walg_backup_push() returned {name:?}, expected base_<24 hex digits>"
    );
    let listed = a.psql(
        "SELECT backup_name, wal_file_name = substr(backup_name, 6), \
                pg_walfile_name(start_lsn) = wal_file_name, start_lsn <= finish_lsn, \
                start_time <= finish_time, uncompressed_size > 0, compressed_size > 0, \
                is_permanent \
         FROM walg_backup_list()",
    );
    assert_eq!(
        listed,
        format!("{name}|t|t|t|t|t|t|f"),
        "walg_backup_list() must have exactly the new backup (name, wal_file_name matches, \
         start_lsn in it, start <= finish, sizes > 0, not permanent); full rows:\n{}",
        a.psql("SELECT * FROM walg_backup_list()")
    );
    assert!(
        storage.has(&storage.sentinel(&name)),
        "sentinel {} missing; basebackups_005 holds {:?}",
        storage.sentinel(&name),
        storage.keys("basebackups_005/")
    );
    let sentinel: serde_json::Value = serde_json::from_slice(
        &storage.read(&storage.sentinel(&name)),
    )
    .expect("the sentinel is plain JSON");
    assert!(sentinel.get("LSN").and_then(|v| v.as_u64()).is_some(), "sentinel LSN: {sentinel}");
    assert!(sentinel.get("FinishLSN").and_then(|v| v.as_u64()).is_some(), "FinishLSN: {sentinel}");
    let parts = storage.tar_partitions(&name);
    assert!(
        parts.contains(&format!("part_001.tar.{ext}").trim_end_matches('.').to_string()),
        "tar_partitions of {name} should hold part_001.tar.{ext}; has {parts:?}"
    );

    // Changes after the backup, which only WAL replay can bring back.
    a.pgbench(&["-n", "-t", "300", "-c", "2"]);
    a.psql(
        "CREATE TABLE after_backup(id int PRIMARY KEY, note text); \
         INSERT INTO after_backup SELECT g, md5(g::text) FROM generate_series(1, 5000) g; \
         UPDATE pgbench_branches SET filler = 'after backup' WHERE bid = 1",
    );
    let last = a.switch_wal();
    a.wait_archived(&last, Duration::from_secs(180));
    assert!(
        storage.has(&storage.expected_wal_object(&last)),
        "{last} archived but {} is missing",
        storage.expected_wal_object(&last)
    );
    let backup_history = format!(".backup.{ext}");
    assert!(
        storage.wal_objects().iter().any(|o| o.ends_with(backup_history.trim_end_matches('.'))),
        "the backup history file (<segment>.<offset>.backup) is archived too: {:?}",
        storage.wal_objects()
    );
    let (_, archived, failed, last_failed) = a.archiver_stats().unwrap();
    assert_eq!(failed, 0, "archiver failures (last failed {last_failed}); archived {archived}");
    let dump_a = a.dumpall();
    let history_a = a.psql("SELECT count(*) FROM pgbench_history");
    assert_eq!(history_a, "600", "2 clients x 300 transactions");

    // The CLI sees the backup.
    let out = storage.walg_ext(&["backup-list"]);
    assert!(out.success(), "walg-ext backup-list\n{}", out.describe());
    assert!(out.stdout.contains(&name), "backup-list shows {name}:\n{}", out.stdout);
    let out = storage.walg_ext(&["backup-list", "--json"]);
    assert!(out.success(), "walg-ext backup-list --json\n{}", out.describe());
    let json: serde_json::Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("backup-list --json is not JSON ({e}):\n{}", out.stdout));
    let arr = json.as_array().unwrap_or_else(|| panic!("backup-list --json is not an array: {json}"));
    assert_eq!(arr.len(), 1, "exactly one backup listed: {json}");
    assert!(json.to_string().contains(&name), "backup-list --json lists {name}: {json}");
    // The environment configuration works as well as the config file.
    let out = storage.walg_ext_env(&["backup-list"]);
    assert!(out.success() && out.stdout.contains(&name), "backup-list via the environment\n{}", out.describe());

    // Restore LATEST into B and replay.
    if encrypted {
        check_encrypted(&a, &storage, &seg0, &name);
    }
    let mut b = Cluster::restore_into(&format!("{label}-b"), &storage, "LATEST", "");
    b.start();
    b.wait_recovery_done(Duration::from_secs(300));
    assert_eq!(b.psql("SELECT count(*) FROM pgbench_history"), history_a);
    assert_eq!(b.psql("SELECT count(*) FROM after_backup"), "5000");
    assert_eq!(b.psql("SELECT count(*) FROM pgbench_accounts"), "200000");
    assert_dumps_equal(&dump_a, &b.dumpall(), &format!("{label}: A vs restored B"));
    // The restored server promoted to a new timeline and is writable.
    assert_ne!(
        b.psql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"),
        "00000001",
        "B should run on a new timeline after promotion"
    );
    b.psql("CREATE TABLE written_on_b(x int); INSERT INTO written_on_b VALUES (1)");

    b.stop();
    a.stop();
}

/// What an encrypted storage must show: objects the reference tool cannot decompress as they
/// are, clear errors without the key, sentinels readable without it, no key in any setting.
fn check_encrypted(a: &Cluster, storage: &Storage, seg0: &str, backup: &str) {
    let obj = std::path::PathBuf::from(format!("/tmp/walg-e2e-encrypted-{seg0}"));
    std::fs::write(&obj, storage.read(&storage.expected_wal_object(seg0))).unwrap();
    let tool: &[&str] = match storage.compression.as_str() {
        "zstd" => &["zstd", "-d", "-c", "-q"],
        "lzma" => &["xz", "--format=lzma", "-d", "-c"],
        "brotli" => &["brotli", "-d", "-c"],
        _ => &["lz4", "-d", "-c", "-q"],
    };
    let out = std::process::Command::new(tool[0]).args(&tool[1..]).arg(&obj).output().expect("run the decompressor");
    assert!(!out.status.success(), "{} decoded the encrypted {} as is", tool[0], obj.display());
    let _ = std::fs::remove_file(&obj);

    // No key: wal-fetch fails with 126 (not "missing"), naming the object and the key settings.
    let env: Vec<(String, String)> =
        storage.env().into_iter().filter(|(k, _)| !k.starts_with("WALG_LIBSODIUM_")).collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = walg_e2e::storage::walg_ext(&["wal-fetch", seg0, "/tmp/walg-e2e-nokey-wal"], &env);
    assert_eq!(out.code, Some(126), "wal-fetch without the key\n{}", out.describe());
    assert!(
        out.stderr.contains(seg0) && out.stderr.contains("WALG_LIBSODIUM_KEY"),
        "wal-fetch without the key must name the object and the key setting\n{}",
        out.describe()
    );
    assert!(!std::path::Path::new("/tmp/walg-e2e-nokey-wal").exists(), "no file may be left behind");
    // Listing reads only plain JSON: works without the key.
    let out = walg_e2e::storage::walg_ext(&["backup-list"], &env);
    assert!(out.success() && out.stdout.contains(backup), "backup-list without the key\n{}", out.describe());
    // The key through the environment (WALG_LIBSODIUM_KEY) works as well as the key file.
    let out = storage.walg_ext_env(&["wal-fetch", seg0, "/tmp/walg-e2e-envkey-wal"]);
    assert!(out.success(), "wal-fetch with WALG_LIBSODIUM_KEY\n{}", out.describe());
    let _ = std::fs::remove_file("/tmp/walg-e2e-envkey-wal");

    // The path is a setting; the key is in no setting and not in the server log.
    assert_eq!(
        a.psql("SHOW walg.libsodium_key_path"),
        storage.key_path.as_ref().unwrap().display().to_string()
    );
    let key = walg_e2e::storage::TEST_KEY_HEX;
    assert_eq!(a.psql(&format!("SELECT count(*) FROM pg_settings WHERE setting LIKE '%{key}%'")), "0");
    assert!(!a.log_text().contains(key), "the key appears in the server log");
}

#[test]
fn story_lz4() {
    story(Backend::File, "lz4", None, false);
}

/// zstd at a chosen level, encrypted with libsodium.
#[test]
fn story_zstd_encrypted() {
    story(Backend::File, "zstd", Some(5), true);
}

#[test]
fn story_brotli() {
    story(Backend::File, "brotli", None, false);
}

/// lzma at level 1 (the default, 6, is slow for a test), encrypted.
#[test]
fn story_lzma_encrypted() {
    story(Backend::File, "lzma", Some(1), true);
}

#[test]
fn story_none() {
    story(Backend::File, "none", None, false);
}

#[test]
fn story_s3_lz4() {
    story(Backend::S3, "lz4", None, false);
}

/// The story on Azure Blob (Azurite): archive, backups, restore and replay through the
/// azure backend, a block-list upload per tar part.
#[test]
fn story_azure_lz4() {
    story(Backend::Azure, "lz4", None, false);
}

/// The story on OpenStack Swift (a real all-in-one cluster): archive, backups, restore and
/// replay through the swift backend, a chunked streaming PUT per tar part.
#[test]
fn story_swift() {
    story(Backend::Swift, "lz4", None, false);
}

/// The story on SFTP (OpenSSH's sshd): archive, backups, restore and replay through the sftp
/// backend, the server (user postgres) logging in with the test key.
#[test]
fn story_sftp_lz4() {
    story(Backend::Sftp, "lz4", None, false);
}

/// The story on Google Cloud Storage (fake-gcs-server): archive, backups, restore and replay
/// through the gcs backend, a resumable upload per tar part over 1 MiB.
#[test]
fn story_gcs_lz4() {
    story(Backend::Gcs, "lz4", None, false);
}

/// S3 with zstd at level 1 (the benchmark's setting), encrypted.
#[test]
fn story_s3_zstd_encrypted() {
    story(Backend::S3, "zstd", Some(1), true);
}
