//! Streaming compression in WAL-G's formats, one file per method, and encryption: libsodium
//! (`crypto`) or OpenPGP (`openpgp`). `Pipeline` composes them the way WAL-G does: compress, then encrypt on write;
//! decrypt, then decompress on read. Everything streams through fixed-size buffers, so no object
//! has to fit in memory.

mod brotli;
pub mod crypto;
mod lz4;
mod lzma;
mod openpgp;
mod pipeline;
mod read_ahead;
pub use pipeline::find_object;
mod zstd;

use std::io::{self, Read, Write};

pub use openpgp::{PgpKey, PGP_KEY_HINT};
pub use pipeline::Pipeline;
pub use read_ahead::ReadAhead;

use crate::error::{Error, Result};
use crate::storage::ObjectWriter;

/// zstd's own default level (and WAL-G's).
pub const DEFAULT_ZSTD_LEVEL: i32 = zstd::DEFAULT_LEVEL;
pub use self::brotli::DEFAULT_QUALITY as DEFAULT_BROTLI_QUALITY;
pub use self::lzma::DEFAULT_PRESET as DEFAULT_LZMA_PRESET;
pub use self::zstd::level_from_name as zstd_level_from_name;
pub use self::zstd::Layout as ZstdLayout;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Compression {
    Lz4,
    Zstd { level: i32 },
    Brotli { quality: u32 },
    Lzma { preset: u32 },
    None,
}

/// Extensions a reader probes, in order ("" = the bare name, i.e. no compression).
pub const READ_EXTENSIONS: &[&str] = &["lz4", "zst", "br", "lzma", ""];

const METHODS: &str = "lz4, zstd, brotli, lzma or none";

impl Compression {
    /// WALG_COMPRESSION_METHOD value, with each method's default level.
    pub fn parse(method: &str) -> Result<Compression> {
        match method.trim().to_ascii_lowercase().as_str() {
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd { level: DEFAULT_ZSTD_LEVEL }),
            "brotli" => Ok(Compression::Brotli { quality: DEFAULT_BROTLI_QUALITY }),
            "lzma" => Ok(Compression::Lzma { preset: DEFAULT_LZMA_PRESET }),
            "none" | "" => Ok(Compression::None),
            _ => Err(Error::Config(format!("unknown compression method {method:?} (use {METHODS})"))),
        }
    }

    /// The same method at `level` (WALG_COMPRESSION_LEVEL): zstd 1..22, brotli 0..11, lzma
    /// 0..9 (the dictionary stays 8 MiB). lz4 and none have no levels and ignore it.
    pub fn with_level(self, level: i32) -> Result<Compression> {
        let check = |range: std::ops::RangeInclusive<i32>| {
            if range.contains(&level) {
                Ok(level)
            } else {
                Err(Error::Config(format!(
                    "compression level {level} is out of range for {} ({}..={})",
                    self.name(),
                    range.start(),
                    range.end()
                )))
            }
        };
        Ok(match self {
            Compression::Zstd { .. } => Compression::Zstd { level: check(zstd::LEVELS)? },
            Compression::Brotli { .. } => Compression::Brotli { quality: check(self::brotli::QUALITIES)? as u32 },
            Compression::Lzma { .. } => Compression::Lzma { preset: check(self::lzma::PRESETS)? as u32 },
            Compression::Lz4 | Compression::None => self,
        })
    }

    /// Object name extension, without the dot ("" for none).
    pub fn extension(&self) -> &'static str {
        match self {
            Compression::Lz4 => "lz4",
            Compression::Zstd { .. } => "zst",
            Compression::Brotli { .. } => "br",
            Compression::Lzma { .. } => "lzma",
            Compression::None => "",
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Compression::Lz4 => "lz4",
            Compression::Zstd { .. } => "zstd",
            Compression::Brotli { .. } => "brotli",
            Compression::Lzma { .. } => "lzma",
            Compression::None => "none",
        }
    }

    /// `base` plus ".<ext>" (nothing added for none).
    pub fn object_name(&self, base: &str) -> String {
        match self.extension() {
            "" => base.to_string(),
            ext => format!("{base}.{ext}"),
        }
    }
}

/// The compression extension of an object key ("" when its last suffix is not one we know).
pub fn extension_of(key: &str) -> &str {
    let name = key.rsplit('/').next().unwrap_or(key);
    match name.rsplit_once('.') {
        Some((_, ext)) if READ_EXTENSIONS.contains(&ext) => ext,
        _ => "",
    }
}

/// A compressing or encrypting writer over `W`. Its output is only a complete stream once
/// `finish` has run; `finish` hands back `W`.
pub trait Encoder<W>: Write + Send {
    fn finish(self: Box<Self>) -> io::Result<W>;

    /// As `ObjectWriter::input_buffer`: the encoder's own input buffer, if it has one.
    fn input_buffer(&mut self) -> Option<&mut [u8]> {
        None
    }
    fn commit_input(&mut self, n: usize) -> io::Result<()> {
        let _ = n;
        Err(io::Error::other("this encoder has no input buffer"))
    }
}

/// A library's streaming encoder `E` as an `Encoder<W>`: writes go to it as they are, and
/// `end` is how that library ends its stream and hands back the inner writer.
pub(super) struct Finishing<E, W> {
    inner: E,
    end: fn(E) -> io::Result<W>,
}

impl<E: Write + Send + 'static, W: Send + 'static> Finishing<E, W> {
    pub(super) fn boxed(inner: E, end: fn(E) -> io::Result<W>) -> Box<dyn Encoder<W>> {
        Box::new(Finishing { inner, end })
    }
}

