//! libsodium encryption, framed as WAL-G frames it: `crypto_secretstream_xchacha20poly1305`, a
//! 24-byte header, then chunks of 8192 plaintext bytes (+17 bytes each) tagged MESSAGE, and a last
//! chunk of 0..8191 bytes tagged FINAL. The reader requires FINAL and nothing after it, so a
//! truncated or extended object fails instead of restoring silently short.
//!
//! The only unsafe code calling libsodium in walg-core is in this file.

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::{Arc, Once};

use base64::Engine as _;
use libsodium_sys as sodium;

use super::Encoder;
use crate::error::{Error, Result};

pub const KEY_BYTES: usize = sodium::crypto_secretstream_xchacha20poly1305_KEYBYTES as usize;
pub const HEADER_BYTES: usize = sodium::crypto_secretstream_xchacha20poly1305_HEADERBYTES as usize;
pub const A_BYTES: usize = sodium::crypto_secretstream_xchacha20poly1305_ABYTES as usize;
/// WAL-G's plaintext chunk size.
pub const CHUNK: usize = 8192;
const TAG_MESSAGE: u8 = sodium::crypto_secretstream_xchacha20poly1305_TAG_MESSAGE as u8;
const TAG_FINAL: u8 = sodium::crypto_secretstream_xchacha20poly1305_TAG_FINAL as u8;
/// WAL-G refuses shorter raw keys (transform `none`).
pub const MIN_RAW_KEY_LEN: usize = 25;

/// What to tell a user whose object needs a key.
pub const KEY_HINT: &str =
    "set WALG_LIBSODIUM_KEY or WALG_LIBSODIUM_KEY_PATH (walg.libsodium_key_path), or WALG_PGP_KEY or WALG_PGP_KEY_PATH";

fn init() {
    static INIT: Once = Once::new();
    // sodium_init picks the fastest implementations and seeds the RNG; -1 means failure, which
    // cannot be recovered from (the header nonce would not be random).
    INIT.call_once(|| assert!(unsafe { sodium::sodium_init() } >= 0, "sodium_init failed"));
}

/// A 32-byte libsodium key. Never printed; zeroed when the last copy is dropped.
#[derive(Clone)]
pub struct Key(Arc<KeyBytes>);

struct KeyBytes([u8; KEY_BYTES]);

impl Drop for KeyBytes {
    fn drop(&mut self) {
        unsafe { sodium::sodium_memzero(self.0.as_mut_ptr().cast(), KEY_BYTES) };
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.0 .0 == other.0 .0
    }
}

impl Key {
    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> Key {
        Key(Arc::new(KeyBytes(bytes)))
    }

    /// WALG_LIBSODIUM_KEY_TRANSFORM applied to the key text: `base64` and `hex` must decode to
    /// exactly 32 bytes; `none` takes the raw text (at least 25 bytes), cut or zero-padded to 32.
    /// Error messages never contain the key.
    pub fn from_text(text: &str, transform: &str) -> Result<Key> {
        let bad = |msg: String| Error::Config(format!("WALG_LIBSODIUM_KEY: {msg}"));
        let decoded: Vec<u8> = match transform.trim().to_ascii_lowercase().as_str() {
            "" | "none" => {
                let raw = text.as_bytes();
                if raw.len() < MIN_RAW_KEY_LEN {
                    return Err(bad(format!(
                        "key length must not be less than {MIN_RAW_KEY_LEN}, got {} (or set WALG_LIBSODIUM_KEY_TRANSFORM to hex or base64)",
                        raw.len()
                    )));
                }
                let mut k = [0u8; KEY_BYTES];
                let n = raw.len().min(KEY_BYTES);
                k[..n].copy_from_slice(&raw[..n]);
                return Ok(Key::from_bytes(k));
            }
            "base64" => base64::engine::general_purpose::STANDARD
                .decode(text.as_bytes())
                .map_err(|_| bad("not valid base64 (WALG_LIBSODIUM_KEY_TRANSFORM=base64)".into()))?,
            "hex" => decode_hex(text).ok_or_else(|| bad("not valid hex (WALG_LIBSODIUM_KEY_TRANSFORM=hex)".into()))?,
            other => {
                return Err(Error::Config(format!(
                    "WALG_LIBSODIUM_KEY_TRANSFORM: unknown key transform {other:?} (must be base64, hex or none)"
                )))
            }
        };
        let k: [u8; KEY_BYTES] = decoded.as_slice().try_into().map_err(|_| {
            bad(format!("key must be exactly {KEY_BYTES} bytes (got {} bytes)", decoded.len()))
        })?;
        Ok(Key::from_bytes(k))
    }

