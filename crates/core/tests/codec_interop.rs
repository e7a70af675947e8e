//! Interoperability with the reference implementations: what walg-core writes, the Debian `lz4`,
//! `zstd`, `brotli` and `xz --format=lzma` tools and PyNaCl's libsodium secretstream read; what
//! they write, walg-core reads. scripts/setup.sh installs all of them (`make setup`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use walg_core::codec::crypto::Key;
use walg_core::codec::{compress_bytes, Compression, Pipeline};

/// Data that looks like a database: pages of text, numbers and zeros, plus a random tail.
fn sample(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E3779B97F4A7C15;
    let mut out = Vec::with_capacity(len);
    let mut row = 0u64;
    while out.len() < len {
        if out.len() % 8192 < 6000 {
            out.extend_from_slice(format!("{row:08}|account {}|balance {}|", row * 7 % 1000, row % 97).as_bytes());
            row += 1;
        } else {
            out.extend(std::iter::repeat_n(0u8, 2192));
        }
    }
    out.truncate(len);
    for b in out.iter_mut().rev().take(3000) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    out
}

/// Runs `cmd` with `input` on stdin; returns stdout, panicking with stderr on failure.
fn run(cmd: &mut Command, input: &[u8]) -> Vec<u8> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e} (install the test tools with `make setup`)"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    let _ = feeder.join().unwrap();
    assert!(out.status.success(), "{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Each tool: (method, compress command, decompress command).
fn tools() -> Vec<(Compression, Vec<&'static str>, Vec<&'static str>)> {
    vec![
        (Compression::Lz4, vec!["lz4", "-c", "-q"], vec!["lz4", "-d", "-c", "-q"]),
        (Compression::Zstd { level: 3 }, vec!["zstd", "-c", "-q"], vec!["zstd", "-d", "-c", "-q"]),
        (Compression::Brotli { quality: 3 }, vec!["brotli", "-c"], vec!["brotli", "-d", "-c"]),
        (Compression::Lzma { preset: 6 }, vec!["xz", "--format=lzma", "-c"], vec!["xz", "--format=lzma", "-d", "-c"]),
    ]
}

fn command(argv: &[&str]) -> Command {
    let mut c = Command::new(argv[0]);
    c.args(&argv[1..]);
    c
}

fn decode(p: &Pipeline, object: &str, data: Vec<u8>) -> walg_core::Result<Vec<u8>> {
    let mut r = p.reader(object, Box::new(std::io::Cursor::new(data)))?;
    let mut out = Vec::new();
    r.read_to_end(&mut out).map_err(|e| walg_core::codec::read_error(object, e))?;
    Ok(out)
}

#[test]
fn reference_tools_read_what_we_write() {
    // 9 MiB: zstd writes it as three frames.
    for len in [0, 1000, 3 * 1024 * 1024 + 5, 9 * 1024 * 1024 + 5] {
        let data = sample(len);
        for (c, _, decompress) in tools() {
            let packed = compress_bytes(c, &data).unwrap();
            let out = run(&mut command(&decompress), &packed);
            assert!(out == data, "{} did not return our {c:?} data of {len} bytes", decompress[0]);
        }
    }
}

#[test]
fn we_read_what_reference_tools_write() {
    let data = sample(3 * 1024 * 1024 + 5);
    let plain = Pipeline::new(Compression::None, None);
    for (c, compress, _) in tools() {
        for extra in [&[][..], &["-1"][..], &["-9"][..]] {
            let mut argv = compress.clone();
            argv.extend_from_slice(extra);
            let packed = run(&mut command(&argv), &data);
            let object = c.object_name("wal_005/000000010000000000000001");
            let out = decode(&plain, &object, packed).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
            assert!(out == data, "{argv:?} output decoded to different data");
        }
    }
}

fn python() -> PathBuf {
    std::env::var_os("WALG_TEST_PYTHON").map(PathBuf::from).unwrap_or_else(|| "/opt/walg-test-venv/bin/python".into())
}

fn pynacl(mode: &str, key: &[u8; 32], input: &[u8]) -> Vec<u8> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/secretstream.py");
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    run(Command::new(python()).arg(script).arg(mode).arg(hex), input)
}

const KEY: [u8; 32] = *b"0123456789abcdefghijklmnopqrstuv";

