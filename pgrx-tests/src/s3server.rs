//! A real S3-compatible server for tests: moto's server (PyPI `moto[server]`, installed by
//! scripts/setup.sh into /opt/walg-test-venv) on a free loopback port, with authentication on:
//! an IAM user with an access key is made at start, and wrong keys are refused as on AWS.
//!
//! Clients reach it through a small TCP relay that the test can stop and start again. moto keeps
//! its objects in memory, so stopping the moto process itself would lose the bucket; stopping the
//! relay gives clients what a dead server gives them (refused connections, in-flight requests
//! cut) while the stored objects survive for the "server is back" half of a fault test.
//!
//! Only std: this file is also compiled into walg-core's integration tests (`#[path]`).

// Also compiled into walg-core's integration tests (`#[path]`), each of which uses a part.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where scripts/setup.sh installs moto; `WALG_TEST_VENV` overrides.
pub fn venv() -> PathBuf {
    PathBuf::from(std::env::var("WALG_TEST_VENV").unwrap_or_else(|_| "/opt/walg-test-venv".into()))
}

/// Region the tests use.
pub const REGION: &str = "us-east-1";

/// Makes the IAM user and its key while moto still accepts unauthenticated requests (exactly
/// three: INITIAL_NO_AUTH_ACTION_COUNT), and prints "<key id> <secret>".
const BOOTSTRAP: &str = r#"
import sys, boto3
kw = dict(endpoint_url=sys.argv[1], region_name="us-east-1",
          aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
iam = boto3.client("iam", **kw)
iam.create_user(UserName="walg")
iam.put_user_policy(UserName="walg", PolicyName="s3-all", PolicyDocument=
    '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}')
k = iam.create_access_key(UserName="walg")["AccessKey"]
print(k["AccessKeyId"], k["SecretAccessKey"])
"#;

const CREATE_BUCKET: &str = r#"
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
                  aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3])
s3.create_bucket(Bucket=sys.argv[4])
"#;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0").local_addr().unwrap().port()
}

pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// The last 30 lines of a test server's log file, for a failure message.
pub fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Runs `script` in `sh`: a watchdog that starts a test server and stops it once this test
/// process is gone (the script polls this process's pid).
pub fn spawn_watchdog(what: &str, script: &str) {
    let mut watchdog = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start the watchdog shell of {what}: {e}"));
    // Reaped when it ends (if the server dies early), so it never lingers as a zombie.
    std::thread::spawn(move || watchdog.wait());
}

/// Starts a shared test server: `command` (a shell command line running it in the foreground)
/// under a watchdog shell, which stops it and deletes `remove` once this test process is gone,
/// even after a panic or a kill of the test run. Panics with `log`'s tail when nothing listens
/// on `port` within `timeout`.
pub fn start_watched(what: &str, command: &str, log: &Path, remove: &[&Path], port: u16, timeout: Duration) {
    let pid = std::process::id();
    let remove: Vec<String> = remove.iter().map(|p| format!("'{}'", p.display())).collect();
    let script = format!(
        "{command} > '{log}' 2>&1 & child=$!; \
         while kill -0 {pid} 2>/dev/null && kill -0 $child 2>/dev/null; do sleep 1; done; \
         kill $child 2>/dev/null; wait $child 2>/dev/null; rm -rf {remove}",
        log = log.display(),
        remove = remove.join(" "),
    );
    spawn_watchdog(what, &script);
    if !wait_for_port(port, timeout) {
        panic!("{what} did not listen on port {port} within {timeout:?}\n{}", log_tail(log));
    }
}

