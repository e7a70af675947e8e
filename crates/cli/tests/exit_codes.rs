//! The CLI's exit codes follow the error's kind (src/exit.rs), on the real binary. Above all:
//! `wal-fetch` exits 1 only when storage was reached and said the file is not there; a missing
//! or unusable prefix is 126, so PostgreSQL stops recovery instead of promoting early.

use std::path::Path;
use std::process::{Command, Output};

/// Runs walg-ext with only the WAL-G settings given (nothing inherited from the caller's shell).
fn walg_ext(env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_walg-ext"));
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("WALG_") || k.starts_with("WALE_") || k.starts_with("AWS_") {
            cmd.env_remove(&k);
        }
    }
    cmd.envs(env.iter().copied()).args(args);
    cmd.output().expect("run walg-ext")
}

/// Exit code and stderr; checks that stderr is one line when the command failed.
fn run(prefix: &Path, args: &[&str]) -> (i32, String) {
    let out = walg_ext(&[("WALG_FILE_PREFIX", prefix.to_str().unwrap())], args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().expect("exited"), err)
}

fn expect(prefix: &Path, args: &[&str], code: i32, needle: &str) {
    let (got, err) = run(prefix, args);
    assert_eq!(got, code, "walg-ext {args:?} with prefix {}: stderr: {err}", prefix.display());
    assert!(err.contains(needle), "walg-ext {args:?}: stderr should mention {needle:?}: {err}");
    if code >= 2 {
        assert_eq!(err.trim_end().lines().count(), 1, "one line on stderr: {err}");
    }
}

#[test]
fn wal_fetch_exits_1_only_when_storage_says_not_there() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("dest");
    let dest = dest.to_str().unwrap();
    let seg = "000000010000000000000002";

    // Prefix missing (unmounted share, typo): 126, and the line says what to fix.
    let missing = dir.path().join("not-mounted");
    expect(&missing, &["wal-fetch", seg, dest], 126, "does not exist");
    expect(&missing, &["wal-fetch", seg, dest], 126, "WALG_FILE_PREFIX");
    assert!(!missing.exists(), "a reader never creates the prefix");
    // Prefix is a file; a path under a file (how an unreadable prefix shows when run as root).
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    expect(&file, &["wal-fetch", seg, dest], 126, "is not a directory");
    expect(&file.join("walg"), &["wal-fetch", seg, dest], 126, "cannot be used");
    // Prefix there, but no wal_005/: nothing was ever archived here, or the wrong prefix.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    expect(&empty, &["wal-fetch", seg, dest], 126, "no wal_005/");

    // Archive one segment; then a missing one is a true "not in storage".
    let store = dir.path().join("store");
    let src = dir.path().join(seg);
    // A segment as wal-fetch checks it: 1 MiB (segment 2) with its first page's long header.
    let mut content = vec![7u8; 1 << 20];
    content[..40].copy_from_slice(&walg_core::wal::check::long_page_header(0xD110, 1, 2 << 20, 1 << 20, 42));
    std::fs::write(&src, &content).unwrap();
    expect(&store, &["wal-push", src.to_str().unwrap()], 0, "archived");
    expect(&store, &["wal-fetch", "000000010000000000000003", dest], 1, "");
    expect(&store, &["wal-fetch", "00000002.history", dest], 1, "");
    expect(&store, &["wal-fetch", seg, dest], 0, "");
    assert!(std::fs::read(dest).unwrap() == content);

    // A damaged object: 126, naming it.
    std::fs::write(store.join("wal_005/000000010000000000000004.lz4"), b"not lz4").unwrap();
    expect(&store, &["wal-fetch", "000000010000000000000004", dest], 126, "000000010000000000000004");
    // Bad settings: 126 too.
    let out = walg_ext(&[], &["wal-fetch", seg, dest]);
    assert_eq!(out.status.code(), Some(126), "no storage configured");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no storage configured"));
}

