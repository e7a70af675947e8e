//! brotli: a raw brotli stream (no framing), WAL-G's quality 3 by default.

use std::io::{self, Read, Write};

use super::{Encoder, Finishing};

/// WAL-G's cbrotli quality.
pub const DEFAULT_QUALITY: u32 = 3;
pub const QUALITIES: std::ops::RangeInclusive<i32> = 0..=11;
/// Window: 2^22 bytes, brotli's (and cbrotli's) default.
const LGWIN: u32 = 22;
const BUFFER: usize = 64 * 1024;

/// The brotli crate's writer swallows errors of its final flush; this remembers the first
/// error of the inner writer so `finish` cannot report success for an incomplete stream.
struct Latch<W> {
    inner: W,
    error: Option<io::Error>,
}

impl<W: Write> Write for Latch<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf).inspect_err(|e| {
            self.error.get_or_insert_with(|| io::Error::new(e.kind(), e.to_string()));
        })
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().inspect_err(|e| {
            self.error.get_or_insert_with(|| io::Error::new(e.kind(), e.to_string()));
        })
    }
}

pub(super) fn encoder<W: Write + Send + 'static>(quality: u32, w: W) -> Box<dyn Encoder<W>> {
    let latch = Latch { inner: w, error: None };
    Finishing::boxed(brotli::CompressorWriter::new(latch, BUFFER, quality, LGWIN), |enc| {
        let latch = enc.into_inner();
        match latch.error {
            Some(e) => Err(e),
            None => Ok(latch.inner),
        }
    })
}

pub(super) fn decoder(r: Box<dyn Read + Send>) -> Box<dyn Read + Send> {
    Box::new(brotli::Decompressor::new(r, BUFFER))
}
