//! Round trips, formats and failure modes of every method and of encryption. Interoperability
//! with the reference tools is in crates/core/tests/codec_interop.rs.

use super::crypto::{Key, A_BYTES, CHUNK, HEADER_BYTES};
use super::*;
use crate::storage::{get_bytes, FsStorage, Storage};

fn sample(len: usize) -> Vec<u8> {
    // Compressible but not trivial: a counter pattern with some noise.
    let mut x: u32 = 12345;
    (0..len)
        .map(|i| {
            x = x.wrapping_mul(1103515245).wrapping_add(12345);
            if i % 7 == 0 { (x >> 24) as u8 } else { (i / 1000) as u8 }
        })
        .collect()
}

const ALL: [Compression; 5] = [
    Compression::Lz4,
    Compression::Zstd { level: 3 },
    Compression::Brotli { quality: 3 },
    Compression::Lzma { preset: 1 },
    Compression::None,
];

fn key(n: u8) -> Key {
    Key::from_bytes([n; 32])
}

fn decode_with(p: &Pipeline, object: &str, data: Vec<u8>) -> Result<Vec<u8>> {
    let mut r = p.reader(object, Box::new(io::Cursor::new(data)))?;
    let mut out = Vec::new();
    r.read_to_end(&mut out).map_err(|e| read_error(object, e))?;
    Ok(out)
}

fn decode(ext: &str, data: Vec<u8>) -> Result<Vec<u8>> {
    let object = if ext.is_empty() { "obj".to_string() } else { format!("obj.{ext}") };
    decode_with(&Pipeline::new(Compression::None, None), &object, data)
}

#[test]
fn bytes_round_trip_all_methods() {
    let data = sample(4 * 1024 * 1024 + 3);
    for c in ALL {
        let packed = compress_bytes(c, &data).unwrap();
        if c != Compression::None {
            assert!(packed.len() < data.len() * 3 / 4, "{c:?} did not compress: {}", packed.len());
        }
        assert_eq!(decode(c.extension(), packed).unwrap(), data, "{c:?}");
    }
    // Empty input is a valid stream for every method.
    for c in ALL {
        assert_eq!(decode(c.extension(), compress_bytes(c, b"").unwrap()).unwrap(), b"", "{c:?}");
    }
}

#[test]
fn stream_headers_are_wal_g_formats() {
    let packed = compress_bytes(Compression::Lz4, b"hello hello hello").unwrap();
    assert_eq!(&packed[..4], &[0x04, 0x22, 0x4D, 0x18]);
    // FLG byte: version 01, content checksum bit (0x04) set.
    assert_eq!(packed[4] & 0xC0, 0x40);
    assert_eq!(packed[4] & 0x04, 0x04);
    let z = compress_bytes(Compression::Zstd { level: 3 }, b"x").unwrap();
    assert_eq!(&z[..4], &[0x28, 0xB5, 0x2F, 0xFD]);
    // LZMA_Alone: props 0x5D, dictionary 8 MiB (LE), size unknown (all ones), whatever the preset.
    for preset in [0, 6, 9] {
        let l = compress_bytes(Compression::Lzma { preset }, b"hello").unwrap();
        assert_eq!(l[0], 0x5D, "preset {preset}");
        assert_eq!(u32::from_le_bytes(l[1..5].try_into().unwrap()), 8 << 20, "preset {preset}");
        assert_eq!(&l[5..13], &[0xFF; 8], "preset {preset}");
    }
}

