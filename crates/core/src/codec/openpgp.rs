//! OpenPGP encryption as WAL-G does it (`WALG_PGP_KEY`, `WALG_PGP_KEY_PATH`,
//! `WALG_PGP_KEY_PASSPHRASE`), with rPGP (the `pgp` crate, pure Rust).
//!
//! WAL-G's facts (internal/crypto/openpgp): the setting holds an ASCII-armored key ring (a
//! literal `\n` in `WALG_PGP_KEY` stands for a newline); objects are compressed first, then
//! encrypted to every key of the ring as one binary (not armored) OpenPGP message, without
//! OpenPGP compression or signature; reading decrypts with the ring's secret keys, unlocked by
//! the passphrase when one is set. So a server that only pushes needs only the public key.
//!
//! Invariants:
//! - we write SEIPD v1 (integrity-protected, MDC) with AES-256, which GnuPG 2.2 (Debian 12),
//!   WAL-G's Go library and every other reader decrypt; SEIPD v2 (RFC 9580 AEAD) is not read by
//!   GnuPG 2.2, so it is not written;
//! - reading streams (rPGP's default would hold a whole SEIPD v1 message in memory first): the
//!   MDC is checked when the message ends, so damaged or cut data fails the read at the end of
//!   the object at the latest; callers never put a restored file in place before the end (WAL
//!   goes through a temporary file, `pg_control` is written last);
//! - a message that does not name one of our keys is a configuration error (wrong key), damaged
//!   data is a codec error; both name the object;
//! - the passphrase is only taken from the config file or the environment, never a GUC, and
//!   neither it nor the key is ever printed.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use pgp::composed::{
    DecryptionOptions, Esk, Message, MessageBuilder, PublicOrSecret, SignedPublicKey, SignedPublicSubKey,
    SignedSecretKey, TheRing,
};
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::types::{KeyDetails, KeyId, Password, Seipdv1ReadMode};

use zeroize::Zeroizing;

use super::Encoder;
use crate::error::{Error, Result};

/// An OpenPGP key ring from WALG_PGP_KEY or WALG_PGP_KEY_PATH: public keys (enough to push),
/// secret keys (needed to read), and the passphrase of the secret keys. Never printed.
#[derive(Clone)]
pub struct PgpKey(Arc<Inner>);

struct Inner {
    /// Where the key came from ("WALG_PGP_KEY" or the path), for messages.
    source: String,
    /// The armored text as given, to compare configurations.
    armored: Zeroizing<String>,
    /// One encryption subkey (or primary) per key of the ring.
    recipients: Vec<SignedPublicSubKey>,
    /// Recipients that are primary keys able to encrypt (old RSA keys without subkeys).
    primary_recipients: Vec<SignedPublicKey>,
    secrets: Vec<SignedSecretKey>,
    passphrase: Option<Zeroizing<String>>,
}

impl fmt::Debug for PgpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgpKey({}, <redacted>)", self.0.source)
    }
}

impl PartialEq for PgpKey {
    fn eq(&self, other: &PgpKey) -> bool {
        self.0.armored == other.0.armored && self.0.passphrase == other.0.passphrase
    }
}

/// What to tell a user whose object needs the OpenPGP key.
pub const PGP_KEY_HINT: &str = "set WALG_PGP_KEY or WALG_PGP_KEY_PATH (the secret key, to read)";

