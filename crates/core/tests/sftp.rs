//! SftpStorage against OpenSSH's sshd (shared by the tests of this file; see
//! pgrx-tests/src/sshd.rs). Needs `make setup` (installs openssh-server).

#[path = "../../../pgrx-tests/src/s3server.rs"]
#[allow(dead_code)]
mod s3server;
#[path = "../../../pgrx-tests/src/sshd.rs"]
mod sshd;
mod conformance;
mod sshd_password;

use std::sync::Arc;
use std::time::{Duration, Instant};

use sshd::Sshd;
use sshd_password::PwSshd;
use walg_core::config::{Config, Settings, StorageConfig};
use walg_core::storage::{get_bytes, Storage, FS_TMP_PREFIX};

fn settings(port: u16, prefix: &str, extra: &[(&str, &str)]) -> Settings {
    let server = Sshd::shared();
    let mut s = Settings::new();
    s.set("WALG_SSH_PREFIX", prefix);
    s.set("SSH_PORT", port.to_string());
    s.set("SSH_USERNAME", sshd::USER);
    s.set("SSH_PRIVATE_KEY_PATH", server.key.display().to_string());
    for (k, v) in extra {
        s.set(*k, *v);
    }
    s
}

fn open(port: u16, prefix: &str, extra: &[(&str, &str)]) -> Arc<dyn Storage> {
    let cfg = Config::from_settings(&settings(port, prefix, extra)).unwrap();
    assert!(matches!(cfg.storage, StorageConfig::Sftp(_)));
    cfg.open_storage().unwrap()
}

fn prefix(dir: &std::path::Path) -> String {
    format!("ssh://127.0.0.1{}", dir.display())
}

/// The conformance suite (conformance/mod.rs) on SFTP; a fault is this client's relay going
/// away until healed.
#[test]
fn sftp_storage_conforms() {
    let server = Sshd::shared();
    let dir = server.dir("conf");
    let relay = server.relay();
    let s = open(relay.port, &format!("{}/cluster/main", prefix(&dir)), &[("WALG_SSH_MAX_RETRIES", "3")]);
    assert_eq!(s.describe(), format!("ssh://127.0.0.1:{}{}/cluster/main (user root)", relay.port, dir.display()));
    let cut = |_: &str| relay.stop();
    let heal = |_: &str| relay.start();
    conformance::run_all(&conformance::Target { storage: s.as_ref(), cut: &cut, heal: &heal });
    // Objects outside the storage's path do not show.
    let other = open(server.port, &format!("{}/cluster/other", prefix(&dir)), &[]);
    other.prepare_write().unwrap();
    other.put("wal_005/x", b"other").unwrap();
    assert!(!s.exists("wal_005/x").unwrap());
    assert!(s.list("").unwrap().iter().all(|o| !o.key.contains("other")));
}

/// A killed writer's temp file: hidden from `list`, reported by `pending_uploads`, removed by
/// `abort_upload`; a real object is never taken for one.
#[test]
fn killed_writers_temp_files_are_pending_uploads() {
    let server = Sshd::shared();
    let dir = server.dir("pending");
    let s = open(server.port, &prefix(&dir), &[]);
    s.prepare_write().unwrap();
    s.put("wal_005/a", b"whole").unwrap();
    // What a writer killed mid-upload leaves: a temp file beside the object.
    let tmp = dir.join("wal_005").join(format!("{FS_TMP_PREFIX}999-1-b"));
    std::fs::write(&tmp, b"half").unwrap();
    let keys: Vec<_> = s.list("").unwrap().into_iter().map(|o| o.key).collect();
    assert_eq!(keys, vec!["wal_005/a"]);
    let pending = s.pending_uploads("").unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].key, format!("wal_005/{FS_TMP_PREFIX}999-1-b"));
    assert_eq!(pending[0].size, 4);
    assert!(pending[0].last_activity > std::time::UNIX_EPOCH + Duration::from_secs(1_600_000_000));
    assert!(s.pending_uploads("basebackups_005/").unwrap().is_empty());
    s.abort_upload(&pending[0]).unwrap();
    s.abort_upload(&pending[0]).unwrap(); // gone already is fine
    assert!(!tmp.exists());
    assert!(s.pending_uploads("").unwrap().is_empty());
    // A writer dropped without finish cleans up after itself.
    {
        let mut w = s.writer("wal_005/c").unwrap();
        std::io::Write::write_all(&mut w, b"dropped").unwrap();
        assert_eq!(s.pending_uploads("wal_005/").unwrap().len(), 1, "a live writer is listed too");
    }
    assert!(s.pending_uploads("").unwrap().is_empty());
    let refused = walg_core::storage::PendingUpload { key: "wal_005/a".into(), upload_id: String::new(), last_activity: std::time::UNIX_EPOCH, size: 0 };
    assert!(s.abort_upload(&refused).is_err(), "a real object is not an upload");
    assert_eq!(get_bytes(s.as_ref(), "wal_005/a").unwrap().unwrap(), b"whole");
}

