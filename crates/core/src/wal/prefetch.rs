//! WAL prefetch for `wal-fetch` (WAL-G's layout and semantics): after a segment is fetched, the
//! next `WALG_DOWNLOAD_CONCURRENCY` segments of the same timeline are downloaded in parallel into
//! `<location>/.wal-g/prefetch/`, so the next restore_command call is served from local disk.
//! `<location>` is the directory of restore_command's `%p` (pg_wal), or `WALG_PREFETCH_DIR`.
//!
//! Layout (WAL-G's): `.wal-g/prefetch/<segment>` is a finished, verified segment;
//! `.wal-g/prefetch/running/<segment>` is the claim of a download in progress. Ours adds, beside
//! them (WAL-G ignores names that are not WAL file names): `running/<segment>.part` (the download,
//! written through `fetch`'s own temp file), and `<segment>.xxh3`: the XXH3-128 digest of the bytes
//! that passed `fetch`'s checks, and on its second line the storage they came from
//! (`Storage::describe`).
//!
//! Invariants:
//! - A prefetched segment went through exactly the checks of a direct fetch (`fetch_observed`:
//!   the object's stream checksums and `WalCheck`), and before it is served the file on disk is
//!   checked again (`WalCheck` and its digest): a damaged or foreign file is removed and the
//!   caller fetches from storage. A file without a digest (WAL-G's own) is never served.
//! - It is served only to a fetch from the storage it was downloaded from. The directory outlives
//!   any one restore (a `WALG_PREFETCH_DIR`, or `/tmp` for a `wal-fetch` into `/tmp`), and a
//!   segment of the same name from another cluster's storage passes every check of the file
//!   itself: serving it would replay another cluster's WAL.
//! - It appears under its name only complete (temp file, fsync, rename), and is served only for
//!   exactly the name it was fetched as (the timeline is part of the name), so after a timeline
//!   switch PostgreSQL's request for `00000002…` is never answered with a `00000001…` file.
//! - Nothing here ever makes the real fetch fail or say "missing": `take` answers "served" or
//!   "not served" (then the caller fetches directly), never an error about the prefetch itself.
//! - Stale files are removed: every file of an older timeline or an earlier segment than the one
//!   just requested (WAL-G's rule), and claims whose process is gone.
//! - A claim is taken with O_EXCL and holds the claimer's pid, so two prefetchers never download
//!   the same segment and a waiter can tell a live download from a dead one. wal-fetch takes the
//!   claims for the prefetcher it starts (with that process's pid) before it exits, so the next
//!   request, which PostgreSQL makes at once, waits for the download instead of racing it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::check::WalCheck;
use super::fetch::{fetch_observed, temp_path};
use crate::codec::Pipeline;
use crate::error::{Error, Result};
use crate::format::names::{parse_wal_file_name_with, wal_file_name_for_segno};
use crate::storage::Storage;

/// How long a waiter waits for a running download that makes no progress before fetching itself.
pub const STALL: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(5);

/// The two directories of WAL-G's prefetch layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dirs {
    /// `<location>/.wal-g/prefetch`: finished segments.
    pub ready: PathBuf,
    /// `<location>/.wal-g/prefetch/running`: claims and downloads in progress.
    pub running: PathBuf,
}

impl Dirs {
    /// WAL-G's locations: under `prefetch_dir` (WALG_PREFETCH_DIR) if set, else under the
    /// directory of `dest` (restore_command's `%p`, normally `pg_wal/RECOVERYXLOG`).
    pub fn new(prefetch_dir: Option<&Path>, dest: &Path) -> Dirs {
        let location = match prefetch_dir {
            Some(d) => d.to_path_buf(),
            None => match dest.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            },
        };
        Dirs::at(&location)
    }

    /// The layout under `location` itself.
    pub fn at(location: &Path) -> Dirs {
        let ready = location.join(".wal-g").join("prefetch");
        let running = ready.join("running");
        Dirs { ready, running }
    }

    fn ready_file(&self, name: &str) -> PathBuf {
        self.ready.join(name)
    }
    fn digest_file(&self, name: &str) -> PathBuf {
        self.ready.join(format!("{name}.xxh3"))
    }
    fn claim_file(&self, name: &str) -> PathBuf {
        self.running.join(name)
    }
    fn part_file(&self, name: &str) -> PathBuf {
        self.running.join(format!("{name}.part"))
    }
}

