//! Streaming reads with resume: one open file, read front to back (libssh2 reads ahead); after
//! a broken connection, a new connection opens the file again and seeks to the byte where the
//! read broke, provided the object is still the one we started (same size and modification
//! time: objects are replaced by rename, never changed in place). Reconnects are retried
//! through retry.rs; when they are used up the read fails (kind Unreachable) instead of ending
//! early. A file that ends before its size is reported as such (UnexpectedEof), never as a
//! short read.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use super::conn::Conn;
use super::{is_missing, mtime, Fail, Inner};
use crate::error::{Error, Result};
use crate::storage::retry;

pub(crate) struct SftpReader {
    inner: Arc<Inner>,
    key: String,
    conn: Option<Conn>,
    file: Option<ssh2::File>,
    pos: u64,
    size: u64,
    modified: std::time::SystemTime,
    reconnects_left: u32,
}

pub(crate) fn open(inner: Arc<Inner>, key: &str) -> Result<Option<Box<dyn Read + Send>>> {
    let path = inner.path(key);
    let (conn, opened) = inner.attempt("get", key, |conn| {
        conn.sftp.open(Path::new(&path)).and_then(|mut f| f.stat().map(|st| (f, st))).map_err(Fail::Ssh)
    })?;
    match opened {
        Ok((file, st)) => {
            let reconnects_left = inner.cfg.max_retries;
            Ok(Some(Box::new(SftpReader {
                key: key.to_string(),
                conn: Some(conn),
                file: Some(file),
                pos: 0,
                size: st.size.unwrap_or(0),
                modified: mtime(&st),
                reconnects_left,
                inner,
            })))
        }
        Err(Fail::Ssh(e)) if is_missing(&e) => {
            let r = inner.check_root(&conn);
            inner.release(conn, None);
            match r {
                Ok(()) => Ok(None),
                Err(Fail::Ours(e)) => Err(e),
                Err(Fail::Ssh(e)) => Err(inner.error("get", key, &e)),
            }
        }
        Err(Fail::Ssh(e)) => {
            let err = inner.error("get", key, &e);
            inner.release(conn, Some(&e));
            Err(err)
        }
        Err(Fail::Ours(e)) => {
            inner.release(conn, None);
            Err(e)
        }
    }
}

/// A transport failure after the retries: its kind stays Unreachable (ConnectionAborted),
/// never read as undecodable data.
fn lost(e: Error) -> io::Error {
    let kind = if e.is_transient() { io::ErrorKind::ConnectionAborted } else { io::ErrorKind::Other };
    io::Error::new(kind, e.to_string())
}

impl SftpReader {
    /// A new connection, the file opened again at `pos`.
    fn reconnect(&mut self, why: &str) -> io::Result<()> {
        if let Some(c) = &self.conn {
            // Closing the file on a stalled connection must not wait the whole call timeout.
            c.session.set_timeout(1000);
        }
        drop(self.file.take());
        if let Some(c) = self.conn.take() {
            // The old session is what broke; idle ones likely went the same way.
            c.discard();
            self.inner.pool.clear();
        }
        if self.reconnects_left == 0 {
            let e = ssh2::Error::new(ssh2::ErrorCode::Session(libssh2_sys::LIBSSH2_ERROR_SOCKET_RECV), "the download broke off");
            let err = self.inner.error("get", &self.key, &e);
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("{err}: at byte {} of {}: {why}", self.pos, self.size),
            ));
        }
        self.reconnects_left -= 1;
        let (inner, key, pos) = (self.inner.clone(), self.key.clone(), self.pos);
        let (size, modified) = (self.size, self.modified);
        let what = format!("get {} from byte {pos}", inner.url(&key));
        let r = retry::run(&inner.policy(), &what, || -> Result<(Conn, ssh2::File)> {
            let path = inner.path(&key);
            let (conn, opened) = inner.attempt("get", &key, |conn| {
                conn.sftp.open(Path::new(&path)).and_then(|mut f| f.stat().map(|st| (f, st))).map_err(Fail::Ssh)
            })?;
            match opened {
                Ok((mut f, st)) => {
                    if st.size.unwrap_or(0) != size || mtime(&st) != modified {
                        return Err(Error::storage("get", key.clone(), io::Error::other(format!(
                            "{}: the object was replaced while it was read: read it again",
                            inner.url(&key)
                        ))));
                    }
                    f.seek(SeekFrom::Start(pos)).map_err(|e| Error::storage("get", key.clone(), e))?;
                    Ok((conn, f))
                }
                Err(Fail::Ssh(e)) => {
                    let err = inner.error("get", &key, &e);
                    inner.release(conn, Some(&e));
                    Err(err)
                }
                Err(Fail::Ours(e)) => {
                    inner.release(conn, None);
                    Err(e)
                }
            }
        });
        match r {
            Ok((c, f)) => {
                self.conn = Some(c);
                self.file = Some(f);
                Ok(())
            }
            Err((e, _)) => Err(lost(e)),
        }
    }
}

impl Read for SftpReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() || self.pos >= self.size {
            return Ok(0);
        }
        loop {
            let Some(f) = self.file.as_mut() else {
                self.reconnect("not connected")?;
                continue;
            };
            let want = out.len().min((self.size - self.pos).min(usize::MAX as u64) as usize);
            match f.read(&mut out[..want]) {
                Ok(0) => {
                    // The server says end of file before the size it gave: either the
                    // connection broke (libssh2 may report it so) or the file shrank.
                    let alive = self.conn.as_ref().is_some_and(|c| c.sftp.stat(Path::new("/")).is_ok());
                    if alive {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("{}: the file ended at byte {} of {} (truncated while read)", self.inner.url(&self.key), self.pos, self.size),
                        ));
                    }
                    self.reconnect("the connection closed")?;
                }
                Ok(n) => {
                    self.pos += n as u64;
                    return Ok(n);
                }
                Err(e) => self.reconnect(&e.to_string())?,
            }
        }
    }
}

impl Drop for SftpReader {
    fn drop(&mut self) {
        drop(self.file.take());
        if let Some(c) = self.conn.take() {
            // Only a read that got to the end leaves the connection in a known state.
            if self.pos >= self.size {
                self.inner.release(c, None);
            }
        }
    }
}