#[test]
fn pynacl_decrypts_what_we_encrypt() {
    let key = Key::from_bytes(KEY);
    for len in [0, 1, 8191, 8192, 8193, 5 * 8192, 1_000_003] {
        let data = sample(len);
        let p = Pipeline::new(Compression::None, Some(key.clone()));
        let sealed = p.encode_bytes(&data).unwrap();
        assert!(pynacl("decrypt", &KEY, &sealed) == data, "PyNaCl disagrees on {len} bytes");
    }
    // Compressed, then encrypted, as WAL and tar parts are stored: PyNaCl, then zstd, reads it.
    let data = sample(2_000_000);
    let sealed = Pipeline::new(Compression::Zstd { level: 3 }, Some(key)).encode_bytes(&data).unwrap();
    let compressed = pynacl("decrypt", &KEY, &sealed);
    assert!(run(&mut command(&["zstd", "-d", "-c", "-q"]), &compressed) == data);
}

#[test]
fn we_decrypt_what_pynacl_encrypts() {
    let key = Key::from_bytes(KEY);
    let p = Pipeline::new(Compression::None, Some(key.clone()));
    for len in [0, 1, 8191, 8192, 8193, 5 * 8192, 1_000_003] {
        let data = sample(len);
        let sealed = pynacl("encrypt", &KEY, &data);
        assert_eq!(decode(&p, "wal_005/X", sealed).unwrap(), data, "{len} bytes");
    }
    // lz4 by the Debian tool, encrypted by PyNaCl: our pipeline undoes both.
    let data = sample(2_000_000);
    let sealed = pynacl("encrypt", &KEY, &run(&mut command(&["lz4", "-c", "-q"]), &data));
    let both = Pipeline::new(Compression::Lz4, Some(key));
    assert_eq!(decode(&both, "basebackups_005/b/tar_partitions/part_001.tar.lz4", sealed).unwrap(), data);
    // A PyNaCl stream cut at a chunk boundary (FINAL chunk dropped) is refused.
    let sealed = pynacl("encrypt", &KEY, &sample(3 * 8192 + 10));
    let cut = sealed[..24 + 3 * (8192 + 17)].to_vec();
    let err = decode(&p, "wal_005/X", cut).unwrap_err().to_string();
    assert!(err.contains("truncated"), "{err}");
}

#[test]
fn wrong_key_is_reported_for_pynacl_streams() {
    let sealed = pynacl("encrypt", &KEY, &sample(20_000));
    let mut other = KEY;
    other[0] ^= 1;
    let p = Pipeline::new(Compression::None, Some(Key::from_bytes(other)));
    let err = decode(&p, "wal_005/X", sealed).unwrap_err().to_string();
    assert!(err.contains("wrong key") && err.contains("wal_005/X"), "{err}");
}

/// Our zstd objects are one frame: readers that stop after the first frame read them whole.
/// Checked with `zstd -l` (frame count) and python-zstandard's `decompressobj()`, which reads
/// exactly one frame and ignores what follows (as wal-rus and other readers did with the
/// many-frame layout); the many-frame layout is shown to come out short from that reader.
#[test]
fn zstd_objects_are_one_frame_that_single_frame_readers_read_whole() {
    use walg_core::codec::{encoder_with, ZstdLayout};
    let data = sample(11 * 1024 * 1024 + 5);
    let encode = |layout: ZstdLayout, threads: usize| {
        let mut enc = encoder_with(Compression::Zstd { level: 1 }, threads, layout, Vec::new()).unwrap();
        for piece in data.chunks(1 << 20) {
            enc.write_all(piece).unwrap();
        }
        enc.finish().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let py = "import sys, zstandard\n\
              d = zstandard.ZstdDecompressor().decompressobj()\n\
              out = sys.stdout.buffer\n\
              while True:\n    b = sys.stdin.buffer.read(1 << 20)\n    if not b: break\n    out.write(d.decompress(b))\n";
    for threads in [1, 2] {
        let z = encode(ZstdLayout::SingleFrame, threads);
        let path = dir.path().join(format!("single-{threads}.zst"));
        std::fs::write(&path, &z).unwrap();
        let listing = String::from_utf8(run(&mut command(&["zstd", "-l", "-v", path.to_str().unwrap()]), b"")).unwrap();
        assert!(listing.contains("# Zstandard Frames: 1"), "zstd -l: {listing}");
        assert!(listing.contains("Check: XXH64"), "zstd -l: no content checksum: {listing}");
        let out = run(Command::new(python()).arg("-c").arg(py), &z);
        assert!(out == data, "{threads} threads: python-zstandard read {} of {} bytes", out.len(), data.len());
        assert!(run(&mut command(&["zstd", "-d", "-c", "-q"]), &z) == data);
    }
    // The many-frame layout: valid zstd (the zstd tool reads it all), but this reader stops
    // after the first frame: why it is no longer the default.
    let z = encode(ZstdLayout::Frames, 2);
    let out = run(Command::new(python()).arg("-c").arg(py), &z);
    assert!(out.len() < data.len(), "python-zstandard read all {} bytes of many frames", out.len());
    assert!(run(&mut command(&["zstd", "-d", "-c", "-q"]), &z) == data);
}
