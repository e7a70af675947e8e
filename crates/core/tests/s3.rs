//! S3Storage against a real S3-compatible server (moto, started per test; see
//! pgrx-tests/src/s3server.rs). Needs `make setup` (installs moto into /opt/walg-test-venv).

#[path = "../../../pgrx-tests/src/s3server.rs"]
mod s3server;
mod conformance;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use s3server::S3Server;
use walg_core::config::Settings;
use walg_core::storage::{get_bytes, S3Config, S3Storage, Storage};

fn settings(server: &S3Server, prefix: &str, extra: &[(&str, &str)]) -> Settings {
    let mut s = Settings::new();
    s.set("WALG_S3_PREFIX", prefix);
    s.set("AWS_ENDPOINT", server.endpoint());
    s.set("AWS_REGION", s3server::REGION);
    s.set("AWS_S3_FORCE_PATH_STYLE", "true");
    s.set("AWS_ACCESS_KEY_ID", server.access_key_id.clone());
    s.set("AWS_SECRET_ACCESS_KEY", server.secret_access_key.clone());
    for (k, v) in extra {
        s.set(*k, *v);
    }
    s
}

/// Keys of the multipart uploads under way (or left behind).
fn pending(s: &S3Storage) -> Vec<String> {
    s.pending_uploads("").unwrap().into_iter().map(|u| u.key).collect()
}

fn storage(server: &S3Server, prefix: &str, extra: &[(&str, &str)]) -> S3Storage {
    S3Storage::new(S3Config::from_settings(&settings(server, prefix, extra)).unwrap().unwrap())
}

/// Deterministic incompressible-looking bytes.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The storage conformance suite (conformance/mod.rs) on S3; a fault is the endpoint going away
/// (open connections cut, new ones refused) until healed.
#[test]
fn s3_storage_conforms() {
    let server = S3Server::start();
    server.create_bucket("walg-conf");
    // Few retries, so the cut read gives up quickly; 5 MiB parts, so 12 MB is a multipart upload.
    let s = storage(&server, "s3://walg-conf/c", &[("WALG_S3_MAX_RETRIES", "4"), ("WALG_S3_MAX_PART_SIZE", "5242880")]);
    let cut = |_: &str| server.stop_endpoint();
    let heal = |_: &str| server.start_endpoint();
    conformance::run_all(&conformance::Target { storage: &s, cut: &cut, heal: &heal });
    assert!(s.pending_uploads("").unwrap().is_empty(), "dropped multipart uploads were aborted");
}

#[test]
fn put_get_exists_delete_and_list_past_one_page() {
    let server = S3Server::start();
    server.create_bucket("walg-list");
    let s = storage(&server, "s3://walg-list/cluster/main", &[]);
    assert_eq!(s.describe(), format!("s3://walg-list/cluster/main (endpoint {})", server.endpoint()));

    assert!(get_bytes(&s, "basebackups_005/x.json").unwrap().is_none(), "missing object is None");
    assert!(!s.exists("basebackups_005/x.json").unwrap());
    s.put("basebackups_005/x.json", b"{\"a\":1}").unwrap();
    assert!(s.exists("basebackups_005/x.json").unwrap());
    assert_eq!(get_bytes(&s, "basebackups_005/x.json").unwrap().unwrap(), b"{\"a\":1}");
    s.put("basebackups_005/x.json", b"replaced").unwrap();
    assert_eq!(get_bytes(&s, "basebackups_005/x.json").unwrap().unwrap(), b"replaced");
    s.delete("basebackups_005/x.json").unwrap();
    s.delete("basebackups_005/x.json").unwrap(); // missing is Ok
    assert!(!s.exists("basebackups_005/x.json").unwrap());
    assert!(s.put("../escape", b"no").is_err() && s.put("/abs", b"no").is_err());

    // 1100 objects: more than one ListObjectsV2 page (1000 keys).
    let n = 1100;
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..4 {
            let s = &s;
            scope.spawn(move || {
                for i in (t..n).step_by(4) {
                    s.put(&format!("wal_005/{i:024X}.lz4"), format!("seg {i}").as_bytes()).unwrap();
                }
            });
        }
    });
    eprintln!("{n} PUTs in {:?}", started.elapsed());
    // Objects outside the storage's path and beside the prefix must not show.
    let other = storage(&server, "s3://walg-list/cluster/other", &[]);
    other.put("wal_005/000000010000000000000001.lz4", b"other cluster").unwrap();
    s.put("wal_005_not/x", b"beside").unwrap();

    let listed = s.list("wal_005/").unwrap();
    assert_eq!(listed.len(), n, "every object, across pages");
    let keys: Vec<_> = listed.iter().map(|o| o.key.clone()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "sorted by key");
    assert_eq!(keys[0], format!("wal_005/{:024X}.lz4", 0));
    assert_eq!(keys[n - 1], format!("wal_005/{:024X}.lz4", n - 1));
    let o = listed.iter().find(|o| o.key == format!("wal_005/{:024X}.lz4", 7)).unwrap();
    assert_eq!(o.size, "seg 7".len() as u64);
    assert!(o.modified > std::time::UNIX_EPOCH + Duration::from_secs(1_600_000_000));
    assert_eq!(s.list("wal_005").unwrap().len(), n + 1, "a prefix without '/' matches wal_005_not too");
    assert_eq!(s.list("").unwrap().len(), n + 1);
    assert!(s.list("nothing/").unwrap().is_empty());
    assert_eq!(get_bytes(&s, &format!("wal_005/{:024X}.lz4", 1099)).unwrap().unwrap(), b"seg 1099");
}

