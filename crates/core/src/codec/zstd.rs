//! zstd (the zstd C library), in one of two layouts (`Layout`).
//!
//! **One frame per object** (the default): every zstd reader reads it whole, including those
//! that stop after the first frame (python-zstandard's `decompressobj`, wal-rus). A backup part
//! (`threads` > 1) is compressed by zstd's own worker threads (ZSTDMT) with no overlap between
//! jobs: each job is an independent one-shot compression of `chunk_size(level)` contiguous
//! bytes (the fast match finder, the same ratio as the many-frame layout), and zstd writes the
//! jobs' blocks as one frame with one content checksum. Measured on a 2-core machine: the same
//! CPU per byte and the same ratio as the many-frame layout for a backup (README, "zstd
//! layout"). A single-threaded writer (a WAL segment) uses zstd's plain streaming compressor:
//! no threads and a window's worth of memory, for a little more CPU at level 3 (its ring buffer
//! makes it use the slower "external dictionary" match finder), about the same at level 1.
//!
//! **One frame per chunk** (`Frames`, `WALG_ZSTD_LAYOUT=frames`): the earlier layout, kept as an
//! option for single-threaded writers at higher levels. Concatenated frames are one valid zstd
//! stream (RFC 8878 section 3.1) that the zstd tool, WAL-G and our decoder read whole, but some
//! readers do not.
//!
//! Every frame carries its content checksum, which the decoder checks (a frame whose data was
//! damaged fails). A single frame cut anywhere fails to decode; a many-frame stream cut at a
//! frame boundary still decodes, which the consumer's own end checks catch (tar end marker, WAL
//! segment size, recorded object size and hash).

use std::collections::VecDeque;
use std::io::{self, BufReader, Read, Write};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use super::Encoder;

/// zstd's own default level, and WAL-G's.
pub const DEFAULT_LEVEL: i32 = 3;
/// Levels accepted from WALG_COMPRESSION_LEVEL.
pub const LEVELS: std::ops::RangeInclusive<i32> = 1..=22;

/// WAL-G's WALG_ZSTD_LEVEL names (klauspost/compress encoder levels) as zstd levels: each name
/// is documented there as roughly equivalent to this zstd level.
pub fn level_from_name(name: &str) -> Option<i32> {
    match name.trim().to_ascii_lowercase().as_str() {
        "fastest" => Some(1),
        "default" => Some(3),
        "better" => Some(7),
        "best" => Some(11),
        _ => None,
    }
}

/// Input bytes per frame: twice the window zstd uses at `level` on large inputs (512 KiB at level
/// 1, 2 MiB at WAL-G's default 3, 8 MiB from 16), so a frame boundary costs little ratio:
/// measured on table data, within 0.4% of one streaming frame up to level 9, 0.6-3.4% at 19.
pub(super) fn chunk_size(level: i32) -> usize {
    let window_log = match level {
        ..=1 => 19,
        2 => 20,
        3..=8 => 21,
        9..=15 => 22,
        _ => 23,
    };
    (2usize << window_log).max(1 << 20)
}

/// A chunk to compress: its input buffer and how much of it is filled, and a buffer for the
/// frame (both buffers come back for reuse).
type Job = (Vec<u8>, usize, Vec<u8>, Sender<Done>);
/// The chunk's input and compressed frame, or the error.
type Done = io::Result<(Vec<u8>, Vec<u8>)>;

/// Threads compressing chunks for one encoder. Each job carries its own reply channel, and the
/// encoder keeps the replies in submission order, so frames are written in input order.
struct Helpers {
    jobs: Option<Sender<Job>>,
    handles: Vec<JoinHandle<()>>,
}

impl Helpers {
    fn start(level: i32, threads: usize) -> io::Result<Helpers> {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let mut helpers = Helpers { jobs: Some(tx), handles: Vec::new() };
        for i in 0..threads {
            let rx = rx.clone();
            let h = crate::threads::spawn(format!("walg-zstd-{i}"), move || {
                let mut cctx = match new_compressor(level) {
                    Ok(c) => c,
                    Err(e) => {
                        // Answer every job with the error, so the encoder reports it.
                        let msg = e.to_string();
                        for (_, _, _, reply) in rx {
                            let _ = reply.send(Err(io::Error::other(msg.clone())));
                        }
                        return;
                    }
                };
                for (input, len, mut out, reply) in rx {
                    let _ = reply.send(compress_chunk(&mut cctx, &input[..len], &mut out).map(|()| (input, out)));
                }
            })?;
            helpers.handles.push(h);
        }
        Ok(helpers)
    }
}