#[test]
fn levels_parse_and_validate() {
    assert_eq!(Compression::parse("brotli").unwrap(), Compression::Brotli { quality: 3 });
    assert_eq!(Compression::parse("LZMA").unwrap(), Compression::Lzma { preset: 6 });
    assert_eq!(Compression::parse("zstd").unwrap().with_level(19).unwrap(), Compression::Zstd { level: 19 });
    assert!(Compression::parse("zstd").unwrap().with_level(23).is_err());
    assert!(Compression::parse("brotli").unwrap().with_level(12).is_err());
    assert_eq!(Compression::parse("lzma").unwrap().with_level(9).unwrap(), Compression::Lzma { preset: 9 });
    assert_eq!(Compression::Lz4.with_level(99).unwrap(), Compression::Lz4);
    let err = Compression::parse("gzip").unwrap_err().to_string();
    assert!(err.contains("gzip") && err.contains("brotli"), "{err}");
    assert_eq!(zstd_level_from_name("Best"), Some(11));
    assert_eq!(zstd_level_from_name("fastest"), Some(1));
    assert_eq!(zstd_level_from_name("nonsense"), None);
    // A higher zstd level really is used: it compresses this sample better.
    let data = sample(1 << 20);
    let l1 = compress_bytes(Compression::Zstd { level: 1 }, &data).unwrap().len();
    let l19 = compress_bytes(Compression::Zstd { level: 19 }, &data).unwrap().len();
    assert!(l19 < l1, "level 19 ({l19}) should beat level 1 ({l1})");
}

/// The zstd frames in `data`, by walking their sizes.
fn zstd_frame_count(mut data: &[u8]) -> usize {
    let mut n = 0;
    while !data.is_empty() {
        let len = ::zstd::zstd_safe::find_frame_compressed_size(data).expect("a whole frame");
        data = &data[len..];
        n += 1;
    }
    n
}

fn zstd_encode_as(layout: ZstdLayout, threads: usize, data: &[u8], piece: usize) -> Vec<u8> {
    let mut enc = encoder_with(Compression::Zstd { level: 1 }, threads, layout, Vec::new()).unwrap();
    for p in data.chunks(piece) {
        enc.write_all(p).unwrap();
    }
    enc.finish().unwrap()
}

fn zstd_encode(threads: usize, data: &[u8], piece: usize) -> Vec<u8> {
    zstd_encode_as(ZstdLayout::default(), threads, data, piece)
}

/// The frame header of a zstd frame: (Content_Checksum_flag, Single_Segment_flag).
fn zstd_header_flags(frame: &[u8]) -> (bool, bool) {
    assert_eq!(&frame[..4], &[0x28, 0xB5, 0x2F, 0xFD], "zstd magic");
    (frame[4] & 0x04 != 0, frame[4] & 0x20 != 0)
}

#[test]
fn zstd_objects_are_one_frame_with_a_checksum_on_any_number_of_threads() {
    // Many zstd jobs' worth of input (a job is 4 windows: 2 MiB at level 1), written in odd
    // pieces, through the direct-read input buffer too.
    let data = sample(9 * super::zstd::chunk_size(1) + 12345);
    for threads in [1, 2, 3] {
        let z = zstd_encode(threads, &data, 100_003);
        assert_eq!(zstd_frame_count(&z), 1, "{threads} threads");
        assert_eq!(zstd_header_flags(&z), (true, false), "{threads} threads: checksum flag");
        assert_eq!(decode("zst", z.clone()).unwrap(), data, "{threads} threads");
        // The reference library's one-shot decoder reads it whole too (it stops after one frame).
        let whole = ::zstd::bulk::decompress(&z, data.len() + 1).unwrap();
        assert!(whole == data, "{threads} threads: one-shot decode differs");
    }
    let mut enc = encoder(Compression::Zstd { level: 1 }, 2, Vec::new()).unwrap();
    let mut fed = 0;
    while fed < data.len() {
        let buf = enc.input_buffer().expect("zstd has an input buffer");
        let n = buf.len().min(data.len() - fed).min(77_777);
        buf[..n].copy_from_slice(&data[fed..fed + n]);
        enc.commit_input(n).unwrap();
        fed += n;
    }
    let z = enc.finish().unwrap();
    assert_eq!(zstd_frame_count(&z), 1);
    assert_eq!(decode("zst", z).unwrap(), data);
    // Small and empty input: one frame too.
    assert_eq!(zstd_frame_count(&zstd_encode(2, &data[..1000], 10)), 1);
    assert_eq!(decode("zst", zstd_encode(2, b"", 1)).unwrap(), b"");
    // Abandoned halfway (an aborted upload): dropping stops zstd's workers.
    let mut enc = encoder(Compression::Zstd { level: 1 }, 2, Vec::new()).unwrap();
    enc.write_all(&data[..5 * super::zstd::chunk_size(1) + 5]).unwrap();
    drop(enc);
}

