//! WAL archive rules (FORMAT.md, "WAL archive rules"): an identical re-push succeeds, both from
//! the CLI and from the archiver itself; a different segment under the same name is refused and
//! leaves the stored object alone; wal-fetch exit codes and byte-exact round trip.

use std::path::Path;
use std::time::Duration;

use walg_e2e::cmd::chown_postgres;
use walg_e2e::{require_installed, wait_until, Backend, Cluster, ScratchDir, Storage};

fn copy_as_postgres(from: &Path, to: &Path) {
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copy {} -> {}: {e}", from.display(), to.display()));
    chown_postgres(to);
}

#[test]
fn wal_push_identical_different_and_wal_fetch() {
    archive_rules(Backend::File);
}

#[test]
fn wal_push_identical_different_and_wal_fetch_s3() {
    archive_rules(Backend::S3);
}

fn archive_rules(backend: Backend) {
    require_installed();
    let label = format!("archive-{backend:?}").to_lowercase();
    let storage = Storage::with_backend(backend, &label, "lz4", &[]);
    // No checkpoint during the test, so archived segments stay in pg_wal for us to copy.
    let mut a = Cluster::init(
        &format!("{label}-a"),
        &format!(
            "{}checkpoint_timeout = '1h'\nmax_wal_size = '4GB'\nwal_keep_size = '1GB'\n",
            storage.extension_conf()
        ),
    );
    a.start();
    a.psql("CREATE TABLE t AS SELECT g, md5(g::text) AS h FROM generate_series(1, 100000) g");
    let seg = a.switch_wal();
    a.wait_archived(&seg, Duration::from_secs(120));
    let obj = storage
        .wal_object(&seg)
        .unwrap_or_else(|| panic!("{seg} archived but not in storage: {:?}", storage.wal_objects()));
    assert_eq!(obj, storage.expected_wal_object(&seg), "lz4 segments are stored as <name>.lz4");
    let stored_before = storage.read(&obj);

    let scratch = ScratchDir::new(&format!("{label}-scratch"));
    let in_pg_wal = a.pg_wal().join(&seg);
    let same = scratch.subdir("same").join(&seg);
    copy_as_postgres(&in_pg_wal, &same);
    let original = std::fs::read(&same).unwrap();
    assert_eq!(original.len(), 16 * 1024 * 1024, "a whole segment");

    // 1. Pushing an identical segment again succeeds (the archiver may retry after a crash).
    let out = storage.walg_ext_env(&["wal-push", &same.display().to_string()]);
    assert!(out.success(), "wal-push of an identical segment must succeed\n{}", out.describe());
    let out = storage.walg_ext(&["wal-push", &same.display().to_string()]);
    assert!(out.success(), "wal-push (--config) of an identical segment\n{}", out.describe());

    // 2. wal-fetch of an existing segment gives the identical bytes.
    let fetch_dir = scratch.subdir("fetch");
    let dest = fetch_dir.join("RECOVERYXLOG");
    let out = storage.walg_ext(&["wal-fetch", &seg, &dest.display().to_string()]);
    assert_eq!(out.code, Some(0), "wal-fetch of an archived segment\n{}", out.describe());
    let fetched = std::fs::read(&dest).unwrap();
    assert!(fetched == original, "wal-fetch returned different bytes ({} bytes)", fetched.len());

    // 3. A segment with different content under the same name is refused.
    let mut changed = original.clone();
    for b in &mut changed[8192 * 3 + 100..8192 * 3 + 164] {
        *b ^= 0xFF;
    }
    let different = scratch.subdir("different").join(&seg);
    std::fs::write(&different, &changed).unwrap();
    chown_postgres(&different);
    let out = storage.walg_ext_env(&["wal-push", &different.display().to_string()]);
    assert!(
        !out.success(),
        "wal-push of a different segment under an existing name must fail\n{}",
        out.describe()
    );
    assert!(
        out.all_output().to_lowercase().contains("differ"),
        "the refusal should say the content is different\n{}",
        out.describe()
    );
    assert_eq!(storage.wal_object(&seg), Some(obj.clone()));
    assert!(storage.read(&obj) == stored_before, "the stored object must be unchanged");
    let dest2 = fetch_dir.join("again");
    let out = storage.walg_ext(&["wal-fetch", &seg, &dest2.display().to_string()]);
    assert_eq!(out.code, Some(0), "wal-fetch after the refused push\n{}", out.describe());
    assert!(std::fs::read(&dest2).unwrap() == original, "still the original segment");

    // 4. wal-fetch of a segment that is not in storage exits 1 and leaves no file.
    let missing = "00000001000000AB000000CD";
    let dest3 = fetch_dir.join("missing");
    let out = storage.walg_ext(&["wal-fetch", missing, &dest3.display().to_string()]);
    assert_eq!(out.code, Some(1), "wal-fetch of a missing segment must exit 1\n{}", out.describe());
    assert!(!dest3.exists(), "no file may be left behind for a missing segment");

    // 4b. ...but never when storage was not reached: a missing prefix (an unmounted share, a
    //     typo) or a wrong bucket exits 126, so PostgreSQL stops recovery instead of promoting.
    let wrong: Vec<(String, String)> = storage
        .env()
        .into_iter()
        .map(|(k, v)| match k.as_str() {
            "WALG_FILE_PREFIX" => (k, format!("{v}-not-mounted")),
            "WALG_S3_PREFIX" => (k, "s3://walg-e2e-no-such-bucket/x".to_string()),
            _ => (k, v),
        })
        .collect();
    let wrong: Vec<(&str, &str)> = wrong.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    for name in [seg.as_str(), missing] {
        let out = walg_e2e::walg_ext(&["wal-fetch", name, &dest3.display().to_string()], &wrong);
        assert_eq!(out.code, Some(126), "wal-fetch from an unreachable storage must exit 126\n{}", out.describe());
        let what = if backend == Backend::File { "does not exist" } else { "bucket walg-e2e-no-such-bucket does not exist" };
        assert!(out.stderr.contains(what) && out.stderr.trim_end().lines().count() == 1, "one line saying what to fix\n{}", out.describe());
        assert!(!dest3.exists());
    }

    // 5. The archiver itself re-archives an identical segment (as after a crash between the
    //    upload and the .done rename): mark it .ready again and archive one more segment.
    let status = a.pg_wal().join("archive_status");
    std::fs::rename(status.join(format!("{seg}.done")), status.join(format!("{seg}.ready")))
        .expect("rename .done -> .ready");
    a.psql("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g");
    let seg2 = a.switch_wal();
    a.wait_archived(&seg2, Duration::from_secs(120));
    wait_until(&format!("{seg}.done after re-archiving"), Duration::from_secs(60), || {
        status.join(format!("{seg}.done")).exists().then_some(())
    });
    let (_, archived, failed, last_failed) = a.archiver_stats().unwrap();
    assert_eq!(failed, 0, "archiver failures: last failed {last_failed:?}, archived {archived}");
    assert!(storage.read(&obj) == stored_before, "re-archiving kept the object intact");
    assert!(storage.has(&storage.expected_wal_object(&seg2)));

    a.stop();
}
