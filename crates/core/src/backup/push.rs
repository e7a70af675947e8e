//! Base backup upload: PGDATA -> tar parts -> compression -> storage, on several threads, then
//! pg_control.tar; `finish` adds backup_label.tar, the metadata files and, last, the sentinel.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::delta::{plan_file, DeltaBase, FilePlan};
use super::delta_map::{changed_in_range, check_map_missed, FilePages, PagePlan};
use super::page_verify::{corrupt_blocks_field, describe_corrupt, PageVerifier};
use super::walk::{walk_pgdata, EntryKind, WalkEntry, PG_CONTROL_NAME};
use crate::format::increment::{read_page, scan_pages, IncrementHeader, Selection, PAGE_SIZE};
use crate::threads::{catch_panic, spawn_scoped};
use crate::codec::Pipeline;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::format::integrity::{HashingWriter, ObjectRecord, RecordSlot};
use crate::format::names::{files_metadata_key, metadata_key, part_base_name, sentinel_key, tar_partitions_prefix};
use crate::format::sentinel::{BackupMetadata, FileDescription, FilesMetadata, Sentinel, DATE_FMT};
use crate::format::tablespace::{Tablespace, TablespaceSpec};
use crate::format::tar as tarfmt;
use crate::storage::{ObjectWriter, Storage};

/// What pg_backup_start told us, plus identity of the backup.
#[derive(Clone, Debug)]
pub struct BackupStart {
    pub name: String,
    pub pgdata: PathBuf,
    pub start_lsn: u64,
    pub timeline: u32,
    pub wal_segment_size: u64,
    pub pg_version: i32,
    pub system_identifier: u64,
    pub start_time: DateTime<Utc>,
    pub hostname: String,
    pub is_permanent: bool,
    pub user_data: Option<serde_json::Value>,
    /// The base when this is a delta backup (delta.rs); the name must then be the delta's.
    pub delta: Option<DeltaBase>,
    /// How a delta chooses its pages (delta_map.rs); None means the full scan.
    pub delta_pages: Option<PagePlan>,
    /// `walg.delta_map_check`: a delta planned from maps also scans every page (delta_map.rs).
    pub delta_map_check: bool,
    /// The cluster has data checksums (pg_control's data_page_checksum_version != 0): pages
    /// are verified when `verify_page_checksums` is on (page_verify.rs).
    pub data_checksums: bool,
    /// Tablespace OID -> name (pg_tablespace), recorded in the sentinel so a restore can take
    /// `--tablespace NAME=DIR`. Empty when unknown.
    pub tablespace_names: BTreeMap<String, String>,
}

pub const PHASE_IDLE: u32 = 0;
pub const PHASE_WALKING: u32 = 1;
pub const PHASE_UPLOADING: u32 = 2;
pub const PHASE_PG_CONTROL: u32 = 3;
pub const PHASE_FINISHING: u32 = 4;
pub const PHASE_DONE: u32 = 5;
/// Data copied and pg_backup_stop done; waiting for the backup's WAL to be in storage.
pub const PHASE_WAITING_WAL: u32 = 6;

/// Shared with the caller and read while the backup runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// 0 idle, 1 walking, 2 uploading, 3 pg_control, 4 finishing, 5 done, 6 waiting for WAL
    /// (PHASE_* constants).
    pub phase: AtomicU32,
    pub bytes_total: AtomicU64,
    pub bytes_done: AtomicU64,
    pub files_total: AtomicU64,
    pub files_done: AtomicU64,
}

/// What `finish` needs from the data phase.
#[derive(Debug, Default)]
pub struct DataResult {
    pub(crate) files: BTreeMap<String, FileDescription>,
    pub(crate) tar_file_sets: BTreeMap<String, Vec<String>>,
    /// Size and hash of each tar object as stored (files_metadata.json `WalgExtParts`).
    pub(crate) part_records: BTreeMap<String, ObjectRecord>,
    pub(crate) uncompressed_size: u64,
    pub(crate) compressed_size: u64,
    pub(crate) data_catalog_size: u64,
    /// Relation files with corrupt pages (tar entry name, fork block numbers); None when page
    /// checksums were not verified.
    pub(crate) corrupt_pages: Option<Vec<(String, Vec<u32>)>>,
    /// Database name -> OID (files_metadata.json `WalgExtDatabases`, for partial restore).
    pub(crate) databases: BTreeMap<String, u32>,
    /// Tablespaces found by the walk: (OID, location).
    pub(crate) tablespaces: Vec<(String, String)>,
}