#[test]
fn zstd_frames_layout_writes_one_frame_per_chunk_the_same_on_any_number_of_threads() {
    // 3 full chunks and a partial one.
    let data = sample(3 * super::zstd::chunk_size(1) + 12345);
    let inline = zstd_encode_as(ZstdLayout::Frames, 1, &data, 100_003);
    assert_eq!(zstd_frame_count(&inline), 4);
    assert_eq!(decode("zst", inline.clone()).unwrap(), data);
    for threads in [2, 3, 8] {
        // Helpers finish chunks in any order; the frames must still come out in input order.
        assert!(zstd_encode_as(ZstdLayout::Frames, threads, &data, 65_536 + 7) == inline, "{threads} threads wrote different bytes");
    }
    // One chunk or less never needs helpers, and empty input is one empty frame.
    assert_eq!(zstd_frame_count(&zstd_encode_as(ZstdLayout::Frames, 4, &data[..1000], 10)), 1);
    assert_eq!(decode("zst", zstd_encode_as(ZstdLayout::Frames, 4, b"", 1)).unwrap(), b"");
    // Abandoned halfway (an aborted upload): dropping stops and joins the helpers.
    let mut enc = encoder_with(Compression::Zstd { level: 1 }, 4, ZstdLayout::Frames, Vec::new()).unwrap();
    enc.write_all(&data[..2 * super::zstd::chunk_size(1) + 5]).unwrap();
    drop(enc);
}

#[test]
fn streaming_writer_round_trip_plain_and_encrypted() {
    let dir = tempfile::tempdir().unwrap();
    let s = FsStorage::new(dir.path());
    let data = sample(1024 * 1024 + 17);
    for k in [None, Some(key(7))] {
        for c in ALL {
            let p = Pipeline::new(c, k.clone());
            let (object, mut w) = p.create(&s, "obj/part_001.tar").unwrap();
            assert_eq!(object, c.object_name("obj/part_001.tar"));
            for chunk in data.chunks(100_000) {
                w.write_all(chunk).unwrap();
            }
            let stored = w.finish().unwrap();
            let raw = get_bytes(&s, &object).unwrap().unwrap();
            assert_eq!(stored, raw.len() as u64);
            assert_eq!(extension_of(&object), c.extension());
            let mut r = p.open(&s, &object).unwrap().unwrap();
            let mut back = Vec::new();
            r.read_to_end(&mut back).unwrap();
            assert!(back == data, "{c:?} encrypted={}", k.is_some());
            assert_eq!(p.encode_bytes(&data).map(|b| decode_with(&p, &object, b).unwrap()).unwrap(), data);
        }
    }
    // Aborted writer: nothing visible, for plain and encrypted pipelines.
    for k in [None, Some(key(7))] {
        let p = Pipeline::new(Compression::Zstd { level: 1 }, k);
        let (object, mut w) = p.create(&s, "obj/aborted").unwrap();
        w.write_all(&data).unwrap();
        drop(w);
        assert!(!s.exists(&object).unwrap());
    }
}

#[test]
fn corrupt_and_truncated_streams_fail_for_every_method() {
    let data = sample(1 << 20);
    for c in ALL.into_iter().filter(|c| *c != Compression::None) {
        let packed = compress_bytes(c, &data).unwrap();
        let cut = packed[..packed.len() - 10].to_vec();
        let err = decode(c.extension(), cut).expect_err(&format!("{c:?} truncated must fail"));
        assert!(matches!(err, Error::Codec { .. }), "{c:?}: {err}");
        assert!(err.to_string().contains(&format!("obj.{}", c.extension())), "{err}");
        let mut flipped = packed.clone();
        let n = flipped.len();
        flipped[n / 2] ^= 0xFF;
        // A flipped byte is either detected or (lzma, brotli without checksums) changes the
        // output; it never silently returns the original data.
        match decode(c.extension(), flipped) {
            Err(e) => assert!(matches!(e, Error::Codec { .. }), "{c:?}: {e}"),
            Ok(out) => assert!(out != data, "{c:?}: flipped byte went unnoticed"),
        }
    }
    let err = decompress_reader("gz", "x.gz", Box::new(io::empty())).err().unwrap();
    assert!(err.to_string().contains("unknown compression extension"), "{err}");
    assert_eq!(extension_of("wal_005/00000002.history"), "");
    assert_eq!(extension_of("wal_005/00000002.history.zst"), "zst");
    assert_eq!(extension_of("a/part_001.tar.br"), "br");
    assert_eq!(extension_of("a/part_001.tar"), "");
}