impl Drop for Helpers {
    fn drop(&mut self) {
        // Closing the queue ends each helper after its current chunk.
        self.jobs = None;
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// A compressor at `level` whose frames carry a content checksum (XXH64 of the frame's data, as
/// WAL-G's writer sets), which every decoder, ours included, verifies at the end of each frame.
fn new_compressor(level: i32) -> io::Result<zstd::bulk::Compressor<'static>> {
    let mut c = zstd::bulk::Compressor::new(level)?;
    c.include_checksum(true)?;
    Ok(c)
}

fn compress_chunk(cctx: &mut zstd::bulk::Compressor<'static>, input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    out.clear();
    out.reserve(zstd::zstd_safe::compress_bound(input.len()));
    cctx.compress_to_buffer(input, out)?;
    Ok(())
}

struct FrameEncoder<W: Write> {
    w: W,
    level: i32,
    threads: usize,
    /// The chunk being filled: always a whole chunk long (initialised, so a caller may read
    /// file data straight into it), of which `filled` are input.
    buf: Vec<u8>,
    filled: usize,
    /// Both made when first needed: an object of one chunk never starts helper threads.
    inline: Option<zstd::bulk::Compressor<'static>>,
    helpers: Option<Helpers>,
    /// Replies for chunks handed to helpers, oldest first.
    pending: VecDeque<Receiver<Done>>,
    max_pending: usize,
    /// Buffers back from finished chunks: fresh MiB-sized allocations cost page faults.
    spare_in: Vec<Vec<u8>>,
    spare_out: Vec<Vec<u8>>,
    frames: u64,
}

impl<W: Write> FrameEncoder<W> {
    /// Compress the filled chunk (or hand it to a helper), writing finished frames in order.
    fn seal_chunk(&mut self, last: bool) -> io::Result<()> {
        self.frames += 1;
        let mut out = self.spare_out.pop().unwrap_or_default();
        if self.helpers.is_none() && self.threads > 1 && !last {
            self.helpers = Some(Helpers::start(self.level, self.threads)?);
        }
        match &self.helpers {
            None => {
                if self.inline.is_none() {
                    self.inline = Some(new_compressor(self.level)?);
                }
                let cctx = self.inline.as_mut().expect("compressor just made");
                compress_chunk(cctx, &self.buf[..self.filled], &mut out)?;
                self.w.write_all(&out)?;
                self.spare_out.push(out);
            }
            Some(helpers) => {
                let next = self.spare_in.pop().unwrap_or_else(|| vec![0; self.buf.len()]);
                let input = std::mem::replace(&mut self.buf, next);
                let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
                let jobs = helpers.jobs.as_ref().expect("queue open while encoding");
                jobs.send((input, self.filled, out, reply_tx))
                    .map_err(|_| io::Error::other("zstd threads have stopped"))?;
                self.pending.push_back(reply_rx);
                while self.pending.len() > self.max_pending {
                    self.write_oldest()?;
                }
            }
        }
        self.filled = 0;
        Ok(())
    }

    /// Take `n` more bytes of `buf` as input; a full chunk goes to compression.
    fn commit(&mut self, n: usize) -> io::Result<()> {
        assert!(n <= self.buf.len() - self.filled, "committed more than the input buffer holds");
        self.filled += n;
        if self.filled == self.buf.len() {
            self.seal_chunk(false)?;
        }
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        let Some(rx) = self.pending.pop_front() else { return Ok(()) };
        let (input, out) = rx.recv().map_err(|_| io::Error::other("a zstd thread stopped unexpectedly"))??;
        self.w.write_all(&out)?;
        self.spare_in.push(input);
        self.spare_out.push(out);
        Ok(())
    }
}

impl<W: Write> Write for FrameEncoder<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(self.buf.len() - self.filled);
        self.buf[self.filled..self.filled + n].copy_from_slice(&data[..n]);
        self.commit(n)?;
        Ok(n)
    }

    /// Frames are only written whole, so a flush passes on what is complete.
    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