impl DataResult {
    /// The cluster's databases (name -> OID), read by the caller while the backup runs.
    pub fn set_databases(&mut self, databases: BTreeMap<String, u32>) {
        self.databases = databases;
    }
    pub fn uncompressed_size(&self) -> u64 {
        self.uncompressed_size
    }
    pub fn compressed_size(&self) -> u64 {
        self.compressed_size
    }
    pub fn data_catalog_size(&self) -> u64 {
        self.data_catalog_size
    }
    /// Files with corrupt pages (entry name, block numbers), or None when not verified.
    pub fn corrupt_pages(&self) -> Option<&[(String, Vec<u32>)]> {
        self.corrupt_pages.as_deref()
    }
    /// Number of tar objects written so far (data parts and pg_control.tar).
    pub fn part_count(&self) -> usize {
        self.tar_file_sets.len()
    }

    fn add_part(&mut self, p: PartResult) {
        self.uncompressed_size += p.uncompressed;
        self.compressed_size += p.compressed;
        self.part_records.insert(p.name.clone(), p.record);
        self.tar_file_sets.insert(p.name, p.entries);
    }
}

/// What upload at `bytes_per_sec` means, shared by all reader threads.
struct RateLimiter {
    bytes_per_sec: u64,
    next: Mutex<Instant>,
}

impl RateLimiter {
    fn take(&self, n: usize) {
        let wait = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if *next < now {
                *next = now;
            }
            let wait = *next - now;
            *next += Duration::from_secs_f64(n as f64 / self.bytes_per_sec as f64);
            wait
        };
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

/// State shared by the upload workers.
struct Ctx<'a> {
    storage: &'a dyn Storage,
    backup: &'a str,
    pipeline: Pipeline,
    threshold: u64,
    part_counter: AtomicU32,
    stop: AtomicBool,
    limiter: Option<RateLimiter>,
    progress: &'a Progress,
    /// The base of a delta backup.
    delta: Option<&'a DeltaBase>,
    /// The pages the WAL maps name, when a delta uses them.
    mapped: Option<&'a super::delta_map::ChangedPages>,
    /// Some((base start, backup start)): prove the maps against a full scan (delta_map.rs).
    map_check: Option<(u64, u64)>,
    /// Some(backup start LSN) when page checksums are verified (page_verify.rs).
    verify_from: Option<u64>,
    store_all_corrupt_blocks: bool,
}

/// Which pages of a relation segment a delta stores.
enum Choice {
    /// Read every page and keep those at or after the base's start LSN (WAL-G's way).
    Scan { base_lsn: u64 },
    /// These blocks, named by the WAL maps.
    Mapped(Vec<u32>),
}

/// How a file went into a part.
enum Stored {
    /// It vanished before it could be opened.
    Vanished,
    Whole,
    /// As a "wi1" increment of this many bytes.
    Increment(u64),
}

/// Counts the uncompressed tar bytes going into the compressor.
struct Counting {
    inner: Box<dyn ObjectWriter>,
    count: u64,
}