#[test]
fn multipart_upload_of_a_big_object_streams_both_ways() {
    let server = S3Server::start();
    server.create_bucket("walg-big");
    // 5 MiB parts (S3's minimum), 2 in flight: 42 MB becomes 9 parts.
    let s = storage(&server, "s3://walg-big/p", &[("WALG_S3_MAX_PART_SIZE", "5242880")]);
    let body = data(42_000_000, 42);
    let mut w = s.writer("basebackups_005/base_1/tar_partitions/part_001.tar.lz4").unwrap();
    // Odd-sized writes, so parts are cut in the middle of writes.
    for chunk in body.chunks(1_000_003) {
        w.write_all(chunk).unwrap();
    }
    assert!(!s.exists("basebackups_005/base_1/tar_partitions/part_001.tar.lz4").unwrap(), "not visible before finish");
    assert_eq!(
        pending(&s),
        vec!["basebackups_005/base_1/tar_partitions/part_001.tar.lz4".to_string()],
        "a multipart upload is under way"
    );
    assert_eq!(w.finish().unwrap(), body.len() as u64);
    assert!(pending(&s).is_empty(), "completed, nothing pending");
    let listed = s.list("basebackups_005/").unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].size, body.len() as u64);

    // Read back in small reads (streaming, not one buffer).
    let mut r = s.get("basebackups_005/base_1/tar_partitions/part_001.tar.lz4").unwrap().unwrap();
    let mut back = Vec::with_capacity(body.len());
    let mut buf = vec![0u8; 70_000];
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        back.extend_from_slice(&buf[..n]);
    }
    assert_eq!(back.len(), body.len());
    assert!(back == body, "round trip differs");

    // put() of more than one part goes through the writer too.
    let mid = data(11 << 20, 7);
    s.put("big-put", &mid).unwrap();
    assert!(get_bytes(&s, "big-put").unwrap().unwrap() == mid);
    // An empty object is a valid object.
    s.writer("empty").unwrap().finish().unwrap();
    assert_eq!(get_bytes(&s, "empty").unwrap().unwrap(), b"");
    assert!(s.exists("empty").unwrap(), "an empty object exists");
}

#[test]
fn aborted_writers_leave_nothing() {
    let server = S3Server::start();
    server.create_bucket("walg-abort");
    let s = storage(&server, "s3://walg-abort/p", &[("WALG_S3_MAX_PART_SIZE", "5242880")]);

    // Big enough for a multipart upload with parts already sent.
    let mut w = s.writer("big").unwrap();
    w.write_all(&data(12 << 20, 1)).unwrap();
    assert_eq!(pending(&s), vec!["big".to_string()]);
    drop(w);
    assert!(pending(&s).is_empty(), "the multipart upload was aborted");
    assert!(!s.exists("big").unwrap());

    // Small: never reached the server at all.
    let mut w = s.writer("small").unwrap();
    w.write_all(b"half a WAL segment").unwrap();
    drop(w);
    assert!(s.list("").unwrap().is_empty(), "nothing visible");
    assert!(pending(&s).is_empty());
}

