//! zstd object layouts compared the way a backup compresses: `STREAMS` objects written at once
//! (`walg.upload_concurrency`), each compressed on `THREADS` threads (`Pipeline::with_threads`),
//! on table-like data (8 KiB pages of text from a 1024-word vocabulary, some zero and random
//! pages, as `restore_bench` uses). Prints MB/s (wall clock), CPU seconds per GB of input (all
//! threads: steadier than the wall clock on a shared machine) and the ratio per layout,
//! interleaving the layouts over `ROUNDS` rounds, with the medians:
//!
//!     cargo run --release -p walg-core --example zstd_layout_bench -- [MB] [ROUNDS] [LEVEL]
//!
//! Layouts: `frames` (one independent frame per chunk, compressed by our helper threads) and
//! `single` (one frame, zstd's own worker threads with no overlap between jobs).

use std::io::{self, Write};
use std::time::Instant;

use walg_core::codec::{Compression, Pipeline, ZstdLayout};
use walg_core::{ObjectWriter, Result};

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

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn data(mb: usize) -> Vec<u8> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let words: Vec<String> = (0..1024)
        .map(|_| {
            let len = 3 + rng.next() % 8;
            (0..len).map(|_| (b'a' + (rng.next() % 26) as u8) as char).collect()
        })
        .collect();
    let mut out = Vec::with_capacity(mb << 20);
    while out.len() < mb << 20 {
        let start = out.len();
        match rng.next() % 20 {
            0 => out.resize(start + 8192, 0),
            1 => (0..1024).for_each(|_| out.extend_from_slice(&rng.next().to_le_bytes())),
            _ => {
                out.extend_from_slice(&rng.next().to_le_bytes());
                while out.len() < start + 8192 {
                    out.extend_from_slice(words[(rng.next() % words.len() as u64) as usize].as_bytes());
                    out.push(b' ');
                }
                out.truncate(start + 8192);
            }
        }
    }
    out
}

/// CPU time (user + system) of the whole process so far, in seconds: on a shared machine the
/// CPU a layout needs per byte is steadier than the wall clock.
fn cpu() -> f64 {
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut r) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(r.ru_utime) + t(r.ru_stime)
}

/// Write `data` split into `streams` objects at once, each in 1 MiB writes; (wall seconds, CPU
/// seconds, stored bytes).
fn run(p: &Pipeline, data: &[u8], streams: usize) -> (f64, f64, u64) {
    let c0 = cpu();
    let t = Instant::now();
    let part = data.len().div_ceil(streams);
    let stored: u64 = std::thread::scope(|s| {
        let hs: Vec<_> = data
            .chunks(part)
            .map(|d| {
                s.spawn(move || {
                    let mut w = p.writer(Box::new(Sink(0))).unwrap();
                    for c in d.chunks(1 << 20) {
                        w.write_all(c).unwrap();
                    }
                    w.finish().unwrap()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    (t.elapsed().as_secs_f64(), cpu() - c0, stored)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mb: usize = args.get(1).map(|s| s.parse().unwrap()).unwrap_or(512);
    let rounds: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(5);
    let level: i32 = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(1);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let d = data(mb);
    println!("{mb} MiB of table-like data, zstd -{level}, {cores} cores");
    // (label, layout, streams, threads per stream): a backup (cores streams x cores threads),
    // one big part alone (1 x cores), a WAL segment writer (1 x 1).
    let cases = [
        ("backup", cores, cores),
        ("one part", 1, cores),
        ("one thread", 1, 1),
    ];
    for (label, streams, threads) in cases {
        let mut times = [Vec::new(), Vec::new()];
        let mut cpus = [Vec::new(), Vec::new()];
        let mut sizes = [0u64; 2];
        for _ in 0..rounds {
            for (i, layout) in [ZstdLayout::Frames, ZstdLayout::SingleFrame].into_iter().enumerate() {
                let p = Pipeline::new(Compression::Zstd { level }, None).with_threads(threads).with_zstd_layout(layout);
                let (s, c, stored) = run(&p, &d, streams);
                times[i].push(d.len() as f64 / 1e6 / s);
                cpus[i].push(c / (d.len() as f64 / 1e9));
                sizes[i] = stored;
            }
        }
        for (i, name) in ["frames", "single"].iter().enumerate() {
            println!(
                "{label:<10} {streams}x{threads} {name:<7} median {:6.0} MB/s {:5.2} CPU-s/GB  MB/s {:?} CPU-s/GB {:?}  ratio {:.3}",
                median(times[i].clone()),
                median(cpus[i].clone()),
                times[i].iter().map(|t| t.round() as i64).collect::<Vec<_>>(),
                cpus[i].iter().map(|c| (c * 100.0).round() / 100.0).collect::<Vec<_>>(),
                d.len() as f64 / sizes[i] as f64
            );
        }
    }
}
