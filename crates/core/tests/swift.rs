//! SwiftStorage against a real OpenStack Swift (Debian's packages, an all-in-one cluster shared
//! by the tests of this file; see pgrx-tests/src/swift_server.rs). Needs `make setup`.

#[path = "../../../pgrx-tests/src/s3server.rs"]
#[allow(dead_code)]
mod s3server;
#[path = "../../../pgrx-tests/src/swift_server.rs"]
#[allow(dead_code)]
mod swift_server;
mod conformance;
mod keystone;

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use keystone::Keystone;
use swift_server::SwiftServer;
use walg_core::config::{Config, Settings, StorageConfig};
use walg_core::storage::{get_bytes, Storage, SwiftStorage};

fn settings(auth_url: &str, prefix: &str, extra: &[(&str, &str)]) -> Settings {
    let mut s = Settings::new();
    s.set("WALG_SWIFT_PREFIX", prefix);
    s.set("OS_AUTH_URL", auth_url);
    s.set("OS_USERNAME", swift_server::USER);
    s.set("OS_PASSWORD", swift_server::KEY);
    for (k, v) in extra {
        s.set(*k, *v);
    }
    s
}

fn open(auth_url: &str, prefix: &str, extra: &[(&str, &str)]) -> Arc<dyn Storage> {
    let cfg = Config::from_settings(&settings(auth_url, prefix, extra)).unwrap();
    assert!(matches!(cfg.storage, StorageConfig::Swift(_)));
    cfg.open_storage().unwrap()
}

/// The conformance suite (conformance/mod.rs) on Swift; a fault is this client's relay going
/// away until healed.
#[test]
fn swift_storage_conforms() {
    let server = SwiftServer::shared();
    server.create_container("walg-conf");
    let relay = server.relay();
    let s = open(&server.auth_url_via(&relay), "swift://walg-conf/cluster/main", &[("WALG_SWIFT_MAX_RETRIES", "3")]);
    assert_eq!(s.describe(), format!("swift://walg-conf/cluster/main (auth {})", server.auth_url_via(&relay)));
    let cut = |_: &str| relay.stop();
    let heal = |_: &str| relay.start();
    conformance::run_all(&conformance::Target { storage: s.as_ref(), cut: &cut, heal: &heal });
    // Objects outside the storage's path do not show, nor do those of a sibling path.
    let other = open(&server.auth_url(), "swift://walg-conf/cluster/main2", &[]);
    other.put("wal_005/x", b"other").unwrap();
    assert!(!s.exists("wal_005/x").unwrap());
    assert!(s.list("").unwrap().iter().all(|o| !o.key.contains("main2") && !o.key.starts_with('/')));
    assert!(!s.has_dir("wal_005/").unwrap());
}

#[test]
fn missing_container_wrong_password_and_denied_are_errors_not_missing() {
    let server = SwiftServer::shared();
    // No such container: every read is an error saying so, never "missing".
    let s = open(&server.auth_url(), "swift://no-such-container/p", &[("WALG_SWIFT_MAX_RETRIES", "1")]);
    let started = Instant::now();
    conformance::assert_denied("get", s.get("wal_005/x").map(|o| o.is_some()), &["container no-such-container does not exist", "WALG_SWIFT_PREFIX"]);
    conformance::assert_denied("exists", s.exists("wal_005/x"), &["does not exist"]);
    conformance::assert_denied("list", s.list("wal_005/"), &["does not exist"]);
    conformance::assert_denied("has_dir", s.has_dir("wal_005/"), &["does not exist"]);
    conformance::assert_denied("put", s.put("wal_005/x", b"x"), &["does not exist"]);
    conformance::assert_denied("delete", s.delete("wal_005/x"), &["does not exist"]);
    let r = s.writer("wal_005/y").and_then(|mut w| {
        w.write_all(&[7u8; 3 << 20]).map_err(|e| walg_core::Error::storage("write", "y", e))?;
        w.finish()
    });
    conformance::assert_denied("streaming put", r, &["does not exist"]);
    assert!(started.elapsed().as_secs() < 10, "permanent errors are not retried: {:?}", started.elapsed());

    // A wrong password: refused at authentication, naming the settings to fix.
    server.create_container("walg-auth");
    let wrong = "wrong-pw-4417";
    let s = open(&server.auth_url(), "swift://walg-auth/p", &[("OS_PASSWORD", wrong)]);
    let e = conformance::assert_denied("get with a wrong password", s.get("x").map(|o| o.is_some()), &["OS_USERNAME / OS_PASSWORD"]);
    conformance::assert_hides("get with a wrong password", &e, &[wrong, swift_server::KEY]);
    conformance::assert_denied("list with a wrong password", s.list(""), &["OS_PASSWORD"]);

    // A user without rights on the container: denied (403), not "missing".
    let s = open(&server.auth_url(), "swift://walg-auth/p", &[("OS_USERNAME", swift_server::READER), ("OS_PASSWORD", swift_server::READER_KEY)]);
    conformance::assert_denied("get denied", s.get("x").map(|o| o.is_some()), &["access denied", "walg-auth"]);
    conformance::assert_denied("exists denied", s.exists("x"), &["access denied"]);
    conformance::assert_denied("list denied", s.list(""), &["access denied"]);

    // An auth URL that is no Swift auth endpoint.
    let s = open(&format!("http://127.0.0.1:{}/nothing-here", server.port), "swift://walg-auth/p", &[]);
    conformance::assert_denied("wrong auth URL", s.exists("x"), &["OS_AUTH_URL"]);
}