    /// The key file named by WALG_LIBSODIUM_KEY_PATH: its text, whitespace-trimmed as WAL-G does.
    pub fn from_file(path: &std::path::Path, transform: &str) -> Result<Key> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!("WALG_LIBSODIUM_KEY_PATH: cannot read key file {}: {e}", path.display()))
        })?;
        Key::from_text(text.trim(), transform).map_err(|e| match e {
            Error::Config(m) => Error::Config(m.replacen(
                "WALG_LIBSODIUM_KEY:",
                &format!("WALG_LIBSODIUM_KEY_PATH ({}):", path.display()),
                1,
            )),
            other => other,
        })
    }

    fn bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0 .0
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let nib = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    s.chunks(2).map(|p| Some(nib(p[0])? << 4 | nib(p[1])?)).collect()
}

type State = sodium::crypto_secretstream_xchacha20poly1305_state;

fn zero_state(s: &mut State) {
    unsafe { sodium::sodium_memzero((s as *mut State).cast(), std::mem::size_of::<State>()) };
}

/// Encrypting writer; `finish` writes the FINAL chunk and returns the inner writer.
pub struct EncryptWriter<W: Write> {
    inner: Option<W>,
    state: State,
    plain: Vec<u8>,
    sealed: Vec<u8>,
}

impl<W: Write> EncryptWriter<W> {
    /// Writes the stream header at once.
    pub fn new(key: &Key, mut inner: W) -> io::Result<EncryptWriter<W>> {
        init();
        let mut state: State = unsafe { std::mem::zeroed() };
        let mut header = [0u8; HEADER_BYTES];
        let rc = unsafe {
            sodium::crypto_secretstream_xchacha20poly1305_init_push(&mut state, header.as_mut_ptr(), key.bytes().as_ptr())
        };
        if rc != 0 {
            return Err(io::Error::other("libsodium init_push failed"));
        }
        inner.write_all(&header)?;
        Ok(EncryptWriter { inner: Some(inner), state, plain: Vec::with_capacity(CHUNK), sealed: vec![0u8; CHUNK + A_BYTES] })
    }

    fn seal(&mut self, tag: u8) -> io::Result<()> {
        let mut out_len: libc::c_ulonglong = 0;
        let rc = unsafe {
            sodium::crypto_secretstream_xchacha20poly1305_push(
                &mut self.state,
                self.sealed.as_mut_ptr(),
                &mut out_len,
                self.plain.as_ptr(),
                self.plain.len() as libc::c_ulonglong,
                std::ptr::null(),
                0,
                tag,
            )
        };
        if rc != 0 {
            return Err(io::Error::other("libsodium push failed"));
        }
        let inner = self.inner.as_mut().ok_or_else(|| io::Error::other("encrypting writer already finished"))?;
        inner.write_all(&self.sealed[..out_len as usize])?;
        self.plain.clear();
        Ok(())
    }
}

impl<W: Write> Write for EncryptWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            let n = (CHUNK - self.plain.len()).min(buf.len() - done);
            self.plain.extend_from_slice(&buf[done..done + n]);
            done += n;
            // Like WAL-G: a full chunk goes out at once as MESSAGE, so FINAL holds 0..8191 bytes.
            if self.plain.len() == CHUNK {
                self.seal(TAG_MESSAGE)?;
            }
        }
        Ok(done)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.as_mut().map_or(Ok(()), |w| w.flush())
    }
}

impl<W: Write> Drop for EncryptWriter<W> {
    fn drop(&mut self) {
        zero_state(&mut self.state);
        self.plain.fill(0);
    }
}

impl<W: Write + Send> Encoder<W> for EncryptWriter<W> {
    fn finish(mut self: Box<Self>) -> io::Result<W> {
        self.seal(TAG_FINAL)?;
        Ok(self.inner.take().expect("inner present until finish"))
    }
}

