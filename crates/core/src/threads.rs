//! Helpers for the threads core starts inside PostgreSQL processes (and the CLI).

use crate::error::{Error, Result};

/// Threads we start must never take PostgreSQL's signals: its handlers have to run on the
/// main thread (ARCHITECTURE.md), so block everything here.
pub(crate) fn block_signals() {
    // SAFETY: plain libc calls on a local, zero-initialised sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Run `f`, turning a panic into an error so one bad thread cannot take the caller down.
pub(crate) fn catch_panic<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(Error::Internal(format!("{what} panicked: {msg}")))
        }
    }
}
