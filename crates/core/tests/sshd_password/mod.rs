//! An OpenSSH sshd that lets one test user log in with a password, and with nothing else.
//!
//! Password login needs an account whose password sshd can check (with `UsePAM no`, sshd reads
//! the hash from /etc/shadow itself). The machine's accounts and its own sshd must stay as they
//! are, so this sshd runs in a mount namespace of its own (`unshare --mount`, we are root) in
//! which /etc/passwd is a bind-mounted copy with the test user `USER` added, and /etc/shadow a
//! file holding only that user's hash.
//! Outside that namespace the user does not exist, so nothing on the machine learns a password;
//! starting it again is harmless (every start makes fresh copies in its own temp directory).
//!
//! The server answers the `password` method only (`PubkeyAuthentication no`,
//! `KbdInteractiveAuthentication no`): a login that works went through SSH_PASSWORD. Its files
//! live in a directory of the key-only test sshd (sshd.rs), whose watchdog removes them; so do
//! the data directories (`Sshd::dir`: both servers see the same file system). A watchdog shell
//! of its own (s3server.rs `start_watched`) stops this sshd when the test process is gone.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::s3server::{free_port, log_tail, start_watched};
use super::sshd::{Sshd, SSHD};

/// The account that exists only inside the server's namespace.
pub const USER: &str = "walgpw";
/// Its uid: files it writes are owned by it, which shows who logged in.
pub const UID: u32 = 64_998;
/// Its password, with a space and symbols so that it must be passed on as it is.
pub const PASSWORD: &str = "pw Sekr3t:#walg";

pub struct PwSshd {
    pub port: u16,
    log: PathBuf,
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
        // The key sshd first: it checks that sshd is installed and makes /run/sshd.
        let home = Sshd::shared().dir("password-sshd");
        let port = free_port();
        let host_key = home.join("host_key");
        let out = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&host_key).output().expect("run ssh-keygen");
        assert!(out.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
        let (passwd, shadow) = (home.join("passwd"), home.join("shadow"));
        std::fs::write(&passwd, with_user("/etc/passwd", format!("{USER}:x:{UID}:65534:walg password test:{}:/bin/sh", home.display()))).unwrap();
        // Only the test user: sshd in the namespace looks up no one else, and the machine's
        // password hashes are not copied anywhere. Created 0600, so never readable by others.
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&shadow).expect("create the shadow copy");
        writeln!(f, "{USER}:{}:19000:0:99999:7:::", hash_password()).unwrap();
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
        // sshd in a private mount namespace that sees the copies, in the foreground (-D).
        let command = format!(
            "unshare --mount --propagation private sh -c \"mount --bind '{}' /etc/passwd && mount --bind '{}' /etc/shadow && exec {SSHD} -D -e -f '{}'\"",
            passwd.display(),
            shadow.display(),
            config.display(),
        );
        start_watched("the password sshd (needs root and `unshare --mount`)", &command, &log, &[], port, Duration::from_secs(30));
        PwSshd { port, log }
    }

    /// The end of the server's log, for a failed test's message (sshd logs no passwords).
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }
}