impl Write for Counting {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Counting {
    fn commit_input(&mut self, n: usize) -> io::Result<()> {
        self.inner.commit_input(n)?;
        self.count += n as u64;
        Ok(())
    }
}

/// Read into `dst` until it is full; past the end of the file, zeros (see `add_file`).
fn fill(src: &mut Throttled, dst: &mut [u8], eof: &mut bool) -> io::Result<()> {
    let mut n = 0;
    while !*eof && n < dst.len() {
        match src.read(&mut dst[n..]) {
            Ok(0) => *eof = true,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    dst[n..].fill(0);
    Ok(())
}

struct PartResult {
    name: String,
    entries: Vec<String>,
    uncompressed: u64,
    compressed: u64,
    record: ObjectRecord,
}

/// One tar object being uploaded. Dropped without `close` = aborted.
struct PartWriter {
    name: String,
    key: String,
    builder: tar::Builder<Counting>,
    entries: Vec<String>,
    /// Filled with the stored size and hash when the object is committed.
    record: RecordSlot,
}

impl PartWriter {
    fn create(storage: &dyn Storage, backup: &str, base: &str, pipeline: &Pipeline) -> Result<PartWriter> {
        let name = pipeline.object_name(base);
        let key = format!("{}{name}", tar_partitions_prefix(backup));
        // The hash sees exactly the bytes storage receives: under compression and encryption.
        let (raw, record) = HashingWriter::wrap(storage.writer(&key)?);
        let inner = pipeline.writer(raw)?;
        Ok(PartWriter { name, key, builder: tarfmt::builder(Counting { inner, count: 0 }), entries: Vec::new(), record })
    }

    fn uncompressed(&self) -> u64 {
        self.builder.get_ref().count
    }

    fn write_err(&self, e: io::Error) -> Error {
        Error::storage("write", self.key.clone(), e)
    }

    fn add_bytes(&mut self, name: &str, data: &[u8], mode: u32, mtime: u64) -> Result<()> {
        let mut h = tarfmt::file_header(data.len() as u64, mode, mtime);
        tarfmt::append(&mut self.builder, &mut h, name, data).map_err(|e| self.write_err(e))?;
        self.entries.push(name.to_string());
        Ok(())
    }

    fn add_dir(&mut self, e: &WalkEntry) -> Result<()> {
        let mut h = tarfmt::dir_header(e.mode, unix_secs(e.mtime));
        tarfmt::append(&mut self.builder, &mut h, &e.name, io::empty()).map_err(|err| self.write_err(err))?;
        self.entries.push(e.name.clone());
        Ok(())
    }

    fn add_file(&mut self, ctx: &Ctx, e: &WalkEntry, buf: &mut [u8]) -> Result<bool> {
        self.copy_file(ctx, e, buf, None)
    }

    /// Stream one file in through `buf`; `Ok(false)` when it vanished before we could open it.
    /// Exactly the size seen by the walk is stored: cut if the file grew since, zero-filled if
    /// it shrank (PostgreSQL's WAL replay repairs both, as with any base backup). The bytes
    /// stored also go through `verify`, when given.
    fn copy_file(&mut self, ctx: &Ctx, e: &WalkEntry, buf: &mut [u8], mut verify: Option<&mut PageVerifier>) -> Result<bool> {
        let file = match File::open(&e.path) {
            Ok(f) => f,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(err) => return Err(Error::io(&e.path, err)),
        };
        let mut src = Throttled { file, ctx };
        let mut h = tarfmt::file_header(e.size, e.mode, unix_secs(e.mtime));
        tarfmt::append_header(&mut self.builder, &mut h, &e.name).map_err(|err| self.write_err(err))?;
        let read_err = |err: io::Error| {
            if ctx.stop.load(Ordering::Relaxed) {
                Error::Cancelled("backup stopped".into())
            } else {
                Error::io(&e.path, err)
            }
        };
        let mut remaining = e.size;
        let mut eof = false;
        while remaining > 0 {
            let left = remaining.min(usize::MAX as u64) as usize;
            let out = self.builder.get_mut();
            // Straight into the compressor's buffer when it offers one, else through `buf`.
            let done = match out.inner.input_buffer() {
                Some(dst) if !dst.is_empty() => {
                    let n = dst.len().min(left);
                    fill(&mut src, &mut dst[..n], &mut eof).map_err(read_err)?;
                    if let Some(v) = verify.as_deref_mut() {
                        v.feed(&dst[..n]);
                    }
                    out.commit_input(n).map(|()| n)
                }
                _ => {
                    let n = buf.len().min(left);
                    fill(&mut src, &mut buf[..n], &mut eof).map_err(read_err)?;
                    if let Some(v) = verify.as_deref_mut() {
                        v.feed(&buf[..n]);
                    }
                    out.write_all(&buf[..n]).map(|()| n)
                }
            };
            remaining -= done.map_err(|err| self.write_err(err))? as u64;
        }
        self.builder.get_mut().write_all(tarfmt::padding(e.size)).map_err(|err| self.write_err(err))?;
        self.entries.push(e.name.clone());
        Ok(true)
    }

    /// Store a relation segment as a "wi1" increment: the pages `choice` names, read by offset.
    /// `Scan` reads every page first (format/increment.rs chooses; a page with an invalid header
    /// makes the whole file go in instead); `Mapped` has them from the WAL maps (delta_map.rs),
    /// and with `map_check` proves them against a scan. Every page read also goes through
    /// `verify`, when given.
    fn add_increment(
        &mut self,
        ctx: &Ctx,
        e: &WalkEntry,
        choice: Choice,
        buf: &mut [u8],
        mut verify: Option<&mut PageVerifier>,
    ) -> Result<Stored> {
        let file = match File::open(&e.path) {
            Ok(f) => f,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Stored::Vanished),
            Err(err) => return Err(Error::io(&e.path, err)),
        };
        let read_err = |err: io::Error| {
            if ctx.stop.load(Ordering::Relaxed) {
                Error::Cancelled("backup stopped".into())
            } else {
                Error::io(&e.path, err)
            }
        };
        let mut src = Throttled { file, ctx };
        // (blocks, read from the maps: verify and count each page as it is read)
        let (blocks, mapped) = match choice {
            Choice::Scan { base_lsn } => {
                let mut on_page = |chunk: &[u8]| {
                    if let Some(v) = verify.as_deref_mut() {
                        v.feed(chunk)
                    }
                };
                match scan_pages(&mut src, e.size, base_lsn, &mut on_page).map_err(read_err)? {
                    Selection::Pages(b) => (b, false),
                    Selection::WholeFile { .. } => {
                        // Counted again by the whole copy, and verified again from its first page.
                        let _ = ctx.progress.bytes_done.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(e.size)));
                        if let Some(v) = verify.as_deref_mut() {
                            v.reset();
                        }
                        return Ok(if self.copy_file(ctx, e, buf, verify)? { Stored::Whole } else { Stored::Vanished });
                    }
                }
            }
            Choice::Mapped(blocks) => {
                if let Some((from, to)) = ctx.map_check {
                    // Reads, rate-limits and counts the whole file; the pages are read again below.
                    let changed = changed_in_range(&mut src, e.size, from, to).map_err(read_err)?;
                    check_map_missed(&e.name, &blocks, &changed)?;
                    let _ = ctx.progress.bytes_done.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                        Some(v.saturating_sub(blocks.len() as u64 * PAGE_SIZE as u64))
                    });
                } else {
                    // The pages never read count as done now.
                    ctx.progress.bytes_done.fetch_add(e.size.saturating_sub(blocks.len() as u64 * PAGE_SIZE as u64), Ordering::Relaxed);
                }
                (blocks, true)
            }
        };
        let header = IncrementHeader { file_size: e.size, blocks };
        let len = header.encoded_len();
        let mut h = tarfmt::file_header(len, e.mode, unix_secs(e.mtime));
        tarfmt::append_header(&mut self.builder, &mut h, &e.name).map_err(|err| self.write_err(err))?;
        let key = self.key.clone();
        let werr = |err: io::Error| Error::storage("write", key.clone(), err);
        let out = self.builder.get_mut();
        out.write_all(&header.encode()).map_err(werr)?;
        let page = &mut buf[..PAGE_SIZE];
        for &b in &header.blocks {
            read_page(&src.file, b, page).map_err(read_err)?;
            if mapped {
                // A scan read, rate-limited and counted the whole file above; from the maps,
                // these are the reads (the proving mode's scan is taken back out of the count).
                if let Some(l) = &ctx.limiter {
                    l.take(PAGE_SIZE);
                }
                if let Some(v) = verify.as_deref_mut() {
                    v.feed_page(b, page);
                }
                ctx.progress.bytes_done.fetch_add(PAGE_SIZE as u64, Ordering::Relaxed);
            }
            out.write_all(page).map_err(werr)?;
        }
        out.write_all(tarfmt::padding(len)).map_err(werr)?;
        self.entries.push(e.name.clone());
        Ok(Stored::Increment(len))
    }

    fn close(self) -> Result<PartResult> {
        let key = self.key.clone();
        let counting = self.builder.into_inner().map_err(|e| Error::storage("write", key.clone(), e))?;
        let compressed = counting.inner.finish()?;
        let record = self.record.lock().unwrap_or_else(|e| e.into_inner()).take().ok_or_else(|| {
            Error::Internal(format!("{key}: committed without a size and hash record"))
        })?;
        Ok(PartResult { name: self.name, entries: self.entries, uncompressed: counting.count, compressed, record })
    }
}