fn assert_fast_error(what: &str, started: Instant, err: &str, needles: &[&str]) {
    eprintln!("{what}: {err} ({:?})", started.elapsed());
    for n in needles {
        assert!(err.contains(n), "{what}: error should mention {n:?}: {err}");
    }
    assert!(!err.contains("attempts"), "{what}: a permanent error is not retried: {err}");
    assert!(started.elapsed() < Duration::from_secs(5), "{what}: took {:?}", started.elapsed());
}

#[test]
fn missing_bucket_and_wrong_credentials_fail_at_once_with_what_to_fix() {
    let server = S3Server::start();
    server.create_bucket("walg-auth");

    let nobucket = storage(&server, "s3://walg-no-such-bucket/x", &[]);
    let ops: [(&str, &dyn Fn() -> walg_core::Result<()>); 4] = [
        ("put", &|| nobucket.put("a", b"x")),
        ("list", &|| nobucket.list("").map(|_| ())),
        ("get", &|| nobucket.get("a").map(|_| ())),
        ("exists", &|| nobucket.exists("a").map(|_| ())),
    ];
    for (op, f) in ops {
        let t = Instant::now();
        let err = f().unwrap_err().to_string();
        assert_fast_error(
            op,
            t,
            &err,
            &[&format!("bucket walg-no-such-bucket does not exist at endpoint {}", server.endpoint()), "WALG_S3_PREFIX"],
        );
    }

    let bad_secret = storage(&server, "s3://walg-auth/x", &[("AWS_SECRET_ACCESS_KEY", "not-the-secret")]);
    let t = Instant::now();
    let err = bad_secret.put("a", b"x").unwrap_err().to_string();
    assert_fast_error("bad secret", t, &err, &["AWS_SECRET_ACCESS_KEY"]);
    assert!(!err.contains("not-the-secret"), "never print secrets: {err}");
    let t = Instant::now();
    let err = bad_secret.exists("a").unwrap_err().to_string();
    assert_fast_error("bad secret (exists)", t, &err, &["AWS_SECRET_ACCESS_KEY"]);

    let bad_key = storage(&server, "s3://walg-auth/x", &[("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNKEY000000")]);
    let t = Instant::now();
    let err = bad_key.list("").unwrap_err().to_string();
    assert_fast_error("unknown key", t, &err, &["AWS_ACCESS_KEY_ID"]);

    let bad_host = storage(&server, "s3://walg-auth/x", &[("AWS_ENDPOINT", "http://no-such-host.invalid:9000")]);
    let t = Instant::now();
    let err = bad_host.list("").unwrap_err().to_string();
    assert_fast_error("bad endpoint host", t, &err, &["AWS_ENDPOINT", "no-such-host.invalid"]);

    // The good credentials still work.
    storage(&server, "s3://walg-auth/x", &[]).put("a", b"x").unwrap();
}

#[test]
fn endpoint_down_is_retried_then_reported_and_recovers() {
    let server = S3Server::start();
    server.create_bucket("walg-down");
    let s = storage(&server, "s3://walg-down/x", &[("WALG_S3_MAX_RETRIES", "2")]);
    s.put("before", b"1").unwrap();

    server.stop_endpoint();
    let t = Instant::now();
    let err = s.put("during", b"2").unwrap_err().to_string();
    assert!(err.contains("cannot reach endpoint") && err.contains("after 3 attempts"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(10), "bounded: {:?}", t.elapsed());
    assert!(s.get("before").is_err(), "reads fail too while the endpoint is down");
    server.start_endpoint();
    assert_eq!(get_bytes(&s, "before").unwrap().unwrap(), b"1");

    // A short outage is ridden out by the retries: the endpoint comes back within the backoff.
    let patient = storage(&server, "s3://walg-down/x", &[("WALG_S3_MAX_RETRIES", "15")]);
    server.stop_endpoint();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(1500));
            server.start_endpoint();
        });
        patient.put("during", b"2").unwrap();
    });
    assert_eq!(get_bytes(&s, "during").unwrap().unwrap(), b"2");
}

