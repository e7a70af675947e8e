//! Page checksum speed: `cargo run --release -p walg-core --example page_checksum_bench [MiB]`.
//! Prints GB/s of `page_checksum` over pages of pseudo-random data on one core, to compare with a
//! backup's per-core throughput (README "Page checksums").

use std::time::Instant;

use walg_core::format::page_checksum::{check_page, page_checksum};

fn main() {
    let mib: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(512);
    let mut x = 0x9E37_79B9u32;
    let data: Vec<u8> = (0..mib << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let pages = data.len() / 8192;
    let mut acc = 0u32;
    let t = Instant::now();
    for (i, p) in data.chunks_exact(8192).enumerate() {
        acc = acc.wrapping_add(page_checksum(p, i as u32) as u32);
    }
    let s = t.elapsed().as_secs_f64();
    println!("page_checksum: {pages} pages, {:.3} s, {:.2} GB/s (acc {acc})", s, data.len() as f64 / s / 1e9);
    // check_page as the backup calls it (header parse + checksum; the random pages all mismatch).
    let t = Instant::now();
    let mut bad = 0;
    for (i, p) in data.chunks_exact(8192).enumerate() {
        if check_page(p, i as u32, u64::MAX) != walg_core::format::page_checksum::PageCheck::New {
            bad += 1;
        }
    }
    let s = t.elapsed().as_secs_f64();
    println!("check_page: {:.3} s, {:.2} GB/s ({bad} checked)", s, data.len() as f64 / s / 1e9);
}