/// File reads, throttled and counted, stopping when asked.
struct Throttled<'a> {
    file: File,
    ctx: &'a Ctx<'a>,
}

impl Read for Throttled<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.ctx.stop.load(Ordering::Relaxed) {
            return Err(io::Error::other("backup stopped"));
        }
        let n = self.file.read(buf)?;
        if let Some(l) = &self.ctx.limiter {
            l.take(n);
        }
        self.ctx.progress.bytes_done.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// A relation's main fork whose `_init` fork exists belongs to an unlogged relation.
fn has_init_fork(main: &std::path::Path) -> bool {
    let Some(name) = main.file_name().and_then(|n| n.to_str()) else { return false };
    let node = name.split('.').next().unwrap_or(name);
    main.with_file_name(format!("{node}_init")).exists()
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[derive(Default)]
struct WorkerOutput {
    parts: Vec<PartResult>,
    files: BTreeMap<String, FileDescription>,
    /// Files with corrupt pages and their block numbers.
    corrupt: Vec<(String, Vec<u32>)>,
}

fn describe(e: &WalkEntry) -> FileDescription {
    FileDescription {
        is_incremented: false,
        is_skipped: false,
        mtime: DateTime::<Utc>::from(e.mtime),
        updates_count: 0,
        corrupt_blocks: None,
        // Exactly this many bytes go into the tar (see `PartWriter::add_file`).
        size: Some(e.size),
    }
}

/// zstd threads per part stream: two, so that when only the stream with the biggest file is left
/// (a 1 GB table segment) it still keeps two cores busy; one when the user asked for a single
/// stream, which keeps `upload_concurrency = 1` meaning "one core".
fn compress_threads(streams: usize) -> usize {
    if streams > 1 {
        2
    } else {
        1
    }
}

/// File data moves in reads of this size: large sequential reads, few calls down the writer chain.
const COPY_BUFFER: usize = 1 << 20;

/// One upload thread: take entries from the queue, fill parts up to the threshold.
fn worker(ctx: &Ctx, queue: &Receiver<WalkEntry>) -> Result<WorkerOutput> {
    let mut out = WorkerOutput::default();
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut part: Option<PartWriter> = None;
    while let Ok(item) = queue.recv() {
        if ctx.stop.load(Ordering::Relaxed) {
            return Err(Error::Cancelled("backup stopped".into()));
        }
        let plan = match (item.kind, ctx.delta) {
            (EntryKind::File, Some(base)) => plan_file(base, &item.name, item.size, item.mtime),
            _ => FilePlan::Whole,
        };
        if plan == FilePlan::Skip {
            // Unchanged since the base: recorded, not stored (restored from the base).
            out.files.insert(item.name.clone(), FileDescription { is_skipped: true, size: None, ..describe(&item) });
            ctx.progress.bytes_done.fetch_add(item.size, Ordering::Relaxed);
            ctx.progress.files_done.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if part.is_none() {
            let n = ctx.part_counter.fetch_add(1, Ordering::SeqCst) + 1;
            part = Some(PartWriter::create(ctx.storage, ctx.backup, &part_base_name(n), &ctx.pipeline)?);
        }
        let p = part.as_mut().expect("part just opened");
        match item.kind {
            EntryKind::Dir => p.add_dir(&item)?,
            EntryKind::File => {
                let mut verify = ctx.verify_from.and_then(|lsn| PageVerifier::for_entry(&item.name, lsn));
                let choice = match (plan, ctx.delta, ctx.mapped) {
                    (FilePlan::Increment, Some(_), Some(m)) => match m.for_file(&item.name, item.size) {
                        // An unlogged relation changes without WAL: its maps say nothing.
                        Some(FilePages::Blocks(b)) if !has_init_fork(&item.path) => Some(Choice::Mapped(b)),
                        _ => None,
                    },
                    (FilePlan::Increment, Some(base), None) => Some(Choice::Scan { base_lsn: base.start_lsn }),
                    _ => None,
                };
                let stored = match choice {
                    Some(choice) => p.add_increment(ctx, &item, choice, &mut buf, verify.as_mut())?,
                    None => {
                        if p.copy_file(ctx, &item, &mut buf, verify.as_mut())? {
                            Stored::Whole
                        } else {
                            Stored::Vanished
                        }
                    }
                };
                let corrupt = match verify {
                    Some(v) if !matches!(stored, Stored::Vanished) => v.finish(&item.path).map_err(|err| Error::io(&item.path, err))?,
                    _ => Vec::new(),
                };
                let corrupt_blocks = corrupt_blocks_field(&corrupt, ctx.store_all_corrupt_blocks);
                if !corrupt.is_empty() {
                    out.corrupt.push((item.name.clone(), corrupt));
                }
                match stored {
                    Stored::Whole => {
                        out.files.insert(item.name.clone(), FileDescription { corrupt_blocks, ..describe(&item) });
                    }
                    Stored::Increment(len) => {
                        out.files.insert(
                            item.name.clone(),
                            FileDescription { is_incremented: true, size: Some(len), corrupt_blocks, ..describe(&item) },
                        );
                    }
                    Stored::Vanished => {
                        ctx.progress.bytes_done.fetch_add(item.size, Ordering::Relaxed);
                    }
                }
                ctx.progress.files_done.fetch_add(1, Ordering::Relaxed);
            }
        }
        if p.uncompressed() >= ctx.threshold {
            out.parts.push(part.take().expect("part open").close()?);
        }
    }
    if let Some(p) = part {
        out.parts.push(p.close()?);
    }
    Ok(out)
}

fn check_backup_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(Error::Format(format!("invalid backup name {name:?}")));
    }
    Ok(())
}