/// The fault-injection slice on S3 (the whole matrix runs on file storage in
/// backup/faults.rs): zstd, a data part missing, flipped, cut short; a WAL segment cut at a zstd
/// frame boundary. Each fails naming the object, kind Corrupt, nothing left behind to start.
#[test]
fn damaged_backup_and_wal_objects_fail_naming_them() {
    use walg_core::backup::fetch;
    use walg_core::{Compression, Config, ErrorKind};

    let server = S3Server::start();
    server.create_bucket("walg-faults");
    let settings = settings(&server, "s3://walg-faults/c", &[("WALG_COMPRESSION_METHOD", "zstd"), ("WALG_COMPRESSION_LEVEL", "1")]);
    let cfg = Config { tar_size_threshold: 64 * 1024, upload_concurrency: 1, ..Config::from_settings(&settings).unwrap() };
    assert_eq!(cfg.compression, Compression::Zstd { level: 1 });
    let storage = cfg.open_storage().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let name = small_backup(&cfg, &storage, dir.path());
    fetch(&cfg, &storage, name, &dir.path().join("ok"), &|_| {}).unwrap();
    assert_eq!(std::fs::read(dir.path().join("ok/base/1/101")).unwrap(), data(40_000, 3));

    let part = format!("basebackups_005/{name}/tar_partitions/part_002.tar.zst");
    let raw = get_bytes(storage.as_ref(), &part).unwrap().unwrap();
    let mut flipped = raw.clone();
    flipped[raw.len() / 2] ^= 1;
    let cases: Vec<(&str, Option<Vec<u8>>)> =
        vec![("missing", None), ("flipped", Some(flipped)), ("cut", Some(raw[..raw.len() - 100].to_vec()))];
    for (i, (what, content)) in cases.into_iter().enumerate() {
        match content {
            None => storage.delete(&part).unwrap(),
            Some(c) => storage.put(&part, &c).unwrap(),
        }
        let target = dir.path().join(format!("t{i}"));
        let err = fetch(&cfg, &storage, name, &target, &|_| {}).unwrap_err();
        assert!(err.to_string().contains(&part), "{what}: {err}");
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{what}: {err}");
        assert!(!target.join("global/pg_control").exists(), "{what}");
    }
    storage.put(&part, &raw).unwrap();

    // A 2 MiB segment in the many-frame layout (as WAL-G may write it, or walg_ext with
    // WALG_ZSTD_FRAMES) is two zstd frames at level 1: cut at the boundary, it still decodes.
    let seg_name = "000000010000000000000003";
    let mut seg = data(2 << 20, 9);
    seg[..40].copy_from_slice(&walg_core::wal::check::long_page_header(0xD110, 1, 3 << 21, 2 << 20, 1));
    let key = format!("wal_005/{seg_name}.zst");
    let mut enc = walg_core::codec::encoder_with(cfg.compression, 1, walg_core::codec::ZstdLayout::Frames, Vec::new()).unwrap();
    std::io::Write::write_all(&mut enc, &seg).unwrap();
    let raw = enc.finish().unwrap();
    let first = zstd::zstd_safe::find_frame_compressed_size(&raw).unwrap();
    assert!(first < raw.len(), "two frames");
    storage.put(&key, &raw[..first]).unwrap();
    let dest = dir.path().join("fetched");
    let err = walg_core::wal::fetch(&cfg, storage.as_ref(), seg_name, &dest).unwrap_err();
    assert!(err.to_string().contains(&key) && err.to_string().contains("truncated"), "{err}");
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    assert!(!dest.exists());
}

