//! Streaming uploads. Bytes gather in one GCS_MAX_CHUNK_SIZE buffer; an object that ends within
//! it is one insert request (atomic: the object appears whole or not at all). A larger object
//! becomes a resumable upload (JSON API) fed in 8 MiB chunks, which GCS makes visible only when
//! the last chunk arrives with the total size, in `finish`. Dropping the writer cancels the
//! session; a killed writer's session holds no visible object and GCS drops it after a week.
//! Memory per writer: GCS_MAX_CHUNK_SIZE + 16 MiB (the first buffer and OpenDAL's 8 MiB chunk).
//!
//! Why resumable and not OpenDAL's default for large writes (the XML API's multipart upload):
//! it is what Google's own clients use (WAL-G's Go client among them), its leftovers expire by
//! themselves instead of holding billed parts until aborted, and the emulator the tests run
//! (fake-gcs-server) speaks it but has no XML multipart upload, so the tested path is the path
//! used. OpenDAL takes the resumable path for a write with a precondition, so the writer gives
//! one that changes nothing for a single writer: the object's generation from a stat just before
//! (`ifGenerationMatch`), or "no object yet" (`ifGenerationMatch=0`). A second writer that
//! commits the same key between that stat and this upload's end makes this upload fail (412,
//! nothing stored by it) rather than be overwritten unseen; the conformance suite allows that.

use std::io::{self, Write};
use std::sync::Arc;

use bytes::Bytes;

use super::Inner;
use crate::storage::dal::{DalBackend, DalErr};
use crate::error::{Error, Result};
use crate::storage::retry;
use crate::storage::s3::wait;
use crate::storage::ObjectWriter;

/// OpenDAL's resumable chunk (opendal-service-gcs: RESUMABLE_CHUNK_SIZE): the size of the buffers
/// handed on once the upload is resumable.
const RESUMABLE_CHUNK: usize = 8 << 20;

pub(crate) struct GcsWriter {
    inner: Arc<Inner>,
    key: String,
    buf: Vec<u8>,
    /// Buffer size: GCS_MAX_CHUNK_SIZE until the upload turns resumable, then RESUMABLE_CHUNK.
    cap: usize,
    /// The resumable upload, once the object outgrew one buffer.
    w: Option<opendal::Writer>,
    written: u64,
}

impl GcsWriter {
    pub(crate) fn new(inner: Arc<Inner>, key: &str) -> GcsWriter {
        let cap = inner.cfg.max_chunk_size;
        GcsWriter { inner, key: key.to_string(), buf: Vec::new(), cap, w: None, written: 0 }
    }

    fn io_err(&self, e: Error) -> io::Error {
        match e {
            Error::Storage { source, .. } => source,
            other => io::Error::other(other.to_string()),
        }
    }

    /// Start the resumable upload, with the precondition the module comment explains.
    fn start_resumable(&self) -> Result<opendal::Writer> {
        let op = self.inner.operator("write", &self.key)?;
        let key = self.key.as_str();
        let what = format!("stat {} before a resumable upload", self.inner.url(key));
        // A bare 404 counts as "no object yet" here: were the bucket missing, the upload's
        // first request says so.
        let stat = wait(retry::run_async(&self.inner.policy(), &what, || async {
            match op.stat(key).await {
                Ok(m) => Ok(Some(m.version().map(str::to_string))),
                Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(DalErr(e)),
            }
        }));
        let generation = stat.map_err(|(e, _)| self.inner.error("write", key, &e.0))?;
        let w = match generation {
            Some(Some(g)) => wait(async { op.writer_with(key).if_version_match(&g).await }),
            Some(None) => {
                return Err(Error::storage("write", key, io::Error::other(format!(
                    "{}: GCS gave no generation for the object: cannot replace it safely",
                    self.inner.url(key)
                ))))
            }
            None => wait(async { op.writer_with(key).if_not_exists(true).await }),
        };
        w.map_err(|e| self.inner.error("write", key, &e))
    }

    /// Hand the buffer to the resumable upload, starting it first if needed.
    fn flush_buf(&mut self) -> io::Result<()> {
        if self.w.is_none() {
            let w = self.start_resumable().map_err(|e| self.io_err(e))?;
            self.w = Some(w);
            self.cap = RESUMABLE_CHUNK;
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = Bytes::from(std::mem::take(&mut self.buf));
        let w = self.w.as_mut().expect("started above");
        match wait(w.write(data)) {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = self.inner.error("write", &self.key, &e);
                Err(self.io_err(e))
            }
        }
    }
}

impl Write for GcsWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        // Full and more is coming: the object is larger than one buffer. (A full buffer at
        // `finish` is still one request.)
        if self.buf.len() >= self.cap {
            self.flush_buf()?;
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(self.cap);
        }
        let n = data.len().min(self.cap - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for GcsWriter {
    fn finish(mut self: Box<Self>) -> Result<u64> {
        let Some(_) = self.w else {
            // One request: the whole object or nothing.
            let op = self.inner.operator("write", &self.key)?;
            let body = Bytes::from(std::mem::take(&mut self.buf));
            wait(op.write(&self.key, body)).map_err(|e| self.inner.error("write", &self.key, &e))?;
            return Ok(self.written);
        };
        self.flush_buf().map_err(|e| Error::storage("write", self.key.clone(), e))?;
        let mut w = self.w.take().expect("resumable");
        wait(w.close()).map_err(|e| self.inner.error("write", &self.key, &e))?;
        Ok(self.written)
    }
}

impl Drop for GcsWriter {
    fn drop(&mut self) {
        if let Some(mut w) = self.w.take() {
            // Cancel the session; an unfinished one is never visible either way.
            let _ = wait(w.abort());
        }
    }
}
