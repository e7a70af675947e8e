//! Throughput of walg-core's codec pipeline (compression, then libsodium encryption) per method,
//! on one core and on all cores, the way tar parts are compressed: each thread streams its own
//! object. Used by bench/codec.sh; run as
//!
//!     cargo run --release -p walg-core --example codec_bench -- FILE [THREADS]

use std::io::{self, Read, Write};
use std::time::Instant;

use walg_core::codec::crypto::Key;
use walg_core::codec::{Compression, Pipeline};
use walg_core::{ObjectWriter, Result};

/// An upload that only counts bytes.
struct Sink(u64);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for Sink {
    fn finish(self: Box<Self>) -> Result<u64> {
        Ok(self.0)
    }
}

/// Stream `data` through the pipeline in 1 MiB writes (as the tar writer does); stored bytes.
fn encode(p: &Pipeline, data: &[u8]) -> u64 {
    let mut w = p.writer(Box::new(Sink(0))).expect("pipeline writer");
    for chunk in data.chunks(1 << 20) {
        w.write_all(chunk).expect("write");
    }
    w.finish().expect("finish")
}

fn mbps(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).expect("usage: codec_bench FILE [THREADS]");
    let threads: usize = args
        .get(2)
        .map(|t| t.parse().expect("THREADS is a number"))
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let mut data = Vec::new();
    std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut data)).expect("read input");
    let key = Key::from_bytes([7; 32]);
    let methods: Vec<(&str, Compression, bool, usize)> = vec![
        // (label, compression, encrypted, bytes to use: the slow methods get a slice)
        ("lz4", Compression::Lz4, false, data.len()),
        ("zstd -1", Compression::Zstd { level: 1 }, false, data.len()),
        ("zstd -3", Compression::Zstd { level: 3 }, false, data.len()),
        ("brotli -3", Compression::Brotli { quality: 3 }, false, data.len()),
        ("lzma -1", Compression::Lzma { preset: 1 }, false, data.len().min(16 << 20)),
        ("lzma -6", Compression::Lzma { preset: 6 }, false, data.len().min(16 << 20)),
        ("none+libsodium", Compression::None, true, data.len()),
        ("lz4+libsodium", Compression::Lz4, true, data.len()),
        ("zstd -3+libsodium", Compression::Zstd { level: 3 }, true, data.len()),
    ];
    println!("input: {path}, {:.1} MB; all cores = {threads} threads, each streaming its own object", data.len() as f64 / 1e6);
    println!("{:<18} {:>8} {:>7} {:>14} {:>16} {:>16}", "method", "MB in", "ratio", "compress 1core", format!("compress {threads}cores"), "decompress 1core");
    for (label, c, encrypted, len) in methods {
        let input = &data[..len];
        let p = Pipeline::new(c, encrypted.then(|| key.clone()));

        let t = Instant::now();
        let stored = encode(&p, input);
        let one = mbps(len, t.elapsed().as_secs_f64());

        let t = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| encode(&p, input));
            }
        });
        let all = mbps(len * threads, t.elapsed().as_secs_f64());

        let packed = p.encode_bytes(input).expect("encode");
        let object = c.object_name("bench/part_001.tar");
        let t = Instant::now();
        let mut r = p.reader(&object, Box::new(io::Cursor::new(packed))).expect("reader");
        let n = io::copy(&mut r, &mut io::sink()).expect("decode");
        let dec = mbps(len, t.elapsed().as_secs_f64());
        assert_eq!(n as usize, len, "{label}: decoded size");

        println!(
            "{:<18} {:>8.1} {:>7.3} {:>9.0} MB/s {:>11.0} MB/s {:>11.0} MB/s",
            label,
            len as f64 / 1e6,
            len as f64 / stored as f64,
            one,
            all,
            dec
        );
    }
}
