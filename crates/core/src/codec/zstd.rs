//! zstd: a stream of standard zstd frames, one per input chunk (the zstd C library).
//!
//! Why frames of a few MiB rather than one streaming frame: zstd's streaming compressor keeps its
//! window in a ring buffer and so spends most of its time in the slower "external dictionary"
//! match finder; one-shot compression of a chunk avoids that (about 20% faster at level 1 on
//! table data, same ratio below level 10). Independent frames also let several threads compress
//! one object. Concatenated frames are one valid zstd stream (RFC 8878 section 3.1): the zstd
//! tool, WAL-G and our decoder read them as one. Every frame carries its content checksum, which
//! the decoder checks (a frame whose data was damaged fails); a stream cut at a frame boundary
//! still decodes, which the consumer's own end checks catch (tar end marker, WAL segment size,
//! recorded object size and hash).

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

/// Encoder at `level`; `threads` > 1 compresses that many chunks at once on helper threads
/// (for one big stream, such as a base backup part), 1 compresses on the caller's thread.
pub(super) fn encoder<W: Write + Send + 'static>(level: i32, threads: usize, w: W) -> io::Result<Box<dyn Encoder<W>>> {
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