/// Whether `name` is a WAL segment name (24 hex digits), the only kind of file prefetched
/// (never `.history`, `.partial` or `.backup` files, as in WAL-G).
pub fn is_segment_name(name: &str) -> bool {
    name.len() == 24 && name.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

/// The `count` segments after `name` on the same timeline, for segments of `seg_size` bytes
/// (the low 8 digits wrap at 0x100000000 / seg_size). Empty for a name that is not a segment
/// of that size.
pub fn next_segments(name: &str, seg_size: u64, count: usize) -> Vec<String> {
    let Some((tli, segno)) = parse_wal_file_name_with(name, seg_size) else { return Vec::new() };
    // The last segment of the 64-bit WAL address space has no successor.
    let last = u64::MAX / seg_size;
    (1..=count as u64)
        .map_while(|i| segno.checked_add(i).filter(|&n| n <= last))
        .map(|n| wal_file_name_for_segno(tli, n, seg_size))
        .collect()
}

/// The segment size recorded in a WAL segment's first page header (bytes 32..36 of
/// XLogLongPageHeaderData), if the file starts with a plausible one.
pub fn segment_size_of(path: &Path) -> Option<u64> {
    let mut head = [0u8; 40];
    File::open(path).ok()?.read_exact(&mut head).ok()?;
    let size = u32::from_le_bytes(head[32..36].try_into().ok()?) as u64;
    (size.is_power_of_two() && (1 << 20..=1 << 30).contains(&size)).then_some(size)
}

/// Remove every prefetched or running file of an older timeline or of an earlier segment than
/// `requested` (WAL-G's rule: recovery has moved past them), and claims whose process is gone.
/// Returns how many files were removed. Errors are ignored: cleanup is best effort.
pub fn cleanup(dirs: &Dirs, requested: &str, seg_size: u64) -> usize {
    let Some((tli, segno)) = parse_wal_file_name_with(requested, seg_size) else { return 0 };
    let mut removed = 0;
    for dir in [&dirs.ready, &dirs.running] {
        let Ok(entries) = fs::read_dir(dir) else { continue };
        for e in entries.flatten() {
            let file = e.file_name();
            let Some(file) = file.to_str() else { continue };
            let Some(seg) = file.get(..24).filter(|s| is_segment_name(s)) else { continue };
            let Some((t, n)) = parse_wal_file_name_with(seg, seg_size) else { continue };
            let behind = t < tli || (t == tli && n < segno);
            let dead_claim = dir == &dirs.running && file.len() == 24 && claim_is_dead(&e.path());
            if (behind || dead_claim) && fs::remove_file(e.path()).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

/// Whether a claim file names a process that no longer exists (an unreadable or half-written
/// claim is not known dead).
fn claim_is_dead(claim: &Path) -> bool {
    let Ok(text) = fs::read_to_string(claim) else { return false };
    match text.trim().parse::<i32>() {
        Ok(pid) if pid > 0 => !process_alive(pid),
        _ => false,
    }
}

fn process_alive(pid: i32) -> bool {
    // Signal 0 checks existence; EPERM means it exists under another user.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// What happened to one segment the prefetcher was asked for.
#[derive(Debug)]
pub enum Outcome {
    /// Downloaded, verified and put in place.
    Fetched,
    /// Already prefetched, or another process is downloading it.
    Skipped,
    /// Storage said it does not exist (yet): the end of the archive.
    Missing,
    Failed(Error),
}

/// Download `name` into the prefetch directory unless it is there or claimed already.
pub fn prefetch_one(pipeline: &Pipeline, storage: &dyn Storage, dirs: &Dirs, name: &str) -> Outcome {
    if !is_segment_name(name) {
        return Outcome::Failed(Error::InvalidArgument(format!("{name}: only WAL segments are prefetched")));
    }
    let claim = dirs.claim_file(name);
    let me = std::process::id();
    // A claim wal-fetch took for this process before it started (see `claim_for`) is ours.
    let ours = || fs::read_to_string(&claim).is_ok_and(|t| t.trim() == me.to_string());
    if dirs.ready_file(name).exists() {
        if ours() {
            let _ = fs::remove_file(&claim);
        }
        return Outcome::Skipped;
    }
    if let Err(e) = fs::create_dir_all(&dirs.running) {
        return Outcome::Failed(Error::io(&dirs.running, e));
    }
    match OpenOptions::new().write(true).create_new(true).open(&claim) {
        Ok(mut f) => {
            let _ = write!(f, "{me}");
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if !ours() {
                return Outcome::Skipped;
            }
        }
        Err(e) => return Outcome::Failed(Error::io(&claim, e)),
    }
    let part = dirs.part_file(name);
    let result = (|| -> Result<bool> {
        let mut hasher = crate::format::integrity::Hasher::new();
        if !fetch_observed(pipeline, storage, name, &part, &mut |b| {
            hasher.update(b);
        })? {
            return Ok(false);
        }
        let ready = dirs.ready_file(name);
        if ready.exists() {
            // Someone else (a WAL-G prefetcher sharing the directory) finished first.
            return Ok(true);
        }
        let digest = format!("{}\n{}\n", hasher.hex(), storage.describe());
        write_atomically(&dirs.digest_file(name), digest.as_bytes())?;
        fs::rename(&part, &ready).map_err(|e| Error::io(&ready, e))?;
        File::open(&dirs.ready).and_then(|d| d.sync_all()).map_err(|e| Error::io(&dirs.ready, e))?;
        Ok(true)
    })();
    let _ = fs::remove_file(&part);
    let _ = fs::remove_file(temp_path(&part));
    let _ = fs::remove_file(&claim);
    match result {
        Ok(true) => Outcome::Fetched,
        Ok(false) => Outcome::Missing,
        Err(e) => Outcome::Failed(e),
    }
}

fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    let r = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r.map_err(|e| Error::io(path, e))
}

/// The prefetcher's whole run (the hidden `walg-ext wal-prefetch`): clean up behind `requested`,
/// then download the next `count` segments with `count` threads. Each outcome is reported
/// through `log`; the run ends when every download has ended (each is bounded by the storage's
/// own retries), so the process never outlives the request that started it by more than that.
pub fn run(
    pipeline: &Pipeline,
    storage: &dyn Storage,
    dirs: &Dirs,
    requested: &str,
    seg_size: u64,
    count: usize,
    log: &(dyn Fn(&str) + Sync),
) -> Vec<(String, Outcome)> {
    cleanup(dirs, requested, seg_size);
    let names = next_segments(requested, seg_size, count);
    let outcomes: Vec<(String, Outcome)> = std::thread::scope(|s| {
        let handles: Vec<_> = names
            .iter()
            .map(|n| (n.clone(), s.spawn(move || prefetch_one(pipeline, storage, dirs, n))))
            .collect();
        handles
            .into_iter()
            .map(|(n, h)| {
                let o = h.join().unwrap_or_else(|_| Outcome::Failed(Error::Internal("prefetch thread panicked".into())));
                (n, o)
            })
            .collect()
    });
    for (n, o) in &outcomes {
        match o {
            Outcome::Fetched => log(&format!("prefetched {n}")),
            Outcome::Failed(e) => log(&format!("prefetch of {n} failed (the real fetch will retry): {e}")),
            Outcome::Skipped | Outcome::Missing => {}
        }
    }
    outcomes
}

/// Claim, for the prefetcher process `pid` that was just started, the segments it will
/// download (those not prefetched or claimed yet), so that a wal-fetch arriving before that
/// process got going waits for it instead of downloading the same segment. Returns the names
/// claimed. Best effort: a claim that cannot be written is simply not taken.
pub fn claim_for(dirs: &Dirs, names: &[String], pid: u32) -> Vec<String> {
    if fs::create_dir_all(&dirs.running).is_err() {
        return Vec::new();
    }
    let mut claimed = Vec::new();
    for n in names.iter().filter(|n| is_segment_name(n) && !dirs.ready_file(n).exists()) {
        if let Ok(mut f) = OpenOptions::new().write(true).create_new(true).open(dirs.claim_file(n)) {
            if write!(f, "{pid}").is_ok() {
                claimed.push(n.clone());
            }
        }
    }
    claimed
}

/// Why `take` did not serve a file (for the log; the caller then fetches from storage).
#[derive(Debug, PartialEq, Eq)]
pub enum NotServed {
    /// Not prefetched and nobody is downloading it.
    Absent,
    /// A download was running but made no progress for `STALL`, or its process is gone.
    Stalled,
    /// The prefetched file failed its checks (removed); the reason.
    Rejected(String),
}

/// Serve `name` from the prefetch directory into `dest` if it is there (waiting for a download
/// in progress while it makes progress), after checking it again and that it was downloaded from
/// `source` (the configured storage's `describe()`). Ok(()) = `dest` now holds the verified
/// segment. Never fails on account of the prefetch: every problem is a `NotServed`, and the
/// caller fetches from storage.
pub fn take(dirs: &Dirs, name: &str, dest: &Path, source: &str) -> std::result::Result<(), NotServed> {
    if !is_segment_name(name) {
        return Err(NotServed::Absent);
    }
    let ready = dirs.ready_file(name);
    let claim = dirs.claim_file(name);
    let progress = temp_path(&dirs.part_file(name));
    let mut last = (None, Instant::now());
    loop {
        if ready.exists() {
            break;
        }
        if !claim.exists() {
            // The download may have finished between the two checks.
            if ready.exists() {
                break;
            }
            return Err(NotServed::Absent);
        }
        if claim_is_dead(&claim) {
            let _ = fs::remove_file(&claim);
            return Err(NotServed::Stalled);
        }
        let size = fs::metadata(&progress).ok().map(|m| m.len());
        if size != last.0 {
            last = (size, Instant::now());
        } else if last.1.elapsed() >= STALL {
            return Err(NotServed::Stalled);
        }
        std::thread::sleep(POLL);
    }
    match verify(dirs, name, source) {
        Ok(()) => {}
        Err(why) => {
            let _ = fs::remove_file(&ready);
            let _ = fs::remove_file(dirs.digest_file(name));
            return Err(NotServed::Rejected(why));
        }
    }
    // Across file systems (WALG_PREFETCH_DIR elsewhere) the rename fails: fetch directly.
    if let Err(e) = fs::rename(&ready, dest) {
        let _ = fs::remove_file(&ready);
        let _ = fs::remove_file(dirs.digest_file(name));
        return Err(NotServed::Rejected(format!("cannot move it to {}: {e}", dest.display())));
    }
    let _ = fs::remove_file(dirs.digest_file(name));
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// The prefetched file came from `source`, passes the checks of a direct fetch again and has the
/// digest recorded when those checks passed during the download.
fn verify(dirs: &Dirs, name: &str, source: &str) -> std::result::Result<(), String> {
    let path = dirs.ready_file(name);
    let record = fs::read_to_string(dirs.digest_file(name)).map_err(|e| format!("no digest beside it ({e})"))?;
    let mut lines = record.lines();
    let want = lines.next().unwrap_or_default();
    match lines.next() {
        Some(from) if from == source => {}
        Some(from) => return Err(format!("it was downloaded from {from}, not from {source}")),
        None => return Err("no record of the storage it came from".into()),
    }
    let mut f = File::open(&path).map_err(|e| e.to_string())?;
    let mut check = WalCheck::new(name, &path.display().to_string());
    let mut hasher = crate::format::integrity::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.to_string()),
        };
        check.feed(&buf[..n]).map_err(|e| e.to_string())?;
        hasher.update(&buf[..n]);
    }
    check.finish().map_err(|e| e.to_string())?;
    if hasher.hex() != want.trim() {
        return Err("its content does not match the digest recorded when it was verified".into());
    }
    Ok(())
}
