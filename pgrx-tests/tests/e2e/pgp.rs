//! OpenPGP encryption end to end, as a WAL-G user runs it: the server holds only the public key
//! (`walg.pgp_key_path`), archives and backs up; `walg-ext` restores and replays with the secret
//! key and its passphrase from the config file. The stored objects are OpenPGP messages that the
//! public key alone cannot open (wal-fetch exits 126 naming the object, not 1), and the key
//! material is in no setting and not in the server log.

use std::time::Duration;

use walg_e2e::cmd::write_as_postgres;
use walg_e2e::{assert_dumps_equal, require_installed, Backend, Cluster, ScratchDir, Storage};

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../crates/core/testdata");

#[test]
fn pgp_public_key_on_the_server_secret_key_restores() {
    require_installed();
    let keys = ScratchDir::new("pgp-keys");
    let public = keys.path().join("public.asc");
    let secret = keys.path().join("secret.asc");
    write_as_postgres(&public, &std::fs::read_to_string(format!("{TESTDATA}/pgp-test-public.asc")).unwrap());
    write_as_postgres(&secret, &std::fs::read_to_string(format!("{TESTDATA}/pgp-test-secret.asc")).unwrap());
    // The config file (restore side) has the secret key and its passphrase.
    let secret_path = secret.display().to_string();
    let storage = Storage::with_backend(
        Backend::File,
        "pgp",
        "zstd",
        &[("WALG_PGP_KEY_PATH", secret_path.as_str()), ("WALG_PGP_KEY_PASSPHRASE", "walg-test")],
    );
    // The server: the public key only.
    let conf = format!("{}walg.pgp_key_path = '{}'\n", storage.extension_conf(), public.display());
    let mut a = Cluster::init("pgp-a", &conf);
    a.start();
    a.pgbench_init(1);
    a.psql("CREATE EXTENSION walg_ext");
    let seg0 = a.switch_wal();
    a.wait_archived(&seg0, Duration::from_secs(120));
    let obj = storage.expected_wal_object(&seg0);
    let raw = storage.read(&obj);
    assert!(matches!(raw[0], 0x84 | 0x85 | 0xC1), "{obj} is not an OpenPGP message (first byte {:#x})", raw[0]);
    let name = a.psql("SELECT walg_backup_push()");
    assert!(name.starts_with("base_"), "{name}");
    a.psql("CREATE TABLE after_backup AS SELECT g AS id FROM generate_series(1, 3000) g");
    let last = a.switch_wal();
    a.wait_archived(&last, Duration::from_secs(120));
    let dump_a = a.dumpall();
    assert_eq!(a.psql("SHOW walg.pgp_key_path"), public.display().to_string());
    assert!(!a.log_text().contains("PGP PRIVATE KEY"), "key material in the server log");

    // The public key alone cannot restore: 126 (not "missing"), naming the object.
    let scratch = ScratchDir::new("pgp-fetch");
    let dest = scratch.path().join("seg");
    let env: Vec<(String, String)> = storage
        .env()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("WALG_PGP_"))
        .chain([("WALG_PGP_KEY_PATH".to_string(), public.display().to_string())])
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = walg_e2e::storage::walg_ext(&["wal-fetch", &seg0, &dest.display().to_string()], &env);
    assert_eq!(out.code, Some(126), "wal-fetch with the public key only\n{}", out.describe());
    assert!(out.stderr.contains(&obj) && out.stderr.contains("public key"), "{}", out.describe());
    assert!(!dest.exists());

    // The secret key restores the backup and replays the archive.
    let mut b = Cluster::restore_into("pgp-b", &storage, "LATEST", "");
    b.start();
    b.wait_recovery_done(Duration::from_secs(300));
    assert_eq!(b.psql("SELECT count(*) FROM after_backup"), "3000");
    assert_dumps_equal(&dump_a, &b.dumpall(), "pgp: A vs restored B");
    b.stop();
    a.stop();
}
