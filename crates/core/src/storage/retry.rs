//! The one retry policy for remote storage: full-jitter exponential backoff, a bounded number of
//! attempts, one log line per retry, and permanent failures passed straight through.
//!
//! Two ways in, one loop:
//! - [`run_async`] / [`run`] retry one request. Remote backends call them per request, for the
//!   parts of a streaming upload and the range requests of a resuming read (a stream cannot be
//!   replayed from outside). S3 calls it with its own failure type (s3/retry.rs classifies S3's
//!   error codes); the others with [`Error`], keyed on [`Error::is_transient`].
//! - [`Retrying`] decorates a whole [`Storage`]: every single-request operation (get's open, put,
//!   list, exists, has_dir, delete) is retried through the same loop. `storage::open` puts it
//!   around every remote backend that does not retry its requests itself (S3 does, so it is not
//!   wrapped: attempts would multiply).
//!
//! Invariants: a failure that is not transient is returned after exactly one attempt; a "not
//! found" answer is never retried (it is an answer, `Ok(None)` / `Ok(false)`); at most
//! `1 + max_retries` attempts; the delay never exceeds the cap.

use std::future::Future;
use std::io::Read;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::{ObjectInfo, ObjectWriter, PendingUpload, Storage};
use crate::error::{Error, Result};

/// Whether a failure is worth trying again, as it is.
pub trait Transient {
    fn is_transient(&self) -> bool;
    /// The server asked us to slow down (429, 503, SlowDown): wait at least the throttle delay.
    fn is_throttled(&self) -> bool {
        false
    }
}

impl Transient for Error {
    fn is_transient(&self) -> bool {
        Error::is_transient(self)
    }
}

/// How many times and how long.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    pub base: Duration,
    pub cap: Duration,
    /// Minimum delay after a throttling answer (WAL-G: 500 ms).
    pub throttle_min: Duration,
}

impl RetryPolicy {
    pub fn new(max_retries: u32) -> RetryPolicy {
        RetryPolicy {
            max_retries,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(10),
            throttle_min: Duration::from_millis(500),
        }
    }

    /// Full-jitter exponential backoff before retry number `attempt + 1`: a random delay in
    /// [min, min(cap, base * 2^attempt)], `min` being the throttle delay after throttling.
    pub fn backoff(&self, attempt: u32, throttled: bool, random: u64) -> Duration {
        let base = self.base.as_millis() as u64;
        let cap = self.cap.as_millis() as u64;
        let min = if throttled { self.throttle_min.as_millis() as u64 } else { 0 };
        let ceiling = base.saturating_mul(1u64 << attempt.min(20)).min(cap).max(min + 1);
        Duration::from_millis(min + random % (ceiling - min + 1))
    }
}

pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new().build_hasher().finish()
}

type LogFn = Arc<dyn Fn(&str) + Send + Sync>;

fn logger() -> &'static RwLock<Option<LogFn>> {
    static LOG: RwLock<Option<LogFn>> = RwLock::new(None);
    &LOG
}

/// Where retry lines go; stderr by default (the server log, for the extension: storage requests
/// run on threads that must not call PostgreSQL's logging).
pub fn set_retry_log(f: impl Fn(&str) + Send + Sync + 'static) {
    *logger().write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(f));
}

fn log_retry(line: &str) {
    let f = logger().read().unwrap_or_else(|p| p.into_inner()).clone();
    match f {
        Some(f) => f(line),
        None => eprintln!("walg: {line}"),
    }
}

/// The decision after a failed attempt (`attempt` counts from 1): the delay before the next
/// one, or None to give up.
fn next_delay<E: Transient + std::fmt::Display>(policy: &RetryPolicy, what: &str, attempt: u32, e: &E) -> Option<Duration> {
    if !e.is_transient() || attempt > policy.max_retries {
        return None;
    }
    let d = policy.backoff(attempt - 1, e.is_throttled(), random_u64());
    log_retry(&format!(
        "retrying {what} in {} ms (attempt {} of {}): {e}",
        d.as_millis(),
        attempt + 1,
        policy.max_retries + 1
    ));
    Some(d)
}

