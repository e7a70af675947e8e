//! Restore speed on a sizeable fake PGDATA (README "What is verified": the cost of the checks).
//! `cargo run --release -p walg-core --example restore_bench -- <work dir> [GB] [runs]`: builds
//! a PGDATA of mixed data (8 KiB pages of text from a 1024-word vocabulary, some all-zero and
//! some random pages: about 5:1 with zstd -1), backs it up to file storage with zstd level 1,
//! then restores it `runs` times after one warm-up, printing each time and the median. The
//! same file builds against older commits (it uses only push_data/finish/fetch), so before and
//! after can be compared on the same machine.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use walg_core::backup::{fetch, finish, push_data, BackupStart, BackupStop, Progress};
use walg_core::codec::Compression;
use walg_core::config::Config;
use walg_core::storage::Storage;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn page(rng: &mut Rng, words: &[String], out: &mut Vec<u8>) {
    let start = out.len();
    match rng.next() % 20 {
        0 => out.resize(start + 8192, 0),
        1 => {
            for _ in 0..1024 {
                out.extend_from_slice(&rng.next().to_le_bytes());
            }
        }
        _ => {
            out.extend_from_slice(&rng.next().to_le_bytes()[..]); // a page header of sorts
            while out.len() < start + 8192 {
                let w = &words[(rng.next() % words.len() as u64) as usize];
                out.extend_from_slice(w.as_bytes());
                out.push(b' ');
            }
            out.truncate(start + 8192);
        }
    }
}

fn make_pgdata(root: &Path, gb: f64) -> PathBuf {
    let pg = root.join("pgdata");
    if pg.join("global/pg_control").exists() {
        return pg;
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let words: Vec<String> = (0..1024)
        .map(|_| {
            let len = 3 + rng.next() % 8;
            (0..len).map(|_| (b'a' + (rng.next() % 26) as u8) as char).collect()
        })
        .collect();
    for d in ["base/16384", "global", "pg_wal", "pg_xact"] {
        fs::create_dir_all(pg.join(d)).unwrap();
    }
    fs::write(pg.join("PG_VERSION"), "15\n").unwrap();
    let mut control = vec![0u8; 8192];
    control[..8].copy_from_slice(&7_339_209_394_853_810_000u64.to_le_bytes());
    fs::write(pg.join("global/pg_control"), control).unwrap();
    let total = (gb * 1e9) as u64;
    // One 1 GiB segment (or less), then 64 MiB files, then 1 MiB ones for the last 10%.
    let mut sizes = vec![(total * 6 / 10).min(1 << 30)];
    let mut left = total - sizes[0];
    while left > total / 10 {
        let s = left.min(64 << 20);
        sizes.push(s);
        left -= s;
    }
    while left > 0 {
        let s = left.min(1 << 20);
        sizes.push(s);
        left -= s;
    }
    let mut buf = Vec::with_capacity(8 << 20);
    for (i, size) in sizes.iter().enumerate() {
        let mut f = fs::File::create(pg.join(format!("base/16384/{}", 16400 + i))).unwrap();
        let mut done = 0;
        while done < *size {
            buf.clear();
            while buf.len() < (8 << 20) && done + (buf.len() as u64) < *size {
                page(&mut rng, &words, &mut buf);
            }
            let n = buf.len().min((*size - done) as usize);
            std::io::Write::write_all(&mut f, &buf[..n]).unwrap();
            done += n as u64;
        }
    }
    pg
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let work = PathBuf::from(args.get(1).expect("usage: restore_bench <work dir> [GB] [runs]"));
    let gb: f64 = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(1.5);
    let runs: usize = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(3);
    let t = Instant::now();
    let pg = make_pgdata(&work, gb);
    eprintln!("pgdata ready in {:.1} s", t.elapsed().as_secs_f64());
    let bucket = work.join("bucket");
    let _ = fs::remove_dir_all(&bucket);
    let cfg = Config {
        compression: Compression::Zstd { level: 1 },
        upload_concurrency: 2,
        download_concurrency: 2,
        ..Config::for_file_storage(&bucket)
    };
    let storage: Arc<dyn Storage> = cfg.open_storage().unwrap();
    let name = "base_000000010000000000000002";
    let start = BackupStart {
        name: name.into(),
        pgdata: pg.clone(),
        start_lsn: 0x0200_0028,
        timeline: 1,
        wal_segment_size: 16 << 20,
        pg_version: 150004,
        system_identifier: 7_339_209_394_853_810_000,
        start_time: chrono::Utc::now(),
        hostname: "bench".into(),
        is_permanent: false,
        user_data: None,
        delta: None,
        delta_pages: None,
        delta_map_check: false,
        data_checksums: false,
        tablespace_names: Default::default(),
    };
    let t = Instant::now();
    let data = push_data(&cfg, &storage, &start, &Progress::default(), &mut || Ok(())).unwrap();
    let stop = BackupStop {
        finish_lsn: 0x0200_0100,
        backup_label: "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n".into(),
        tablespace_map: String::new(),
        finish_time: chrono::Utc::now(),
    };
    let (u, c) = (data.uncompressed_size(), data.compressed_size());
    finish(&cfg, &storage, &start, data, &stop).unwrap();
    eprintln!("backup: {:.2} s, {u} bytes -> {c} ({:.2}:1)", t.elapsed().as_secs_f64(), u as f64 / c as f64);
    let mut times = Vec::new();
    for i in 0..=runs {
        let target = work.join("restore");
        let _ = fs::remove_dir_all(&target);
        let t = Instant::now();
        fetch(&cfg, &storage, name, &target, &|_| {}).unwrap();
        let s = t.elapsed().as_secs_f64();
        eprintln!("restore {}: {s:.3} s", if i == 0 { "warm-up".to_string() } else { i.to_string() });
        if i > 0 {
            times.push(s);
        }
    }
    let _ = fs::remove_dir_all(work.join("restore"));
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("median restore: {:.3} s over {} runs ({:?})", times[times.len() / 2], times.len(), times);
}
