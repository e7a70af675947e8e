//! The storage conformance suite: what every backend must do, run against each real backend
//! (file storage; S3 on moto; Azure Blob on Azurite) by `conformance_*.rs` and `s3.rs`.
//! Each case works under its own key prefix, so the cases can share one storage.
//!
//! A backend is "conformant" when: objects round-trip (put/get/exists/list/delete, missing is
//! None/false, delete of nothing is Ok); a multi-MB object streams both ways; an upload dropped
//! before `finish` leaves no visible object; a listing of thousands of keys is whole and sorted;
//! concurrent writers of one key leave one whole version, never a mix; and a fault in the middle
//! of a read is an error, never a short read.
//!
//! Also the two checks every remote backend's own tests make on its failures:
//! `assert_unreachable` (nobody answers: worth retrying) and `assert_denied` (the storage answered
//! no: not worth retrying); both say what to fix, and neither is ever "missing".

#![allow(dead_code)]

use std::io::{Read, Write};
use std::time::Instant;

use walg_core::error::ErrorKind;
use walg_core::storage::{get_bytes, Storage};

/// A backend under test and how to break it.
pub struct Target<'a> {
    pub storage: &'a dyn Storage,
    /// Break reads of `key` from now on (a remote backend: cut the connection and refuse new
    /// ones; file storage: truncate the file under the reader).
    pub cut: &'a dyn Fn(&str),
    /// Undo `cut(key)`: the object reads whole again.
    pub heal: &'a dyn Fn(&str),
}

fn failure(what: &str, r: walg_core::Result<impl std::fmt::Debug>, needles: &[&str]) -> walg_core::Error {
    let e = match r {
        Ok(v) => panic!("{what}: expected an error, got {v:?}"),
        Err(e) => e,
    };
    assert_eq!(e.kind(), ErrorKind::Unreachable, "{what}: {e}");
    let m = e.to_string();
    for n in needles {
        assert!(m.contains(n), "{what}: {m:?} lacks {n:?}");
    }
    e
}

/// The storage does not answer (nobody listening, the connection cut): kind Unreachable,
/// transient (the caller may try again later), the message saying "cannot reach" and `needles`.
pub fn assert_unreachable(what: &str, r: walg_core::Result<impl std::fmt::Debug>, needles: &[&str]) -> walg_core::Error {
    let e = failure(what, r, needles);
    assert!(e.is_transient(), "{what}: a storage that does not answer is worth retrying later: {e}");
    assert!(e.to_string().contains("cannot reach"), "{what}: {e}");
    e
}

/// The storage answered no (denied access, refused credentials, a missing container, bucket or
/// directory, an endpoint that is not this service): kind Unreachable, never "missing", not
/// transient (retrying cannot help), the message naming `needles` (the settings to fix).
pub fn assert_denied(what: &str, r: walg_core::Result<impl std::fmt::Debug>, needles: &[&str]) -> walg_core::Error {
    let e = failure(what, r, needles);
    assert!(!e.is_transient(), "{what}: retrying cannot fix this, so it is not transient: {e}");
    e
}

/// Neither the error's message nor its Debug form shows any of `secrets`.
pub fn assert_hides(what: &str, e: &walg_core::Error, secrets: &[&str]) {
    for shown in [e.to_string(), format!("{e:?}")] {
        for secret in secrets {
            assert!(!shown.contains(secret), "{what}: the error shows a secret: {}", shown.replace(secret, "<the secret>"));
        }
    }
}

/// Deterministic incompressible-looking bytes.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
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

fn read_in_small_reads(r: &mut dyn Read, expect: usize) -> Vec<u8> {
    let mut back = Vec::with_capacity(expect);
    let mut buf = vec![0u8; 65_537];
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        back.extend_from_slice(&buf[..n]);
    }
    back
}

/// Every case, in order; panics name the case.
pub fn run_all(t: &Target) {
    // What a writer does first (file storage creates its prefix).
    t.storage.prepare_write().unwrap();
    for (name, case) in [
        ("basic", basic as fn(&Target)),
        ("large_object_streams", large_object_streams),
        ("interrupted_upload_leaves_nothing", interrupted_upload_leaves_nothing),
        ("listing_of_thousands", listing_of_thousands),
        ("concurrent_writers", concurrent_writers),
        ("fault_in_the_middle_of_a_read", fault_in_the_middle_of_a_read),
    ] {
        let started = Instant::now();
        case(t);
        eprintln!("conformance {name} on {}: ok in {:?}", t.storage.describe(), started.elapsed());
    }
}