/// Swift's bare 404 versus a 404 from something else: a storage URL that is not Swift (a
/// plain HTTP server answering 404 to everything) is an error, never "missing".
#[test]
fn a_bare_404_is_not_missing() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let text = String::from_utf8_lossy(&buf[..n]);
                    let resp = if text.starts_with("GET /auth/v1.0") {
                        format!("HTTP/1.1 200 OK\r\nX-Storage-Url: http://127.0.0.1:{port}/v1/AUTH_x\r\nX-Auth-Token: t\r\nContent-Length: 0\r\n\r\n")
                    } else {
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found".to_string()
                    };
                    if c.write_all(resp.as_bytes()).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let s = open(&format!("http://127.0.0.1:{port}/auth/v1.0"), "swift://c/p", &[("WALG_SWIFT_MAX_RETRIES", "0")]);
    conformance::assert_denied("get", s.get("x").map(|o| o.is_some()), &["without Swift's X-Trans-Id"]);
    conformance::assert_denied("exists", s.exists("x"), &["without Swift's X-Trans-Id"]);
    conformance::assert_denied("list", s.list(""), &["without Swift's X-Trans-Id"]);
}

/// An expired token (memcached forgot the user's token): the next request gets a 401, the client
/// authenticates again and the request goes through, streaming uploads included.
#[test]
fn expired_token_is_renewed() {
    let _one = EXPIRING_USER.lock().unwrap_or_else(|p| p.into_inner());
    let server = SwiftServer::shared();
    server.create_container("walg-token");
    let user = [("OS_USERNAME", swift_server::EXPIRING), ("OS_PASSWORD", swift_server::EXPIRING_KEY)];
    let cfg = Config::from_settings(&settings(&server.auth_url(), "swift://walg-token/p", &user)).unwrap();
    let StorageConfig::Swift(sw) = cfg.storage else { panic!() };
    // Without the retry decorator: the renewal itself must make these pass.
    let s = SwiftStorage::new(sw);
    s.put("a", b"1").unwrap();
    server.expire_token();
    assert_eq!(get_bytes(&s, "a").unwrap().unwrap(), b"1");
    server.expire_token();
    assert!(s.exists("a").unwrap());
    server.expire_token();
    assert_eq!(s.list("").unwrap().len(), 1);
    server.expire_token();
    s.put("b", b"2").unwrap();
    server.expire_token();
    s.delete("b").unwrap();
    assert!(!s.exists("b").unwrap());
    // A streaming upload whose token expired before it starts.
    server.expire_token();
    let mut w = s.writer("c").unwrap();
    w.write_all(&[1u8; 3 << 20]).unwrap();
    assert_eq!(w.finish().unwrap(), 3 << 20);
    assert_eq!(get_bytes(&s, "c").unwrap().unwrap().len(), 3 << 20);
}

/// Tests that expire `swift_server::EXPIRING`'s token take turns: one test's expiry between
/// another's renewal and its repeated request would fail that request.
static EXPIRING_USER: Mutex<()> = Mutex::new(());

/// What the stand-in Keystone (keystone/mod.rs) expects; domains and project differ from their
/// defaults so that each must be passed on.
const KS: keystone::Expect = keystone::Expect {
    user: "walg-ks",
    user_domain: "Users",
    password: "ks pw:Sekr3t",
    project: "backups",
    project_domain: "Projects",
};

