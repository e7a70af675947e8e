//! The one way objects are encoded and decoded: compression, then (with a key) libsodium or
//! OpenPGP encryption on write; the reverse on read, chosen by the object's extension.

use std::io::{self, Read};

use super::crypto::{DecryptReader, EncryptWriter, Key, KEY_HINT};
use super::openpgp::{self, PgpKey};
use super::{decompress_reader_opts, encoder_with, extension_of, named, wrap_object, Compression, ZstdLayout, READ_EXTENSIONS};
use crate::error::{Error, Result};
use crate::storage::{ObjectWriter, Storage};

/// The encryption of a pipeline: at most one (Config refuses both keys at once).
#[derive(Clone, Debug, PartialEq)]
enum Seal {
    None,
    Libsodium(Key),
    Pgp(PgpKey),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Pipeline {
    pub compression: Compression,
    seal: Seal,
    /// Threads compressing each object written (zstd only; 1 = the writer's own thread).
    threads: usize,
    /// zstd: one frame per object (default) or the many-frame layout.
    zstd_layout: ZstdLayout,
}

impl Pipeline {
    pub fn new(compression: Compression, key: Option<Key>) -> Pipeline {
        let seal = match key {
            Some(k) => Seal::Libsodium(k),
            None => Seal::None,
        };
        Pipeline { compression, seal, threads: 1, zstd_layout: ZstdLayout::default() }
    }

    /// Compress each object on `threads` threads: for a few big objects written at once (base
    /// backup parts), so that one large file does not leave the other cores idle.
    pub fn with_threads(mut self, threads: usize) -> Pipeline {
        self.threads = threads.max(1);
        self
    }

    /// zstd objects in this layout (WALG_ZSTD_FRAMES picks `Frames`).
    pub fn with_zstd_layout(mut self, layout: ZstdLayout) -> Pipeline {
        self.zstd_layout = layout;
        self
    }

    /// Encrypt with OpenPGP to `key` (replaces a libsodium key; None changes nothing).
    pub fn with_pgp(mut self, key: Option<PgpKey>) -> Pipeline {
        if let Some(k) = key {
            self.seal = Seal::Pgp(k);
        }
        self
    }

    pub fn is_encrypted(&self) -> bool {
        self.seal != Seal::None
    }

    /// `base` + the compression extension (encryption adds none, as in WAL-G).
    pub fn object_name(&self, base: &str) -> String {
        self.compression.object_name(base)
    }

    /// Wrap `inner` (an upload) so that bytes written are compressed, then encrypted.
    /// `finish()` returns the stored byte count; dropping aborts the upload.
    pub fn writer(&self, inner: Box<dyn ObjectWriter>) -> Result<Box<dyn ObjectWriter>> {
        let sealed = match &self.seal {
            Seal::None => inner,
            Seal::Libsodium(key) => {
                let w = EncryptWriter::new(key, inner)
                    .map_err(|e| Error::Codec { object: "(encrypting writer)".into(), msg: e.to_string() })?;
                wrap_object(Box::new(w), "libsodium")
            }
            Seal::Pgp(key) => {
                let w = openpgp::encrypt_writer(key, inner)
                    .map_err(|e| Error::Codec { object: "(OpenPGP writer)".into(), msg: e.to_string() })?;
                wrap_object(w, "OpenPGP")
            }
        };
        if self.compression == Compression::None {
            return Ok(sealed);
        }
        let enc = encoder_with(self.compression, self.threads, self.zstd_layout, sealed).map_err(|e| Error::Codec {
            object: format!("({} writer)", self.compression.name()),
            msg: e.to_string(),
        })?;
        Ok(wrap_object(enc, self.compression.name()))
    }

    /// Start the encoded upload of `base` + extension; returns the object key and the writer.
    pub fn create(&self, storage: &dyn Storage, base: &str) -> Result<(String, Box<dyn ObjectWriter>)> {
        let key = self.object_name(base);
        let w = self.writer(storage.writer(&key)?)?;
        Ok((key, w))
    }

    /// Decode a raw object stream whose key is `object`: decrypt (with a key), then decompress
    /// by the key's extension. Read errors name the object and, without a key, suggest one.
    pub fn reader(&self, object: &str, raw: Box<dyn Read + Send>) -> Result<Box<dyn Read + Send>> {
        self.reader_opts(object, raw, true)
    }