pub fn basic(t: &Target) {
    let s = t.storage;
    let k = "c-basic/basebackups_005/x.json";
    assert!(get_bytes(s, k).unwrap().is_none(), "missing object is None");
    assert!(!s.exists(k).unwrap());
    assert!(s.list("c-basic/").unwrap().is_empty());
    s.put(k, b"{\"a\":1}").unwrap();
    assert!(s.exists(k).unwrap());
    assert!(s.has_dir("c-basic/basebackups_005/").unwrap());
    assert!(!s.has_dir("c-basic/wal_005/").unwrap());
    assert_eq!(get_bytes(s, k).unwrap().unwrap(), b"{\"a\":1}");
    s.put(k, b"replaced").unwrap();
    assert_eq!(get_bytes(s, k).unwrap().unwrap(), b"replaced");
    s.put("c-basic/empty", b"").unwrap();
    assert!(s.exists("c-basic/empty").unwrap(), "an empty object exists");
    assert_eq!(get_bytes(s, "c-basic/empty").unwrap().unwrap(), b"");
    let listed = s.list("c-basic/").unwrap();
    let keys: Vec<_> = listed.iter().map(|o| (o.key.as_str(), o.size)).collect();
    assert_eq!(keys, vec![("c-basic/basebackups_005/x.json", 8), ("c-basic/empty", 0)]);
    assert!(listed[0].modified > std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000));
    s.delete(k).unwrap();
    s.delete(k).unwrap(); // missing is Ok
    assert!(!s.exists(k).unwrap());
    assert!(get_bytes(s, k).unwrap().is_none());
    s.delete("c-basic/empty").unwrap();
    assert!(s.list("c-basic/").unwrap().is_empty());
    assert!(s.put("../escape", b"no").is_err() && s.put("/abs", b"no").is_err());
}

pub fn large_object_streams(t: &Target) {
    let s = t.storage;
    let k = "c-large/basebackups_005/base_1/tar_partitions/part_001.tar.lz4";
    let body = data(12_000_000, 42);
    let mut w = s.writer(k).unwrap();
    // Odd-sized writes, so blocks/parts are cut in the middle of writes.
    for chunk in body.chunks(1_000_003) {
        w.write_all(chunk).unwrap();
    }
    assert!(!s.exists(k).unwrap(), "not visible before finish");
    assert!(s.list("c-large/").unwrap().is_empty(), "not listed before finish");
    w.finish().unwrap();
    let listed = s.list("c-large/").unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].size, body.len() as u64);
    let mut r = s.get(k).unwrap().unwrap();
    let back = read_in_small_reads(&mut r, body.len());
    assert_eq!(back.len(), body.len());
    assert!(back == body, "round trip differs");
    // put() of a large buffer too.
    s.put("c-large/put", &body[..7_000_001]).unwrap();
    assert!(get_bytes(s, "c-large/put").unwrap().unwrap() == body[..7_000_001]);
    s.delete(k).unwrap();
    s.delete("c-large/put").unwrap();
}

pub fn interrupted_upload_leaves_nothing(t: &Target) {
    let s = t.storage;
    let k = "c-abort/wal_005/000000010000000000000001.lz4";
    {
        let mut w = s.writer(k).unwrap();
        w.write_all(&data(9_000_000, 3)).unwrap();
        // Dropped without finish: a failed or cancelled upload.
    }
    assert!(!s.exists(k).unwrap(), "a dropped writer leaves no visible object");
    assert!(get_bytes(s, k).unwrap().is_none());
    assert!(s.list("c-abort/").unwrap().is_empty());
    // An earlier version stays whole when a replacing upload is dropped.
    s.put(k, b"version 1").unwrap();
    {
        let mut w = s.writer(k).unwrap();
        w.write_all(&data(6_000_000, 4)).unwrap();
    }
    assert_eq!(get_bytes(s, k).unwrap().unwrap(), b"version 1");
    s.delete(k).unwrap();
}

