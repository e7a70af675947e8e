//! A real OpenStack Swift (Debian 12's swift-proxy, swift-account, swift-container,
//! swift-object 2.30, installed by scripts/setup.sh) as the Swift test server: an all-in-one,
//! single-replica cluster in a temporary directory, with TempAuth (`test:tester` / `testing`)
//! and memcached for its tokens.
//!
//! One cluster per test process, started on first use on free loopback ports and shared by
//! every test in the process (`SwiftServer::shared()`); each test uses its own container. A
//! watchdog shell stops the servers and removes the directory when the test process is gone. A
//! test that breaks the connection gets its own relay (`relay()`), so it never disturbs the
//! others. Limits: one replica on one device (no replication, no updaters, auditors or
//! expirers), and a 1-partition ring: enough for the object API, not for a load test.
//!
//! Only std: this file is also compiled into walg-core's integration tests (`#[path]`), next to
//! s3server.rs (whose Relay it uses).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::s3server::{free_port, spawn_watchdog, wait_for_port, Relay};

/// TempAuth's user (account `test`, user `tester`, an admin of the account) and key.
pub const USER: &str = "test:tester";
pub const KEY: &str = "testing";
/// A user of the same account without rights on its containers (TempAuth: no `.admin`).
pub const READER: &str = "test:reader";
pub const READER_KEY: &str = "reading";
/// An admin of the account whose token `expire_token` forgets (only its own: the other users'
/// clients, in tests running at the same time, keep theirs).
pub const EXPIRING: &str = "test:expiring";
pub const EXPIRING_KEY: &str = "expiring";

pub struct SwiftServer {
    pub port: u16,
    memcached: u16,
    dir: PathBuf,
    /// How long the cluster took to answer after the start.
    pub started_in: Duration,
}

/// Rings of one device each, built in one Python process (swift-ring-builder would be nine
/// slower ones): argv = directory, account port, container port, object port.
const RINGS_PY: &str = r#"
import sys
from swift.common.ring import RingBuilder
d = sys.argv[1]
for kind, port in zip(('account', 'container', 'object'), sys.argv[2:5]):
    b = RingBuilder(0, 1, 1)
    b.add_dev({'id': 0, 'region': 1, 'zone': 1, 'ip': '127.0.0.1', 'port': int(port), 'device': 'd1', 'weight': 1})
    b.rebalance()
    b.get_ring().save('%s/%s.ring.gz' % (d, kind))
"#;

fn server_conf(dir: &Path, kind: &str, port: u16) -> String {
    format!(
        "[DEFAULT]\nbind_ip = 127.0.0.1\nbind_port = {port}\nworkers = 0\ndevices = {d}/node\nmount_check = false\n\
         swift_dir = {d}\nlog_level = WARNING\n[pipeline:main]\npipeline = {kind}-server\n[app:{kind}-server]\nuse = egg:swift#{kind}\n",
        d = dir.display()
    )
}

fn proxy_conf(dir: &Path, port: u16, memcached: u16) -> String {
    format!(
        "[DEFAULT]\nbind_ip = 127.0.0.1\nbind_port = {port}\nworkers = 0\nswift_dir = {d}\nlog_level = WARNING\n\
         [pipeline:main]\npipeline = catch_errors proxy-logging cache tempauth proxy-logging-final proxy-server\n\
         [app:proxy-server]\nuse = egg:swift#proxy\naccount_autocreate = true\n\
         [filter:tempauth]\nuse = egg:swift#tempauth\nuser_test_tester = {KEY} .admin\nuser_test_reader = {READER_KEY}\nuser_test_expiring = {EXPIRING_KEY} .admin\ntoken_life = 86400\n\
         [filter:cache]\nuse = egg:swift#memcache\nmemcache_servers = 127.0.0.1:{memcached}\n\
         [filter:catch_errors]\nuse = egg:swift#catch_errors\n\
         [filter:proxy-logging]\nuse = egg:swift#proxy_logging\n[filter:proxy-logging-final]\nuse = egg:swift#proxy_logging\n",
        d = dir.display()
    )
}

/// One HTTP/1.1 request with `Connection: close`: (status, response head).
fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: 0\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, resp))
}

