//! Streaming uploads: one PUT with a chunked body, fed through a bounded queue of CHUNK-sized
//! buffers (memory per writer: CHUNK x (QUEUE + 2): the queue, the sender's slot and the buffer
//! being filled). Swift's object server writes the body to a temporary file and puts it in
//! place only when the final chunk arrived, so the object appears
//! whole at `finish` or not at all: a dropped writer ends the body with an error (the connection
//! is cut before the final chunk), and a killed process cuts it too. Nothing is left behind (no
//! segments), so there is nothing for `pending_uploads` to report.
//!
//! Integrity: the MD5 of what was sent is compared with the ETag Swift computed on what it
//! stored. Not retried by request (the body cannot be replayed): a failure fails the upload and
//! the caller's push is retried as a whole; so is a token that expired between the check in
//! `new` and the PUT (the 401 drops it, the retry authenticates again).

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use md5::{Digest, Md5};

use super::{header, transport_error, Inner};
use crate::error::{Error, Result};
use crate::storage::s3::{runtime, wait};
use crate::storage::ObjectWriter;

/// Bytes per body chunk handed to the connection.
const CHUNK: usize = 1 << 20;
/// Chunks queued ahead of the connection.
const QUEUE: usize = 4;

type Answer = std::result::Result<reqwest::Response, reqwest::Error>;

pub(crate) struct SwiftWriter {
    inner: Arc<Inner>,
    key: String,
    url: String,
    token: Arc<super::Session>,
    tx: Option<mpsc::Sender<io::Result<Bytes>>>,
    /// Set by `finish` before the queue closes: a body that ends without it is an abort.
    complete: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<Answer>>,
    buf: Vec<u8>,
    md5: Md5,
    written: u64,
}

impl SwiftWriter {
    pub(crate) fn new(inner: Arc<Inner>, key: &str) -> Result<SwiftWriter> {
        let client = inner.client("write", key)?;
        // The body cannot be sent twice, so the token and the container are checked first (one
        // HEAD; a 401 renews the token): an expired token or a missing container is then a
        // clear answer here, not a connection Swift closes in the middle of the body.
        let session = wait(async {
            let resp = inner.send("write", key, None, |c, url| c.head(url)).await?;
            if !resp.status().is_success() {
                return Err(inner.status_error("write", key, resp).await);
            }
            inner.session("write", key).await
        })?;
        let url = inner.target(&session, Some(&inner.name(key)));
        let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(QUEUE);
        let complete = Arc::new(AtomicBool::new(false));
        let done = complete.clone();
        let body = futures::stream::poll_fn(move |cx| match rx.poll_next_unpin(cx) {
            // The queue closed without `finish`: fail the body so Swift stores nothing.
            Poll::Ready(None) if !done.load(Ordering::SeqCst) => Poll::Ready(Some(Err(io::Error::other("upload abandoned")))),
            other => other,
        });
        let req = client.put(&url).header("X-Auth-Token", &session.token).body(reqwest::Body::wrap_stream(body));
        let task = runtime().spawn(async move { req.send().await });
        Ok(SwiftWriter { inner, key: key.to_string(), url, token: session, tx: Some(tx), complete, task: Some(task), buf: Vec::new(), md5: Md5::new(), written: 0 })
    }

    /// The upload's answer, once the body is done (or the server answered early).
    fn answer(&mut self) -> Result<u64> {
        let task = self.task.take().ok_or_else(|| Error::storage("write", self.key.clone(), io::Error::other("writer already finished")))?;
        let (inner, key) = (&self.inner, self.key.as_str());
        let resp = match wait(task) {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(transport_error("write", key, &self.url, &e)),
            Err(e) => return Err(Error::storage("write", key.to_string(), io::Error::other(format!("upload task: {e}")))),
        };
        let status = resp.status().as_u16();
        if status == 401 {
            inner.drop_session(&self.token);
            return Err(Error::storage("write", key.to_string(), io::Error::new(io::ErrorKind::ConnectionAborted, format!(
                "{}: the Swift token expired during the upload; nothing was stored: upload again", inner.url(key)
            ))));
        }
        if status != 201 {
            return Err(wait(inner.status_error("write", key, resp)));
        }
        let sent = super::hex(&self.md5.clone().finalize());
        match header(&resp, "etag") {
            Some(t) if t.trim_matches('"') == sent => Ok(self.written),
            other => Err(Error::storage("write", key.to_string(), io::Error::new(io::ErrorKind::InvalidData, format!(
                "{}: Swift stored an object whose ETag ({}) is not the MD5 of what was sent ({sent}): upload it again",
                inner.url(key), other.unwrap_or_default()
            )))),
        }
    }

    fn send_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        let tx = self.tx.as_mut().ok_or_else(|| io::Error::other("writer already finished"))?;
        if wait(tx.send(Ok(data))).is_ok() {
            return Ok(());
        }
        // The body was dropped: Swift answered before taking all of it (an error).
        self.tx = None;
        let e = match self.answer() {
            Err(e) => e,
            Ok(_) => Error::storage("write", self.key.clone(), io::Error::other("Swift stored the object before the whole body was sent")),
        };
        Err(match e {
            Error::Storage { source, .. } => source,
            other => io::Error::other(other.to_string()),
        })
    }
}

impl Write for SwiftWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(CHUNK);
        }
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        self.md5.update(&data[..n]);
        self.written += n as u64;
        if self.buf.len() >= CHUNK {
            self.send_buf()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for SwiftWriter {
    fn finish(mut self: Box<Self>) -> Result<u64> {
        self.send_buf().map_err(|e| Error::storage("write", self.key.clone(), e))?;
        self.complete.store(true, Ordering::SeqCst);
        // Closing the queue ends the body with the final chunk: Swift commits.
        self.tx = None;
        self.answer()
    }
}

impl Drop for SwiftWriter {
    fn drop(&mut self) {
        // Without `finish`, `complete` stays false: dropping the queue fails the body and the
        // connection is cut before the final chunk. The task ends on its own.
        self.tx = None;
    }
}