pub fn listing_of_thousands(t: &Target) {
    let s = t.storage;
    let n = 2500;
    let started = Instant::now();
    std::thread::scope(|scope| {
        for th in 0..8 {
            scope.spawn(move || {
                for i in (th..n).step_by(8) {
                    s.put(&format!("c-list/wal_005/{i:024X}.lz4"), format!("seg {i}").as_bytes()).unwrap();
                }
            });
        }
    });
    eprintln!("{n} puts in {:?}", started.elapsed());
    s.put("c-list/wal_005_not/x", b"beside").unwrap();
    let listed = s.list("c-list/wal_005/").unwrap();
    assert_eq!(listed.len(), n, "every object, across pages");
    let keys: Vec<_> = listed.iter().map(|o| o.key.clone()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "sorted by key");
    assert_eq!(keys[0], format!("c-list/wal_005/{:024X}.lz4", 0));
    assert_eq!(keys[n - 1], format!("c-list/wal_005/{:024X}.lz4", n - 1));
    let o = listed.iter().find(|o| o.key == format!("c-list/wal_005/{:024X}.lz4", 7)).unwrap();
    assert_eq!(o.size, "seg 7".len() as u64);
    assert_eq!(s.list("c-list/wal_005").unwrap().len(), n + 1, "a prefix without '/' matches wal_005_not too");
}

/// Concurrent writers of one key: the object ends as exactly one writer's whole version, one
/// that reported success, never a mix. A writer may lose with an error (Azure drops the staged
/// blocks of an upload when another commits first), but never silently: every writer either
/// succeeds or reports an error, and at least one succeeds. Writers of distinct keys all succeed.
pub fn concurrent_writers(t: &Target) {
    let s = t.storage;
    let k = "c-conc/basebackups_005/base_1_backup_stop_sentinel.json";
    let versions: Vec<Vec<u8>> = (0..6).map(|i| data(1_500_000 + i * 1000, 100 + i as u64)).collect();
    let outcomes: Vec<bool> = std::thread::scope(|scope| {
        let handles: Vec<_> = versions
            .iter()
            .enumerate()
            .map(|(i, v)| {
                scope.spawn(move || {
                    let mut w = s.writer(k).unwrap();
                    for c in v.chunks(200_001) {
                        w.write_all(c).unwrap();
                    }
                    let ok = match w.finish() {
                        Ok(_) => true,
                        Err(e) => {
                            eprintln!("concurrent writer {i} lost: {e}");
                            false
                        }
                    };
                    // And one key of its own each.
                    s.put(&format!("c-conc/own/{i}"), v).unwrap();
                    ok
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(outcomes.iter().any(|ok| *ok), "at least one writer succeeds");
    let got = get_bytes(s, k).unwrap().unwrap();
    let winner = versions.iter().position(|v| *v == got);
    assert!(winner.is_some(), "one whole version wins, never a mix ({} bytes)", got.len());
    assert!(outcomes[winner.unwrap()], "the stored version is one whose writer reported success");
    for (i, v) in versions.iter().enumerate() {
        assert!(get_bytes(s, &format!("c-conc/own/{i}")).unwrap().unwrap() == *v);
    }
    assert_eq!(s.list("c-conc/").unwrap().len(), versions.len() + 1);
}

pub fn fault_in_the_middle_of_a_read(t: &Target) {
    let s = t.storage;
    let k = "c-fault/basebackups_005/base_2/tar_partitions/part_001.tar.lz4";
    let body = data(16_000_000, 9);
    s.put(k, &body).unwrap();
    let mut r = s.get(k).unwrap().unwrap();
    let mut head = vec![0u8; 300_000];
    r.read_exact(&mut head).unwrap();
    assert!(head == body[..300_000]);
    (t.cut)(k);
    let mut rest = Vec::new();
    let res = r.read_to_end(&mut rest);
    (t.heal)(k);
    match &res {
        Err(e) => eprintln!("fault mid-read reported: {e}"),
        Ok(n) => assert_eq!(
            300_000 + *n,
            body.len(),
            "a read cut in the middle ended early without an error (a short read)"
        ),
    }
    // Whatever came before the error is the object's own bytes.
    assert!(rest[..] == body[300_000..300_000 + rest.len()], "bytes before the fault are the object's");
    assert!(res.is_err(), "the fault was not reported (read {} of {} bytes)", 300_000 + rest.len(), body.len());
    // After the fault, the object reads whole again.
    assert!(get_bytes(s, k).unwrap().unwrap() == body);
    s.delete(k).unwrap();
}