/// Run `op` until it succeeds, fails permanently, or the retries are used up. Returns the last
/// failure and the number of attempts made.
pub async fn run_async<T, E, F, Fut>(policy: &RetryPolicy, what: &str, mut op: F) -> std::result::Result<T, (E, u32)>
where
    E: Transient + std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, E>>,
{
    let mut attempt = 0u32;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                attempt += 1;
                match next_delay(policy, what, attempt, &e) {
                    Some(d) => tokio::time::sleep(d).await,
                    None => return Err((e, attempt)),
                }
            }
        }
    }
}

/// [`run_async`] for blocking code.
pub fn run<T, E, F>(policy: &RetryPolicy, what: &str, mut op: F) -> std::result::Result<T, (E, u32)>
where
    E: Transient + std::fmt::Display,
    F: FnMut() -> std::result::Result<T, E>,
{
    let mut attempt = 0u32;
    loop {
        match op() {
            Ok(v) => return Ok(v),
            Err(e) => {
                attempt += 1;
                match next_delay(policy, what, attempt, &e) {
                    Some(d) => std::thread::sleep(d),
                    None => return Err((e, attempt)),
                }
            }
        }
    }
}

/// A storage whose single-request operations are retried on transient errors.
pub struct Retrying<S> {
    inner: S,
    policy: RetryPolicy,
}