/// Byte size of WAL-G's framing for `len` plaintext bytes.
fn framed_len(len: usize) -> usize {
    HEADER_BYTES + (len / CHUNK) * (CHUNK + A_BYTES) + (len % CHUNK) + A_BYTES
}

fn encrypt(k: &Key, data: &[u8]) -> Vec<u8> {
    Pipeline::new(Compression::None, Some(k.clone())).encode_bytes(data).unwrap()
}

#[test]
fn encryption_framing_matches_wal_g() {
    for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 100] {
        let data = sample(len);
        let sealed = encrypt(&key(1), &data);
        assert_eq!(sealed.len(), framed_len(len), "len {len}");
        assert_eq!(decode_with(&Pipeline::new(Compression::None, Some(key(1))), "o", sealed).unwrap(), data);
    }
    // A fresh random header each time: same input, different ciphertext.
    assert_ne!(encrypt(&key(1), b"same"), encrypt(&key(1), b"same"));
}

#[test]
fn tampering_is_detected() {
    let data = sample(5 * CHUNK + 123);
    let k = key(3);
    let p = Pipeline::new(Compression::None, Some(k.clone()));
    let sealed = encrypt(&k, &data);
    let expect = |bytes: Vec<u8>, needle: &str, what: &str| {
        let err = decode_with(&p, "wal_005/X", bytes).expect_err(what).to_string();
        assert!(err.contains(needle) && err.contains("wal_005/X"), "{what}: {err}");
    };
    // Truncation exactly at a chunk boundary: only libsodium's FINAL tag reveals it.
    let boundary = HEADER_BYTES + 5 * (CHUNK + A_BYTES);
    expect(sealed[..boundary].to_vec(), "truncated", "cut before the final chunk");
    expect(sealed[..HEADER_BYTES + 2 * (CHUNK + A_BYTES)].to_vec(), "truncated", "cut after 2 chunks");
    expect(sealed[..HEADER_BYTES].to_vec(), "truncated", "header only");
    expect(sealed[..10].to_vec(), "truncated", "part of the header");
    expect(sealed[..sealed.len() - 1].to_vec(), "authentication failed", "last byte missing");
    for pos in [0, HEADER_BYTES + 5, HEADER_BYTES + CHUNK + A_BYTES + 9, sealed.len() - 1] {
        let mut flipped = sealed.clone();
        flipped[pos] ^= 0x01;
        let err = decode_with(&p, "wal_005/X", flipped).expect_err("flipped byte").to_string();
        assert!(err.contains("failed"), "flip at {pos}: {err}");
    }
    let mut extra = sealed.clone();
    extra.extend_from_slice(b"more");
    expect(extra, "corrupt", "trailing data");
    // Data after a short final chunk lands in that chunk's read, so it fails authentication.
    let mut extra = encrypt(&k, b"short");
    extra.extend_from_slice(b"more");
    let err = decode_with(&p, "o", extra).unwrap_err().to_string();
    assert!(err.contains("corrupt"), "{err}");
    // Data after a final chunk that ends on the read boundary is caught by the end check.
    let mut extra = encrypt(&k, &sample(CHUNK - 1));
    assert_eq!(extra.len(), HEADER_BYTES + CHUNK + A_BYTES - 1);
    extra.extend_from_slice(b"more");
    let err = decode_with(&p, "o", extra).unwrap_err().to_string();
    assert!(err.contains("corrupt"), "{err}");
    // Wrong key: the first chunk fails, and the message says what to check.
    let wrong = Pipeline::new(Compression::None, Some(key(4)));
    let err = decode_with(&wrong, "wal_005/X", sealed.clone()).unwrap_err().to_string();
    assert!(err.contains("wrong key") && err.contains("wal_005/X"), "{err}");
    // Encrypted lz4 object read without a key: the hint says to set one.
    let enc = Pipeline::new(Compression::Lz4, Some(k.clone())).encode_bytes(&data).unwrap();
    let err = decode_with(&Pipeline::new(Compression::Lz4, None), "wal_005/X.lz4", enc).unwrap_err().to_string();
    assert!(err.contains("maybe the object is encrypted") && err.contains("WALG_LIBSODIUM_KEY"), "{err}");
    // With the key, the same pipeline decodes both layers.
    let enc = Pipeline::new(Compression::Lz4, Some(k.clone())).encode_bytes(&data).unwrap();
    assert_eq!(decode_with(&Pipeline::new(Compression::Lz4, Some(k)), "wal_005/X.lz4", enc).unwrap(), data);
}