#[test]
fn other_commands_exit_with_the_code_of_the_kind() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("not-mounted");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let target = dir.path().join("restore");
    let target = target.to_str().unwrap();

    // 6: storage unreachable, never "no backups".
    expect(&missing, &["backup-list"], 6, "storage unreachable");
    expect(&missing, &["backup-list", "--json"], 6, "does not exist");
    expect(&missing, &["backup-fetch", target, "LATEST"], 6, "storage unreachable");
    expect(&missing, &["backup-mark", "base_000000010000000000000002"], 6, "storage unreachable");
    expect(&missing, &["wal-show"], 6, "storage unreachable");
    expect(&missing, &["delete", "retain", "1"], 6, "storage unreachable");
    expect(&missing, &["st", "ls"], 6, "storage unreachable");
    // A reachable, empty storage: no backups is the answer.
    expect(&empty, &["backup-list"], 0, "no backups found");
    // 3: not found in a reachable storage.
    expect(&empty, &["backup-fetch", target, "LATEST"], 3, "no backups");
    expect(&empty, &["backup-fetch", target, "base_000000010000000000000002"], 3, "no sentinel");
    expect(&empty, &["backup-mark", "base_000000010000000000000002"], 3, "does not exist");
    // 2: bad input (arguments, settings).
    expect(&empty, &["delete", "bogus", "1"], 2, "unknown delete mode");
    expect(&empty, &["--wal-segment-size", "3", "backup-list"], 2, "power of two");
    let out = walg_ext(&[], &["backup-list"]);
    assert_eq!(out.status.code(), Some(2), "no storage configured");
    // 4: conflict (different content under an archived name).
    let store = dir.path().join("store");
    let src = dir.path().join("000000010000000000000002");
    std::fs::write(&src, b"one").unwrap();
    expect(&store, &["wal-push", src.to_str().unwrap()], 0, "archived");
    std::fs::write(&src, b"two").unwrap();
    expect(&store, &["wal-push", src.to_str().unwrap()], 4, "different content");
    // 7: local I/O (the file to archive is not there).
    expect(&store, &["wal-push", dir.path().join("000000010000000000000009").to_str().unwrap()], 7, "000000010000000000000009");
    // 5: corrupt (a sentinel that is not JSON).
    std::fs::create_dir_all(store.join("basebackups_005")).unwrap();
    std::fs::write(store.join("basebackups_005/base_000000010000000000000002_backup_stop_sentinel.json"), b"{broken").unwrap();
    expect(&store, &["backup-list"], 5, "base_000000010000000000000002_backup_stop_sentinel.json");

    // --help documents the codes.
    let help = String::from_utf8_lossy(&walg_ext(&[], &["--help"]).stdout).into_owned();
    assert!(help.contains("Exit codes:") && help.contains("126") && help.contains("storage unreachable"), "{help}");
}

#[test]
fn copy_moves_wal_between_storages_and_refuses_bad_sources() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let conf = |name: &str, prefix: &Path| {
        let f = dir.path().join(name);
        std::fs::write(&f, format!("WALG_FILE_PREFIX: {}\n", prefix.display())).unwrap();
        f
    };
    let (fa, fb) = (conf("a.yaml", &a), conf("b.yaml", &b));
    let src = dir.path().join("00000002.history");
    let history = b"1\t0/2000000\tno recovery target specified\n";
    std::fs::write(&src, history).unwrap();
    expect(&a, &["wal-push", src.to_str().unwrap()], 0, "archived");
    let copy = |from: &Path, to: &Path| {
        let out = walg_ext(&[], &["copy", "--from", from.to_str().unwrap(), "--to", to.to_str().unwrap(), "--all"]);
        (out.status.code().unwrap(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = copy(&fa, &fb);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("1 object(s) copied"), "{err}");
    // The copy is fetched from the destination, byte for byte.
    let fetched = dir.path().join("fetched");
    expect(&b, &["wal-fetch", "00000002.history", fetched.to_str().unwrap()], 0, "");
    assert_eq!(std::fs::read(&fetched).unwrap(), history);
    // Again: nothing to do.
    let (code, err) = copy(&fa, &fb);
    assert!(code == 0 && err.contains("0 object(s) copied") && err.contains("1 already there"), "{err}");
    // A source that is not there is unreachable (6), the same storage twice is bad input (2).
    let gone = conf("gone.yaml", &dir.path().join("gone"));
    assert_eq!(copy(&gone, &fb).0, 6);
    let (code, err) = copy(&fa, &fa);
    assert!(code == 2 && err.contains("same storage"), "{err}");
}