#[test]
fn missing_prefix_wrong_key_and_closed_port_are_errors_not_missing() {
    let server = Sshd::shared();
    let dir = server.dir("errors");
    // No such directory: every read is an error saying so, never "missing".
    let s = open(server.port, &format!("{}/nope", prefix(&dir)), &[("WALG_SSH_MAX_RETRIES", "1")]);
    let started = Instant::now();
    conformance::assert_denied("get", s.get("wal_005/x").map(|o| o.is_some()), &["does not exist", "WALG_SSH_PREFIX"]);
    conformance::assert_denied("exists", s.exists("wal_005/x"), &["does not exist"]);
    conformance::assert_denied("list", s.list("wal_005/"), &["does not exist"]);
    conformance::assert_denied("has_dir", s.has_dir("wal_005/"), &["does not exist"]);
    conformance::assert_denied("delete", s.delete("wal_005/x"), &["does not exist"]);
    assert!(started.elapsed() < Duration::from_secs(5), "permanent errors are not retried: {:?}", started.elapsed());
    // A writer creates it (as file storage does).
    s.prepare_write().unwrap();
    assert!(get_bytes(s.as_ref(), "wal_005/x").unwrap().is_none());
    assert!(dir.join("nope").is_dir());

    // A key the server does not know: denied, saying which settings to fix; not retried.
    let wrong = dir.join("wrong_key");
    let out = std::process::Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&wrong).output().unwrap();
    assert!(out.status.success());
    let s = open(server.port, &prefix(&dir), &[("SSH_PRIVATE_KEY_PATH", wrong.to_str().unwrap()), ("WALG_SSH_MAX_RETRIES", "3")]);
    let started = Instant::now();
    conformance::assert_denied("get with a wrong key", s.get("x").map(|o| o.is_some()), &["SSH_PRIVATE_KEY_PATH", "root"]);
    conformance::assert_denied("exists with a wrong key", s.exists("x"), &["SSH_PRIVATE_KEY_PATH"]);
    assert!(started.elapsed() < Duration::from_secs(5), "a refused login is not retried: {:?}", started.elapsed());
    // A key file that is not there.
    let s = open(server.port, &prefix(&dir), &[("SSH_PRIVATE_KEY_PATH", "/nonexistent/key")]);
    conformance::assert_denied("missing key file", s.exists("x"), &["/nonexistent/key", "SSH_PRIVATE_KEY_PATH"]);

    // Nobody listening: transient, retried, then reported.
    let relay = server.relay();
    relay.stop();
    let s = open(relay.port, &prefix(&dir), &[("WALG_SSH_MAX_RETRIES", "1")]);
    conformance::assert_unreachable("exists, nobody listening", s.exists("x"), &["SSH_PORT"]);
}