impl<W: Write + Send> Encoder<W> for FrameEncoder<W> {
    fn finish(mut self: Box<Self>) -> io::Result<W> {
        // Empty input still makes one (empty) frame: a zero-byte object is not valid zstd.
        if self.filled > 0 || self.frames == 0 {
            self.seal_chunk(true)?;
        }
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        drop(self.helpers.take());
        Ok(self.w)
    }

    fn input_buffer(&mut self) -> Option<&mut [u8]> {
        Some(&mut self.buf[self.filled..])
    }

    fn commit_input(&mut self, n: usize) -> io::Result<()> {
        self.commit(n)
    }
}

/// How a zstd object is laid out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Layout {
    /// One frame per object (the default): every zstd reader reads it whole.
    #[default]
    SingleFrame,
    /// One independent frame per chunk of input: valid zstd (RFC 8878 3.1), read whole by the
    /// zstd tool, WAL-G and walg_ext, but some readers stop after the first frame.
    Frames,
}

/// Encoder at `level`; `threads` > 1 compresses that many jobs at once (for one big stream, such
/// as a base backup part), 1 compresses on the caller's thread.
pub(super) fn encoder<W: Write + Send + 'static>(level: i32, threads: usize, layout: Layout, w: W) -> io::Result<Box<dyn Encoder<W>>> {
    match layout {
        Layout::Frames => frames_encoder(level, threads, w),
        Layout::SingleFrame => Ok(Box::new(SingleFrame::new(level, threads, w)?)),
    }
}

/// One zstd frame for the whole object, compressed by zstd's own worker threads (ZSTDMT): the
/// input is cut into jobs compressed in parallel, each job without a reference to the one
/// before it (no overlap), so a job is one contiguous one-shot compression (zstd's fast match
/// finder, as the many-frame layout had), and zstd writes the jobs' blocks as one frame with
/// one content checksum (XXH64 of the whole content).
struct SingleFrame<W: Write> {
    w: W,
    cctx: zstd::zstd_safe::CCtx<'static>,
    /// Input gathered before it goes to zstd (a caller may read file data straight into it).
    buf: Vec<u8>,
    filled: usize,
    out: Vec<u8>,
    /// zstd starts its worker threads on the first call of a frame: that call runs with every
    /// signal blocked (crate::threads), so those threads never take PostgreSQL's signals.
    started: bool,
}

fn zstd_err(code: usize) -> io::Error {
    io::Error::other(format!("zstd: {}", zstd::zstd_safe::get_error_name(code)))
}

impl<W: Write> SingleFrame<W> {
    /// `threads` 1: zstd's plain streaming compressor on the caller's thread (no threads, a
    /// window's worth of memory: the WAL path). More: that many zstd workers, each job
    /// `chunk_size(level)` bytes (the many-frame layout's chunk: same ratio, same memory).
    fn new(level: i32, threads: usize, w: W) -> io::Result<SingleFrame<W>> {
        use zstd::zstd_safe::CParameter;
        let mut cctx = zstd::zstd_safe::CCtx::create();
        cctx.set_parameter(CParameter::CompressionLevel(level)).map_err(zstd_err)?;
        cctx.set_parameter(CParameter::ChecksumFlag(true)).map_err(zstd_err)?;
        if threads > 1 {
            cctx.set_parameter(CParameter::NbWorkers(threads as u32)).map_err(zstd_err)?;
            // 1 = no overlap: a job does not reload the end of the one before it.
            cctx.set_parameter(CParameter::OverlapSizeLog(1)).map_err(zstd_err)?;
            cctx.set_parameter(CParameter::JobSize(chunk_size(level) as u32)).map_err(zstd_err)?;
        }
        Ok(SingleFrame {
            w,
            cctx,
            buf: vec![0; 1 << 20],
            filled: 0,
            out: Vec::with_capacity(zstd::zstd_safe::CCtx::out_size()),
            started: false,
        })
    }

