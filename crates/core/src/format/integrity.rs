//! Integrity records of our own (FORMAT.md "Integrity records of our own"): the stored size and
//! XXH3-128 hash of an object exactly as uploaded (after compression and encryption), computed by
//! a wrapper around the storage writer while the bytes stream out, and checked by a wrapper
//! around the raw storage reader while they stream back in. Neither costs an extra pass.
//!
//! Why XXH3-128: the hash runs on the restore's critical path (the thread that decodes and writes
//! a part), and restore must stay within 5% of its speed without checks. BLAKE3 was used first;
//! callgrind showed it alone adding about 6% to a restore's instructions (the decoding itself was
//! unchanged), and XXH3-128 hashes about five times faster (README "Cost"). What the hash must
//! catch is damage: a truncated, extended, bit-flipped or swapped object. A 128-bit hash misses
//! that with odds of 2^-128. A cryptographic hash would add nothing against someone who can write
//! to the bucket, since they could rewrite the metadata that records it just as well; encryption
//! (libsodium, authenticated) is what protects content.
//!
//! Invariant: a `VerifyingReader` never lets a byte past the recorded size through, and reports
//! success only once exactly the recorded bytes, with the recorded hash, have been read.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::ObjectWriter;

/// Name of the hash in messages.
pub const HASH_NAME: &str = "XXH3-128";

/// The hash of stored objects (and of the sentinel's own JSON): XXH3-128 as 32 lowercase hex digits.
pub fn hash_hex(data: &[u8]) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(data))
}

/// The same hash over a stream.
pub struct Hasher(xxhash_rust::xxh3::Xxh3);

impl Default for Hasher {
    fn default() -> Hasher {
        Hasher::new()
    }
}

impl Hasher {
    pub fn new() -> Hasher {
        Hasher(xxhash_rust::xxh3::Xxh3::new())
    }
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data)
    }
    pub fn hex(&self) -> String {
        format!("{:032x}", self.0.digest128())
    }
}

/// Size and hash of a stored object: `{"Size": 123, "Xxh3": "<32 hex>"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ObjectRecord {
    pub size: u64,
    pub xxh3: String,
}

impl ObjectRecord {
    pub fn of_bytes(data: &[u8]) -> ObjectRecord {
        ObjectRecord { size: data.len() as u64, xxh3: hash_hex(data) }
    }

    /// A whole object read into memory: Err naming `object` unless size and hash match.
    pub fn check_bytes(&self, object: &str, data: &[u8], recorded_in: &str) -> Result<()> {
        if data.len() as u64 != self.size {
            return Err(Error::corrupt(
                object,
                format!("{} bytes in storage, {recorded_in} records {}", data.len(), self.size),
            ));
        }
        let got = hash_hex(data);
        if got != self.xxh3 {
            return Err(Error::corrupt(
                object,
                format!("{HASH_NAME} {got} does not match the {} recorded in {recorded_in}", self.xxh3),
            ));
        }
        Ok(())
    }
}

/// Where a `HashingWriter` leaves its record once the object is committed.
pub type RecordSlot = Arc<Mutex<Option<ObjectRecord>>>;

/// Wraps a storage writer: hashes and counts exactly the bytes handed to storage.
pub struct HashingWriter {
    inner: Box<dyn ObjectWriter>,
    hasher: Hasher,
    size: u64,
    slot: RecordSlot,
}

impl HashingWriter {
    pub fn wrap(inner: Box<dyn ObjectWriter>) -> (Box<dyn ObjectWriter>, RecordSlot) {
        let slot = RecordSlot::default();
        let w = HashingWriter { inner, hasher: Hasher::new(), size: 0, slot: slot.clone() };
        (Box::new(w), slot)
    }
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl ObjectWriter for HashingWriter {
    fn finish(self: Box<Self>) -> Result<u64> {
        let HashingWriter { inner, hasher, size, slot } = *self;
        let stored = inner.finish()?;
        if stored != size {
            return Err(Error::Internal(format!("storage stored {stored} bytes, {size} were written")));
        }
        *slot.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(ObjectRecord { size, xxh3: hasher.hex() });
        Ok(stored)
    }
}

/// What a `VerifyingReader` has found so far.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Fewer than the recorded bytes read yet.
    Pending(u64),
    /// Exactly the recorded bytes read, hash equal.
    Verified,
    /// Damage found; the message says what (without the object name).
    Failed(String),
}

pub type VerdictSlot = Arc<Mutex<Verdict>>;

/// Wraps the raw (still encoded) stream of a stored object and checks it against its record as
/// it is read: more bytes than recorded, fewer (at end of stream) or another hash is an error
/// (io::ErrorKind::InvalidData, naming the object), also left in the shared verdict so the
/// caller can report it even when a decoder above rewrote the io error.
pub struct VerifyingReader {
    inner: Box<dyn Read + Send>,
    object: String,
    recorded_in: String,
    expected: ObjectRecord,
    hasher: Hasher,
    size: u64,
    verdict: VerdictSlot,
}

impl VerifyingReader {
    pub fn wrap(
        inner: Box<dyn Read + Send>,
        object: &str,
        expected: ObjectRecord,
        recorded_in: &str,
    ) -> (Box<dyn Read + Send>, VerdictSlot) {
        let verdict = Arc::new(Mutex::new(Verdict::Pending(0)));
        let r = VerifyingReader {
            inner,
            object: object.to_string(),
            recorded_in: recorded_in.to_string(),
            expected,
            hasher: Hasher::new(),
            size: 0,
            verdict: verdict.clone(),
        };
        (Box::new(r), verdict)
    }

