//! SFTP storage (`WALG_SSH_PREFIX=ssh://host/path`) with libssh2 (the `ssh2` crate), blocking,
//! on the caller's thread: no runtime, no helper threads, no `ssh` child processes in the
//! archiver (README "Storage" says why this library, with the measurement). Connections are
//! pooled per storage (conn.rs). Retries: `storage::open` wraps this storage in the retry
//! decorator (retry.rs) for its single-request operations; the resuming reader retries its own
//! reconnects through the same loop (reader.rs). A streaming upload is not retried piecewise: a
//! failed upload leaves nothing visible and the caller's push is retried as a whole.
//!
//! Guarantees as for file storage, which this mirrors on a remote host: an upload goes to a
//! temp file beside the object (`.walg-tmp-<pid>-<n>-<name>`, FS_TMP_PREFIX), is fsynced
//! (fsync@openssh.com, when the server has it) and renamed over the object with OpenSSH's
//! posix-rename (rename(2): atomic, replaces). `list` never shows temp files; `pending_uploads`
//! lists them (a killed writer's leftovers) and `abort_upload` removes them. Memory per writer
//! is one 1 MiB buffer plus libssh2's window. Listings walk the directory tree from the deepest
//! directory the prefix names.
//!
//! Missing versus unreachable: "not there" (`get` -> None, `exists` -> false, an empty `list`)
//! only after the server answered "no such file" and the prefix directory itself exists; a
//! missing prefix directory, a refused login, an unreadable key file, a host that does not
//! answer or a connection lost is an error of kind Unreachable, saying what to fix.

mod conn;
mod reader;
pub mod settings;
mod writer;

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use libssh2_sys as raw;
use ssh2::ErrorCode;

use super::fs::FS_TMP_PREFIX;
use super::retry::RetryPolicy;
use super::{check_key, ObjectInfo, ObjectWriter, PendingUpload, Storage};
use crate::error::{Error, Result};
use conn::{is_session_error, Conn, ConnectError, Pool};
pub use settings::SftpConfig;

pub struct SftpStorage {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    cfg: SftpConfig,
    pool: Pool,
}

/// A failure inside an operation: libssh2's (mapped by `Inner::error`) or already ours.
pub(crate) enum Fail {
    Ssh(ssh2::Error),
    Ours(Error),
}

impl From<ssh2::Error> for Fail {
    fn from(e: ssh2::Error) -> Fail {
        Fail::Ssh(e)
    }
}

pub(crate) fn is_missing(e: &ssh2::Error) -> bool {
    matches!(e.code(), ErrorCode::SFTP(raw::LIBSSH2_FX_NO_SUCH_FILE) | ErrorCode::SFTP(raw::LIBSSH2_FX_NO_SUCH_PATH))
}

fn mtime(st: &ssh2::FileStat) -> SystemTime {
    st.mtime.map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s)).unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The object name part of a key (after the last '/').
fn base_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

impl Inner {
    /// The directory on the host ("/" for an empty root).
    fn root_path(&self) -> &str {
        if self.cfg.root.is_empty() {
            "/"
        } else {
            &self.cfg.root
        }
    }

    pub(crate) fn path(&self, key: &str) -> String {
        format!("{}/{key}", self.cfg.root)
    }

    pub(crate) fn url(&self, key: &str) -> String {
        format!("{}/{key}", self.cfg.url())
    }

    pub(crate) fn policy(&self) -> RetryPolicy {
        RetryPolicy::new(self.cfg.max_retries)
    }

    fn open_conn(&self, op: &'static str, key: &str) -> Result<Conn> {
        Conn::open(&self.cfg).map_err(|e| self.connect_error(op, key, e))
    }

