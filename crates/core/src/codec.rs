//! Streaming compression in WAL-G's formats. Writers wrap an `ObjectWriter`, readers wrap a
//! storage reader, so no object has to fit in memory. brotli/lzma (and encryption) come later:
//! their extensions are recognised so a reader fails clearly instead of returning garbage.

use std::io::{self, Read, Write};

use crate::error::{Error, Result};
use crate::storage::ObjectWriter;

/// zstd's own default level.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Compression {
    Lz4,
    Zstd { level: i32 },
    None,
}

/// Extensions a reader probes, in order ("" = the bare name, i.e. no compression).
pub const READ_EXTENSIONS: &[&str] = &["lz4", "zst", "br", "lzma", ""];

impl Compression {
    /// WALG_COMPRESSION_METHOD value: "lz4" | "zstd" | "none".
    pub fn parse(method: &str) -> Result<Compression> {
        match method.trim().to_ascii_lowercase().as_str() {
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd { level: DEFAULT_ZSTD_LEVEL }),
            "none" | "" => Ok(Compression::None),
            "brotli" | "lzma" => Err(Error::Config(format!(
                "compression method {method:?} is not supported yet (use lz4, zstd or none)"
            ))),
            _ => Err(Error::Config(format!(
                "unknown compression method {method:?} (use lz4, zstd or none)"
            ))),
        }
    }

    /// Object name extension, without the dot ("" for none).
    pub fn extension(&self) -> &'static str {
        match self {
            Compression::Lz4 => "lz4",
            Compression::Zstd { .. } => "zst",
            Compression::None => "",
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Compression::Lz4 => "lz4",
            Compression::Zstd { .. } => "zstd",
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

fn lz4_frame_info() -> lz4_flex::frame::FrameInfo {
    lz4_flex::frame::FrameInfo::new()
        .block_size(lz4_flex::frame::BlockSize::Max4MB)
        .content_checksum(true)
}

struct Lz4Writer(lz4_flex::frame::FrameEncoder<Box<dyn ObjectWriter>>);

impl Write for Lz4Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl ObjectWriter for Lz4Writer {
    fn finish(self: Box<Self>) -> Result<u64> {
        let inner = self.0.finish().map_err(|e| Error::Codec {
            object: "(lz4 writer)".into(),
            msg: format!("cannot end lz4 frame: {e}"),
        })?;
        inner.finish()
    }
}

struct ZstdWriter(zstd::stream::write::Encoder<'static, Box<dyn ObjectWriter>>);

impl Write for ZstdWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl ObjectWriter for ZstdWriter {
    fn finish(self: Box<Self>) -> Result<u64> {
        let inner = self.0.finish().map_err(|e| Error::Codec {
            object: "(zstd writer)".into(),
            msg: format!("cannot end zstd frame: {e}"),
        })?;
        inner.finish()
    }
}

/// Wrap an object writer so that bytes written are compressed; `finish()` ends the frame, then
/// finishes `inner` and returns its (compressed) byte count. Dropping aborts `inner`.
pub fn compress_writer(c: Compression, inner: Box<dyn ObjectWriter>) -> Result<Box<dyn ObjectWriter>> {
    match c {
        Compression::None => Ok(inner),
        Compression::Lz4 => Ok(Box::new(Lz4Writer(lz4_flex::frame::FrameEncoder::with_frame_info(
            lz4_frame_info(),
            inner,
        )))),
        Compression::Zstd { level } => {
            #[allow(unused_mut)]
            let mut enc = zstd::stream::write::Encoder::new(inner, level).map_err(|e| Error::Codec {
                object: "(zstd writer)".into(),
                msg: e.to_string(),
            })?;
            #[cfg(feature = "zstdmt")]
            {
                let n = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
                let _ = enc.multithread(n);
            }
            Ok(Box::new(ZstdWriter(enc)))
        }
    }
}

/// Compress a whole buffer (WAL segments).
pub fn compress_bytes(c: Compression, data: &[u8]) -> Result<Vec<u8>> {
    let err = |e: io::Error| Error::Codec { object: "(memory)".into(), msg: e.to_string() };
    match c {
        Compression::None => Ok(data.to_vec()),
        Compression::Lz4 => {
            let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(
                lz4_frame_info(),
                Vec::with_capacity(data.len() / 2 + 64),
            );
            enc.write_all(data).map_err(err)?;
            enc.finish().map_err(|e| Error::Codec { object: "(memory)".into(), msg: e.to_string() })
        }
        Compression::Zstd { level } => zstd::bulk::compress(data, level).map_err(err),
    }
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

/// Decompressing reader for an object whose key has extension `ext` ("" = none).
pub fn decompress_reader(
    ext: &str,
    object: &str,
    r: Box<dyn Read + Send>,
) -> Result<Box<dyn Read + Send>> {
    let named = |inner: Box<dyn Read + Send>| -> Box<dyn Read + Send> {
        Box::new(NamedReader { inner, object: object.to_string() })
    };
    match ext {
        "" => Ok(r),
        "lz4" => Ok(named(Box::new(lz4_flex::frame::FrameDecoder::new(r)))),
        "zst" => {
            let dec = zstd::stream::read::Decoder::new(r)
                .map_err(|e| Error::Codec { object: object.to_string(), msg: e.to_string() })?;
            Ok(named(Box::new(dec)))
        }
        "br" => Err(Error::Codec { object: object.to_string(), msg: "brotli not supported yet".into() }),
        "lzma" => Err(Error::Codec { object: object.to_string(), msg: "lzma not supported yet".into() }),
        other => Err(Error::Codec {
            object: object.to_string(),
            msg: format!("unknown compression extension {other:?}"),
        }),
    }
}

/// Map an io error met while reading a (decompressed) object: corrupt data is a codec error,
/// the rest is a storage read error.
pub fn read_error(object: &str, e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof | io::ErrorKind::Other => {
            Error::Codec { object: object.to_string(), msg: e.to_string() }
        }
        _ => Error::storage("read", object, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{get_bytes, FsStorage, Storage};

    fn sample(len: usize) -> Vec<u8> {
        // Compressible but not trivial: a counter pattern with some noise.
        let mut x: u32 = 12345;
        (0..len)
            .map(|i| {
                x = x.wrapping_mul(1103515245).wrapping_add(12345);
                if i % 7 == 0 { (x >> 24) as u8 } else { (i / 1000) as u8 }
            })
            .collect()
    }

    fn decode(ext: &str, data: Vec<u8>) -> Result<Vec<u8>> {
        let mut r = decompress_reader(ext, "obj", Box::new(io::Cursor::new(data)))?;
        let mut out = Vec::new();
        r.read_to_end(&mut out).map_err(|e| read_error("obj", e))?;
        Ok(out)
    }

    #[test]
    fn bytes_round_trip_all_methods_20mb() {
        let data = sample(20 * 1024 * 1024);
        for c in [Compression::Lz4, Compression::Zstd { level: 3 }, Compression::None] {
            let packed = compress_bytes(c, &data).unwrap();
            if c != Compression::None {
                assert!(packed.len() < data.len(), "{c:?} did not compress");
            }
            assert_eq!(decode(c.extension(), packed).unwrap(), data, "{c:?}");
        }
    }

    #[test]
    fn lz4_is_frame_format_with_magic() {
        let packed = compress_bytes(Compression::Lz4, b"hello hello hello").unwrap();
        assert_eq!(&packed[..4], &[0x04, 0x22, 0x4D, 0x18]);
        // FLG byte: version 01, content checksum bit (0x04) set.
        assert_eq!(packed[4] & 0xC0, 0x40);
        assert_eq!(packed[4] & 0x04, 0x04);
        let z = compress_bytes(Compression::Zstd { level: 3 }, b"x").unwrap();
        assert_eq!(&z[..4], &[0x28, 0xB5, 0x2F, 0xFD]);
    }

    #[test]
    fn streaming_writer_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStorage::new(dir.path());
        let data = sample(3 * 1024 * 1024 + 17);
        for c in [Compression::Lz4, Compression::Zstd { level: 1 }, Compression::None] {
            let key = c.object_name("obj/part_001.tar");
            let mut w = compress_writer(c, s.writer(&key).unwrap()).unwrap();
            for chunk in data.chunks(100_000) {
                w.write_all(chunk).unwrap();
            }
            let stored = w.finish().unwrap();
            let raw = get_bytes(&s, &key).unwrap().unwrap();
            assert_eq!(stored, raw.len() as u64);
            assert_eq!(extension_of(&key), c.extension());
            assert_eq!(decode(extension_of(&key), raw).unwrap(), data);
        }
        // Aborted compressing writer: nothing visible.
        let mut w = compress_writer(Compression::Lz4, s.writer("obj/aborted.lz4").unwrap()).unwrap();
        w.write_all(&data).unwrap();
        drop(w);
        assert!(!s.exists("obj/aborted.lz4").unwrap());
    }

    #[test]
    fn corrupt_truncated_and_unsupported_fail_clearly() {
        let data = sample(1 << 20);
        let mut packed = compress_bytes(Compression::Lz4, &data).unwrap();
        let n = packed.len();
        packed[n / 2] ^= 0xFF;
        assert!(matches!(decode("lz4", packed), Err(Error::Codec { .. })));
        let packed = compress_bytes(Compression::Zstd { level: 3 }, &data).unwrap();
        let cut = packed[..packed.len() - 10].to_vec();
        let err = decode("zst", cut).unwrap_err();
        assert!(err.to_string().contains("obj"), "{err}");
        let err = decompress_reader("br", "wal_005/x.br", Box::new(io::empty())).err().unwrap();
        assert!(err.to_string().contains("brotli not supported yet"), "{err}");
        assert!(decompress_reader("lzma", "x", Box::new(io::empty())).is_err());
        assert_eq!(extension_of("wal_005/00000002.history"), "");
        assert_eq!(extension_of("wal_005/00000002.history.zst"), "zst");
        assert_eq!(extension_of("a/part_001.tar"), "");
        assert!(matches!(Compression::parse("brotli"), Err(Error::Config(_))));
    }
}
