//! OpenPGP encryption (WALG_PGP_KEY*) against GnuPG (Debian's `gpg`, installed by
//! scripts/setup.sh): gpg decrypts what we write, we read what gpg writes (compressed by gpg or
//! not), through the whole pipeline (compression, then encryption); wrong keys, a missing
//! passphrase, public-only keys, damaged and cut objects fail naming the object, with the right
//! kind. Keys are made by gpg in a temporary GNUPGHOME (one RSA and one Curve25519 key).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use walg_core::codec::{Compression, PgpKey, Pipeline};
use walg_core::config::{Config, Settings};
use walg_core::ErrorKind;

fn sample(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E3779B97F4A7C15;
    (0..len)
        .map(|i| {
            if i % 5 == 0 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            } else {
                (i / 4096) as u8
            }
        })
        .collect()
}

/// A GnuPG home with keys; its agent is stopped on drop.
struct Gpg {
    home: tempfile::TempDir,
}

const PASS: &str = "correct horse battery staple";

impl Gpg {
    fn new() -> Gpg {
        let home = tempfile::Builder::new().prefix("walg-gpg").tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        // A fixed S2K count: otherwise gpg-agent calibrates it for every protected key (seconds).
        std::fs::write(home.path().join("gpg-agent.conf"), "s2k-count 65536\n").unwrap();
        let g = Gpg { home };
        // An RSA primary key that signs and encrypts (no subkey); GnuPG's default (ed25519 with
        // a cv25519 encryption subkey), protected by a passphrase; and a sign-only key.
        g.run(&["--passphrase", "", "--quick-gen-key", "rsa-user@walg.test", "rsa2048", "sign,encr", "never"], b"");
        g.run(&["--passphrase", "", "--quick-gen-key", "sign-only@walg.test", "ed25519", "sign", "never"], b"");
        g.run(&["--passphrase", PASS, "--quick-gen-key", "cv-user@walg.test", "default", "default", "never"], b"");
        g
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("gpg");
        c.arg("--homedir").arg(self.home.path());
        c.args(["--batch", "--quiet", "--pinentry-mode", "loopback", "--trust-model", "always"]);
        c.args(args);
        c
    }

    fn run(&self, args: &[&str], input: &[u8]) -> Vec<u8> {
        let out = self.try_run(args, input);
        assert!(out.0, "gpg {args:?} failed: {}", out.2);
        out.1
    }

    fn try_run(&self, args: &[&str], input: &[u8]) -> (bool, Vec<u8>, String) {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run gpg: {e} (install it: scripts/setup.sh, apt-get install gnupg)"));
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let feeder = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().unwrap();
        let _ = feeder.join().unwrap();
        (out.status.success(), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
    }

    fn public(&self, uid: &str) -> String {
        String::from_utf8(self.run(&["--armor", "--export", uid], b"")).unwrap()
    }

    fn secret(&self, uid: &str, pass: &str) -> String {
        String::from_utf8(self.run(&["--passphrase", pass, "--armor", "--export-secret-keys", uid], b"")).unwrap()
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf").arg("--homedir").arg(self.home.path()).args(["--kill", "gpg-agent"]).status();
    }
}

fn encode(p: &Pipeline, data: &[u8]) -> Vec<u8> {
    p.encode_bytes(data).unwrap()
}

/// Stream `data` through the pipeline's object writer (as backups and WAL are written).
fn encode_streaming(p: &Pipeline, data: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let s = walg_core::storage::FsStorage::new(dir.path());
    let mut w = p.writer(walg_core::storage::Storage::writer(&s, "obj").unwrap()).unwrap();
    for piece in data.chunks(100_003) {
        w.write_all(piece).unwrap();
    }
    w.finish().unwrap();
    std::fs::read(dir.path().join("obj")).unwrap()
}

fn decode(p: &Pipeline, object: &str, data: Vec<u8>) -> walg_core::Result<Vec<u8>> {
    let mut r = p.reader(object, Box::new(std::io::Cursor::new(data)))?;
    let mut out = Vec::new();
    r.read_to_end(&mut out).map_err(|e| walg_core::codec::read_error(object, e))?;
    Ok(out)
}

fn pgp(text: &str, pass: Option<&str>) -> PgpKey {
    PgpKey::from_armored("WALG_PGP_KEY", text, pass.map(str::to_string)).unwrap()
}

#[test]
fn gpg_decrypts_what_we_encrypt_with_the_public_key_only() {
    let g = Gpg::new();
    for uid in ["rsa-user@walg.test", "cv-user@walg.test"] {
        // The server side holds only the public key.
        let key = pgp(&g.public(uid), None);
        assert!(!key.can_decrypt());
        for (c, len) in [(Compression::None, 0), (Compression::None, 1), (Compression::None, 700_003), (Compression::Zstd { level: 3 }, 3_000_000)] {
            let data = sample(len);
            let p = Pipeline::new(c, None).with_pgp(Some(key.clone()));
            for sealed in [encode(&p, &data), encode_streaming(&p, &data)] {
                // A binary OpenPGP message (WAL-G writes it unarmored): a PKESK packet first
                // (new format tag 1: 0xC1, or old format 0x84/0x85).
                assert!(matches!(sealed[0], 0xC1 | 0x84 | 0x85), "{uid}: first byte {:#x}", sealed[0]);
                let plain = g.run(&["--passphrase", PASS, "--decrypt"], &sealed);
                let plain = match c {
                    Compression::None => plain,
                    _ => zstd::decode_all(&plain[..]).unwrap(),
                };
                assert!(plain == data, "{uid} {c:?} {len}: gpg returned other data");
            }
        }
        // A public-only ring cannot read: a configuration error naming the object.
        let p = Pipeline::new(Compression::None, None).with_pgp(Some(key));
        let sealed = encode(&p, b"hello");
        let err = decode(&p, "wal_005/000000010000000000000001", sealed).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadInput, "{err}");
        assert!(err.to_string().contains("wal_005/000000010000000000000001") && err.to_string().contains("public key"), "{err}");
    }
}