#[test]
fn server_down_is_retried_then_recovers() {
    let server = Sshd::shared();
    let dir = server.dir("down");
    let relay = server.relay();
    let s = open(relay.port, &prefix(&dir), &[("WALG_SSH_MAX_RETRIES", "8")]);
    s.prepare_write().unwrap();
    s.put("before", b"1").unwrap();
    // The connection is cut and refused for a moment: the next request reconnects.
    relay.stop();
    let t = std::thread::spawn({
        let s = s.clone();
        move || s.put("during", b"2")
    });
    std::thread::sleep(Duration::from_millis(300));
    relay.start();
    t.join().unwrap().unwrap();
    assert_eq!(get_bytes(s.as_ref(), "during").unwrap().unwrap(), b"2");
    assert_eq!(get_bytes(s.as_ref(), "before").unwrap().unwrap(), b"1");

    // Idle pooled connections closed meanwhile (a server restart, a firewall's idle timeout)
    // are replaced without using up a retry: this storage has none.
    let s = open(relay.port, &prefix(&dir), &[("WALG_SSH_MAX_RETRIES", "0")]);
    assert!(s.exists("before").unwrap());
    relay.stop();
    relay.start();
    assert!(s.exists("before").unwrap(), "a dead pooled connection is replaced");
    assert_eq!(get_bytes(s.as_ref(), "before").unwrap().unwrap(), b"1");
    relay.stop();
    relay.start();
    s.put("after", b"3").unwrap();
}

/// SSH_PASSWORD against an sshd that takes nothing but a password (sshd_password/mod.rs): the
/// right one logs in (with and without a key the server turns down first, as WAL-G offers
/// both); a wrong one is a refusal that names SSH_PASSWORD, is not retried, and never shows
/// either password.
#[test]
fn password_login_works_and_a_wrong_password_says_what_to_fix() {
    use std::os::unix::fs::MetadataExt;
    let server = PwSshd::shared();
    let dir = Sshd::shared().dir("password");
    let open_pw = |extra: &[(&str, &str)]| {
        let mut s = Settings::new();
        s.set("WALG_SSH_PREFIX", prefix(&dir));
        s.set("SSH_PORT", server.port.to_string());
        s.set("SSH_USERNAME", sshd_password::USER);
        s.set("WALG_SSH_MAX_RETRIES", "3");
        for (k, v) in extra {
            s.set(*k, *v);
        }
        let cfg = Config::from_settings(&s).unwrap();
        assert!(!format!("{cfg:?}").contains(sshd_password::PASSWORD), "Config's Debug shows the password");
        cfg.open_storage().unwrap()
    };

    let s = open_pw(&[("SSH_PASSWORD", sshd_password::PASSWORD)]);
    s.prepare_write().unwrap();
    s.put("wal_005/a", b"by password").unwrap_or_else(|e| panic!("{e}\n{}", server.log_tail()));
    assert_eq!(get_bytes(s.as_ref(), "wal_005/a").unwrap().unwrap(), b"by password");
    assert_eq!(s.list("wal_005/").unwrap().into_iter().map(|o| o.key).collect::<Vec<_>>(), vec!["wal_005/a"]);
    let owner = std::fs::metadata(dir.join("wal_005/a")).unwrap().uid();
    assert_eq!(owner, sshd_password::UID, "written by the password user");

    // A key this server does not take is offered first; the password still logs in.
    let key = dir.join("unused_key");
    let out = std::process::Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key).output().unwrap();
    assert!(out.status.success());
    let s = open_pw(&[("SSH_PASSWORD", sshd_password::PASSWORD), ("SSH_PRIVATE_KEY_PATH", key.to_str().unwrap())]);
    assert!(s.exists("wal_005/a").unwrap_or_else(|e| panic!("{e}\n{}", server.log_tail())));

    // A wrong password: refused, saying to fix SSH_PASSWORD; no retry; no password shown.
    let wrong = "not the pw 9137";
    let s = open_pw(&[("SSH_PASSWORD", wrong)]);
    let started = Instant::now();
    let says = ["refused the login", sshd_password::USER, "tried: password", "SSH_PASSWORD", "PasswordAuthentication"];
    for (what, r) in [("get", s.get("wal_005/a").map(|o| o.is_some())), ("exists", s.exists("wal_005/a"))] {
        let e = conformance::assert_denied(what, r, &says);
        assert!(!e.to_string().contains("SSH_PRIVATE_KEY_PATH"), "{what}: no key was set, so the key is not what to fix: {e}");
        conformance::assert_hides(what, &e, &[wrong, sshd_password::PASSWORD]);
    }
    assert!(started.elapsed() < Duration::from_secs(10), "a refused login is not retried: {:?}", started.elapsed());
}
