//! lzma: classic LZMA_Alone (`.lzma`, not `.xz`) through liblzma itself: properties byte 0x5D
//! (lc=3 lp=0 pb=2), an 8 MiB dictionary, size "unknown" (all ones) and an end marker, which is
//! what WAL-G's writer produces.

use std::io::{self, BufReader, Read, Write};

use liblzma::stream::{LzmaOptions, Stream};

use super::{Encoder, Finishing};

/// xz's default preset; the dictionary stays 8 MiB whatever the preset.
pub const DEFAULT_PRESET: u32 = 6;
pub const PRESETS: std::ops::RangeInclusive<i32> = 0..=9;
pub const DICT_SIZE: u32 = 8 << 20;

pub(super) fn encoder<W: Write + Send + 'static>(preset: u32, w: W) -> io::Result<Box<dyn Encoder<W>>> {
    let mut opts = LzmaOptions::new_preset(preset).map_err(io::Error::other)?;
    opts.dict_size(DICT_SIZE).literal_context_bits(3).literal_position_bits(0).position_bits(2);
    let stream = Stream::new_lzma_encoder(&opts).map_err(io::Error::other)?;
    Ok(Finishing::boxed(liblzma::write::XzEncoder::new_stream(w, stream), liblzma::write::XzEncoder::finish))
}

pub(super) fn decoder(r: Box<dyn Read + Send>) -> io::Result<Box<dyn Read + Send>> {
    let stream = Stream::new_lzma_decoder(u64::MAX).map_err(io::Error::other)?;
    Ok(Box::new(liblzma::bufread::XzDecoder::new_stream(BufReader::with_capacity(128 * 1024, r), stream)))
}
