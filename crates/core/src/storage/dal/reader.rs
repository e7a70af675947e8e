//! Streaming reads with resume, for the OpenDAL backends: one GET for the rest of the object, and
//! after a broken body a new one from the byte where it broke, pinned to the version `stat` saw
//! (`Pin`: an object replaced meanwhile is an error, never a mix of two versions). Requests are
//! retried through retry.rs; when the retries are used up the read fails (kind Unreachable)
//! instead of ending early.

use std::io::{self, Read};
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use opendal::FuturesBytesStream;

use super::{DalBackend, DalErr, Pin};
use crate::error::Result;
use crate::storage::body::{Body, BodyReader};
use crate::storage::retry;
use crate::storage::s3::wait;

pub(crate) struct DalReader<B: DalBackend> {
    inner: Arc<B>,
    key: String,
    pin: Option<Pin>,
    stream: Option<FuturesBytesStream>,
    /// Where the next request starts (BodyReader's count).
    pos: u64,
    size: u64,
    reconnects_left: u32,
}

async fn open_at(op: &opendal::Operator, key: &str, pin: Option<&Pin>, pos: u64, size: u64) -> std::result::Result<FuturesBytesStream, DalErr> {
    let mut r = op.reader_with(key);
    match pin {
        Some(Pin::ETag(t)) => r = r.if_match(t),
        Some(Pin::Version(v)) => r = r.if_version_match(v),
        None => {}
    }
    let reader = r.await.map_err(DalErr)?;
    reader.into_bytes_stream(pos..size).await.map_err(DalErr)
}

/// The object as a stream, or None when the service says it is not there.
pub(crate) fn open<B: DalBackend>(inner: Arc<B>, key: &str) -> Result<Option<Box<dyn Read + Send>>> {
    let op = inner.operator("get", key)?;
    // Not retried here: `storage::open`'s decorator retries the whole `get`.
    let meta = match wait(op.stat(key)) {
        Ok(m) => m,
        Err(e) if inner.is_not_found(&e) => return Ok(None),
        Err(e) => return Err(inner.error("get", key, &e)),
    };
    let size = meta.content_length();
    let pin = inner.pin(&meta);
    let reconnects_left = inner.max_retries();
    Ok(Some(Box::new(BodyReader::new(DalReader { inner, key: key.to_string(), pin, stream: None, pos: 0, size, reconnects_left }))))
}

/// A transport failure after the retries: its kind must stay Unreachable (ConnectionAborted),
/// never read as undecodable data.
fn lost(e: crate::Error) -> io::Error {
    let kind = if e.is_transient() { io::ErrorKind::ConnectionAborted } else { io::ErrorKind::Other };
    io::Error::new(kind, e.to_string())
}

impl<B: DalBackend> DalReader<B> {
    /// (Re)open the body from `pos`.
    fn connect(&mut self, why: Option<String>) -> io::Result<()> {
        if let Some(why) = &why {
            if self.reconnects_left == 0 {
                let e = opendal::Error::new(opendal::ErrorKind::Unexpected, format!("the download broke off at byte {} of {}: {why}", self.pos, self.size)).set_temporary();
                return Err(lost(self.inner.error("get", &self.key, &e)));
            }
            self.reconnects_left -= 1;
        }
        let op = self.inner.operator("get", &self.key).map_err(lost)?;
        let what = format!("get {} from byte {}", self.inner.url(&self.key), self.pos);
        let (key, pin, pos, size) = (self.key.as_str(), self.pin.as_ref(), self.pos, self.size);
        let r = wait(retry::run_async(&self.inner.policy(), &what, || open_at(&op, key, pin, pos, size)));
        match r {
            Ok(s) => {
                self.stream = Some(s);
                Ok(())
            }
            Err((e, _)) => match self.inner.replaced(&e.0) {
                Some(why) => Err(io::Error::other(format!("{}: {why}: read it again", self.inner.url(&self.key)))),
                None => Err(lost(self.inner.error("get", &self.key, &e.0))),
            },
        }
    }
}

impl<B: DalBackend> Body for DalReader<B> {
    fn next_piece(&mut self, pos: u64) -> io::Result<Option<Bytes>> {
        self.pos = pos;
        loop {
            if self.pos >= self.size {
                return Ok(None);
            }
            if self.stream.is_none() {
                self.connect(None)?;
            }
            let stream = self.stream.as_mut().expect("connected");
            let why = match wait(stream.try_next()) {
                Ok(Some(b)) => return Ok(Some(b)),
                Ok(None) => "the body ended early".to_string(),
                Err(e) => e.to_string(),
            };
            self.stream = None;
            self.connect(Some(why))?;
        }
    }
}