#[test]
fn copy_from_file_storage_to_s3_restores_there_and_resumes() {
    use walg_core::backup::fetch;
    use walg_core::catalog::copy::{copy, CopyRequest, Selection};
    use walg_core::Config;

    let server = S3Server::start();
    server.create_bucket("walg-copy");
    let dir = tempfile::tempdir().unwrap();
    let file_cfg = Config { tar_size_threshold: 64 * 1024, ..Config::for_file_storage(dir.path().join("bucket")) };
    let file = file_cfg.open_storage().unwrap();
    let name = small_backup(&file_cfg, &file, dir.path());
    file.put("wal_005/000000010000000000000002.lz4", b"raw bytes, copied as they are").unwrap();

    let s3_cfg = Config::from_settings(&settings(&server, "s3://walg-copy/c", &[])).unwrap();
    let s3 = s3_cfg.open_storage().unwrap();
    let req = CopyRequest { selection: Selection::Names(vec!["LATEST".into()]), with_history: false, concurrency: 4 };
    let r = copy(file.as_ref(), s3.as_ref(), &req, 16 << 20, &|_| {}).unwrap();
    assert_eq!(r.backups, [name]);
    assert_eq!(
        get_bytes(s3.as_ref(), "wal_005/000000010000000000000002.lz4").unwrap().unwrap(),
        b"raw bytes, copied as they are"
    );
    fetch(&s3_cfg, &s3, name, &dir.path().join("from-s3"), &|_| {}).unwrap();
    for i in 0..4u64 {
        assert_eq!(std::fs::read(dir.path().join(format!("from-s3/base/1/{}", 100 + i))).unwrap(), data(40_000, 2 + i));
    }
    let again = copy(file.as_ref(), s3.as_ref(), &req, 16 << 20, &|_| {}).unwrap();
    assert_eq!(again.copied, 0, "{again:?}");
    assert!(again.skipped >= 5, "{again:?}");
}

/// A backup of a small fake PGDATA under `dir` (4 files of `data(40_000, 2 + i)` in base/1),
/// named base_000000010000000000000002.
fn small_backup(cfg: &walg_core::Config, storage: &std::sync::Arc<dyn Storage>, dir: &std::path::Path) -> &'static str {
    use walg_core::backup::{finish, push_data, BackupStart, BackupStop, Progress};
    let pg = dir.join("pgdata");
    for d in ["base/1", "global"] {
        std::fs::create_dir_all(pg.join(d)).unwrap();
    }
    std::fs::write(pg.join("global/pg_control"), data(8192, 1)).unwrap();
    for i in 0..4u64 {
        std::fs::write(pg.join(format!("base/1/{}", 100 + i)), data(40_000, 2 + i)).unwrap();
    }
    let name = "base_000000010000000000000002";
    let start = BackupStart {
        name: name.into(),
        pgdata: pg,
        start_lsn: 0x0200_0028,
        timeline: 1,
        wal_segment_size: 16 << 20,
        pg_version: 150004,
        system_identifier: 1,
        start_time: chrono::Utc::now(),
        hostname: "h".into(),
        is_permanent: false,
        user_data: None,
        delta: None,
        delta_pages: None,
        delta_map_check: false,
        data_checksums: false,
        tablespace_names: Default::default(),
    };
    let d = push_data(cfg, storage, &start, &Progress::default(), &mut || Ok(())).unwrap();
    let stop = BackupStop {
        finish_lsn: 0x0200_0100,
        backup_label: "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n".into(),
        tablespace_map: String::new(),
        finish_time: chrono::Utc::now(),
    };
    finish(cfg, storage, &start, d, &stop).unwrap();
    name
}

/// A loopback HTTP server that answers every request with `status` and `body` (then closes the
/// connection): a stand-in for a proxy or a wrong endpoint in front of (or instead of) S3.
/// Returns its endpoint and how many requests it answered.
fn fake_http(status: &'static str, body: &'static str) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            // Read the request head (and a body, if any) before answering.
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = conn.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
                if let Some(end) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&req[..end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                        .unwrap_or(0);
                    if req.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            seen.fetch_add(1, Ordering::SeqCst);
            let answer = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: {}\r\nConnection: close\r\n\r\n{body}",
                body.len(),
                if body.starts_with('<') && body.contains("<Error>") { "application/xml" } else { "text/html" }
            );
            let _ = conn.write_all(answer.as_bytes());
        }
    });
    (endpoint, count)
}