    /// Run `f` on a pooled (or new) connection and hand back the connection with `f`'s result.
    /// A pooled connection that turns out dead (closed by the server or a firewall while idle)
    /// is not a fault: `f` runs once more on a fresh connection, without a retry line.
    pub(crate) fn attempt<T>(
        &self,
        op: &'static str,
        key: &str,
        mut f: impl FnMut(&Conn) -> std::result::Result<T, Fail>,
    ) -> Result<(Conn, std::result::Result<T, Fail>)> {
        let Some(c) = self.pool.take() else {
            let c = self.open_conn(op, key)?;
            let r = f(&c);
            return Ok((c, r));
        };
        let r = f(&c);
        if matches!(&r, Err(Fail::Ssh(e)) if is_session_error(e)) {
            c.discard();
            self.pool.clear();
            let c = self.open_conn(op, key)?;
            let r = f(&c);
            return Ok((c, r));
        }
        Ok((c, r))
    }

    /// Back to the pool after use; a connection whose session failed is dropped instead, and
    /// with it the idle ones (they most likely went the same way).
    pub(crate) fn release(&self, c: Conn, failed: Option<&ssh2::Error>) {
        match failed {
            Some(e) if is_session_error(e) => {
                c.discard();
                self.pool.clear();
            }
            _ => self.pool.put(c),
        }
    }

    fn connect_error(&self, op: &'static str, key: &str, e: ConnectError) -> Error {
        let (addr, user) = (self.cfg.address(), &self.cfg.user);
        let (kind, msg) = match e {
            ConnectError::Reach(e) => {
                let kind = match e.kind() {
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::ConnectionRefused => e.kind(),
                    _ => std::io::ErrorKind::ConnectionAborted,
                };
                (kind, format!(
                    "cannot reach the SSH server {addr} for {} ({e}): is it up, and are WALG_SSH_PREFIX and SSH_PORT right?",
                    self.url(key)
                ))
            }
            ConnectError::KeyFile(e) => (std::io::ErrorKind::PermissionDenied, format!(
                "cannot read the SSH private key {} ({e}): fix SSH_PRIVATE_KEY_PATH (walg.ssh_private_key_path); the file must be readable by the user walg_ext runs as",
                self.cfg.key_path.as_deref().unwrap_or("")
            )),
            ConnectError::Denied(tried) => (std::io::ErrorKind::PermissionDenied, format!(
                "the SSH server {addr} refused the login of user {user} (tried: {tried}): {}",
                self.denied_hint()
            )),
            ConnectError::Sftp(e) => (std::io::ErrorKind::Other, format!(
                "logged in to {addr} as {user}, but cannot start SFTP ({e}): does the server have the sftp subsystem?"
            )),
        };
        Error::storage(op, key.to_string(), std::io::Error::new(kind, msg))
    }

    /// What to fix after a refused login: the settings of the ways that were offered (never
    /// their values: the password is a secret).
    fn denied_hint(&self) -> String {
        let user = &self.cfg.user;
        match (&self.cfg.key_path, &self.cfg.password) {
            (Some(_), None) => format!(
                "fix SSH_USERNAME (walg.ssh_username) or SSH_PRIVATE_KEY_PATH (walg.ssh_private_key_path), or authorize the key for {user} on the host"
            ),
            (None, _) => format!(
                "fix SSH_PASSWORD (config file or environment) or SSH_USERNAME (walg.ssh_username); the server must also allow password login (sshd: PasswordAuthentication yes) for {user}"
            ),
            (Some(_), Some(_)) => format!(
                "fix SSH_USERNAME (walg.ssh_username), SSH_PRIVATE_KEY_PATH (walg.ssh_private_key_path) or SSH_PASSWORD (config file or environment), or authorize the key for {user} on the host"
            ),
        }
    }

    /// libssh2's error as ours: the io kind carries `kind()` and `is_transient()`, the message
    /// what to fix.
    pub(crate) fn error(&self, op: &'static str, key: &str, e: &ssh2::Error) -> Error {
        let object = self.url(key);
        let (kind, msg) = match e.code() {
            ErrorCode::Session(raw::LIBSSH2_ERROR_TIMEOUT) => (std::io::ErrorKind::TimedOut, format!(
                "{object}: the SSH server {} did not answer in time ({e})", self.cfg.address()
            )),
            ErrorCode::Session(_) => (std::io::ErrorKind::ConnectionAborted, format!(
                "{object}: lost the SSH connection to {} ({e}): is the host up and reachable?", self.cfg.address()
            )),
            ErrorCode::SFTP(raw::LIBSSH2_FX_PERMISSION_DENIED) => (std::io::ErrorKind::PermissionDenied, format!(
                "{object}: permission denied on the host for user {} ({e}): fix the permissions below {} or WALG_SSH_PREFIX",
                self.cfg.user, self.root_path()
            )),
            ErrorCode::SFTP(_) => (std::io::ErrorKind::Other, format!("{object}: the SFTP server refused {op} ({e})")),
        };
        Error::storage(op, key.to_string(), std::io::Error::new(kind, msg))
    }