/// Settings for Keystone v3 at `ks` (OS_AUTH_URL ending in /v3: ST_AUTH_VERSION guessed).
fn keystone_settings(ks: &Keystone, prefix: &str, extra: &[(&str, &str)]) -> Settings {
    let mut all = vec![
        ("OS_USERNAME", KS.user),
        ("OS_PASSWORD", KS.password),
        ("OS_USER_DOMAIN_NAME", KS.user_domain),
        ("OS_PROJECT_NAME", KS.project),
        ("OS_PROJECT_DOMAIN_NAME", KS.project_domain),
        ("OS_REGION_NAME", keystone::REGION),
    ];
    all.extend_from_slice(extra);
    settings(&ks.auth_url(), prefix, &all)
}

/// Keystone v3 password login (the stand-in checks every field of the request and hands out a
/// real TempAuth token), then puts, a streaming put, gets, lists and deletes through the real
/// Swift at the catalog's public endpoint in OS_REGION_NAME; one login serves them all.
#[test]
fn keystone_v3_login_then_real_swift() {
    let server = SwiftServer::shared();
    server.create_container("walg-ks");
    let ks = Keystone::start(KS, server.port, (swift_server::USER, swift_server::KEY));
    let cfg = Config::from_settings(&keystone_settings(&ks, "swift://walg-ks/pg", &[])).unwrap();
    assert!(!format!("{cfg:?}").contains(KS.password), "Config's Debug shows the password");
    let s = cfg.open_storage().unwrap();
    s.put("wal_005/a", b"via keystone").unwrap();
    let big = conformance::data(3 << 20, 11);
    let mut w = s.writer("basebackups_005/big").unwrap();
    w.write_all(&big).unwrap();
    assert_eq!(w.finish().unwrap(), big.len() as u64);
    assert_eq!(get_bytes(s.as_ref(), "wal_005/a").unwrap().unwrap(), b"via keystone");
    assert!(get_bytes(s.as_ref(), "basebackups_005/big").unwrap().unwrap() == big);
    let keys: Vec<_> = s.list("").unwrap().into_iter().map(|o| o.key).collect();
    assert_eq!(keys, vec!["basebackups_005/big", "wal_005/a"]);
    assert!(s.has_dir("wal_005/").unwrap());
    assert!(get_bytes(s.as_ref(), "wal_005/none").unwrap().is_none(), "missing, as Swift said");
    // The objects are in Swift: TempAuth's own client sees them.
    let direct = open(&server.auth_url(), "swift://walg-ks/pg", &[]);
    assert_eq!(get_bytes(direct.as_ref(), "wal_005/a").unwrap().unwrap(), b"via keystone");
    s.delete("wal_005/a").unwrap();
    assert!(!direct.exists("wal_005/a").unwrap());
    assert_eq!(ks.logins(), 1, "one token for every request");
}

/// A token Swift refuses (401: handed out bad, or expired later) makes the client log in to
/// Keystone again and repeat the request, streaming uploads included.
#[test]
fn keystone_token_refused_by_swift_logs_in_again() {
    let _one = EXPIRING_USER.lock().unwrap_or_else(|p| p.into_inner());
    let server = SwiftServer::shared();
    server.create_container("walg-ks-token");
    let ks = Keystone::start(KS, server.port, (swift_server::EXPIRING, swift_server::EXPIRING_KEY));
    let cfg = Config::from_settings(&keystone_settings(&ks, "swift://walg-ks-token/p", &[])).unwrap();
    let StorageConfig::Swift(sw) = cfg.storage else { panic!() };
    // Without the retry decorator: the new login itself must make these pass.
    let s = SwiftStorage::new(sw);
    ks.bad_token_next();
    s.put("a", b"1").unwrap();
    assert_eq!(ks.logins(), 2, "the bad token was refused and a new one fetched");
    server.expire_token();
    assert_eq!(get_bytes(&s, "a").unwrap().unwrap(), b"1");
    assert_eq!(ks.logins(), 3, "the expired token was replaced");
    assert!(s.exists("a").unwrap());
    assert_eq!(ks.logins(), 3, "a valid token is kept");
    server.expire_token();
    let mut w = s.writer("b").unwrap();
    w.write_all(&[2u8; 3 << 20]).unwrap();
    assert_eq!(w.finish().unwrap(), 3 << 20);
    assert_eq!(ks.logins(), 4);
    assert_eq!(get_bytes(&s, "b").unwrap().unwrap().len(), 3 << 20);
}