#[test]
fn key_transforms_follow_wal_g_and_never_echo_the_key() {
    let raw = "correct horse battery staple!";
    let k = Key::from_text(raw, "none").unwrap();
    let mut expect = [0u8; 32];
    expect[..raw.len()].copy_from_slice(raw.as_bytes());
    assert_eq!(k, Key::from_bytes(expect), "zero-padded to 32");
    let long = "0123456789abcdef0123456789abcdefEXTRA";
    assert_eq!(Key::from_text(long, "").unwrap(), Key::from_text(&long[..32], "none").unwrap(), "cut to 32");
    let short = "tooshort-secret";
    let err = Key::from_text(short, "none").unwrap_err().to_string();
    assert!(err.contains("not be less than 25") && !err.contains(short), "{err}");
    let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
    let bytes: [u8; 32] = std::array::from_fn(|i| [0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff][i % 16]);
    assert_eq!(Key::from_text(hex, "hex").unwrap(), Key::from_bytes(bytes));
    let err = Key::from_text(&hex[..62], "hex").unwrap_err().to_string();
    assert!(err.contains("exactly 32 bytes (got 31") && !err.contains(&hex[..62]), "{err}");
    assert!(Key::from_text("zz", "hex").unwrap_err().to_string().contains("not valid hex"));
    let b64 = "ABEiM0RVZneImaq7zN3u/wARIjNEVWZ3iJmqu8zd7v8=";
    assert_eq!(Key::from_text(b64, "base64").unwrap(), Key::from_bytes(bytes));
    let err = Key::from_text("c2hvcnQ=", "base64").unwrap_err().to_string();
    assert!(err.contains("exactly 32 bytes (got 5"), "{err}");
    assert!(Key::from_text("%%%", "base64").unwrap_err().to_string().contains("not valid base64"));
    let err = Key::from_text(raw, "rot13").unwrap_err().to_string();
    assert!(err.contains("unknown key transform") && !err.contains(raw), "{err}");
    assert_eq!(format!("{k:?}"), "Key(<redacted>)");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    std::fs::write(&path, format!("  {b64}\n")).unwrap();
    assert_eq!(Key::from_file(&path, "base64").unwrap(), Key::from_bytes(bytes), "file content is trimmed");
    let err = Key::from_file(&dir.path().join("nope"), "none").unwrap_err().to_string();
    assert!(err.contains("WALG_LIBSODIUM_KEY_PATH") && err.contains("nope"), "{err}");
}

#[test]
fn zstd_frames_carry_checksums_that_the_decoder_verifies() {
    let data = sample(5 << 20);
    for layout in [ZstdLayout::SingleFrame, ZstdLayout::Frames] {
        let z = zstd_encode_as(layout, 2, &data, 1 << 20);
        // Walk the frames: every Frame_Header_Descriptor has Content_Checksum_flag (bit 2) set.
        let mut pos = 0;
        let mut frames = 0;
        while pos < z.len() {
            assert!(zstd_header_flags(&z[pos..]).0, "{layout:?}: frame {frames} has no content checksum");
            pos += ::zstd::zstd_safe::find_frame_compressed_size(&z[pos..]).unwrap();
            frames += 1;
        }
        match layout {
            ZstdLayout::SingleFrame => assert_eq!(frames, 1),
            ZstdLayout::Frames => assert!(frames >= 3, "{frames}"),
        }
        assert_eq!(decode("zst", z.clone()).unwrap(), data);
        // A changed checksum (the last 4 bytes of the last frame): the decoder refuses the frame.
        let mut bad = z.clone();
        let n = bad.len();
        bad[n - 2] ^= 0x01;
        let err = decode("zst", bad.clone()).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Corrupt, "{layout:?}");
        assert!(err.to_string().contains("obj.zst"), "{err}");
        // Only a reader whose caller checks a recorded hash of the raw bytes skips them.
        let mut r = decompress_reader_opts("zst", "obj.zst", Box::new(io::Cursor::new(bad)), false).unwrap();
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert!(out == data, "{layout:?}");
        // Cut anywhere, a single frame never decodes short: the end of the frame is missing.
        if layout == ZstdLayout::SingleFrame {
            for cut in [n / 3, n / 2, n - 4, n - 1] {
                let err = decode("zst", z[..cut].to_vec()).unwrap_err();
                assert_eq!(err.kind(), crate::ErrorKind::Corrupt, "cut at {cut}: {err}");
            }
        }
    }
}