fn fake_storage(endpoint: &str, prefix: &str) -> S3Storage {
    let mut s = Settings::new();
    s.set("WALG_S3_PREFIX", prefix);
    s.set("AWS_ENDPOINT", endpoint);
    s.set("AWS_REGION", "us-east-1");
    s.set("AWS_S3_FORCE_PATH_STYLE", "true");
    s.set("AWS_ACCESS_KEY_ID", "AKIAFAKEFAKEFAKE0000");
    s.set("AWS_SECRET_ACCESS_KEY", "fake");
    s.set("WALG_S3_MAX_RETRIES", "1");
    S3Storage::new(S3Config::from_settings(&s).unwrap().unwrap())
}

/// Every read that could say "not there" is an error of kind Unreachable, and wal-fetch does
/// not answer "not in storage".
fn assert_all_unreachable(what: &str, s: &S3Storage, needles: &[&str]) {
    use walg_core::ErrorKind;
    let dest = tempfile::tempdir().unwrap();
    let cfg = walg_core::config::Config::for_file_storage("/nonexistent-unused");
    let checks: Vec<(&str, walg_core::Result<()>)> = vec![
        ("get", s.get("wal_005/000000010000000000000001.lz4").map(|_| ())),
        ("exists", s.exists("wal_005/000000010000000000000001.lz4").map(|_| ())),
        ("list", s.list("basebackups_005/").map(|_| ())),
        ("has_dir", s.has_dir("wal_005/").map(|_| ())),
        ("list_backups", walg_core::catalog::list_backups(s).map(|_| ())),
        (
            "wal fetch",
            walg_core::wal::fetch(&cfg, s, "000000010000000000000001", &dest.path().join("f")).map(|found| {
                panic!("{what}: wal fetch answered {found} instead of failing");
            }),
        ),
    ];
    for (op, r) in checks {
        let e = r.expect_err(op);
        assert_eq!(e.kind(), ErrorKind::Unreachable, "{what} {op}: {e}");
        let msg = e.to_string();
        for n in needles {
            assert!(msg.contains(n), "{what} {op}: should mention {n:?}: {msg}");
        }
    }
}

#[test]
fn missing_is_only_what_s3_calls_no_such_key() {
    use walg_core::ErrorKind;
    let server = S3Server::start();
    server.create_bucket("walg-missing");
    let s = storage(&server, "s3://walg-missing/c", &[]);
    let cfg = walg_core::config::Config::for_file_storage("/nonexistent-unused");
    let dest = tempfile::tempdir().unwrap();

    // Bucket there, nothing archived yet: objects are missing, but wal-fetch does not say "end
    // of archive" for a prefix without wal_005/.
    assert!(s.get("wal_005/000000010000000000000001.lz4").unwrap().is_none());
    assert!(!s.exists("wal_005/000000010000000000000001.lz4").unwrap());
    assert!(!s.has_dir("wal_005/").unwrap());
    assert!(walg_core::catalog::list_backups(&s).unwrap().is_empty(), "no backups: an answer");
    let e = walg_core::wal::fetch(&cfg, &s, "000000010000000000000001", &dest.path().join("a")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unreachable, "{e}");
    assert!(e.to_string().contains("no wal_005/ under s3://walg-missing/c"), "{e}");
    // Something archived (in another segment): now "not in storage" is the answer.
    s.put("wal_005/000000010000000000000002.lz4", b"x").unwrap();
    assert!(s.has_dir("wal_005/").unwrap());
    assert!(!walg_core::wal::fetch(&cfg, &s, "000000010000000000000001", &dest.path().join("b")).unwrap());
    // Another path in the same bucket does not see it.
    assert!(!storage(&server, "s3://walg-missing/other", &[]).has_dir("wal_005/").unwrap());

    // Wrong bucket.
    let nobucket = storage(&server, "s3://walg-no-such-bucket/c", &[]);
    assert_all_unreachable("wrong bucket", &nobucket, &["bucket walg-no-such-bucket does not exist", "WALG_S3_PREFIX"]);

    // Endpoint down: after the retries, unreachable (and transient), never missing.
    let few = storage(&server, "s3://walg-missing/c", &[("WALG_S3_MAX_RETRIES", "1")]);
    server.stop_endpoint();
    assert_all_unreachable("endpoint down", &few, &["cannot reach endpoint"]);
    let e = few.exists("wal_005/000000010000000000000002.lz4").unwrap_err();
    assert!(e.is_transient(), "{e}");
    server.start_endpoint();
    assert!(few.exists("wal_005/000000010000000000000002.lz4").unwrap());
}

