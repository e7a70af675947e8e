//! An OpenSSH sshd that lets one test user log in with a password, and with nothing else.
//!
//! Password login needs an account whose password sshd can check (with `UsePAM no`, sshd reads
//! the hash from /etc/shadow itself). The machine's accounts and its own sshd must stay as they
//! are, so this sshd runs in a mount namespace of its own (`unshare --mount`, we are root) in
//! which /etc/passwd and /etc/shadow are bind-mounted copies with the test user `USER` added.
//! Outside that namespace the user does not exist, so nothing on the machine learns a password;
//! starting it again is harmless (every start makes fresh copies in its own temp directory).
//!
//! The server answers the `password` method only (`PubkeyAuthentication no`,
//! `KbdInteractiveAuthentication no`): a login that works went through SSH_PASSWORD. A watchdog
//! shell stops sshd and removes the directory when the test process is gone (as sshd.rs does).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::s3server::{free_port, wait_for_port};
use super::sshd::SSHD;

/// The account that exists only inside the server's namespace.
pub const USER: &str = "walgpw";
/// Its uid: files it writes are owned by it, which shows who logged in.
pub const UID: u32 = 64_998;
/// Its password, with a space and symbols so that it must be passed on as it is.
pub const PASSWORD: &str = "pw Sekr3t:#walg";

pub struct PwSshd {
    pub port: u16,
    home: PathBuf,
    log: PathBuf,
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

/// A SHA-512 crypt hash of PASSWORD (what /etc/shadow holds); the password goes through stdin,
/// not the command line.
fn hash_password() -> String {
    let mut child = Command::new("openssl")
        .args(["passwd", "-6", "-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl passwd (package openssl)");
    child.stdin.take().unwrap().write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl passwd: {}", String::from_utf8_lossy(&out.stderr));
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(hash.starts_with("$6$"), "openssl passwd -6 gave no SHA-512 hash");
    hash
}

/// `file`'s lines without any for USER, plus `line`.
fn with_user(file: &str, line: String) -> String {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("read {file}: {e}"));
    let mut out: String = text.lines().filter(|l| l.split(':').next() != Some(USER)).map(|l| format!("{l}\n")).collect();
    out.push_str(&line);
    out.push('\n');
    out
}

impl PwSshd {
    /// The process's password sshd, started on first use.
    pub fn shared() -> &'static PwSshd {
        static SERVER: OnceLock<PwSshd> = OnceLock::new();
        SERVER.get_or_init(PwSshd::start)
    }

    fn start() -> PwSshd {
        assert!(Path::new(SSHD).is_file(), "{SSHD} is missing: run `make setup` (scripts/setup.sh installs openssh-server)");
        let port = free_port();
        let pid = std::process::id();
        let home = std::env::temp_dir().join(format!("walg-sshd-pw-{pid}-{port}"));
        std::fs::create_dir_all(home.join("data")).expect("sshd dir");
        chmod(&home, 0o755);
        chmod(&home.join("data"), 0o777);
        let host_key = home.join("host_key");
        let out = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&host_key).output().expect("run ssh-keygen");
        assert!(out.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
        let (passwd, shadow) = (home.join("passwd"), home.join("shadow"));
        std::fs::write(&passwd, with_user("/etc/passwd", format!("{USER}:x:{UID}:65534:walg password test:{}:/bin/sh", home.display()))).unwrap();
        std::fs::write(&shadow, with_user("/etc/shadow", format!("{USER}:{}:19000:0:99999:7:::", hash_password()))).unwrap();
        chmod(&shadow, 0o600);
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        let config = home.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1\nPort {port}\nHostKey {host}\nAllowUsers {USER}\n\
                 PasswordAuthentication yes\nPubkeyAuthentication no\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin no\nStrictModes no\nUsePAM no\nPidFile none\nSubsystem sftp internal-sftp\n\
                 LogLevel VERBOSE\nMaxStartups 100\nMaxSessions 100\n",
                host = host_key.display(),
            ),
        )
        .expect("write sshd_config");
        let log = home.join("sshd.log");
        // sshd in a private mount namespace that sees the copies; `exec` keeps $child = sshd.
        let script = format!(
            "unshare --mount --propagation private sh -c \"mount --bind '{passwd}' /etc/passwd && mount --bind '{shadow}' /etc/shadow && exec {SSHD} -D -e -f '{config}'\" > '{log}' 2>&1 & child=$!; \
             while kill -0 {pid} 2>/dev/null && kill -0 $child 2>/dev/null; do sleep 1; done; \
             kill $child 2>/dev/null; wait $child 2>/dev/null; rm -rf '{home}'",
            passwd = passwd.display(),
            shadow = shadow.display(),
            config = config.display(),
            log = log.display(),
            home = home.display(),
        );
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the sshd watchdog shell");
        let server = PwSshd { port, home, log };
        if !wait_for_port(port, Duration::from_secs(30)) {
            panic!("the password sshd did not listen on port {port} within 30 s (needs root and `unshare --mount`)\n{}", server.log_tail());
        }
        server
    }

    /// A fresh directory `name` on the server (absolute path), writable by everyone.
    pub fn dir(&self, name: &str) -> PathBuf {
        let d = self.home.join("data").join(name);
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("create {}: {e}", d.display()));
        chmod(&d, 0o777);
        d
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}