    /// "Not there" is an answer only when the prefix directory exists.
    pub(crate) fn check_root(&self, c: &Conn) -> std::result::Result<(), Fail> {
        let root = self.root_path();
        let addr = self.cfg.address();
        match c.sftp.stat(Path::new(root)) {
            Ok(st) if st.is_dir() => Ok(()),
            Ok(_) => Err(Fail::Ours(Error::Unreachable(format!(
                "SFTP storage {}: {root} on {addr} is not a directory: fix WALG_SSH_PREFIX (walg.ssh_prefix)",
                self.cfg.url()
            )))),
            Err(e) if is_missing(&e) => Err(Fail::Ours(Error::Unreachable(format!(
                "SFTP storage {}: directory {root} does not exist on {addr}: create it or fix WALG_SSH_PREFIX (walg.ssh_prefix)",
                self.cfg.url()
            )))),
            Err(e) => Err(Fail::Ssh(e)),
        }
    }

    /// Run `f` on a pooled connection.
    pub(crate) fn run<T>(&self, op: &'static str, key: &str, f: impl FnMut(&Conn) -> std::result::Result<T, Fail>) -> Result<T> {
        let (c, r) = self.attempt(op, key, f)?;
        match r {
            Ok(v) => {
                self.release(c, None);
                Ok(v)
            }
            Err(Fail::Ours(e)) => {
                self.release(c, None);
                Err(e)
            }
            Err(Fail::Ssh(e)) => {
                self.release(c, Some(&e));
                Err(self.error(op, key, &e))
            }
        }
    }