impl PgpKey {
    /// Parse an armored key ring (public and/or secret keys). `source` names it in errors.
    /// WAL-G's rule: in WALG_PGP_KEY a literal `\n` stands for a newline.
    pub fn from_armored(source: &str, text: &str, passphrase: Option<String>) -> Result<PgpKey> {
        let bad = |msg: String| Error::Config(format!("{source}: {msg}"));
        let armored = text.replace("\\n", "\n");
        let (keys, _) = PublicOrSecret::from_reader_many(io::Cursor::new(armored.clone().into_bytes()))
            .map_err(|e| bad(format!("not an OpenPGP key ({e}); expected an ASCII-armored key as `gpg --export --armor` or `gpg --export-secret-keys --armor` writes it")))?;
        let mut recipients = Vec::new();
        let mut primary_recipients = Vec::new();
        let mut secrets = Vec::new();
        let mut count = 0;
        for k in keys {
            let k = k.map_err(|e| bad(format!("cannot parse the key: {e}")))?;
            count += 1;
            let public = match &k {
                PublicOrSecret::Public(p) => p.clone(),
                PublicOrSecret::Secret(s) => s.to_public_key(),
            };
            if let PublicOrSecret::Secret(s) = k {
                secrets.push(s);
            }
            // The encryption subkey; the last one listed is the newest (as GnuPG adds them).
            // Else the primary key, if its self-signatures allow encryption (or, for keys old
            // enough to carry no key flags at all, if its algorithm can encrypt).
            let primary_flags: Vec<_> = public.details.users.iter().flat_map(|u| u.signatures.iter().map(|s| s.key_flags())).collect();
            let any_flags = primary_flags.iter().any(|f| f.certify() || f.sign() || encrypts(f));
            let primary_encrypts = if any_flags {
                primary_flags.iter().any(encrypts)
            } else {
                public.primary_key.algorithm().can_encrypt()
            };
            match public.public_subkeys.iter().rev().find(|sk| sk.signatures.iter().any(|s| encrypts(&s.key_flags()))) {
                Some(sk) => recipients.push(sk.clone()),
                None if primary_encrypts => primary_recipients.push(public),
                None => {
                    return Err(bad(format!(
                        "key {} has no key that may encrypt (no encryption subkey, and the primary key is for signing only)",
                        hex(public.primary_key.fingerprint().as_bytes())
                    )))
                }
            }
        }
        if count == 0 {
            return Err(bad("no key found in the armored text".into()));
        }
        Ok(PgpKey(Arc::new(Inner {
            source: source.to_string(),
            armored: Zeroizing::new(armored),
            recipients,
            primary_recipients,
            secrets,
            passphrase: passphrase.filter(|p| !p.is_empty()).map(Zeroizing::new),
        })))
    }

    /// `from_armored` on the content of the file at `path` (WALG_PGP_KEY_PATH).
    pub fn from_file(path: &std::path::Path, passphrase: Option<String>) -> Result<PgpKey> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("WALG_PGP_KEY_PATH: cannot read {}: {e}", path.display())))?;
        PgpKey::from_armored(&format!("WALG_PGP_KEY_PATH {}", path.display()), &text, passphrase)
    }

    /// Whether the ring holds a secret key (needed to read objects).
    pub fn can_decrypt(&self) -> bool {
        !self.0.secrets.is_empty()
    }
}