/// Decrypting reader: fails on a wrong key, a changed byte, a missing FINAL chunk, and data after
/// it. Errors are `InvalidData` (authentication) or `UnexpectedEof` (truncation).
pub struct DecryptReader<R: Read> {
    inner: R,
    state: Option<State>,
    key: Key,
    sealed: Vec<u8>,
    plain: Vec<u8>,
    pos: usize,
    chunks: u64,
    done: bool,
}

impl<R: Read> DecryptReader<R> {
    pub fn new(key: &Key, inner: R) -> DecryptReader<R> {
        init();
        DecryptReader {
            inner,
            state: None,
            key: key.clone(),
            sealed: vec![0u8; CHUNK + A_BYTES],
            plain: Vec::with_capacity(CHUNK),
            pos: 0,
            chunks: 0,
            done: false,
        }
    }

    /// Reads until `buf` is full or the input ends; returns the count.
    fn fill(&mut self, len: usize) -> io::Result<usize> {
        let mut n = 0;
        while n < len {
            match self.inner.read(&mut self.sealed[n..len]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    fn start(&mut self) -> io::Result<()> {
        let n = self.fill(HEADER_BYTES)?;
        if n < HEADER_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("encrypted object truncated: {n} bytes, shorter than the {HEADER_BYTES}-byte libsodium header"),
            ));
        }
        let mut state: State = unsafe { std::mem::zeroed() };
        let rc = unsafe {
            sodium::crypto_secretstream_xchacha20poly1305_init_pull(&mut state, self.sealed.as_ptr(), self.key.bytes().as_ptr())
        };
        if rc != 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "invalid libsodium stream header"));
        }
        self.state = Some(state);
        Ok(())
    }

    /// Decrypt the next chunk into `plain`.
    fn next_chunk(&mut self) -> io::Result<()> {
        let n = self.fill(CHUNK + A_BYTES)?;
        if n < A_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "encrypted object truncated after {} chunks: it ends without libsodium's final chunk",
                    self.chunks
                ),
            ));
        }
        let state = self.state.as_mut().expect("header read");
        let (mut plain_len, mut tag): (libc::c_ulonglong, u8) = (0, 0);
        let rc = unsafe {
            sodium::crypto_secretstream_xchacha20poly1305_pull(
                state,
                self.plain.as_mut_ptr(),
                &mut plain_len,
                &mut tag,
                self.sealed.as_ptr(),
                n as libc::c_ulonglong,
                std::ptr::null(),
                0,
            )
        };
        if rc != 0 {
            let msg = if self.chunks == 0 {
                "libsodium decryption failed on the first chunk: wrong key (WALG_LIBSODIUM_KEY / \
                 WALG_LIBSODIUM_KEY_TRANSFORM), an object that is not encrypted, or a corrupt object"
                    .to_string()
            } else {
                format!("libsodium authentication failed on chunk {}: the object is corrupt or truncated", self.chunks)
            };
            return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
        }
        self.chunks += 1;
        self.pos = 0;
        self.plain.truncate(plain_len as usize);
        if tag == TAG_FINAL {
            self.done = true;
            // Nothing may follow the final chunk.
            let mut probe = [0u8; 1];
            let extra = loop {
                match self.inner.read(&mut probe) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other?,
                }
            };
            if extra != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "data after libsodium's final chunk: the object is corrupt",
                ));
            }
        } else if n < CHUNK + A_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("encrypted object truncated in chunk {}: no final chunk", self.chunks),
            ));
        }
        Ok(())
    }
}

impl<R: Read> Read for DecryptReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.state.is_none() {
            self.start()?;
        }
        while self.pos == self.plain.len() {
            if self.done {
                return Ok(0);
            }
            self.plain.resize(CHUNK, 0);
            self.next_chunk()?;
        }
        let n = buf.len().min(self.plain.len() - self.pos);
        buf[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl<R: Read> Drop for DecryptReader<R> {
    fn drop(&mut self) {
        if let Some(s) = self.state.as_mut() {
            zero_state(s);
        }
        self.plain.fill(0);
    }
}
