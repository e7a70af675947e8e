//! lz4: the LZ4 frame format (magic 0x184D2204) with content checksum, as WAL-G writes it.

use std::io::{self, Read, Write};

use super::Encoder;

fn frame_info() -> lz4_flex::frame::FrameInfo {
    lz4_flex::frame::FrameInfo::new()
        .block_size(lz4_flex::frame::BlockSize::Max4MB)
        .content_checksum(true)
}

struct Lz4Encoder<W: Write>(lz4_flex::frame::FrameEncoder<W>);

impl<W: Write> Write for Lz4Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write + Send> Encoder<W> for Lz4Encoder<W> {
    fn finish(self: Box<Self>) -> io::Result<W> {
        self.0.finish().map_err(io::Error::other)
    }
}

pub(super) fn encoder<W: Write + Send + 'static>(w: W) -> Box<dyn Encoder<W>> {
    Box::new(Lz4Encoder(lz4_flex::frame::FrameEncoder::with_frame_info(frame_info(), w)))
}

pub(super) fn decoder(r: Box<dyn Read + Send>) -> Box<dyn Read + Send> {
    Box::new(lz4_flex::frame::FrameDecoder::new(r))
}
