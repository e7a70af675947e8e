//! Azurite, Microsoft's Azure Storage emulator (npm `azurite`, installed by scripts/setup.sh into
//! /opt/walg-azurite; `WALG_AZURITE_DIR` overrides), as the Azure Blob test server.
//!
//! One blob service per test process, started on first use on a free loopback port and shared
//! by every test in the process (`Azurite::shared()`); each test uses its own container. A
//! watchdog shell stops Azurite and removes its data when the test process is gone. A test that
//! breaks the connection gets its own relay (`relay()`), so it never disturbs the others.
//!
//! Only std: this file is also compiled into walg-core's integration tests (`#[path]`), next to
//! s3server.rs (whose Relay it uses).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use super::s3server::{free_port, log_tail, start_watched, Relay};

/// Azurite's well-known development account and key (public, in Microsoft's documentation).
pub const ACCOUNT: &str = "devstoreaccount1";
pub const KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub fn install_dir() -> PathBuf {
    PathBuf::from(std::env::var("WALG_AZURITE_DIR").unwrap_or_else(|_| "/opt/walg-azurite".into()))
}

pub struct Azurite {
    pub port: u16,
    log: PathBuf,
}

/// Create Container (PUT ?restype=container) signed with the shared key, in node (which Azurite
/// needs anyway): argv = endpoint, account, key, container. 201 created, 409 already there.
const CREATE_CONTAINER_JS: &str = r#"
const [endpoint, account, key, container] = process.argv.slice(1);
const crypto = require('crypto');
const url = new URL(endpoint + '/' + container + '?restype=container');
const date = new Date().toUTCString();
const version = '2021-08-06';
const toSign = ['PUT', '', '', '', '', '', '', '', '', '', '', '',
  'x-ms-date:' + date + '\nx-ms-version:' + version,
  '/' + account + url.pathname + '\nrestype:container'].join('\n');
const sig = crypto.createHmac('sha256', Buffer.from(key, 'base64')).update(toSign, 'utf8').digest('base64');
const req = require('http').request(url, { method: 'PUT', headers: {
  'x-ms-date': date, 'x-ms-version': version, 'Content-Length': 0,
  'Authorization': 'SharedKey ' + account + ':' + sig } }, res => {
  let body = ''; res.on('data', d => body += d);
  res.on('end', () => { if (res.statusCode === 201 || res.statusCode === 409) process.exit(0);
    console.error(res.statusCode + ' ' + body); process.exit(1); });
});
req.on('error', e => { console.error(String(e)); process.exit(1); });
req.end();
"#;

impl Azurite {
    /// The process's Azurite, started on first use. Panics (saying to run `make setup`) when
    /// Azurite is not installed.
    pub fn shared() -> &'static Azurite {
        static SERVER: OnceLock<Azurite> = OnceLock::new();
        SERVER.get_or_init(Azurite::start)
    }

    fn start() -> Azurite {
        let bin = install_dir().join("node_modules/.bin/azurite-blob");
        assert!(
            bin.is_file(),
            "{} is missing: run `make setup` (scripts/setup.sh installs Azurite from npm there) or set WALG_AZURITE_DIR",
            bin.display()
        );
        let port = free_port();
        let pid = std::process::id();
        let data = std::env::temp_dir().join(format!("walg-azurite-{pid}-{port}"));
        std::fs::create_dir_all(&data).expect("azurite data dir");
        let log = std::env::temp_dir().join(format!("walg-azurite-{pid}-{port}.log"));
        let command = format!(
            "'{bin}' --blobHost 127.0.0.1 --blobPort {port} --location '{data}' --silent --disableTelemetry \
             --skipApiVersionCheck --loose",
            bin = bin.display(),
            data = data.display(),
        );
        start_watched("Azurite", &command, &log, &[&data, &log], port, Duration::from_secs(60));
        Azurite { port, log }
    }

    /// The blob service URL (path style, as emulators are addressed).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    /// A relay of one's own to the server (started): stop it to cut this client off.
    pub fn relay(&self) -> Relay {
        Relay::started(self.port)
    }

    /// The service URL through `relay`.
    pub fn endpoint_via(&self, relay: &Relay) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", relay.port)
    }

    pub fn create_container(&self, name: &str) {
        let out = Command::new("node")
            .arg("-e")
            .arg(CREATE_CONTAINER_JS)
            .args([&self.endpoint(), ACCOUNT, KEY, name])
            .output()
            .expect("run node");
        assert!(
            out.status.success(),
            "create container {name}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
    }

    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }
}