#[test]
fn we_read_what_gpg_encrypts_compressed_or_not() {
    let g = Gpg::new();
    let data = sample(600_000);
    let rsa = pgp(&g.secret("rsa-user@walg.test", ""), None);
    let cv = pgp(&g.secret("cv-user@walg.test", PASS), Some(PASS));
    for (uid, key) in [("rsa-user@walg.test", &rsa), ("cv-user@walg.test", &cv)] {
        let p = Pipeline::new(Compression::None, None).with_pgp(Some(key.clone()));
        // gpg compresses with ZLIB by default; also ZIP, BZIP2 and none.
        for algo in ["zlib", "zip", "bzip2", "none"] {
            let sealed = g.run(&["-r", uid, "--compress-algo", algo, "--encrypt"], &data);
            let out = decode(&p, "wal_005/X", sealed).unwrap_or_else(|e| panic!("{uid} {algo}: {e}"));
            assert!(out == data, "{uid} {algo}: decoded to other data");
        }
        // And our own objects, of course, through compression too.
        let pz = Pipeline::new(Compression::Lz4, None).with_pgp(Some(key.clone()));
        let sealed = encode_streaming(&pz, &data);
        assert!(decode(&pz, "basebackups_005/b/tar_partitions/part_001.tar.lz4", sealed).unwrap() == data);
    }
}

#[test]
fn wrong_key_missing_passphrase_and_damage_fail_naming_the_object() {
    let g = Gpg::new();
    let data = sample(300_000);
    let object = "wal_005/000000010000000000000007";
    let to_rsa = g.run(&["-r", "rsa-user@walg.test", "--compress-algo", "none", "--encrypt"], &data);
    // Encrypted to the RSA key, read with the other key: wrong key, a configuration error.
    let cv = Pipeline::new(Compression::None, None).with_pgp(Some(pgp(&g.secret("cv-user@walg.test", PASS), Some(PASS))));
    let err = decode(&cv, object, to_rsa.clone()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadInput, "{err}");
    assert!(err.to_string().contains(object) && err.to_string().contains("wrong key"), "{err}");
    // The right key without (or with a wrong) passphrase: a configuration error too.
    let to_cv = g.run(&["-r", "cv-user@walg.test", "--compress-algo", "none", "--encrypt"], &data);
    for pass in [None, Some("not it")] {
        let p = Pipeline::new(Compression::None, None).with_pgp(Some(pgp(&g.secret("cv-user@walg.test", PASS), pass)));
        let err = decode(&p, object, to_cv.clone()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadInput, "{pass:?}: {err}");
        assert!(err.to_string().contains(object) && err.to_string().contains("WALG_PGP_KEY_PASSPHRASE"), "{err}");
    }
    // Damaged or cut ciphertext: corrupt, naming the object (the integrity check, MDC, or the
    // packet structure), for gpg's message and ours.
    let rsa = Pipeline::new(Compression::None, None).with_pgp(Some(pgp(&g.secret("rsa-user@walg.test", ""), None)));
    let ours = encode(&rsa, &data);
    for (who, sealed) in [("gpg", &to_rsa), ("ours", &ours)] {
        let n = sealed.len();
        let mut flipped = sealed.clone();
        flipped[n / 2] ^= 0x10;
        let mut tail = sealed.clone();
        tail[n - 3] ^= 0x01;
        for (what, bad) in [("flipped", flipped), ("flipped in the MDC", tail), ("cut", sealed[..n / 2].to_vec()), ("cut by 1", sealed[..n - 1].to_vec())] {
            let err = decode(&rsa, object, bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corrupt, "{who} {what}: {err}");
            assert!(err.to_string().contains(object), "{who} {what}: {err}");
        }
    }
    // Not encrypted at all (written before the key was set): corrupt, naming the object.
    let err = decode(&rsa, object, data.clone()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains(object), "{err}");
}

