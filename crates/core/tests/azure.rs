//! AzureStorage against Azurite (Microsoft's emulator, shared by the tests of this file; see
//! pgrx-tests/src/azurite.rs). Needs `make setup` (installs Azurite into /opt/walg-azurite).

#[path = "../../../pgrx-tests/src/s3server.rs"]
#[allow(dead_code)]
mod s3server;
#[path = "../../../pgrx-tests/src/azurite.rs"]
mod azurite;
mod conformance;

use std::sync::Arc;
use std::time::Instant;

use azurite::Azurite;
use walg_core::config::{Config, Settings, StorageConfig};
use walg_core::storage::{get_bytes, Storage};

fn settings(endpoint: &str, prefix: &str, extra: &[(&str, &str)]) -> Settings {
    let mut s = Settings::new();
    s.set("WALG_AZ_PREFIX", prefix);
    s.set("AZURE_STORAGE_ACCOUNT", azurite::ACCOUNT);
    s.set("AZURE_STORAGE_ACCESS_KEY", azurite::KEY);
    s.set("WALG_AZURE_ENDPOINT", endpoint);
    for (k, v) in extra {
        s.set(*k, *v);
    }
    s
}

fn open(endpoint: &str, prefix: &str, extra: &[(&str, &str)]) -> Arc<dyn Storage> {
    let cfg = Config::from_settings(&settings(endpoint, prefix, extra)).unwrap();
    assert!(matches!(cfg.storage, StorageConfig::Azure(_)));
    cfg.open_storage().unwrap()
}

/// The conformance suite (conformance/mod.rs) on Azure Blob: 1 MiB blocks, so the 12 MB object
/// is a committed block list; a fault is this client's relay going away until healed.
#[test]
fn azure_storage_conforms() {
    let server = Azurite::shared();
    server.create_container("walg-conf");
    let relay = server.relay();
    let s = open(
        &server.endpoint_via(&relay),
        "azure://walg-conf/cluster/main",
        &[("WALG_AZURE_BUFFER_SIZE", "1048576"), ("WALG_AZURE_MAX_BUFFERS", "3"), ("WALG_AZURE_MAX_RETRIES", "3")],
    );
    assert_eq!(s.describe(), format!("azure://walg-conf/cluster/main (endpoint {})", server.endpoint_via(&relay)));
    let cut = |_: &str| relay.stop();
    let heal = |_: &str| relay.start();
    conformance::run_all(&conformance::Target { storage: s.as_ref(), cut: &cut, heal: &heal });
    // Objects outside the storage's path do not show.
    let other = open(&server.endpoint(), "azure://walg-conf/cluster/other", &[]);
    other.put("wal_005/x", b"other").unwrap();
    assert!(!s.exists("wal_005/x").unwrap());
    assert!(s.list("").unwrap().iter().all(|o| !o.key.contains("other")));
}

#[test]
fn missing_container_and_wrong_key_are_errors_not_missing() {
    let server = Azurite::shared();
    // No such container: every read is an error saying so, never "missing".
    let s = open(&server.endpoint(), "azure://no-such-container/p", &[("WALG_AZURE_MAX_RETRIES", "1")]);
    let started = Instant::now();
    conformance::assert_denied("get", s.get("wal_005/x").map(|o| o.is_some()), &["container no-such-container does not exist", "WALG_AZ_PREFIX"]);
    conformance::assert_denied("exists", s.exists("wal_005/x"), &["does not exist"]);
    conformance::assert_denied("list", s.list("wal_005/"), &["does not exist"]);
    conformance::assert_denied("has_dir", s.has_dir("wal_005/"), &["does not exist"]);
    conformance::assert_denied("put", s.put("wal_005/x", b"x"), &["does not exist"]);
    assert!(started.elapsed().as_secs() < 5, "permanent errors are not retried: {:?}", started.elapsed());

    // A wrong key: denied, saying which setting to fix.
    server.create_container("walg-auth");
    let wrong = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk=";
    let s = open(&server.endpoint(), "azure://walg-auth/p", &[("AZURE_STORAGE_ACCESS_KEY", wrong)]);
    let e = conformance::assert_denied("get with a wrong key", s.get("x").map(|o| o.is_some()), &["AZURE_STORAGE_ACCESS_KEY"]);
    conformance::assert_hides("get with a wrong key", &e, &[wrong]);
    conformance::assert_denied("exists with a wrong key", s.exists("x"), &["AZURE_STORAGE_ACCESS_KEY"]);
}

#[test]
fn endpoint_down_is_retried_then_reported_and_recovers() {
    let server = Azurite::shared();
    server.create_container("walg-down");
    let relay = server.relay();
    let s = open(&server.endpoint_via(&relay), "azure://walg-down/x", &[("WALG_AZURE_MAX_RETRIES", "2")]);
    s.put("before", b"1").unwrap();
    relay.stop();
    conformance::assert_unreachable("get while down", s.get("before").map(|o| o.is_some()), &[]);
    relay.start();
    assert_eq!(get_bytes(s.as_ref(), "before").unwrap().unwrap(), b"1");
    // Down while a put is retried, back before the retries run out: the put succeeds.
    relay.stop();
    let back = std::thread::spawn({
        let relay_port = relay.port;
        move || {
            std::thread::sleep(std::time::Duration::from_millis(150));
            relay_port
        }
    });
    let s2 = open(&server.endpoint_via(&relay), "azure://walg-down/x", &[("WALG_AZURE_MAX_RETRIES", "8")]);
    let t = std::thread::spawn(move || s2.put("during", b"2"));
    back.join().unwrap();
    relay.start();
    t.join().unwrap().unwrap();
    assert_eq!(get_bytes(s.as_ref(), "during").unwrap().unwrap(), b"2");
}