impl<E: Write, W> Write for Finishing<E, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<E: Write + Send, W: Send> Encoder<W> for Finishing<E, W> {
    fn finish(self: Box<Self>) -> io::Result<W> {
        (self.end)(self.inner)
    }
}

/// Compressing encoder for `c` over any writer. `threads` > 1 lets zstd compress that many
/// chunks of the stream at once (the other methods stream on the caller's thread).
pub fn encoder<W: Write + Send + 'static>(c: Compression, threads: usize, w: W) -> io::Result<Box<dyn Encoder<W>>> {
    encoder_with(c, threads, ZstdLayout::default(), w)
}

/// `encoder` with an explicit zstd layout (the other methods ignore it).
pub fn encoder_with<W: Write + Send + 'static>(c: Compression, threads: usize, layout: ZstdLayout, w: W) -> io::Result<Box<dyn Encoder<W>>> {
    Ok(match c {
        Compression::None => Finishing::boxed(w, Ok),
        Compression::Lz4 => lz4::encoder(w)?,
        Compression::Zstd { level } => zstd::encoder(level, threads, layout, w)?,
        Compression::Brotli { quality } => self::brotli::encoder(quality, w),
        Compression::Lzma { preset } => self::lzma::encoder(preset, w)?,
    })
}

/// An `Encoder` over an object writer is itself an object writer: finishing ends the stream, then
/// commits the object. Dropping it drops the object writer, which aborts the upload.
struct EncodedObject {
    enc: Box<dyn Encoder<Box<dyn ObjectWriter>>>,
    what: &'static str,
}

impl Write for EncodedObject {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.enc.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.enc.flush()
    }
}

impl ObjectWriter for EncodedObject {
    fn finish(self: Box<Self>) -> Result<u64> {
        let what = self.what;
        let inner = self.enc.finish().map_err(|e| Error::Codec {
            object: format!("({what} writer)"),
            msg: format!("cannot end the {what} stream: {e}"),
        })?;
        inner.finish()
    }
    fn input_buffer(&mut self) -> Option<&mut [u8]> {
        self.enc.input_buffer()
    }
    fn commit_input(&mut self, n: usize) -> io::Result<()> {
        self.enc.commit_input(n)
    }
}

pub(crate) fn wrap_object(enc: Box<dyn Encoder<Box<dyn ObjectWriter>>>, what: &'static str) -> Box<dyn ObjectWriter> {
    Box::new(EncodedObject { enc, what })
}

/// Wrap an object writer so that bytes written are compressed; `finish()` ends the frame, then
/// finishes `inner` and returns its (compressed) byte count. Dropping aborts `inner`.
pub fn compress_writer(c: Compression, inner: Box<dyn ObjectWriter>) -> Result<Box<dyn ObjectWriter>> {
    if c == Compression::None {
        return Ok(inner);
    }
    let enc = encoder(c, 1, inner)
        .map_err(|e| Error::Codec { object: format!("({} writer)", c.name()), msg: e.to_string() })?;
    Ok(wrap_object(enc, c.name()))
}

/// Compress a whole buffer.
pub fn compress_bytes(c: Compression, data: &[u8]) -> Result<Vec<u8>> {
    let err = |e: io::Error| Error::Codec { object: "(memory)".into(), msg: e.to_string() };
    let mut enc = encoder(c, 1, Vec::with_capacity(data.len() / 2 + 64)).map_err(err)?;
    enc.write_all(data).map_err(err)?;
    enc.finish().map_err(err)
}

/// Turns decoder failures into io errors that name the object, keeping the error kind.
struct NamedReader<R> {
    inner: R,
    object: String,
}

impl<R: Read> Read for NamedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner
            .read(buf)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot decode {}: {e}", self.object)))
    }
}

pub(crate) fn named(object: &str, inner: Box<dyn Read + Send>) -> Box<dyn Read + Send> {
    Box::new(NamedReader { inner, object: object.to_string() })
}

/// Decompressing reader for an object whose key has extension `ext` ("" = none).
pub fn decompress_reader(ext: &str, object: &str, r: Box<dyn Read + Send>) -> Result<Box<dyn Read + Send>> {
    decompress_reader_opts(ext, object, r, true)
}

/// `decompress_reader`; `frame_checksums` false skips zstd's per-frame content checksum, for an
/// object whose stored bytes are verified against a recorded hash instead (see zstd.rs).
pub fn decompress_reader_opts(
    ext: &str,
    object: &str,
    r: Box<dyn Read + Send>,
    frame_checksums: bool,
) -> Result<Box<dyn Read + Send>> {
    let err = |e: io::Error| Error::Codec { object: object.to_string(), msg: e.to_string() };
    let dec: Box<dyn Read + Send> = match ext {
        "" => return Ok(r),
        "lz4" => lz4::decoder(r),
        "zst" => zstd::decoder(r, frame_checksums).map_err(err)?,
        "br" => self::brotli::decoder(r),
        "lzma" => self::lzma::decoder(r).map_err(err)?,
        other => {
            return Err(Error::Codec {
                object: object.to_string(),
                msg: format!("unknown compression extension {other:?} (known: lz4, zst, br, lzma)"),
            })
        }
    };
    Ok(named(object, dec))
}

/// Map an io error met while reading a (decoded) object: corrupt data is a codec error, the rest
/// is a storage read error.
pub fn read_error(object: &str, e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof | io::ErrorKind::Other => {
            let msg = e.to_string();
            let prefix = format!("cannot decode {object}: ");
            let msg = msg.strip_prefix(&prefix).map(str::to_string).unwrap_or(msg);
            Error::Codec { object: object.to_string(), msg }
        }
        _ => Error::storage("read", object, e),
    }
}

#[cfg(test)]
mod tests;
