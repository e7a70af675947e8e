//! zstd: standard zstd frames (the zstd C library).

use std::io::{self, BufReader, Read, Write};

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

struct ZstdEncoder<W: Write>(zstd::stream::write::Encoder<'static, W>);

impl<W: Write> Write for ZstdEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write + Send> Encoder<W> for ZstdEncoder<W> {
    fn finish(self: Box<Self>) -> io::Result<W> {
        self.0.finish()
    }
}

pub(super) fn encoder<W: Write + Send + 'static>(level: i32, w: W) -> io::Result<Box<dyn Encoder<W>>> {
    #[allow(unused_mut)]
    let mut enc = zstd::stream::write::Encoder::new(w, level)?;
    #[cfg(feature = "zstdmt")]
    {
        let n = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
        enc.multithread(n)?;
    }
    Ok(Box::new(ZstdEncoder(enc)))
}

pub(super) fn decoder(r: Box<dyn Read + Send>) -> io::Result<Box<dyn Read + Send>> {
    Ok(Box::new(zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(128 * 1024, r))?))
}
