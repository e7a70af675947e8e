//! One SSH connection with its SFTP channel, and the pool that reuses them.
//!
//! libssh2 is blocking and a session serializes its calls (one mutex per session), so
//! concurrent users (the archiver's look-ahead uploads, a backup's upload threads) each take a
//! connection of their own from the pool and give it back when done; a connection that failed
//! at the session level (socket closed, timeout) is dropped instead, so the next user connects
//! afresh. No threads and no child processes: everything runs on the caller's thread.
//!
//! Atomic replace needs OpenSSH's `posix-rename@openssh.com` (plain SFTP rename refuses an
//! existing target). libssh2 has it (`libssh2_sftp_posix_rename_ex`) but the ssh2 crate does
//! not bind it, so each connection opens a second SFTP channel through the raw API for renames.

use std::ffi::CString;
use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::raw::{c_char, c_int};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use libssh2_sys as raw;
use ssh2::{ErrorCode, Session, Sftp};

use super::SftpConfig;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the server in one blocking call (libssh2's session timeout).
const CALL_TIMEOUT_MS: u32 = 120_000;
/// Idle connections kept per storage.
const POOL_MAX: usize = 8;

extern "C" {
    // In libssh2 >= 1.11 (libssh2-sys builds 1.11 from its bundled source), not bound by
    // libssh2-sys.
    fn libssh2_sftp_posix_rename_ex(
        sftp: *mut raw::LIBSSH2_SFTP,
        source: *const c_char,
        source_len: libc::size_t,
        dest: *const c_char,
        dest_len: libc::size_t,
    ) -> c_int;
}

/// Why a connection could not be made: what `Inner::connect_error` turns into a message.
pub(crate) enum ConnectError {
    /// TCP or SSH handshake: worth retrying.
    Reach(io::Error),
    /// The key file cannot be read.
    KeyFile(io::Error),
    /// The server refused every way we offered to log in.
    Denied(String),
    /// The server has no SFTP subsystem, or another SSH-level failure after login.
    Sftp(ssh2::Error),
}

/// The raw SFTP channel used for posix-rename.
struct RenameChannel {
    sftp: *mut raw::LIBSSH2_SFTP,
}

// SAFETY: the pointer is only used while holding the session's lock (Session::raw()), which
// is how ssh2 itself serializes libssh2 calls.
unsafe impl Send for RenameChannel {}

pub(crate) struct Conn {
    // Field order: channels close before the session.
    rename: RenameChannel,
    pub sftp: Sftp,
    pub session: Session,
}

impl Drop for Conn {
    fn drop(&mut self) {
        let _guard = self.session.raw();
        // SAFETY: the channel was made by libssh2_sftp_init on this session and is shut down once.
        unsafe { raw::libssh2_sftp_shutdown(self.rename.sftp) };
    }
}

/// Whether `e` says the connection itself is gone or stuck (as opposed to an SFTP status such
/// as "no such file", after which the connection is fine).
pub(crate) fn is_session_error(e: &ssh2::Error) -> bool {
    matches!(e.code(), ErrorCode::Session(_))
}

impl Conn {
    pub(crate) fn open(cfg: &SftpConfig) -> Result<Conn, ConnectError> {
        let addrs: Vec<_> = cfg.address().to_socket_addrs().map_err(ConnectError::Reach)?.collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the host name resolved to no address");
        let mut tcp = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let tcp = tcp.ok_or(ConnectError::Reach(last))?;
        let _ = tcp.set_nodelay(true);
        let mut session = Session::new().map_err(|e| ConnectError::Reach(e.into()))?;
        session.set_tcp_stream(tcp);
        session.set_timeout(CALL_TIMEOUT_MS);
        // The host key is not checked, as in WAL-G (README: "SFTP").
        session.handshake().map_err(|e| ConnectError::Reach(io::Error::new(io::ErrorKind::ConnectionAborted, format!("SSH handshake: {e}"))))?;
        let mut tried = Vec::new();
        if let Some(path) = &cfg.key_path {
            // Read it ourselves first: libssh2 says only "unable to open" for a missing file.
            std::fs::File::open(path).map_err(ConnectError::KeyFile)?;
            match session.userauth_pubkey_file(&cfg.user, None, Path::new(path), None) {
                Ok(()) => {}
                Err(e) if is_auth_refusal(&e) => tried.push(format!("key {path} ({})", e.message())),
                Err(e) => return Err(ConnectError::Reach(io::Error::new(io::ErrorKind::ConnectionAborted, e.to_string()))),
            }
        }
        if !session.authenticated() {
            if let Some(pw) = &cfg.password {
                match session.userauth_password(&cfg.user, &pw.0) {
                    Ok(()) => {}
                    Err(e) if is_auth_refusal(&e) => tried.push("password".into()),
                    Err(e) => return Err(ConnectError::Reach(io::Error::new(io::ErrorKind::ConnectionAborted, e.to_string()))),
                }
            }
        }
        if !session.authenticated() {
            return Err(ConnectError::Denied(tried.join(", ")));
        }
        let sftp = session.sftp().map_err(ConnectError::Sftp)?;
        let rename = {
            let mut guard = session.raw();
            // SAFETY: a live, authenticated session; the result is checked for NULL.
            let p = unsafe { raw::libssh2_sftp_init(&mut *guard as *mut raw::LIBSSH2_SESSION) };
            if p.is_null() {
                let rc = unsafe { raw::libssh2_session_last_errno(&mut *guard as *mut raw::LIBSSH2_SESSION) };
                return Err(ConnectError::Sftp(ssh2::Error::from_session_error_raw(&mut *guard as *mut _, rc)));
            }
            RenameChannel { sftp: p }
        };
        Ok(Conn { rename, sftp, session })
    }

    /// Close a connection that is (or may be) broken without waiting long on it: closing sends
    /// and awaits channel-close messages, which a stalled network would hold up for the whole
    /// call timeout.
    pub(crate) fn discard(self) {
        self.session.set_timeout(1000);
        drop(self);
    }

    /// Rename `from` over `to` atomically (rename(2) on the server), replacing `to` if present.
    pub(crate) fn posix_rename(&self, from: &str, to: &str) -> Result<(), ssh2::Error> {
        let (f, t) = (CString::new(from).map_err(|_| nul())?, CString::new(to).map_err(|_| nul())?);
        let mut guard = self.session.raw();
        // SAFETY: the channel belongs to this session, whose lock we hold; the strings outlive
        // the call.
        let rc = unsafe { libssh2_sftp_posix_rename_ex(self.rename.sftp, f.as_ptr(), from.len(), t.as_ptr(), to.len()) };
        if rc == 0 {
            return Ok(());
        }
        if rc == raw::LIBSSH2_ERROR_SFTP_PROTOCOL {
            // SAFETY: as above.
            let status = unsafe { raw::libssh2_sftp_last_error(self.rename.sftp) } as c_int;
            return Err(ssh2::Error::from_errno(ErrorCode::SFTP(status)));
        }
        Err(ssh2::Error::from_session_error_raw(&mut *guard as *mut _, rc))
    }
}

fn nul() -> ssh2::Error {
    ssh2::Error::new(ErrorCode::Session(raw::LIBSSH2_ERROR_INVAL), "a path contains a NUL byte")
}

/// The server said no to this way of logging in (as opposed to the connection failing).
fn is_auth_refusal(e: &ssh2::Error) -> bool {
    matches!(
        e.code(),
        ErrorCode::Session(raw::LIBSSH2_ERROR_AUTHENTICATION_FAILED)
            | ErrorCode::Session(raw::LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED)
            | ErrorCode::Session(raw::LIBSSH2_ERROR_METHOD_NOT_SUPPORTED)
            | ErrorCode::Session(raw::LIBSSH2_ERROR_FILE)
            | ErrorCode::Session(raw::LIBSSH2_ERROR_PASSWORD_EXPIRED)
    )
}

/// Idle connections of one storage.
#[derive(Default)]
pub(crate) struct Pool {
    idle: Mutex<Vec<Conn>>,
}

impl Pool {
    pub(crate) fn take(&self) -> Option<Conn> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    /// Give a healthy connection back (beyond POOL_MAX it is closed).
    pub(crate) fn put(&self, c: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < POOL_MAX {
            idle.push(c);
        }
    }

    /// Close every idle connection (after a session failure: they likely share its fate).
    pub(crate) fn clear(&self) {
        let drained: Vec<Conn> = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|p| p.into_inner()));
        drained.into_iter().for_each(Conn::discard);
    }
}