fn encrypts(f: &pgp::packet::KeyFlags) -> bool {
    f.encrypt_comms() || f.encrypt_storage()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// Chunks of plaintext travel to the encrypting thread in pieces of this size.
const PIECE: usize = 256 * 1024;

enum Piece {
    Data(Vec<u8>),
    /// The writer finished: the stream is complete. A closed channel without it is an abort.
    End,
}

/// The plaintext as rPGP's builder pulls it: what the writer sent, in order.
struct Pieces {
    rx: Receiver<Piece>,
    cur: Vec<u8>,
    pos: usize,
    ended: bool,
    back: Sender<Vec<u8>>,
}

impl Read for Pieces {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Piece::Data(d)) => {
                    let old = std::mem::replace(&mut self.cur, d);
                    let _ = self.back.try_send(old);
                    self.pos = 0;
                }
                Ok(Piece::End) => self.ended = true,
                Err(_) => return Err(io::Error::other("the encrypting writer was dropped (upload aborted)")),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Encrypting writer: rPGP's message builder pulls plaintext from a reader and writes the
/// message to a writer, so it runs on its own thread (with signals blocked, crate::threads),
/// fed through a small bounded channel; `finish` waits for it and hands back the inner writer.
struct PgpWriter<W> {
    tx: Option<Sender<Piece>>,
    spare: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    thread: Option<JoinHandle<io::Result<W>>>,
}

impl<W: Write + Send + 'static> PgpWriter<W> {
    fn new(key: &PgpKey, inner: W) -> io::Result<PgpWriter<W>> {
        let (tx, rx) = crossbeam_channel::bounded::<Piece>(4);
        let (back, spare) = crossbeam_channel::bounded::<Vec<u8>>(4);
        let key = key.clone();
        let thread = crate::threads::spawn("walg-pgp".into(), move || -> io::Result<W> {
            let mut out = inner;
            let source = Pieces { rx, cur: Vec::new(), pos: 0, ended: false, back };
            let mut rng = rand::thread_rng();
            let mut builder = MessageBuilder::from_reader("", source).seipd_v1(&mut rng, SymmetricKeyAlgorithm::AES256);
            for r in &key.0.recipients {
                builder.encrypt_to_key(&mut rng, r).map_err(io::Error::other)?;
            }
            for r in &key.0.primary_recipients {
                builder.encrypt_to_key(&mut rng, &r.primary_key).map_err(io::Error::other)?;
            }
            builder.to_writer(&mut rng, &mut out).map_err(|e| io::Error::other(format!("OpenPGP encryption failed: {e}")))?;
            Ok(out)
        })?;
        Ok(PgpWriter { tx: Some(tx), spare, buf: Vec::with_capacity(PIECE), thread: Some(thread) })
    }

    /// The thread's error, once it has stopped early.
    fn thread_error(&mut self) -> io::Error {
        self.tx = None;
        match self.thread.take().map(|h| h.join()) {
            Some(Ok(Err(e))) => e,
            Some(Err(_)) => io::Error::other("the OpenPGP thread panicked"),
            _ => io::Error::other("the OpenPGP thread stopped"),
        }
    }

    fn send(&mut self, p: Piece) -> io::Result<()> {
        let tx = self.tx.as_ref().ok_or_else(|| io::Error::other("OpenPGP writer already failed"))?;
        if tx.send(p).is_err() {
            return Err(self.thread_error());
        }
        Ok(())
    }

    fn send_buf(&mut self) -> io::Result<()> {
        let next = self.spare.try_recv().map(|mut v| {
            v.clear();
            v
        });
        let next = next.unwrap_or_else(|_| Vec::with_capacity(PIECE));
        let full = std::mem::replace(&mut self.buf, next);
        self.send(Piece::Data(full))
    }
}

impl<W: Write + Send + 'static> Write for PgpWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(PIECE - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == PIECE {
            self.send_buf()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write + Send + 'static> Encoder<W> for PgpWriter<W> {
    fn finish(mut self: Box<Self>) -> io::Result<W> {
        if !self.buf.is_empty() {
            self.send_buf()?;
        }
        self.send(Piece::End)?;
        self.tx = None;
        match self.thread.take().map(|h| h.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(io::Error::other("the OpenPGP thread panicked")),
            None => Err(io::Error::other("OpenPGP writer already failed")),
        }
    }
}

impl<W> Drop for PgpWriter<W> {
    fn drop(&mut self) {
        // Without `End` the thread's reader fails, so the message is never completed; wait for
        // it so the inner writer (an upload) is dropped, i.e. aborted, before we return.
        self.tx = None;
        if let Some(h) = self.thread.take() {
            let _ = h.join();
        }
    }
}

/// Encrypting `Encoder` over `inner`.
pub(super) fn encrypt_writer<W: Write + Send + 'static>(key: &PgpKey, inner: W) -> io::Result<Box<dyn Encoder<W>>> {
    Ok(Box::new(PgpWriter::new(key, inner)?))
}

/// The raw object stream, as rPGP wants it (`Debug`).
struct Raw(BufReader<Box<dyn Read + Send>>);

impl fmt::Debug for Raw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Raw")
    }
}

impl Read for Raw {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl BufRead for Raw {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.0.fill_buf()
    }
    fn consume(&mut self, n: usize) {
        self.0.consume(n)
    }
}