fn head_value(resp: &str, name: &str) -> Option<String> {
    resp.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

impl SwiftServer {
    /// The process's Swift, started on first use. Panics (saying to run `make setup`) when the
    /// Debian packages are not installed.
    pub fn shared() -> &'static SwiftServer {
        static SERVER: OnceLock<SwiftServer> = OnceLock::new();
        SERVER.get_or_init(SwiftServer::start)
    }

    fn start() -> SwiftServer {
        for bin in ["/usr/bin/swift-proxy-server", "/usr/bin/swift-object-server", "/usr/bin/memcached"] {
            assert!(Path::new(bin).is_file(), "{bin} is missing: run `make setup` (scripts/setup.sh installs Debian's swift packages and memcached)");
        }
        let started = Instant::now();
        let (port, account, container, object, memcached) = (free_port(), free_port(), free_port(), free_port(), free_port());
        let pid = std::process::id();
        // On a file system with user xattrs (Swift keeps object metadata there): /tmp here.
        let dir = std::env::temp_dir().join(format!("walg-swift-{pid}-{port}"));
        std::fs::create_dir_all(dir.join("node/d1")).expect("swift dir");
        let write = |name: &str, text: String| std::fs::write(dir.join(name), text).expect("swift conf");
        write("swift.conf", "[swift-hash]\nswift_hash_path_suffix = walgtest\nswift_hash_path_prefix = walgtest\n[storage-policy:0]\nname = Policy-0\ndefault = yes\n".into());
        write("account-server.conf", server_conf(&dir, "account", account));
        write("container-server.conf", server_conf(&dir, "container", container));
        write("object-server.conf", server_conf(&dir, "object", object));
        write("proxy-server.conf", proxy_conf(&dir, port, memcached));
        let out = Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(RINGS_PY)
            .arg(&dir)
            .args([account, container, object].map(|p| p.to_string()))
            .output()
            .expect("run python3");
        if !out.status.success() {
            // No watchdog yet to remove it.
            let _ = std::fs::remove_dir_all(&dir);
            panic!("building the Swift rings: {}", String::from_utf8_lossy(&out.stderr));
        }
        // The watchdog: the servers live while this test process does.
        let d = dir.display();
        let script = format!(
            "cd '{d}'; memcached -l 127.0.0.1 -p {memcached} -U 0 -m 64 -u nobody > memcached.log 2>&1 & m=$!; \
             for s in account container object proxy; do swift-$s-server '{d}'/$s-server.conf > $s.log 2>&1 & echo $! > $s.pid; done; \
             pids=\"$m $(cat *.pid)\"; \
             while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             kill $pids 2>/dev/null; sleep 1; kill -9 $pids 2>/dev/null; cd /; rm -rf '{d}'"
        );
        spawn_watchdog("Swift", &script);
        let mut server = SwiftServer { port, memcached, dir, started_in: Duration::ZERO };
        assert!(wait_for_port(port, Duration::from_secs(120)), "Swift's proxy did not listen on port {port} within 120 s\n{}", server.log_tail());
        // Ready when a container can be made (account and container servers up) and an object
        // stored in it (object server up).
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let ok = server.try_create_container("walg-ready").is_ok() && server.try_put_object("walg-ready", "probe").is_ok();
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "Swift did not become ready within 120 s\n{}", server.log_tail());
            std::thread::sleep(Duration::from_millis(300));
        }
        server.started_in = started.elapsed();
        eprintln!("swift: all-in-one cluster on 127.0.0.1:{port} ready in {:?}", server.started_in);
        server
    }

    /// TempAuth's v1.0 URL (OS_AUTH_URL).
    pub fn auth_url(&self) -> String {
        format!("http://127.0.0.1:{}/auth/v1.0", self.port)
    }

    /// A relay of one's own to the proxy (started): stop it to cut this client off. TempAuth
    /// builds the storage URL from the request's host, so authenticating through the relay
    /// keeps every later request on it.
    pub fn relay(&self) -> Relay {
        Relay::started(self.port)
    }

    /// The auth URL through `relay`.
    pub fn auth_url_via(&self, relay: &Relay) -> String {
        format!("http://127.0.0.1:{}/auth/v1.0", relay.port)
    }

    /// (storage URL path, token) of the test user.
    fn token(&self) -> Result<(String, String), String> {
        let (status, head) = http(self.port, "GET", "/auth/v1.0", &[("X-Auth-User", USER), ("X-Auth-Key", KEY)]).map_err(|e| e.to_string())?;
        let url = head_value(&head, "X-Storage-Url").ok_or(format!("auth answered {status}"))?;
        let token = head_value(&head, "X-Auth-Token").ok_or(format!("auth answered {status}"))?;
        let path = url.splitn(4, '/').nth(3).map(|p| format!("/{p}")).ok_or("odd storage URL")?;
        Ok((path, token))
    }

    fn try_create_container(&self, name: &str) -> Result<(), String> {
        let (path, token) = self.token()?;
        let (status, head) = http(self.port, "PUT", &format!("{path}/{name}"), &[("X-Auth-Token", &token)]).map_err(|e| e.to_string())?;
        if status == 201 || status == 202 {
            Ok(())
        } else {
            Err(format!("PUT container {name}: {status}\n{head}"))
        }
    }

    fn try_put_object(&self, container: &str, name: &str) -> Result<(), String> {
        let (path, token) = self.token()?;
        let (status, head) = http(self.port, "PUT", &format!("{path}/{container}/{name}"), &[("X-Auth-Token", &token)]).map_err(|e| e.to_string())?;
        if status == 201 {
            Ok(())
        } else {
            Err(format!("PUT object {container}/{name}: {status}\n{head}"))
        }
    }

    pub fn create_container(&self, name: &str) {
        if let Err(e) = self.try_create_container(name) {
            panic!("create container {name}: {e}\n{}", self.log_tail());
        }
    }

    /// Forget `EXPIRING`'s token, as when it expires: its client's next request gets a 401.
    /// TempAuth keeps tokens in memcached under the MD5 of `AUTH_/token/<token>` (and the
    /// user's current token under `AUTH_/user/<user>`); both are deleted.
    pub fn expire_token(&self) {
        let (status, head) = http(self.port, "GET", "/auth/v1.0", &[("X-Auth-User", EXPIRING), ("X-Auth-Key", EXPIRING_KEY)]).expect("auth");
        let token = head_value(&head, "X-Auth-Token").unwrap_or_else(|| panic!("auth answered {status}"));
        let py = "import hashlib, socket, sys\n\
                  s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n\
                  for k in sys.argv[2:]:\n    s.sendall(b'delete ' + hashlib.md5(k.encode()).hexdigest().encode() + b'\\r\\n'); print(s.recv(100))\n";
        let out = Command::new("/usr/bin/python3")
            .args(["-c", py, &self.memcached.to_string(), &format!("AUTH_/token/{token}"), &format!("AUTH_/user/{EXPIRING}")])
            .output()
            .expect("run python3");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && said.matches("DELETED").count() == 2, "memcached: {said} {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for f in ["proxy.log", "account.log", "container.log", "object.log", "memcached.log"] {
            let text = std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {f}\n{}\n", lines[lines.len().saturating_sub(15)..].join("\n")));
        }
        out
    }
}
