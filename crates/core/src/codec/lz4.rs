//! lz4: the LZ4 frame format (magic 0x184D2204) with content checksum, as WAL-G writes it.
//! Written by the lz4 C library (the reference implementation; it streams as fast as the `lz4`
//! tool, see bench/codec.sh);
//! read by lz4_flex, whose decoder reports a truncated frame (the C binding's reader returns a
//! silent end of file), wrapped so that the input must end exactly after a whole frame and
//! concatenated frames are read as one stream.

use std::io::{self, Read, Write};

use super::{Encoder, Finishing};

pub(super) fn encoder<W: Write + Send + 'static>(w: W) -> io::Result<Box<dyn Encoder<W>>> {
    let enc = lz4::EncoderBuilder::new()
        .block_size(lz4::BlockSize::Max4MB)
        .checksum(lz4::ContentChecksum::ChecksumEnabled)
        .level(0)
        .build(w)?;
    Ok(Finishing::boxed(enc, |enc| {
        let (w, result) = enc.finish();
        result.map(|()| w)
    }))
}

pub(super) fn decoder(r: Box<dyn Read + Send>) -> Box<dyn Read + Send> {
    let watched = FrameWatch { inner: r, state: State::Magic, field: [0; 4], have: 0, flg: 0, frames: 0, ended: false };
    Box::new(AllFrames { inner: lz4_flex::frame::FrameDecoder::new(watched) })
}

/// lz4_flex's reader returns end of file at the end of each frame; this goes on into the next
/// frame (concatenated frames are one stream) until the input itself has ended, so bytes after
/// the last frame are seen (and refused by `FrameWatch`) rather than silently left unread.
struct AllFrames<R: Read> {
    inner: lz4_flex::frame::FrameDecoder<FrameWatch<R>>,
}

impl<R: Read> Read for AllFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.inner.read(buf)?;
            if n > 0 || buf.is_empty() || self.inner.get_ref().ended {
                return Ok(n);
            }
        }
    }
}

/// Follows the LZ4 frame layout of the raw stream as the decoder reads it, so that its end can be
/// judged: lz4_flex takes an end of input where a block header should be as the end of the frame,
/// so an object cut just before its end mark (and content checksum) would decode without error.
/// Here the input may only end between frames; anything else, or bytes after the last frame that
/// are not a frame, is InvalidData (which the decoder passes on, unlike UnexpectedEof).
struct FrameWatch<R> {
    inner: R,
    state: State,
    field: [u8; 4],
    have: usize,
    flg: u8,
    frames: u64,
    /// The input ended, between frames.
    ended: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum State {
    Magic,
    SkipLen,
    Skip(u64),
    Flg,
    /// BD, optional content size and dictionary id, header checksum.
    Header(u64),
    BlockSize,
    Data(u64),
    BlockChecksum(u64),
    ContentChecksum(u64),
}

const LZ4_MAGIC: u32 = 0x184D_2204;

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl<R> FrameWatch<R> {
    fn advance(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            match self.state {
                State::Magic | State::SkipLen | State::BlockSize => {
                    let take = (4 - self.have).min(data.len());
                    self.field[self.have..self.have + take].copy_from_slice(&data[..take]);
                    self.have += take;
                    data = &data[take..];
                    if self.have < 4 {
                        continue;
                    }
                    self.have = 0;
                    let v = u32::from_le_bytes(self.field);
                    self.state = match self.state {
                        State::Magic if v == LZ4_MAGIC => State::Flg,
                        State::Magic if v & 0xFFFF_FFF0 == 0x184D_2A50 => State::SkipLen,
                        State::Magic => return Err(bad(format!("data after the last lz4 frame (magic {v:#010X})"))),
                        State::SkipLen => State::Skip(v as u64),
                        _ if v == 0 && self.flg & 0x04 != 0 => State::ContentChecksum(4),
                        _ if v == 0 => {
                            self.frames += 1;
                            State::Magic
                        }
                        _ => State::Data((v & 0x7FFF_FFFF) as u64),
                    };
                    if matches!(self.state, State::Skip(0)) {
                        self.state = State::Magic;
                    }
                }
                State::Flg => {
                    self.flg = data[0];
                    data = &data[1..];
                    let optional = if self.flg & 0x08 != 0 { 8 } else { 0 } + if self.flg & 0x01 != 0 { 4 } else { 0 };
                    self.state = State::Header(2 + optional);
                }
                State::Skip(n) | State::Header(n) | State::Data(n) | State::BlockChecksum(n) | State::ContentChecksum(n) => {
                    let take = (n as usize).min(data.len());
                    data = &data[take..];
                    let left = n - take as u64;
                    self.state = match (self.state, left) {
                        (State::Skip(_), 0) => State::Magic,
                        (State::Skip(_), l) => State::Skip(l),
                        (State::Header(_), 0) => State::BlockSize,
                        (State::Header(_), l) => State::Header(l),
                        (State::Data(_), 0) if self.flg & 0x10 != 0 => State::BlockChecksum(4),
                        (State::Data(_), 0) => State::BlockSize,
                        (State::Data(_), l) => State::Data(l),
                        (State::BlockChecksum(_), 0) => State::BlockSize,
                        (State::BlockChecksum(_), l) => State::BlockChecksum(l),
                        (State::ContentChecksum(_), 0) => {
                            self.frames += 1;
                            State::Magic
                        }
                        (_, l) => State::ContentChecksum(l),
                    };
                }
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for FrameWatch<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            if self.state != State::Magic || self.have != 0 || self.frames == 0 {
                return Err(bad("the lz4 stream is cut short: it ends inside a frame (truncated)".into()));
            }
            self.ended = true;
            return Ok(0);
        }
        self.advance(&buf[..n])?;
        Ok(n)
    }
}

