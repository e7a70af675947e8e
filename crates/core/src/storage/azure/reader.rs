//! Streaming reads with resume: one GET for the rest of the blob, and after a broken body a new
//! one from the byte where it broke, pinned to the blob's ETag (a blob replaced meanwhile is an
//! error, never a mix of two versions). Requests are retried through retry.rs; when the retries
//! are used up the read fails (kind Unreachable) instead of ending early.

use std::io::{self, Read};
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use opendal::FuturesBytesStream;

use super::{DalErr, Inner};
use crate::error::Result;
use crate::storage::retry;
use crate::storage::s3::wait;

pub(crate) struct AzureReader {
    inner: Arc<Inner>,
    key: String,
    etag: Option<String>,
    stream: Option<FuturesBytesStream>,
    chunk: Bytes,
    pos: u64,
    size: u64,
    reconnects_left: u32,
}

async fn open_at(op: &opendal::Operator, key: &str, etag: Option<&str>, pos: u64, size: u64) -> std::result::Result<FuturesBytesStream, DalErr> {
    let mut r = op.reader_with(key);
    if let Some(t) = etag {
        r = r.if_match(t);
    }
    let reader = r.await.map_err(DalErr)?;
    reader.into_bytes_stream(pos..size).await.map_err(DalErr)
}

pub(crate) fn open(inner: Arc<Inner>, key: &str) -> Result<Option<Box<dyn Read + Send>>> {
    let op = inner.op("get", key)?;
    // Not retried here: `storage::open`'s decorator retries the whole `get`.
    let meta = match wait(op.stat(key)) {
        Ok(m) => m,
        Err(e) if Inner::is_not_found(&e) => return Ok(None),
        Err(e) => return Err(inner.error("get", key, &e)),
    };
    let size = meta.content_length();
    let etag = meta.etag().map(str::to_string);
    let reconnects_left = inner.cfg.max_retries;
    Ok(Some(Box::new(AzureReader { inner, key: key.to_string(), etag, stream: None, chunk: Bytes::new(), pos: 0, size, reconnects_left })))
}

/// A transport failure after the retries: its kind must stay Unreachable (ConnectionAborted),
/// never read as undecodable data.
fn lost(e: crate::Error) -> io::Error {
    let kind = if e.is_transient() { io::ErrorKind::ConnectionAborted } else { io::ErrorKind::Other };
    io::Error::new(kind, e.to_string())
}

impl AzureReader {
    /// (Re)open the body from `pos`.
    fn connect(&mut self, why: Option<String>) -> io::Result<()> {
        if let Some(why) = &why {
            if self.reconnects_left == 0 {
                let e = opendal::Error::new(opendal::ErrorKind::Unexpected, format!("the download broke off at byte {} of {}: {why}", self.pos, self.size)).set_temporary();
                return Err(lost(self.inner.error("get", &self.key, &e)));
            }
            self.reconnects_left -= 1;
        }
        let op = self.inner.op("get", &self.key).map_err(lost)?;
        let what = format!("get {} from byte {}", self.inner.url(&self.key), self.pos);
        let (key, etag, pos, size) = (self.key.as_str(), self.etag.as_deref(), self.pos, self.size);
        let r = wait(retry::run_async(&self.inner.policy(), &what, || open_at(&op, key, etag, pos, size)));
        match r {
            Ok(s) => {
                self.stream = Some(s);
                Ok(())
            }
            Err((e, _)) if e.0.kind() == opendal::ErrorKind::ConditionNotMatch => Err(io::Error::other(format!(
                "{}: the blob was replaced while it was read (ETag changed): read it again",
                self.inner.url(&self.key)
            ))),
            Err((e, _)) => Err(lost(self.inner.error("get", &self.key, &e.0))),
        }
    }
}

impl Read for AzureReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if let Some(n) = crate::storage::serve_chunk(&mut self.chunk, out, &mut self.pos) {
                return Ok(n);
            }
            if self.pos >= self.size {
                return Ok(0);
            }
            if self.stream.is_none() {
                self.connect(None)?;
            }
            let stream = self.stream.as_mut().expect("connected");
            match wait(stream.try_next()) {
                Ok(Some(b)) => self.chunk = b,
                Ok(None) => {
                    self.stream = None;
                    self.connect(Some("the body ended early".into()))?;
                }
                Err(e) => {
                    self.stream = None;
                    self.connect(Some(e.to_string()))?;
                }
            }
        }
    }
}