    /// Hand `data` to zstd (all of it, or `end` the frame), writing what it produces.
    fn feed(&mut self, data: &[u8], end: bool) -> io::Result<()> {
        use zstd::zstd_safe::{InBuffer, OutBuffer};
        use zstd::zstd_safe::zstd_sys::ZSTD_EndDirective::{ZSTD_e_continue, ZSTD_e_end};
        let mut input = InBuffer::around(data);
        loop {
            self.out.clear();
            let mut output = OutBuffer::around(&mut self.out);
            let directive = if end { ZSTD_e_end } else { ZSTD_e_continue };
            let res = if self.started {
                self.cctx.compress_stream2(&mut output, &mut input, directive)
            } else {
                self.started = true;
                let cctx = &mut self.cctx;
                crate::threads::with_signals_blocked(|| cctx.compress_stream2(&mut output, &mut input, directive))
            };
            let remaining = res.map_err(zstd_err)?;
            if !self.out.is_empty() {
                self.w.write_all(&self.out)?;
            }
            if end {
                if remaining == 0 {
                    return Ok(());
                }
            } else if input.pos() == data.len() {
                return Ok(());
            }
        }
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        let buf = std::mem::take(&mut self.buf);
        let r = self.feed(&buf[..self.filled], false);
        self.buf = buf;
        self.filled = 0;
        r
    }
}

impl<W: Write> Write for SingleFrame<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.filled == 0 && data.len() >= self.buf.len() {
            // Big writes go to zstd directly, without a copy into `buf`.
            self.feed(data, false)?;
            return Ok(data.len());
        }
        let n = data.len().min(self.buf.len() - self.filled);
        self.buf[self.filled..self.filled + n].copy_from_slice(&data[..n]);
        self.filled += n;
        if self.filled == self.buf.len() {
            self.flush_buf()?;
        }
        Ok(n)
    }

    /// The frame is only complete at `finish`; a flush passes on what is written so far.
    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

impl<W: Write + Send> Encoder<W> for SingleFrame<W> {
    fn finish(mut self: Box<Self>) -> io::Result<W> {
        let buf = std::mem::take(&mut self.buf);
        self.feed(&buf[..self.filled], true)?;
        Ok(self.w)
    }

    fn input_buffer(&mut self) -> Option<&mut [u8]> {
        Some(&mut self.buf[self.filled..])
    }

    fn commit_input(&mut self, n: usize) -> io::Result<()> {
        assert!(n <= self.buf.len() - self.filled, "committed more than the input buffer holds");
        self.filled += n;
        if self.filled == self.buf.len() {
            self.flush_buf()?;
        }
        Ok(())
    }
}

/// The many-frame layout: one frame per chunk of `chunk_size(level)` input bytes.
fn frames_encoder<W: Write + Send + 'static>(level: i32, threads: usize, w: W) -> io::Result<Box<dyn Encoder<W>>> {
    Ok(Box::new(FrameEncoder {
        w,
        level,
        threads,
        buf: vec![0; chunk_size(level)],
        filled: 0,
        inline: None,
        helpers: None,
        pending: VecDeque::new(),
        // A chunk per helper, plus the one just handed over, in flight: the encoder holds about
        // 2 x (threads + 2) chunks of memory (input and output).
        max_pending: threads,
        spare_in: Vec::new(),
        spare_out: Vec::new(),
        frames: 0,
    }))
}

/// `frame_checksums`: verify each frame's content checksum (XXH64 of its output). Off only for
/// an object whose stored bytes are checked against a recorded XXH3-128 as they stream (a backup
/// part of ours): identical stored bytes decode to identical content, and the XXH64 pass costs
/// about 5% of a restore's CPU time (measured with perf), the whole budget of the checks.
pub(super) fn decoder(r: Box<dyn Read + Send>, frame_checksums: bool) -> io::Result<Box<dyn Read + Send>> {
    let mut d = zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(128 * 1024, r))?;
    if !frame_checksums {
        d.set_parameter(zstd::zstd_safe::DParameter::ForceIgnoreChecksum(true))?;
    }
    Ok(Box::new(d))
}