/// Turns rPGP's errors while streaming into io errors of kind InvalidData (a damaged object),
/// keeping real io errors (the storage stream) as they are.
struct Plain(Message<'static>);

impl Read for Plain {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(|e| {
            if e.get_ref().is_some_and(|inner| inner.is::<pgp::errors::Error>()) || e.kind() == io::ErrorKind::Other {
                io::Error::new(io::ErrorKind::InvalidData, format!("OpenPGP: {e}"))
            } else {
                e
            }
        })
    }
}

/// Decrypting reader for `object`: reads the message's key packets and unlocks the session key
/// now (so a wrong key or passphrase is a configuration error naming the object), then streams
/// the plaintext, failing at the end if the integrity check (MDC) does not match.
pub(super) fn decrypt_reader(key: &PgpKey, object: &str, raw: Box<dyn Read + Send>) -> Result<Box<dyn Read + Send>> {
    let corrupt = |msg: String| Error::Codec { object: object.to_string(), msg };
    if key.0.secrets.is_empty() {
        return Err(Error::Config(format!(
            "{object} is encrypted with OpenPGP, but {} holds only a public key: give the secret key to read it",
            key.0.source
        )));
    }
    let msg = Message::from_bytes(Raw(BufReader::with_capacity(128 * 1024, raw)))
        .map_err(|e| pgp_error(object, "not an OpenPGP message", e))?;
    if !msg.is_encrypted() {
        return Err(corrupt("not an OpenPGP encrypted message".into()));
    }
    // The (sub)keys the message is encrypted to, and which of them we hold the secret of.
    let to: Vec<KeyId> = match &msg {
        Message::Encrypted { esk, .. } => esk
            .iter()
            .filter_map(|e| match e {
                Esk::PublicKeyEncryptedSessionKey(p) => p.id().ok().copied(),
                Esk::SymKeyEncryptedSessionKey(_) => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let ours: Vec<KeyId> = key
        .0
        .secrets
        .iter()
        .flat_map(|s| std::iter::once(s.primary_key.legacy_key_id()).chain(s.secret_subkeys.iter().map(|k| k.key.legacy_key_id())))
        .collect();
    let for_us = to.iter().any(|id| id.is_wildcard() || ours.contains(id));
    let pw: Password = key.0.passphrase.as_ref().map(|p| Password::from(p.as_str())).unwrap_or_else(Password::empty);
    let ring = TheRing {
        secret_keys: key.0.secrets.iter().collect(),
        key_passwords: vec![&pw],
        message_password: vec![],
        session_keys: vec![],
        decrypt_options: DecryptionOptions::new().set_seipdv1_read_mode(Seipdv1ReadMode::Streaming),
    };
    let locked = || {
        Error::Config(format!(
            "{object}: cannot unlock the secret key of {} it is encrypted to: wrong or missing WALG_PGP_KEY_PASSPHRASE",
            key.0.source
        ))
    };
    if !for_us {
        let ids: Vec<String> = to.iter().map(|id| id.to_string().to_uppercase()).collect();
        return Err(Error::Config(format!(
            "{object}: encrypted to OpenPGP key {}, not to a key of {} (wrong key)",
            if ids.is_empty() { "(none named)".to_string() } else { ids.join(", ") },
            key.0.source
        )));
    }
    let (msg, _) = msg.decrypt_the_ring(ring, true).map_err(|e| match e {
        // The message names one of our keys, so the key was there but could not be unlocked.
        pgp::errors::Error::MissingKey => locked(),
        other if other.to_string().to_ascii_lowercase().contains("passw") => locked(),
        other => pgp_error(object, "cannot decrypt", other),
    })?;
    let msg = if msg.is_compressed() { msg.decompress().map_err(|e| pgp_error(object, "cannot decompress", e))? } else { msg };
    Ok(Box::new(Plain(msg)))
}

fn pgp_error(object: &str, what: &str, e: pgp::errors::Error) -> Error {
    match e {
        pgp::errors::Error::IO { source, .. } => super::read_error(object, source),
        other => Error::Codec { object: object.to_string(), msg: format!("OpenPGP: {what}: {other}") },
    }
}