/// Walk PGDATA, stream files into tar parts (size threshold), compress and upload on
/// `upload_concurrency` threads, then write pg_control.tar. `poll` runs on the calling thread at
/// least every 200 ms; if it returns Err the workers stop and that Err is returned.
pub fn push_data(
    cfg: &Config,
    storage: &Arc<dyn Storage>,
    start: &BackupStart,
    progress: &Progress,
    poll: &mut dyn FnMut() -> Result<()>,
) -> Result<DataResult> {
    check_backup_name(&start.name)?;
    let storage: &dyn Storage = storage.as_ref();
    storage.prepare_write()?;
    if storage.exists(&sentinel_key(&start.name))? {
        return Err(Error::Conflict(format!(
            "backup {} already exists in {}; refusing to overwrite it",
            start.name,
            storage.describe()
        )));
    }
    progress.phase.store(PHASE_WALKING, Ordering::Relaxed);
    poll()?;
    let walk = walk_pgdata(&start.pgdata)?;
    let pg_control = walk.pg_control.clone().ok_or_else(|| {
        // Local, not storage: NotFound is only ever storage's answer.
        Error::io(
            format!("{}{PG_CONTROL_NAME}", start.pgdata.display()),
            std::io::Error::new(std::io::ErrorKind::NotFound, "no control file in PGDATA"),
        )
    })?;
    let files: Vec<&WalkEntry> = walk.entries.iter().filter(|e| e.kind == EntryKind::File).collect();
    progress.bytes_total.store(walk.data_catalog_size, Ordering::Relaxed);
    progress.files_total.store(files.len() as u64 + 1, Ordering::Relaxed);
    progress.bytes_done.store(0, Ordering::Relaxed);
    progress.files_done.store(0, Ordering::Relaxed);
    progress.phase.store(PHASE_UPLOADING, Ordering::Relaxed);
    poll()?;

    // Directories first (so a part restores on its own), then files, largest first.
    let (tx, queue) = crossbeam_channel::unbounded();
    for e in walk.entries.iter().filter(|e| e.kind == EntryKind::Dir) {
        tx.send(e.clone()).expect("queue open");
    }
    let mut sorted = files;
    sorted.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.name.cmp(&b.name)));
    for e in sorted {
        tx.send(e.clone()).expect("queue open");
    }
    drop(tx);

    let ctx = Ctx {
        storage,
        backup: &start.name,
        pipeline: cfg.pipeline().with_threads(compress_threads(cfg.upload_concurrency)),
        threshold: cfg.tar_size_threshold.max(1),
        part_counter: AtomicU32::new(0),
        stop: AtomicBool::new(false),
        limiter: cfg.disk_rate_limit.filter(|&r| r > 0).map(|r| RateLimiter { bytes_per_sec: r, next: Mutex::new(Instant::now()) }),
        progress,
        delta: start.delta.as_ref(),
        mapped: match (&start.delta, &start.delta_pages) {
            (Some(_), Some(PagePlan::Maps(m))) => Some(m),
            _ => None,
        },
        map_check: match (&start.delta, &start.delta_pages) {
            (Some(b), Some(PagePlan::Maps(_))) if start.delta_map_check => Some((b.start_lsn, start.start_lsn)),
            _ => None,
        },
        verify_from: (start.data_checksums && cfg.verify_page_checksums).then_some(start.start_lsn),
        store_all_corrupt_blocks: cfg.store_all_corrupt_blocks,
    };
    let mut result = DataResult {
        data_catalog_size: walk.data_catalog_size,
        tablespaces: walk.tablespaces.clone(),
        corrupt_pages: ctx.verify_from.map(|_| Vec::new()),
        ..Default::default()
    };
    let threads = cfg.upload_concurrency.max(1);
    let outcome: Result<()> = std::thread::scope(|scope| {
        let (done_tx, done_rx) = crossbeam_channel::unbounded::<Result<WorkerOutput>>();
        for i in 0..threads {
            let (ctx, queue, done_tx) = (&ctx, queue.clone(), done_tx.clone());
            spawn_scoped(scope, format!("walg-upload-{i}"), move || {
                let r = catch_panic("backup upload worker", || worker(ctx, &queue));
                if r.is_err() {
                    ctx.stop.store(true, Ordering::Relaxed);
                }
                let _ = done_tx.send(r);
            })
            .map_err(|e| {
                ctx.stop.store(true, Ordering::Relaxed);
                Error::io("(starting upload thread)", e)
            })?;
        }
        drop(done_tx);
        let mut first_err: Option<Error> = None;
        loop {
            if let Err(e) = poll() {
                first_err = Some(e);
                break;
            }
            match done_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(out)) => {
                    for p in out.parts {
                        result.add_part(p);
                    }
                    result.files.extend(out.files);
                    if let Some(c) = result.corrupt_pages.as_mut() {
                        c.extend(out.corrupt);
                    }
                }
                Ok(Err(e)) => {
                    first_err = Some(e);
                    break;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        match first_err {
            Some(e) => {
                // Workers see the flag, drop their open parts (aborted) and end; scope joins them.
                ctx.stop.store(true, Ordering::Relaxed);
                Err(e)
            }
            None => Ok(()),
        }
    });
    outcome?;
    if let Some(c) = result.corrupt_pages.as_mut() {
        c.sort();
        if cfg.fail_on_corrupt_pages && !c.is_empty() {
            let n: usize = c.iter().map(|(_, b)| b.len()).sum();
            return Err(Error::corrupt(
                start.pgdata.display().to_string(),
                format!(
                    "{n} page{} with a wrong checksum ({}); walg.fail_on_corrupt_pages is on, so the backup stops",
                    if n == 1 { "" } else { "s" },
                    describe_corrupt(c, 20)
                ),
            ));
        }
    }

    // pg_control last, so a restore of an incomplete upload cannot start.
    progress.phase.store(PHASE_PG_CONTROL, Ordering::Relaxed);
    poll()?;
    let mut part = PartWriter::create(storage, &start.name, "pg_control.tar", &ctx.pipeline)?;
    if !part.add_file(&ctx, &pg_control, &mut [0u8; 8192])? {
        return Err(Error::io(&pg_control.path, std::io::Error::new(std::io::ErrorKind::NotFound, "control file vanished")));
    }
    result.add_part(part.close()?);
    progress.files_done.fetch_add(1, Ordering::Relaxed);
    poll()?;
    Ok(result)
}

