//! `walg-ext st get|put|cat|rm|check|ls` on the real binary against file storage: WAL-G's
//! flags and defaults, the codec and encryption of the configuration, exit codes by kind
//! (2 bad input, 3 not there, 4 refused, 5 damaged, 6 unreachable), and no partial file left.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const KEY: &str = "this is my long libsodium secret key";

fn walg_ext(env: &[(&str, &str)], args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_walg-ext"));
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("WALG_") || k.starts_with("WALE_") || k.starts_with("AWS_") {
            cmd.env_remove(&k);
        }
    }
    cmd.envs(env.iter().copied()).args(args);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run walg-ext");
    let mut input = child.stdin.take().unwrap();
    if let Some(data) = stdin {
        input.write_all(data).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

struct Env {
    dir: tempfile::TempDir,
    vars: Vec<(String, String)>,
}

impl Env {
    fn new(extra: &[(&str, &str)]) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        std::fs::create_dir(&store).unwrap();
        let mut vars = vec![("WALG_FILE_PREFIX".to_string(), store.display().to_string())];
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Env { dir, vars }
    }
    fn store(&self) -> std::path::PathBuf {
        self.dir.path().join("store")
    }
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
    fn run(&self, args: &[&str]) -> (i32, Vec<u8>, String) {
        self.run_in(args, None)
    }
    fn run_in(&self, args: &[&str], stdin: Option<&[u8]>) -> (i32, Vec<u8>, String) {
        let env: Vec<(&str, &str)> = self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let out = walg_ext(&env, args, stdin);
        (out.status.code().expect("exited"), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
    }
    fn ok(&self, args: &[&str]) -> Vec<u8> {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "walg-ext {args:?}: {err}");
        out
    }
    fn fails(&self, args: &[&str], code: i32, needle: &str) {
        let (got, _, err) = self.run(args);
        assert_eq!(got, code, "walg-ext {args:?}: {err}");
        assert!(err.contains(needle), "walg-ext {args:?}: stderr should mention {needle:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line on stderr: {err}");
    }
}

fn sample(len: usize) -> Vec<u8> {
    (0..len).map(|i| if i % 11 == 0 { (i * 7 / 3) as u8 } else { (i / 3000) as u8 }).collect()
}

fn no_temp_files(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.contains("walg-tmp"), "temporary file left: {name}");
    }
}