/// Keystone refusing the login (401) is an error naming the settings to fix, not retried, never
/// showing the password; so is a catalog without the configured region's endpoint.
#[test]
fn keystone_refusal_names_the_settings_to_fix() {
    let server = SwiftServer::shared();
    let ks = Keystone::start(KS, server.port, (swift_server::USER, swift_server::KEY));
    let wrong = "not-the-ks-password";
    for (what, extra) in [
        ("wrong password", [("OS_PASSWORD", wrong)]),
        ("wrong user", [("OS_USERNAME", "someone")]),
        ("wrong project", [("OS_PROJECT_NAME", "other")]),
        ("wrong user domain", [("OS_USER_DOMAIN_NAME", "Default")]),
    ] {
        let before = ks.logins();
        let mut all = vec![("WALG_SWIFT_MAX_RETRIES", "3")];
        all.extend_from_slice(&extra);
        let s = Config::from_settings(&keystone_settings(&ks, "swift://walg-ks/p", &all)).unwrap().open_storage().unwrap();
        let started = Instant::now();
        let says = ["refused the credentials (401)", "OS_USERNAME / OS_PASSWORD", "OS_PROJECT_NAME", "OS_USER_DOMAIN_NAME"];
        let e = conformance::assert_denied(what, s.exists("x"), &says);
        conformance::assert_hides(what, &e, &[wrong, KS.password]);
        assert_eq!(ks.logins(), before + 1, "{what}: a refused login is not retried");
        assert!(started.elapsed().as_secs() < 5, "{what}: {:?}", started.elapsed());
    }
    let s = Config::from_settings(&keystone_settings(&ks, "swift://walg-ks/p", &[("OS_REGION_NAME", "RegionThree")])).unwrap().open_storage().unwrap();
    conformance::assert_denied("unknown region", s.exists("x"), &["no public object-store endpoint in region RegionThree", "OS_REGION_NAME"]);
}

#[test]
fn endpoint_down_is_retried_then_reported_and_recovers() {
    let server = SwiftServer::shared();
    server.create_container("walg-down");
    let relay = server.relay();
    let s = open(&server.auth_url_via(&relay), "swift://walg-down/x", &[("WALG_SWIFT_MAX_RETRIES", "2")]);
    s.put("before", b"1").unwrap();
    relay.stop();
    conformance::assert_unreachable("get while down", s.get("before").map(|o| o.is_some()), &[]);
    relay.start();
    assert_eq!(get_bytes(s.as_ref(), "before").unwrap().unwrap(), b"1");
    // Down while a put is retried, back before the retries run out: the put succeeds.
    relay.stop();
    let s2 = open(&server.auth_url_via(&relay), "swift://walg-down/x", &[("WALG_SWIFT_MAX_RETRIES", "8")]);
    let t = std::thread::spawn(move || s2.put("during", b"2"));
    std::thread::sleep(std::time::Duration::from_millis(300));
    relay.start();
    t.join().unwrap().unwrap();
    assert_eq!(get_bytes(s.as_ref(), "during").unwrap().unwrap(), b"2");
}

/// Throughput and time of a 200 MB streaming put and get (the README's measurement). Run with
/// `--ignored --nocapture`.
#[test]
#[ignore]
fn measure_200mb() {
    let server = SwiftServer::shared();
    eprintln!("swift started in {:?}", server.started_in);
    server.create_container("walg-measure");
    let s = open(&server.auth_url(), "swift://walg-measure/m", &[]);
    let block = conformance::data(1 << 20, 5);
    let started = Instant::now();
    let mut w = s.writer("big").unwrap();
    for _ in 0..200 {
        w.write_all(&block).unwrap();
    }
    w.finish().unwrap();
    let put = started.elapsed();
    let started = Instant::now();
    let mut r = s.get("big").unwrap().unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0usize;
    loop {
        let k = r.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        n += k;
    }
    let get = started.elapsed();
    assert_eq!(n, 200 << 20);
    let mb = 200.0 * 1.048576;
    eprintln!("200 MiB streaming put {put:?} ({:.0} MB/s), get {get:?} ({:.0} MB/s)", mb / put.as_secs_f64(), mb / get.as_secs_f64());
    // The same bytes in one PUT with a Content-Length (no chunked body, no queue).
    let whole: Vec<u8> = (0..200).flat_map(|_| block.iter().copied()).collect();
    let started = Instant::now();
    s.put("big2", &whole).unwrap();
    let put2 = started.elapsed();
    eprintln!("200 MiB put of a buffer {put2:?} ({:.0} MB/s)", mb / put2.as_secs_f64());
    s.delete("big").unwrap();
    s.delete("big2").unwrap();
}