/// What pg_backup_stop returned.
#[derive(Clone, Debug)]
pub struct BackupStop {
    pub finish_lsn: u64,
    pub backup_label: String,
    pub tablespace_map: String,
    pub finish_time: DateTime<Utc>,
}

/// Upload backup_label.tar, metadata.json, files_metadata.json, then the sentinel (last).
pub fn finish(
    cfg: &Config,
    storage: &Arc<dyn Storage>,
    start: &BackupStart,
    mut data: DataResult,
    stop: &BackupStop,
) -> Result<Sentinel> {
    check_backup_name(&start.name)?;
    let storage: &dyn Storage = storage.as_ref();
    let now = unix_secs(SystemTime::now());
    let mut part = PartWriter::create(storage, &start.name, "backup_label.tar", &cfg.pipeline())?;
    part.add_bytes("backup_label", stop.backup_label.as_bytes(), 0o600, now)?;
    if !stop.tablespace_map.is_empty() {
        part.add_bytes("tablespace_map", stop.tablespace_map.as_bytes(), 0o600, now)?;
    }
    data.add_part(part.close()?);

    let metadata = BackupMetadata {
        start_time: start.start_time,
        finish_time: stop.finish_time,
        date_fmt: DATE_FMT.to_string(),
        hostname: start.hostname.clone(),
        data_dir: start.pgdata.display().to_string(),
        pg_version: start.pg_version,
        start_lsn: start.start_lsn,
        finish_lsn: stop.finish_lsn,
        is_permanent: start.is_permanent,
        system_identifier: Some(start.system_identifier),
        uncompressed_size: data.uncompressed_size as i64,
        compressed_size: data.compressed_size as i64,
        user_data: start.user_data.clone(),
    };
    storage.put(&metadata_key(&start.name), &metadata.to_json())?;

    let files_metadata = FilesMetadata {
        files: std::mem::take(&mut data.files),
        tar_file_sets: std::mem::take(&mut data.tar_file_sets),
        databases_by_names: serde_json::Map::new(),
        walg_ext_databases: std::mem::take(&mut data.databases),
        walg_ext_parts: std::mem::take(&mut data.part_records),
    };
    let files_metadata = files_metadata.to_json();
    storage.put(&files_metadata_key(&start.name), &files_metadata)?;

    // WAL-G's Spec: where each tablespace was, so a restore (ours or WAL-G's) recreates the links.
    let spec = (!data.tablespaces.is_empty()).then(|| {
        let mut spec = TablespaceSpec::new(&start.pgdata.display().to_string());
        spec.tablespaces = data.tablespaces.iter().map(|(oid, loc)| Tablespace::new(oid, loc)).collect();
        spec.to_json()
    });
    let names: BTreeMap<String, String> = start
        .tablespace_names
        .iter()
        .filter(|(oid, _)| data.tablespaces.iter().any(|(o, _)| o == *oid))
        .map(|(o, n)| (o.clone(), n.clone()))
        .collect();
    let d = start.delta.as_ref();
    let sentinel = Sentinel {
        lsn: start.start_lsn,
        // The four Delta* keys together or not at all (FORMAT.md).
        delta_lsn: d.map(|b| b.start_lsn),
        delta_from: d.map(|b| b.name.clone()),
        delta_full_name: d.map(|b| b.full_name.clone()),
        delta_count: d.map(|b| b.count),
        pg_version: start.pg_version,
        finish_lsn: stop.finish_lsn,
        system_identifier: Some(start.system_identifier),
        uncompressed_size: data.uncompressed_size as i64,
        compressed_size: data.compressed_size as i64,
        data_catalog_size: data.data_catalog_size as i64,
        spec,
        user_data: start.user_data.clone(),
        files_metadata_disabled: false,
        chkp_num: None,
        version: 2,
        start_time: start.start_time,
        finish_time: stop.finish_time,
        date_fmt: DATE_FMT.to_string(),
        hostname: start.hostname.clone(),
        data_dir: start.pgdata.display().to_string(),
        is_permanent: start.is_permanent,
        walg_ext_files_metadata: Some(ObjectRecord::of_bytes(&files_metadata)),
        walg_ext_corrupt_pages: data.corrupt_pages.as_ref().map(|c| c.iter().map(|(_, b)| b.len() as u64).sum()),
        walg_ext_tablespace_names: (!names.is_empty()).then_some(names),
        walg_ext_delta_pages: d.map(|_| start.delta_pages.as_ref().map_or("full-scan", PagePlan::method).to_string()),
    };
    storage.put(&sentinel_key(&start.name), &sentinel.to_json())?;
    Ok(sentinel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Compression;
    use crate::storage::FsStorage;

    #[test]
    fn shrunk_file_is_zero_padded_grown_is_cut_vanished_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FsStorage::new(dir.path().join("bucket"));
        let progress = Progress::default();
        let file = |name: &str, content: &[u8], stat_size: u64| {
            let path = dir.path().join(name);
            if !content.is_empty() {
                std::fs::write(&path, content).unwrap();
            }
            WalkEntry { name: format!("/{name}"), path, kind: EntryKind::File, size: stat_size, mode: 0o600, mtime: SystemTime::now() }
        };
        let big: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
        // Uncompressed (data goes through the caller's buffer) and zstd (data is read straight
        // into the compressor's chunks, several chunks per file).
        for (n, pipeline) in [Pipeline::new(Compression::None, None), Pipeline::new(Compression::Zstd { level: 1 }, None).with_threads(2)]
            .into_iter()
            .enumerate()
        {
            let backup = format!("b{n}");
            let ctx = Ctx {
                storage: &storage,
                backup: &backup,
                pipeline: pipeline.clone(),
                threshold: 1 << 30,
                part_counter: AtomicU32::new(0),
                stop: AtomicBool::new(false),
                limiter: None,
                progress: &progress,
                delta: None,
                mapped: None,
                map_check: None,
                verify_from: None,
                store_all_corrupt_blocks: false,
            };
            let mut part = PartWriter::create(&storage, &backup, "part_001.tar", &pipeline).unwrap();
            // A buffer smaller than the files, so each takes several rounds.
            let buf = &mut [0u8; 3];
            assert!(part.add_file(&ctx, &file("shrunk", b"abc", 10), buf).unwrap());
            assert!(part.add_file(&ctx, &file("grown", b"abcdefgh", 4), buf).unwrap());
            assert!(!part.add_file(&ctx, &file("vanished", b"", 5), buf).unwrap());
            assert!(part.add_file(&ctx, &file("big_shrunk", &big[..3 << 19], (5 << 19) + 1), buf).unwrap());
            assert!(part.add_file(&ctx, &file("big_grown", &big, (2 << 20) + 5), buf).unwrap());
            let res = part.close().unwrap();
            assert_eq!(res.entries, vec!["/shrunk", "/grown", "/big_shrunk", "/big_grown"]);
            let out = dir.path().join(format!("out{n}"));
            let key = format!("basebackups_005/{backup}/tar_partitions/{}", res.name);
            crate::format::tar::extract_tar(pipeline.open(&storage, &key).unwrap().unwrap(), &out, false).unwrap();
            assert_eq!(std::fs::read(out.join("shrunk")).unwrap(), b"abc\0\0\0\0\0\0\0");
            assert_eq!(std::fs::read(out.join("grown")).unwrap(), b"abcd");
            let mut want = big[..3 << 19].to_vec();
            want.resize((5 << 19) + 1, 0);
            assert!(std::fs::read(out.join("big_shrunk")).unwrap() == want, "{pipeline:?}");
            assert!(std::fs::read(out.join("big_grown")).unwrap() == big[..(2 << 20) + 5], "{pipeline:?}");
        }
    }
}