    /// Only decrypt a raw object stream (with a key; without one it is returned as is), leaving
    /// it compressed: `walg-ext st get --no-decompress`.
    pub fn decrypt_reader(&self, object: &str, raw: Box<dyn Read + Send>) -> Result<Box<dyn Read + Send>> {
        Ok(match &self.seal {
            Seal::Libsodium(key) => named(object, Box::new(DecryptReader::new(key, raw))),
            Seal::Pgp(key) => named(object, openpgp::decrypt_reader(key, object, raw)?),
            Seal::None => raw,
        })
    }

    /// The same pipeline without encryption (`walg-ext st put --no-encrypt`).
    pub fn without_encryption(mut self) -> Pipeline {
        self.seal = Seal::None;
        self
    }

    /// `reader`; `frame_checksums` false when the caller checks the raw stream against a
    /// recorded hash (zstd's per-frame checksums are then skipped, see codec/zstd.rs).
    pub fn reader_opts(&self, object: &str, raw: Box<dyn Read + Send>, frame_checksums: bool) -> Result<Box<dyn Read + Send>> {
        let plain = self.decrypt_reader(object, raw)?;
        let ext = extension_of(object);
        let decoded = decompress_reader_opts(ext, object, plain, frame_checksums)?;
        if self.seal == Seal::None && !ext.is_empty() {
            return Ok(Box::new(KeyHint { inner: decoded }));
        }
        Ok(decoded)
    }

    /// A decoding error of an object read through this pipeline, with the missing-key hint when
    /// there is no key: garbage from decrypting nothing may also first fail in the consumer
    /// (e.g. the tar reader) rather than in the decompressor.
    pub fn explain(&self, e: Error) -> Error {
        match e {
            Error::Codec { object, msg } if self.seal == Seal::None && !msg.contains(KEY_HINT) => {
                Error::Codec { object, msg: format!("{msg} (maybe the object is encrypted: {KEY_HINT})") }
            }
            other => other,
        }
    }

    /// Open and decode `object`; `None` when it does not exist.
    pub fn open(&self, storage: &dyn Storage, object: &str) -> Result<Option<Box<dyn Read + Send>>> {
        match storage.get(object)? {
            None => Ok(None),
            Some(raw) => self.reader(object, raw).map(Some),
        }
    }

    /// Encode a whole buffer (compress, then encrypt).
    pub fn encode_bytes(&self, data: &[u8]) -> Result<Vec<u8>> {
        let err = |e: io::Error| Error::Codec { object: "(memory)".into(), msg: e.to_string() };
        let packed = super::compress_bytes(self.compression, data)?;
        let mut w: Box<dyn super::Encoder<Vec<u8>>> = match &self.seal {
            Seal::None => return Ok(packed),
            Seal::Libsodium(key) => {
                Box::new(EncryptWriter::new(key, Vec::with_capacity(packed.len() + packed.len() / 400 + 64)).map_err(err)?)
            }
            Seal::Pgp(key) => openpgp::encrypt_writer(key, Vec::with_capacity(packed.len() + 1024)).map_err(err)?,
        };
        io::Write::write_all(&mut w, &packed).map_err(err)?;
        w.finish().map_err(err)
    }
}

/// The existing object for `base` (e.g. "wal_005/000000010000000000000001"), probing every known
/// compression extension, then the bare name.
pub fn find_object(storage: &dyn Storage, base: &str) -> Result<Option<String>> {
    for ext in READ_EXTENSIONS {
        let key = if ext.is_empty() { base.to_string() } else { format!("{base}.{ext}") };
        if storage.exists(&key)? {
            return Ok(Some(key));
        }
    }
    Ok(None)
}

/// Without a key, a decompression failure may mean the object is encrypted: WAL-G's names do
/// not say, so the error does.
struct KeyHint {
    inner: Box<dyn Read + Send>,
}

impl Read for KeyHint {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof | io::ErrorKind::Other => {
                io::Error::new(e.kind(), format!("{e} (maybe the object is encrypted: {KEY_HINT})"))
            }
            _ => e,
        })
    }
}
