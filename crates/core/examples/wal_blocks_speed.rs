//! Speed of the WAL block-reference parser (walg_core::wal::blocks) on the segments of a
//! directory, e.g. those kept by `WALPARSE_KEEP_SEGMENTS=DIR cargo test -p walg-core --test
//! walparse`: `cargo run -p walg-core --example wal_blocks_speed DIR`. Build walg-core optimised
//! for a meaningful number (`--release`, or `--config 'profile.dev.package.walg-core.opt-level=3'`).

use std::time::{Duration, Instant};

use walg_core::wal::blocks::{scan_segment, SegmentMap};

fn main() {
    let dir = std::env::args()
        .nth(1)
        .expect("usage: wal_blocks_speed DIR");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    let segs: Vec<Vec<u8>> = names.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let bytes: usize = segs.iter().map(|s| s.len()).sum();
    let run = |what: &str, f: &dyn Fn(&[u8]) -> usize| {
        let t = Instant::now();
        let (mut rounds, mut n) = (0, 0);
        while rounds < 3 || t.elapsed() < Duration::from_secs(3) {
            n += segs.iter().map(|s| f(s)).sum::<usize>();
            rounds += 1;
        }
        let mbs = (bytes * rounds) as f64 / 1e6 / t.elapsed().as_secs_f64();
        println!(
            "{what}: {mbs:.0} MB/s ({} per round, {} segments)",
            n / rounds,
            segs.len()
        );
    };
    run("scan (records)", &|s| {
        scan_segment(s, &mut |_, _| {}).records as usize
    });
    run("map (distinct blocks)", &|s| {
        SegmentMap::build(s).blocks.len()
    });
}