    /// `mkdir -p` of directory `dir` (an absolute path on the host).
    pub(crate) fn mkdirs(c: &Conn, dir: &str) -> std::result::Result<(), ssh2::Error> {
        let mut path = String::new();
        for comp in dir.split('/').filter(|s| !s.is_empty()) {
            path.push('/');
            path.push_str(comp);
            if let Err(e) = c.sftp.mkdir(Path::new(&path), 0o755) {
                // SFTP v3 has no "already exists" status: look.
                match c.sftp.stat(Path::new(&path)) {
                    Ok(st) if st.is_dir() => {}
                    _ => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Every regular file under `prefix` (keys relative to the root); `temps` picks the temp
    /// files instead of the objects.
    fn walk(&self, c: &Conn, prefix: &str, temps: bool) -> std::result::Result<Vec<ObjectInfo>, Fail> {
        // Start in the deepest directory the prefix names: "a/b/c" -> "a/b/", names from "c".
        let start = match prefix.rfind('/') {
            Some(i) => &prefix[..=i],
            None => "",
        };
        let mut out = Vec::new();
        let mut dirs = vec![start.to_string()];
        let mut first = true;
        while let Some(dir) = dirs.pop() {
            let path = format!("{}/{}", self.cfg.root, dir.trim_end_matches('/'));
            let entries = match c.sftp.readdir(Path::new(if path.is_empty() { "/" } else { &path })) {
                Ok(v) => v,
                Err(e) if is_missing(&e) => {
                    if first {
                        self.check_root(c)?;
                    }
                    // A directory removed while we walk: nothing under it.
                    first = false;
                    continue;
                }
                Err(e) => return Err(Fail::Ssh(e)),
            };
            first = false;
            for (p, st) in entries {
                let Some(name) = p.file_name().and_then(|n| n.to_str()) else { continue };
                if name == "." || name == ".." {
                    continue;
                }
                let key = format!("{dir}{name}");
                if st.is_dir() {
                    let sub = format!("{key}/");
                    if sub.starts_with(prefix) || prefix.starts_with(&sub) {
                        dirs.push(sub);
                    }
                } else if st.is_file() && key.starts_with(prefix) && name.starts_with(FS_TMP_PREFIX) == temps {
                    out.push(ObjectInfo { key, size: st.size.unwrap_or(0), modified: mtime(&st) });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

impl SftpStorage {
    /// Cheap: connections are made on first use.
    pub fn new(cfg: SftpConfig) -> SftpStorage {
        SftpStorage { inner: Arc::new(Inner { cfg, pool: Pool::default() }) }
    }

    pub fn config(&self) -> &SftpConfig {
        &self.inner.cfg
    }
}

impl Storage for SftpStorage {
    fn get(&self, key: &str) -> Result<Option<Box<dyn Read + Send>>> {
        check_key("get", key)?;
        reader::open(self.inner.clone(), key)
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        let mut w = self.writer(key)?;
        std::io::Write::write_all(&mut w, data).map_err(|e| Error::storage("put", key.to_string(), e))?;
        w.finish().map(|_| ())
    }

    fn writer(&self, key: &str) -> Result<Box<dyn ObjectWriter>> {
        check_key("write", key)?;
        Ok(Box::new(writer::SftpWriter::new(self.inner.clone(), key)?))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.inner.run("list", prefix, |c| self.inner.walk(c, prefix, false))
    }

    fn exists(&self, key: &str) -> Result<bool> {
        check_key("stat", key)?;
        let inner = &self.inner;
        inner.run("stat", key, |c| match c.sftp.stat(Path::new(&inner.path(key))) {
            Ok(st) => Ok(st.is_file()),
            Err(e) if is_missing(&e) => inner.check_root(c).map(|_| false),
            Err(e) => Err(e.into()),
        })
    }

    /// The directory exists (as for file storage).
    fn has_dir(&self, dir: &str) -> Result<bool> {
        let inner = &self.inner;
        let d = dir.trim_end_matches('/');
        inner.run("list", dir, |c| match c.sftp.stat(Path::new(&inner.path(d))) {
            Ok(st) => Ok(st.is_dir()),
            Err(e) if is_missing(&e) => inner.check_root(c).map(|_| false),
            Err(e) => Err(e.into()),
        })
    }

    /// Creates the prefix directory when it is missing (as file storage does).
    fn prepare_write(&self) -> Result<()> {
        let inner = &self.inner;
        inner.run("prepare", "", |c| Inner::mkdirs(c, inner.root_path()).map_err(Fail::Ssh))
    }

    fn delete(&self, key: &str) -> Result<()> {
        check_key("delete", key)?;
        let inner = &self.inner;
        inner.run("delete", key, |c| match c.sftp.unlink(Path::new(&inner.path(key))) {
            Ok(()) => Ok(()),
            Err(e) if is_missing(&e) => inner.check_root(c),
            Err(e) => Err(e.into()),
        })
    }

    fn describe(&self) -> String {
        self.inner.cfg.describe()
    }

    fn pending_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>> {
        let temps = self.inner.run("list-uploads", prefix, |c| self.inner.walk(c, prefix, true))?;
        Ok(temps
            .into_iter()
            .map(|o| PendingUpload { key: o.key, upload_id: String::new(), last_activity: o.modified, size: o.size })
            .collect())
    }

    fn abort_upload(&self, upload: &PendingUpload) -> Result<()> {
        let key = upload.key.as_str();
        check_key("abort-upload", key)?;
        if !base_name(key).starts_with(FS_TMP_PREFIX) {
            return Err(Error::storage(
                "abort-upload",
                key.to_string(),
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a temp file of an unfinished upload"),
            ));
        }
        let inner = &self.inner;
        inner.run("abort-upload", key, |c| match c.sftp.unlink(Path::new(&inner.path(key))) {
            Ok(()) => Ok(()),
            Err(e) if is_missing(&e) => Ok(()),
            Err(e) => Err(e.into()),
        })
    }
}