#[test]
fn a_bare_404_or_403_is_unreachable_not_missing() {
    // A proxy or a wrong endpoint: 404 with no body (the SDK calls that code "NotFound").
    let (endpoint, hits) = fake_http("404 Not Found", "");
    assert_all_unreachable("bare 404", &fake_storage(&endpoint, "s3://bucket/p"), &["HTTP 404"]);
    assert!(hits.load(std::sync::atomic::Ordering::SeqCst) > 0, "the fake server was asked");
    // 404 with an HTML page.
    let (endpoint, _) = fake_http("404 Not Found", "<html><body>nginx: not found</body></html>");
    assert_all_unreachable("html 404", &fake_storage(&endpoint, "s3://bucket/p"), &["404"]);
    // AccessDenied (S3 says so for a missing key without s3:ListBucket, too).
    let (endpoint, _) = fake_http(
        "403 Forbidden",
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>",
    );
    assert_all_unreachable("access denied", &fake_storage(&endpoint, "s3://bucket/p"), &["access denied", "grant"]);

    // The same fake server with S3's real answer for a missing key: that one is "missing".
    let (endpoint, _) = fake_http(
        "404 Not Found",
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>",
    );
    let s = fake_storage(&endpoint, "s3://bucket/p");
    assert!(s.get("wal_005/000000010000000000000001.lz4").unwrap().is_none());
    assert!(!s.exists("wal_005/000000010000000000000001.lz4").unwrap());
}

#[test]
fn killed_multipart_upload_is_garbage_after_a_day_and_aborted_by_delete() {
    use walg_core::catalog::delete::{self, DeleteRequest, GarbageScope, PENDING_UPLOAD_MIN_AGE};
    let server = S3Server::start();
    server.create_bucket("walg-garbage");
    let s = storage(&server, "s3://walg-garbage/p", &[("WALG_S3_MAX_PART_SIZE", "5242880")]);
    // A writer whose process "dies": parts sent, neither completed nor aborted.
    let key = "basebackups_005/base_000000010000000000000002/tar_partitions/part_001.tar.lz4";
    let mut w = s.writer(key).unwrap();
    w.write_all(&data(12 << 20, 3)).unwrap();
    std::mem::forget(w);
    let pend = s.pending_uploads("").unwrap();
    assert_eq!(pend.len(), 1);
    assert_eq!(pend[0].key, key);
    assert!(!pend[0].upload_id.is_empty());
    assert_eq!(s.pending_uploads("wal_005/").unwrap().len(), 0, "prefix filters");
    // Never visible as an object or a backup.
    assert!(s.list("").unwrap().is_empty());
    assert!(walg_core::catalog::list_backups(&s).unwrap().is_empty());

    let req = DeleteRequest::Garbage { scope: GarbageScope::All };
    // Young: it may be an upload in progress; with nothing else to delete, garbage refuses.
    // (moto reports a fixed Initiated time in 2010, so "young" is judged from that time.)
    let started = pend[0].last_activity;
    assert!(delete::plan_at(&s, &req, 16 << 20, started + Duration::from_secs(3600)).is_err());
    let later = started + PENDING_UPLOAD_MIN_AGE + Duration::from_secs(60);
    let plan = delete::plan_at(&s, &req, 16 << 20, later).unwrap();
    assert_eq!(plan.objects.len(), 1, "{plan:?}");
    let o = &plan.objects[0];
    assert_eq!(o.upload_id.as_deref(), Some(pend[0].upload_id.as_str()));
    assert!(o.display_key().contains("unfinished multipart upload"), "{}", o.display_key());
    assert!(delete::plan_at(&s, &DeleteRequest::Garbage { scope: GarbageScope::Archives }, 16 << 20, later).is_err());
    delete::execute(&s, &plan).unwrap();
    assert!(pending(&s).is_empty(), "aborted");
    // Aborting again (already gone) is not an error.
    s.abort_upload(&pend[0]).unwrap();
}
