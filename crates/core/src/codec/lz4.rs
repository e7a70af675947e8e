//! lz4: the LZ4 frame format (magic 0x184D2204) with content checksum, as WAL-G writes it.
//! Written by the lz4 C library (the reference implementation; it streams as fast as the `lz4`
//! tool, see bench/codec.sh);
//! read by lz4_flex, whose decoder reports a truncated frame (the C binding's reader returns a
//! silent end of file) and reads concatenated frames.

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
    Box::new(lz4_flex::frame::FrameDecoder::new(r))
}