    fn fail(&self, msg: String) -> io::Error {
        *self.verdict.lock().unwrap_or_else(|e| e.into_inner()) = Verdict::Failed(msg.clone());
        io::Error::new(io::ErrorKind::InvalidData, format!("corrupt {}: {msg}", self.object))
    }
}

impl Read for VerifyingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Verdict::Failed(msg) = &*self.verdict.lock().unwrap_or_else(|e| e.into_inner()) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("corrupt {}: {msg}", self.object)));
        }
        let n = self.inner.read(buf)?;
        let want = self.expected.size;
        if n == 0 {
            if self.size < want {
                return Err(self.fail(format!(
                    "truncated: the object ends after {} bytes, {} records {want}",
                    self.size, self.recorded_in
                )));
            }
            return Ok(0);
        }
        if self.size + n as u64 > want {
            return Err(self.fail(format!("the object is longer than the {want} bytes {} records", self.recorded_in)));
        }
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        let mut verdict = self.verdict.lock().unwrap_or_else(|e| e.into_inner());
        if self.size == want {
            let got = self.hasher.hex();
            if got != self.expected.xxh3 {
                drop(verdict);
                return Err(self.fail(format!(
                    "{HASH_NAME} {got} does not match the {} recorded in {}",
                    self.expected.xxh3, self.recorded_in
                )));
            }
            *verdict = Verdict::Verified;
        } else {
            *verdict = Verdict::Pending(self.size);
        }
        Ok(n)
    }
}

/// The outcome of a verified read of `object`: `first` is the error the reading itself ended
/// with, if any. A damage verdict wins over that error (it is the precise one); a read that
/// ended without error must have reached `Verified`.
pub fn settle<T>(object: &str, verdict: &VerdictSlot, expected_size: u64, first: Result<T>) -> Result<T> {
    let v = verdict.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match (v, first) {
        (Verdict::Failed(msg), _) => Err(Error::corrupt(object, msg)),
        (_, Err(e)) => Err(e),
        (Verdict::Verified, Ok(t)) => Ok(t),
        (Verdict::Pending(read), Ok(_)) => Err(Error::corrupt(
            object,
            format!(
                "the encoded stream ended after {read} of the {expected_size} recorded bytes: \
                 the object holds something after it or is not the object recorded"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{FsStorage, Storage};

    fn read_all(r: &mut dyn Read) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        r.read_to_end(&mut v).map(|_| v)
    }

    #[test]
    fn hash_is_xxh3_128_as_xxhsum_prints_it() {
        // `printf hello | xxhsum -H2` (Debian's xxhash 0.8): the README says it checks by hand.
        assert_eq!(hash_hex(b"hello"), "b5e9c1ad071b3e7fc779cfaa5e523818");
        let mut h = Hasher::new();
        h.update(b"hel");
        h.update(b"lo");
        assert_eq!(h.hex(), hash_hex(b"hello"));
    }

    #[test]
    fn writer_records_what_storage_holds_and_reader_checks_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStorage::new(dir.path());
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
        let (mut w, slot) = HashingWriter::wrap(s.writer("obj").unwrap());
        w.write_all(&data).unwrap();
        assert!(slot.lock().unwrap().is_none(), "no record before the commit");
        assert_eq!(w.finish().unwrap(), data.len() as u64);
        let rec = slot.lock().unwrap().clone().unwrap();
        assert_eq!(rec, ObjectRecord::of_bytes(&data));
        assert_eq!(rec.xxh3.len(), 32);
        rec.check_bytes("obj", &data, "x").unwrap();

        // Intact.
        let (mut r, v) = VerifyingReader::wrap(s.get("obj").unwrap().unwrap(), "obj", rec.clone(), "fm");
        let got = read_all(&mut r).unwrap();
        assert!(got == data);
        settle("obj", &v, rec.size, Ok(())).unwrap();

        let check = |bytes: Vec<u8>, what: &str| {
            let (mut r, v) = VerifyingReader::wrap(Box::new(io::Cursor::new(bytes.clone())), "k/obj", rec.clone(), "fm");
            let err = read_all(&mut r).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            assert!(err.to_string().contains("k/obj"), "{err}");
            let e = settle("k/obj", &v, rec.size, Err::<(), _>(Error::Internal("decoder".into()))).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Corrupt);
            assert!(e.to_string().contains("k/obj") && e.to_string().contains(what), "{e}");
            assert!(rec.check_bytes("k/obj", &bytes, "fm").is_err());
        };
        let mut flipped = data.clone();
        flipped[150_000] ^= 1;
        check(flipped, "does not match");
        check(data[..data.len() - 1].to_vec(), "truncated");
        let mut longer = data.clone();
        longer.push(0);
        check(longer, "longer");

        // A decoder that stops before the end leaves the verdict pending: settle says so.
        let (mut r, v) = VerifyingReader::wrap(Box::new(io::Cursor::new(data.clone())), "o", rec.clone(), "fm");
        let mut half = vec![0u8; 1000];
        r.read_exact(&mut half).unwrap();
        assert!(settle("o", &v, rec.size, Ok(())).unwrap_err().to_string().contains("ended after"));
    }
}