pub struct S3Server {
    moto: Child,
    moto_port: u16,
    relay: Relay,
    log: PathBuf,
    /// The access key of the IAM user with full S3 access.
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl S3Server {
    /// Starts moto with authentication on and makes the test user. Panics (saying to run
    /// `make setup`) when moto is not installed.
    pub fn start() -> S3Server {
        let bin = venv().join("bin/moto_server");
        assert!(
            bin.is_file(),
            "{} is missing: run `make setup` (scripts/setup.sh installs moto[server] there) \
             or set WALG_TEST_VENV",
            bin.display()
        );
        let moto_port = free_port();
        let log = std::env::temp_dir().join(format!("walg-moto-{}-{moto_port}.log", std::process::id()));
        let log_file = std::fs::File::create(&log).expect("create moto log");
        let moto = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &moto_port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "3")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut server = S3Server {
            moto,
            moto_port,
            relay: Relay::new(moto_port),
            log,
            access_key_id: String::new(),
            secret_access_key: String::new(),
        };
        if !wait_for_port(moto_port, Duration::from_secs(60)) {
            panic!("moto did not listen on port {moto_port} within 60 s\n{}", server.log_tail());
        }
        let out = server.python(BOOTSTRAP, &[&format!("http://127.0.0.1:{moto_port}")]);
        let mut words = out.split_whitespace();
        server.access_key_id = words.next().expect("access key id").to_string();
        server.secret_access_key = words.next().expect("secret").to_string();
        server.relay.start();
        server
    }

    fn python(&self, script: &str, args: &[&str]) -> String {
        let out = Command::new(venv().join("bin/python"))
            .arg("-c")
            .arg(script)
            .args(args)
            .output()
            .expect("run the test venv's python");
        if !out.status.success() {
            panic!(
                "python helper failed: {}\n{}\n--- moto log ---\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                self.log_tail()
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The endpoint clients use (through the relay), `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.relay.port)
    }

    pub fn create_bucket(&self, name: &str) {
        let ep = format!("http://127.0.0.1:{}", self.moto_port);
        self.python(CREATE_BUCKET, &[&ep, &self.access_key_id, &self.secret_access_key, name]);
    }

    /// The endpoint goes away: new connections are refused, open ones are cut.
    pub fn stop_endpoint(&self) {
        self.relay.stop();
    }

    /// The endpoint is back (same port, same objects).
    pub fn start_endpoint(&self) {
        self.relay.start();
    }

    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.relay.stop();
        let _ = self.moto.kill();
        let _ = self.moto.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A TCP relay from a fixed loopback port to a test server (moto, Azurite), which can be stopped
/// (new connections refused, open ones cut) and started again.
pub struct Relay {
    pub port: u16,
    target: u16,
    running: Arc<AtomicBool>,
    conns: Arc<Mutex<HashMap<u64, (TcpStream, TcpStream)>>>,
    acceptor: Mutex<Option<JoinHandle<()>>>,
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

impl Relay {
    pub fn new(target: u16) -> Relay {
        Relay {
            port: free_port(),
            target,
            running: Arc::new(AtomicBool::new(false)),
            conns: Arc::new(Mutex::new(HashMap::new())),
            acceptor: Mutex::new(None),
        }
    }

    /// A relay to `target`, already started.
    pub fn started(target: u16) -> Relay {
        let r = Relay::new(target);
        r.start();
        r
    }

    pub fn start(&self) {
        let mut acceptor = self.acceptor.lock().unwrap();
        if acceptor.is_some() {
            return;
        }
        // The port was ours a moment ago; retry briefly in case the old socket lingers.
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("relay cannot bind 127.0.0.1:{} again: {e}", self.port),
            }
        };
        listener.set_nonblocking(true).unwrap();
        self.running.store(true, Ordering::SeqCst);
        let (running, conns, target) = (self.running.clone(), self.conns.clone(), self.target);
        static NEXT: AtomicU64 = AtomicU64::new(0);
        *acceptor = Some(std::thread::spawn(move || {
            while running.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else { continue };
                        let id = NEXT.fetch_add(1, Ordering::SeqCst);
                        let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                        conns.lock().unwrap().insert(id, (client.try_clone().unwrap(), server.try_clone().unwrap()));
                        let conns2 = conns.clone();
                        std::thread::spawn(move || pipe(c2, s2));
                        std::thread::spawn(move || {
                            pipe(server, client);
                            conns2.lock().unwrap().remove(&id);
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            // The listener is dropped here: the port refuses connections from now on.
        }));
    }

    pub fn stop(&self) {
        self.running.store(false, Ordering::SeqCst);
        if let Some(h) = self.acceptor.lock().unwrap().take() {
            let _ = h.join();
        }
        for (_, (c, s)) in self.conns.lock().unwrap().drain() {
            let _ = c.shutdown(Shutdown::Both);
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// A dropped relay stops: its port refuses connections and its threads end.
impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}
