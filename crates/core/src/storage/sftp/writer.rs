//! Streaming uploads: bytes gather in one 1 MiB buffer (libssh2 pipelines a large write as
//! many SFTP packets; small writes would wait for an answer each) and go to a temp file beside
//! the object, which `finish` fsyncs, closes and renames over the object (posix-rename: atomic,
//! replaces). Dropping the writer aborts: the temp file is removed; a killed process leaves it
//! behind, invisible to `list`, reported by `pending_uploads`.

use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use libssh2_sys as raw;
use ssh2::{ErrorCode, OpenFlags, OpenType};

use super::conn::Conn;
use super::{base_name, is_missing, Fail, Inner};
use crate::error::{Error, Result};
use crate::storage::fs::FS_TMP_PREFIX;
use crate::storage::ObjectWriter;

const BUF: usize = 1 << 20;
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

pub(crate) struct SftpWriter {
    inner: Arc<Inner>,
    key: String,
    tmp: String,
    conn: Option<Conn>,
    file: Option<ssh2::File>,
    buf: Vec<u8>,
    written: u64,
    /// The session failed: the connection is not given back.
    broken: Option<ssh2::Error>,
}

impl SftpWriter {
    pub(crate) fn new(inner: Arc<Inner>, key: &str) -> Result<SftpWriter> {
        let dir = match key.rfind('/') {
            Some(i) => &key[..=i],
            None => "",
        };
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = inner.path(&format!("{dir}{FS_TMP_PREFIX}{}-{n}-{}", std::process::id(), base_name(key)));
        let flags = OpenFlags::WRITE | OpenFlags::EXCLUSIVE;
        let (conn, opened) = inner.attempt("write", key, |conn| {
            let mut opened = conn.sftp.open_mode(Path::new(&tmp), flags, 0o640, OpenType::File);
            if matches!(&opened, Err(e) if is_missing(e)) {
                // The directory is new (the first object of a backup or a fresh prefix).
                let parent = &tmp[..tmp.rfind('/').unwrap_or(0)];
                opened = Inner::mkdirs(conn, parent).and_then(|_| conn.sftp.open_mode(Path::new(&tmp), flags, 0o640, OpenType::File));
            }
            opened.map_err(Fail::Ssh)
        })?;
        match opened {
            Ok(f) => Ok(SftpWriter { inner, key: key.to_string(), tmp, conn: Some(conn), file: Some(f), buf: Vec::new(), written: 0, broken: None }),
            Err(Fail::Ssh(e)) => {
                let err = inner.error("write", key, &e);
                inner.release(conn, Some(&e));
                Err(err)
            }
            Err(Fail::Ours(e)) => {
                inner.release(conn, None);
                Err(e)
            }
        }
    }

    /// An ssh2 failure as ours, remembering a broken session.
    fn fail(&mut self, e: ssh2::Error) -> Error {
        let err = self.inner.error("write", &self.key, &e);
        if super::conn::is_session_error(&e) {
            self.broken = Some(e);
        }
        err
    }

    /// Whether the connection still answers: tells a lost connection (worth retrying the
    /// upload) from a refusal by the server (disk full, quota), which libssh2 reports the same
    /// way through `io::Write`.
    fn io_fail(&mut self, e: io::Error) -> io::Error {
        let Some(c) = &self.conn else { return e };
        match c.sftp.stat(Path::new("/")) {
            Ok(_) => io::Error::other(format!("{}: the SFTP server refused the write ({e})", self.inner.url(&self.key))),
            Err(probe) => {
                let err = self.fail(probe);
                match err {
                    Error::Storage { source, .. } => io::Error::new(source.kind(), format!("{source} (writing: {e})")),
                    other => io::Error::other(other.to_string()),
                }
            }
        }
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let f = self.file.as_mut().ok_or_else(|| io::Error::other("writer already finished"))?;
        match f.write_all(&self.buf) {
            Ok(()) => {
                self.buf.clear();
                Ok(())
            }
            Err(e) => Err(self.io_fail(e)),
        }
    }

    fn commit(&mut self) -> Result<()> {
        self.flush_buf().map_err(|e| Error::storage("write", self.key.clone(), e))?;
        let mut f = self.file.take().expect("not finished twice");
        // Durable before visible, where the server can (fsync@openssh.com).
        match f.fsync() {
            Ok(()) => {}
            Err(e) if e.code() == ErrorCode::SFTP(raw::LIBSSH2_FX_OP_UNSUPPORTED) => {}
            Err(e) => return Err(self.fail(e)),
        }
        if let Err(e) = f.close() {
            return Err(self.fail(e));
        }
        drop(f);
        let c = self.conn.as_ref().expect("connection held until done");
        let target = self.inner.path(&self.key);
        match c.posix_rename(&self.tmp, &target) {
            Ok(()) => Ok(()),
            Err(e) if e.code() == ErrorCode::SFTP(raw::LIBSSH2_FX_OP_UNSUPPORTED) => {
                // A server without OpenSSH's extension: SFTP's own rename refuses an existing
                // target, so remove it first (not atomic: README "SFTP").
                match c.sftp.unlink(Path::new(&target)) {
                    Ok(()) => {}
                    Err(e) if is_missing(&e) => {}
                    Err(e) => return Err(self.fail(e)),
                }
                let r = c.sftp.rename(Path::new(&self.tmp), Path::new(&target), None);
                r.map_err(|e| self.fail(e))
            }
            Err(e) => Err(self.fail(e)),
        }
    }
}

impl Write for SftpWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(BUF);
        }
        let n = data.len().min(BUF - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        self.written += n as u64;
        if self.buf.len() >= BUF {
            self.flush_buf()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for SftpWriter {
    fn finish(mut self: Box<Self>) -> Result<u64> {
        self.commit()?;
        self.tmp.clear(); // renamed: nothing to remove on drop
        Ok(self.written)
    }
}

impl Drop for SftpWriter {
    fn drop(&mut self) {
        if let (Some(c), Some(_)) = (&self.conn, &self.broken) {
            // Closing the file on a broken connection must not wait the whole call timeout.
            c.session.set_timeout(1000);
        }
        drop(self.file.take());
        let Some(c) = self.conn.take() else { return };
        if self.broken.is_none() && !self.tmp.is_empty() {
            // Aborted: remove the temp file (best effort; a leftover is a pending upload).
            let _ = c.sftp.unlink(Path::new(&self.tmp));
        }
        self.inner.release(c, self.broken.as_ref());
    }
}
