//! OpenSSH's sshd (Debian's `openssh-server`, installed by scripts/setup.sh) as the SFTP test
//! server.
//!
//! One sshd per test process, started on first use on a free loopback port and shared by every
//! test in the process (`Sshd::shared()`); each test uses its own directory (`dir(name)`). Its
//! host key and the client key are generated into a temp directory; it serves SFTP with
//! `internal-sftp` and lets root log in with the client key (tests run as root). A watchdog
//! shell stops sshd and removes the directory when the test process is gone. A test that breaks
//! the connection gets its own relay (`relay()`).
//!
//! The end-to-end tests' server runs as postgres and logs in with the same key, so the key file
//! and the directories are readable (and the data directories writable) by everyone: test keys
//! only.
//!
//! Only std: this file is also compiled into walg-core's integration tests (`#[path]`), next to
//! s3server.rs (whose Relay it uses).

// Also compiled into walg-core's integration tests (`#[path]`), each of which uses a part.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use super::s3server::{free_port, log_tail, start_watched, Relay};

pub const SSHD: &str = "/usr/sbin/sshd";
/// The user the tests log in as.
pub const USER: &str = "root";

pub struct Sshd {
    pub port: u16,
    /// Holds keys, config, log and the data directories.
    pub home: PathBuf,
    /// The client's private key (SSH_PRIVATE_KEY_PATH).
    pub key: PathBuf,
    log: PathBuf,
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "walg-test", "-f"])
        .arg(path)
        .output()
        .expect("run ssh-keygen (openssh-client): run `make setup`");
    assert!(out.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

impl Sshd {
    /// The process's sshd, started on first use. Panics (saying to run `make setup`) when sshd
    /// is not installed.
    pub fn shared() -> &'static Sshd {
        static SERVER: OnceLock<Sshd> = OnceLock::new();
        SERVER.get_or_init(Sshd::start)
    }

    fn start() -> Sshd {
        assert!(Path::new(SSHD).is_file(), "{SSHD} is missing: run `make setup` (scripts/setup.sh installs openssh-server)");
        let port = free_port();
        let pid = std::process::id();
        let home = std::env::temp_dir().join(format!("walg-sshd-{pid}-{port}"));
        std::fs::create_dir_all(home.join("data")).expect("sshd dir");
        chmod(&home, 0o755);
        chmod(&home.join("data"), 0o777);
        let (host_key, key) = (home.join("host_key"), home.join("client_key"));
        keygen(&host_key);
        keygen(&key);
        // The e2e server (user postgres) reads the client key too.
        chmod(&key, 0o644);
        // sshd refuses to start without its privilege separation directory.
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        let config = home.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1\nPort {port}\nHostKey {host}\nAuthorizedKeysFile {key}.pub\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 StrictModes no\nUsePAM no\nPidFile none\nSubsystem sftp internal-sftp\nLogLevel VERBOSE\n\
                 MaxStartups 100\nMaxSessions 100\n",
                host = host_key.display(),
                key = key.display(),
            ),
        )
        .expect("write sshd_config");
        let log = home.join("sshd.log");
        // In the foreground (-D), logging to stderr (-e).
        let command = format!("{SSHD} -D -e -f '{}'", config.display());
        start_watched("sshd", &command, &log, &[&home], port, Duration::from_secs(30));
        Sshd { port, home, key, log }
    }

    /// A fresh directory `name` on the server (absolute path), writable by everyone.
    pub fn dir(&self, name: &str) -> PathBuf {
        let d = self.home.join("data").join(name);
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("create {}: {e}", d.display()));
        chmod(&d, 0o777);
        d
    }

    /// A relay of one's own to the server (started): stop it to cut this client off.
    pub fn relay(&self) -> Relay {
        Relay::started(self.port)
    }

    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }
}
