//! Helpers for the threads core starts inside PostgreSQL processes (and the CLI).
//!
//! Invariant: no thread core starts ever takes a signal. PostgreSQL's handlers must run on the
//! process's main thread (ARCHITECTURE.md); a process-directed signal is delivered to any thread
//! that does not block it, so a thread that blocks signals only once it runs leaves a window in
//! which SIGTERM, SIGINT or SIGUSR1 could run a backend's handler on the wrong thread. A new
//! thread inherits the mask of the thread that creates it, so every spawn here happens with all
//! signals blocked in the *parent*, and the parent's mask is restored right after: the child has
//! everything blocked from its first instruction. A signal that arrives meanwhile stays pending
//! and is handled by the main thread as soon as its mask is restored.
//!
//! Use `spawn` / `spawn_scoped` for every thread, and `with_signals_blocked` around anything that
//! may create threads itself (building the tokio runtime; `block_on`, whose futures may start
//! tokio's blocking-pool threads, e.g. for DNS).

use std::io;
use std::thread::{JoinHandle, Scope, ScopedJoinHandle};

use crate::error::{Error, Result};

/// The calling thread's signal mask before `with_signals_blocked` changed it; restored on drop
/// (also when the closure panics).
struct MaskGuard {
    old: libc::sigset_t,
}

impl MaskGuard {
    fn block_all() -> MaskGuard {
        // SAFETY: plain libc calls on local, zero-initialised sigset_t values.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
            MaskGuard { old }
        }
    }
}

impl Drop for MaskGuard {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by block_all on this same thread.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut());
        }
    }
}

/// Run `f` with every signal blocked in the calling thread, then restore its mask. Threads
/// created inside `f` (by us or by a library) inherit the all-blocked mask.
pub fn with_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    let _guard = MaskGuard::block_all();
    f()
}

/// Start a named thread that never takes a signal (see the module header).
pub fn spawn<F, T>(name: String, f: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    with_signals_blocked(|| std::thread::Builder::new().name(name).spawn(f))
}

/// `spawn` inside a `std::thread::scope`.
pub fn spawn_scoped<'scope, 'env, F, T>(
    scope: &'scope Scope<'scope, 'env>,
    name: String,
    f: F,
) -> io::Result<ScopedJoinHandle<'scope, T>>
where
    F: FnOnce() -> T + Send + 'scope,
    T: Send + 'scope,
{
    with_signals_blocked(|| std::thread::Builder::new().name(name).spawn_scoped(scope, f))
}

/// Block every signal in the calling thread, for good. Only for threads created by code that
/// cannot be wrapped (tokio's `on_thread_start`); a second line of defence, since the parent
/// already blocks around the spawn.
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The calling thread's blocked-signal mask, as the kernel reports it (SigBlk, hex).
    pub(crate) fn sig_blk() -> u64 {
        let status = std::fs::read_to_string("/proc/thread-self/status").expect("read /proc/thread-self/status");
        let line = status.lines().find(|l| l.starts_with("SigBlk:")).expect("SigBlk line");
        u64::from_str_radix(line["SigBlk:".len()..].trim(), 16).expect("hex mask")
    }

    /// Every signal a thread can block through glibc: all 64 of Linux but SIGKILL (9) and SIGSTOP
    /// (19), which nobody can block, and glibc's two internal ones (32, 33: thread cancellation
    /// and setxid), which its sigfillset leaves out.
    pub(crate) fn all_blockable() -> u64 {
        let mut m = !0u64;
        for sig in [libc::SIGKILL, libc::SIGSTOP, 32, 33] {
            m &= !(1u64 << (sig - 1));
        }
        m
    }

    /// Query the mask with pthread_sigmask (no change) and tell whether `sig` is blocked.
    fn blocked_now(sig: i32) -> bool {
        unsafe {
            let mut cur: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut cur);
            libc::sigismember(&cur, sig) == 1
        }
    }

    /// Runs `f` on a fresh thread whose mask is exactly "nothing blocked" (a stand-in for a
    /// PostgreSQL backend's main thread, which has its signals unblocked).
    fn on_unblocked_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(move || {
            unsafe {
                let mut none: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut none);
                libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            }
            f()
        })
        .join()
        .unwrap()
    }

    #[test]
    fn spawned_threads_block_everything_from_the_start_and_the_parent_mask_is_restored() {
        let (parent_before, child, parent_after, child_sees_term) = on_unblocked_thread(|| {
            let before = sig_blk();
            // The child's very first action reads its mask: nothing of ours ran before it.
            let h = spawn("walg-test".into(), || (sig_blk(), blocked_now(libc::SIGTERM))).unwrap();
            let after = sig_blk();
            let (child, term) = h.join().unwrap();
            (before, child, after, term)
        });
        assert_eq!(parent_before, 0, "the test parent starts with nothing blocked");
        assert_eq!(child, all_blockable(), "child mask {child:#x}");
        assert!(child_sees_term, "pthread_sigmask in the child says SIGTERM is blocked");
        assert_eq!(parent_after, 0, "parent mask restored: {parent_after:#x}");
    }

    #[test]
    fn scoped_spawn_and_a_parent_with_its_own_mask() {
        let (child, after) = on_unblocked_thread(|| {
            // The parent blocks SIGUSR1 itself: that must survive the spawn.
            unsafe {
                let mut one: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut one);
                libc::sigaddset(&mut one, libc::SIGUSR1);
                libc::pthread_sigmask(libc::SIG_BLOCK, &one, std::ptr::null_mut());
            }
            let child = std::thread::scope(|s| spawn_scoped(s, "walg-test".into(), sig_blk).unwrap().join().unwrap());
            (child, sig_blk())
        });
        assert_eq!(child, all_blockable());
        assert_eq!(after, 1 << (libc::SIGUSR1 - 1), "only the parent's own SIGUSR1 stays blocked");
    }

    #[test]
    fn mask_is_restored_when_the_closure_panics() {
        let after = on_unblocked_thread(|| {
            let r = std::panic::catch_unwind(|| with_signals_blocked(|| panic!("boom")));
            assert!(r.is_err());
            sig_blk()
        });
        assert_eq!(after, 0);
    }
}