#[test]
fn put_get_cat_round_trip_with_compression_and_encryption() {
    let env = Env::new(&[("WALG_COMPRESSION_METHOD", "zstd"), ("WALG_LIBSODIUM_KEY", KEY)]);
    let data = sample(3_000_000);
    let local = env.path("data.bin");
    std::fs::write(&local, &data).unwrap();
    // put: compressed (".zst" added to the name) and encrypted.
    env.ok(&["st", "put", &local, "/repair/data.bin"]);
    let stored = std::fs::read(env.store().join("repair/data.bin.zst")).unwrap();
    assert!(stored.len() < data.len() / 2, "compressed");
    assert_ne!(&stored[..4], &[0x28, 0xB5, 0x2F, 0xFD], "encrypted: no zstd magic in the clear");
    // Not overwritten without -f: exit 4; with -f it is.
    env.fails(&["st", "put", &local, "repair/data.bin"], 4, "already exists");
    env.ok(&["st", "put", "-f", &local, "repair/data.bin"]);
    let listing = String::from_utf8(env.ok(&["st", "ls", "repair/"])).unwrap();
    assert!(listing.contains("repair/data.bin.zst"), "{listing}");

    // get: decrypted and decompressed by default; to a directory, under the object's name.
    let out = env.path("out.bin");
    env.ok(&["st", "get", "repair/data.bin.zst", &out]);
    assert!(std::fs::read(&out).unwrap() == data);
    env.fails(&["st", "get", "repair/data.bin.zst", &out], 4, "exists");
    let outdir = env.path("outdir");
    std::fs::create_dir(&outdir).unwrap();
    env.ok(&["st", "get", "--no-decompress", "repair/data.bin.zst", &outdir]);
    let compressed = std::fs::read(Path::new(&outdir).join("data.bin.zst")).unwrap();
    assert_eq!(&compressed[..4], &[0x28, 0xB5, 0x2F, 0xFD], "decrypted, still zstd");
    assert!(zstd::decode_all(&compressed[..]).unwrap() == data);
    let raw = env.path("raw");
    env.ok(&["st", "get", "--no-decrypt", "--no-decompress", "repair/data.bin.zst", &raw]);
    assert!(std::fs::read(&raw).unwrap() == std::fs::read(env.store().join("repair/data.bin.zst")).unwrap(), "raw bytes as stored");

    // cat: raw by default; decrypted and decompressed when asked.
    let stored = std::fs::read(env.store().join("repair/data.bin.zst")).unwrap();
    assert!(env.ok(&["st", "cat", "repair/data.bin.zst"]) == stored);
    assert!(env.ok(&["st", "cat", "--decrypt", "--decompress", "repair/data.bin.zst"]) == data);

    // put from stdin, without compression or encryption: stored as is.
    let (code, _, err) = env.run_in(&["st", "put", "-s", "--no-compress", "--no-encrypt", "notes/readme.txt"], Some(b"hello"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(env.store().join("notes/readme.txt")).unwrap(), b"hello");
    env.fails(&["st", "put", "-s", "a", "b"], 2, "only DEST");
    no_temp_files(env.dir.path());
}

#[test]
fn get_fails_by_kind_and_leaves_nothing() {
    let env = Env::new(&[("WALG_COMPRESSION_METHOD", "lz4"), ("WALG_LIBSODIUM_KEY", KEY)]);
    let local = env.path("seg");
    std::fs::write(&local, sample(500_000)).unwrap();
    env.ok(&["st", "put", &local, "wal_005/000000010000000000000001"]);
    let key = "wal_005/000000010000000000000001.lz4";
    let out = env.path("fetched");
    // Not there (storage answered): 3. Storage missing: 6 (never "not there").
    env.fails(&["st", "get", "wal_005/000000010000000000000002.lz4", &out], 3, "is not in");
    let gone = Env { dir: tempfile::tempdir().unwrap(), vars: vec![("WALG_FILE_PREFIX".into(), "/nonexistent/walg".into())] };
    gone.fails(&["st", "get", key, &out], 6, "does not exist");
    gone.fails(&["st", "check", "read"], 6, "does not exist");
    // Damaged: 5, naming the object; nothing at the destination, no temp file.
    let path = env.store().join(key);
    let good = std::fs::read(&path).unwrap();
    let mut bad = good.clone();
    let n = bad.len();
    bad[n / 2] ^= 1;
    std::fs::write(&path, &bad).unwrap();
    env.fails(&["st", "get", key, &out], 5, key);
    assert!(!Path::new(&out).exists());
    no_temp_files(env.dir.path());
    // Wrong key: 5 (libsodium cannot tell a wrong key from damage), naming the object.
    std::fs::write(&path, &good).unwrap();
    let other = Env { dir: tempfile::tempdir().unwrap(), vars: vec![
        ("WALG_FILE_PREFIX".into(), env.store().display().to_string()),
        ("WALG_LIBSODIUM_KEY".into(), "another long libsodium secret key".into()),
    ] };
    other.fails(&["st", "get", key, &out], 5, "wrong key");
    assert!(!Path::new(&out).exists());
    // Bad arguments: 2.
    env.fails(&["st", "get", "wal_005/", &out], 2, "not an object key");
}

#[test]
fn rm_and_check() {
    let env = Env::new(&[]);
    let local = env.path("f");
    std::fs::write(&local, b"x").unwrap();
    for k in ["tmp/a", "tmp/b/c", "tmpfile", "keep/x"] {
        env.ok(&["st", "put", "--no-compress", &local, k]);
    }
    // check read: listed objects exist; a missing one is named, exit 3.
    env.ok(&["st", "check", "read", "tmp/a", "keep/x"]);
    env.fails(&["st", "check", "read", "tmp/a", "nope/1"], 3, "nope/1");
    // rm a folder: everything under tmp/, not "tmpfile" beside it.
    let out = String::from_utf8(env.ok(&["st", "rm", "tmp"])).unwrap();
    assert!(out.contains("deleted: tmp/a") && out.contains("deleted: tmp/b/c"), "{out}");
    assert!(env.store().join("tmpfile").exists() && !env.store().join("tmp/a").exists());
    // rm one object; rm of nothing: 3; rm of everything: refused, 2.
    env.ok(&["st", "rm", "keep/x"]);
    assert!(!env.store().join("keep/x").exists());
    env.fails(&["st", "rm", "keep/x"], 3, "does not exist");
    env.fails(&["st", "rm", "/"], 2, "needs a prefix");
    // check write leaves nothing behind.
    let before: Vec<_> = std::fs::read_dir(env.store()).unwrap().map(|e| e.unwrap().file_name()).collect();
    env.ok(&["st", "check", "write"]);
    let after: Vec<_> = std::fs::read_dir(env.store()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(before.len(), after.len(), "{after:?}");
}