impl<S: Storage> Retrying<S> {
    pub fn new(inner: S, policy: RetryPolicy) -> Retrying<S> {
        Retrying { inner, policy }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn go<T>(&self, op: &str, key: &str, f: impl FnMut() -> Result<T>) -> Result<T> {
        let what = match key {
            "" => format!("{op} on {}", self.inner.describe()),
            key => format!("{op} {key} on {}", self.inner.describe()),
        };
        run(&self.policy, &what, f).map_err(|(e, attempts)| {
            if attempts > 1 {
                log_retry(&format!("gave up on {what} after {attempts} attempts: {e}"));
            }
            e
        })
    }
}

impl<S: Storage> Storage for Retrying<S> {
    fn get(&self, key: &str) -> Result<Option<Box<dyn Read + Send>>> {
        self.go("get", key, || self.inner.get(key))
    }
    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        self.go("put", key, || self.inner.put(key, data))
    }
    /// Not retried here: a stream cannot be replayed; the backend retries each block it sends.
    fn writer(&self, key: &str) -> Result<Box<dyn ObjectWriter>> {
        self.inner.writer(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.go("list", prefix, || self.inner.list(prefix))
    }
    fn exists(&self, key: &str) -> Result<bool> {
        self.go("stat", key, || self.inner.exists(key))
    }
    fn has_dir(&self, dir: &str) -> Result<bool> {
        self.go("list", dir, || self.inner.has_dir(dir))
    }
    fn prepare_write(&self) -> Result<()> {
        self.go("prepare", "", || self.inner.prepare_write())
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.go("delete", key, || self.inner.delete(key))
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn pending_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>> {
        self.go("list-uploads", prefix, || self.inner.pending_uploads(prefix))
    }
    fn abort_upload(&self, upload: &PendingUpload) -> Result<()> {
        self.go("abort-upload", &upload.key, || self.inner.abort_upload(upload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;

    fn fast(max_retries: u32) -> RetryPolicy {
        RetryPolicy { base: Duration::from_millis(1), cap: Duration::from_millis(2), throttle_min: Duration::from_millis(1), ..RetryPolicy::new(max_retries) }
    }

    #[test]
    fn backoff_is_bounded_and_jittered() {
        let p = RetryPolicy::new(5);
        for attempt in 0..40 {
            for r in [0u64, 1, 12345, u64::MAX] {
                assert!(p.backoff(attempt, false, r) <= Duration::from_secs(10));
                let t = p.backoff(attempt, true, r);
                assert!(t >= Duration::from_millis(500) && t <= Duration::from_secs(10), "{t:?}");
            }
        }
        assert!(p.backoff(0, false, 7) <= Duration::from_millis(100));
        let spread: std::collections::BTreeSet<_> = (0..50).map(|i| p.backoff(6, false, i * 7919)).collect();
        assert!(spread.len() > 10, "jitter spreads the delays: {spread:?}");
    }

    /// The retry tests call only `exists`; any other call is a permanent error, not a panic.
    fn only_exists(op: &'static str, key: &str) -> Error {
        Error::storage(op, key, io::Error::new(io::ErrorKind::Unsupported, "the Flaky test storage answers only exists"))
    }

    /// A storage that fails its first `exists` calls `fail` times with `kind`, then answers.
    struct Flaky {
        calls: AtomicU32,
        fail: u32,
        kind: io::ErrorKind,
    }

    impl Storage for Flaky {
        fn get(&self, key: &str) -> Result<Option<Box<dyn Read + Send>>> {
            Err(only_exists("get", key))
        }
        fn put(&self, key: &str, _: &[u8]) -> Result<()> {
            Err(only_exists("put", key))
        }
        fn writer(&self, key: &str) -> Result<Box<dyn ObjectWriter>> {
            Err(only_exists("write", key))
        }
        fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
            Err(only_exists("list", prefix))
        }
        fn exists(&self, key: &str) -> Result<bool> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n < self.fail {
                return Err(Error::storage("stat", key, io::Error::new(self.kind, "boom")));
            }
            Ok(false)
        }
        fn delete(&self, key: &str) -> Result<()> {
            Err(only_exists("delete", key))
        }
        fn describe(&self) -> String {
            "flaky://".into()
        }
    }

    // One test touches the global log hook, so the others do not race with it.
    static LOG_LOCK: Mutex<()> = Mutex::new(());

    #[test]
    fn decorator_retries_transient_errors_and_logs_each_retry() {
        let _g = LOG_LOCK.lock().unwrap();
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let l2 = lines.clone();
        set_retry_log(move |l| l2.lock().unwrap().push(l.to_string()));

        let s = Retrying::new(Flaky { calls: AtomicU32::new(0), fail: 2, kind: io::ErrorKind::ConnectionReset }, fast(3));
        assert!(!s.exists("k").unwrap(), "the answer after two resets");
        assert_eq!(s.inner().calls.load(Ordering::SeqCst), 3);
        let got = lines.lock().unwrap().clone();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].starts_with("retrying stat k on flaky:// in ") && got[0].contains("attempt 2 of 4"), "{got:?}");

        // Used up: the last error comes back, after 1 + max_retries attempts.
        lines.lock().unwrap().clear();
        let s = Retrying::new(Flaky { calls: AtomicU32::new(0), fail: 100, kind: io::ErrorKind::TimedOut }, fast(2));
        let e = s.exists("k").unwrap_err();
        assert!(e.is_transient());
        assert_eq!(s.inner().calls.load(Ordering::SeqCst), 3);
        assert!(lines.lock().unwrap().last().unwrap().contains("gave up on stat k on flaky:// after 3 attempts"));

        // Permanent: one attempt, no retry line.
        lines.lock().unwrap().clear();
        let s = Retrying::new(Flaky { calls: AtomicU32::new(0), fail: 100, kind: io::ErrorKind::PermissionDenied }, fast(5));
        let e = s.exists("k").unwrap_err();
        assert!(!e.is_transient());
        assert_eq!(s.inner().calls.load(Ordering::SeqCst), 1);
        assert!(lines.lock().unwrap().is_empty());
        *logger().write().unwrap() = None;
    }

    #[test]
    fn run_async_stops_on_permanent_and_after_max() {
        let _g = LOG_LOCK.lock().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let transient = || Error::storage("get", "k", io::Error::from(io::ErrorKind::ConnectionReset));
        let mut calls = 0;
        let r: std::result::Result<(), _> = rt.block_on(run_async(&fast(2), "get k", || {
            calls += 1;
            let e = transient();
            async move { Err(e) }
        }));
        assert_eq!(r.unwrap_err().1, 3);
        assert_eq!(calls, 3);
        let mut calls = 0;
        let r = rt.block_on(run_async(&fast(5), "get k", || {
            calls += 1;
            let n = calls;
            let e = transient();
            async move { if n < 3 { Err(e) } else { Ok(n) } }
        }));
        assert_eq!(r.unwrap(), 3);
    }
}