#[test]
fn lz4_frames_must_be_whole_and_alone() {
    let data = sample(300_000);
    let packed = compress_bytes(Compression::Lz4, &data).unwrap();
    assert_eq!(decode("lz4", packed.clone()).unwrap(), data);
    // Two frames back to back are one stream.
    let mut two = packed.clone();
    two.extend_from_slice(&packed);
    assert_eq!(decode("lz4", two).unwrap().len(), 2 * data.len());
    // Cut before the end mark, before the content checksum, inside it: all refused.
    for cut in [packed.len() - 8, packed.len() - 4, packed.len() - 1, packed.len() / 2, 3] {
        let err = decode("lz4", packed[..cut].to_vec()).unwrap_err();
        assert!(err.to_string().contains("obj.lz4"), "cut {cut}: {err}");
    }
    // Bytes after the last frame that are not a frame: refused.
    let mut longer = packed.clone();
    longer.extend_from_slice(b"trailing garbage");
    let err = decode("lz4", longer).unwrap_err();
    assert!(err.to_string().contains("after the last lz4 frame"), "{err}");
}

/// OpenPGP with the test key in testdata/ (made by GnuPG, RSA 3072, passphrase "walg-test"):
/// the public key encrypts, the secret key with its passphrase decrypts, through compression;
/// without the passphrase it is a configuration error naming the object. (Interop with gpg
/// itself: tests/pgp_interop.rs.)
#[test]
fn pgp_round_trip_with_the_test_key() {
    let testdata = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata");
    let public = std::fs::read_to_string(format!("{testdata}/pgp-test-public.asc")).unwrap();
    let secret = std::fs::read_to_string(format!("{testdata}/pgp-test-secret.asc")).unwrap();
    let push = PgpKey::from_armored("WALG_PGP_KEY", &public, None).unwrap();
    assert!(!push.can_decrypt());
    let restore = PgpKey::from_armored("WALG_PGP_KEY", &secret, Some("walg-test".into())).unwrap();
    let data = sample(1_000_003);
    let w = Pipeline::new(Compression::Zstd { level: 1 }, None).with_pgp(Some(push.clone()));
    let sealed = w.encode_bytes(&data).unwrap();
    let object = "wal_005/000000010000000000000001.zst";
    let r = Pipeline::new(Compression::Zstd { level: 1 }, None).with_pgp(Some(restore));
    assert!(decode_with(&r, object, sealed.clone()).unwrap() == data);
    let err = decode_with(&w, object, sealed.clone()).unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::BadInput, "{err}");
    let locked = PgpKey::from_armored("WALG_PGP_KEY", &secret, None).unwrap();
    let err = decode_with(&Pipeline::new(Compression::None, None).with_pgp(Some(locked)), object, sealed.clone()).unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::BadInput, "{err}");
    assert!(err.to_string().contains(object) && err.to_string().contains("WALG_PGP_KEY_PASSPHRASE"), "{err}");
    // Without any key: the decompressor fails, and the hint names both kinds of key.
    let err = decode_with(&Pipeline::new(Compression::None, None), object, sealed).unwrap_err().to_string();
    assert!(err.contains("maybe the object is encrypted") && err.contains("WALG_PGP_KEY"), "{err}");
}