fn settings(pairs: &[(&str, &str)]) -> Settings {
    let mut s = Settings::default();
    s.set("WALG_FILE_PREFIX", "/tmp/walg-unused");
    for (k, v) in pairs {
        s.set(*k, v.to_string());
    }
    s
}

#[test]
fn settings_take_the_key_its_path_and_passphrase_as_wal_g_does() {
    let g = Gpg::new();
    let dir = tempfile::tempdir().unwrap();
    let public = g.public("rsa-user@walg.test");
    let path: PathBuf = dir.path().join("key.asc");
    std::fs::write(&path, &public).unwrap();
    let data = sample(100_000);
    let from_path = Config::from_settings(&settings(&[("WALG_PGP_KEY_PATH", path.to_str().unwrap())])).unwrap();
    assert!(from_path.pgp.is_some() && from_path.encryption.is_none());
    assert!(from_path.pipeline().is_encrypted());
    let sealed = from_path.pipeline().encode_bytes(&data).unwrap();
    let lz4 = g.run(&["--decrypt"], &sealed);
    assert!(run_lz4_decode(&lz4) == data, "default compression lz4, then OpenPGP");
    // WALG_PGP_KEY with literal \n (as in an environment variable) works, and wins over the path.
    let one_line = public.replace('\n', "\\n");
    let c = Config::from_settings(&settings(&[("WALG_PGP_KEY", &one_line), ("WALG_PGP_KEY_PATH", "/nonexistent")])).unwrap();
    assert_eq!(c.pgp, from_path.pgp);
    // Debug never shows the key or passphrase.
    let secret = g.secret("cv-user@walg.test", PASS);
    let c = Config::from_settings(&settings(&[("WALG_PGP_KEY", &secret), ("WALG_PGP_KEY_PASSPHRASE", PASS)])).unwrap();
    let dbg = format!("{c:?}");
    assert!(!dbg.contains(PASS) && !dbg.contains("BEGIN PGP"), "{dbg}");
    // Both libsodium and OpenPGP: refused.
    let err = Config::from_settings(&settings(&[
        ("WALG_PGP_KEY_PATH", path.to_str().unwrap()),
        ("WALG_LIBSODIUM_KEY", "this is my long libsodium secret key"),
    ]))
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadInput);
    assert!(err.to_string().contains("keep only one encryption"), "{err}");
    // A key that may only sign: refused when the configuration is loaded.
    let err = Config::from_settings(&settings(&[("WALG_PGP_KEY", &g.public("sign-only@walg.test"))])).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadInput);
    assert!(err.to_string().contains("signing only"), "{err}");
    // Not a key: a configuration error naming the setting, never echoing the value.
    let err = Config::from_settings(&settings(&[("WALG_PGP_KEY", "not a key at all, secret words")])).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadInput);
    assert!(err.to_string().contains("WALG_PGP_KEY") && !err.to_string().contains("secret words"), "{err}");
    assert!(Path::new(&path).exists());
}

fn run_lz4_decode(data: &[u8]) -> Vec<u8> {
    let mut r = walg_core::codec::decompress_reader("lz4", "x.lz4", Box::new(std::io::Cursor::new(data.to_vec()))).unwrap();
    let mut out = Vec::new();
    r.read_to_end(&mut out).unwrap();
    out
}
