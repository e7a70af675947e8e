//! Streaming uploads: bytes gather in one WALG_AZURE_BUFFER_SIZE buffer and go to OpenDAL's
//! block-blob writer a block at a time, up to WALG_AZURE_MAX_BUFFERS blocks in flight. Nothing
//! is visible until `finish` commits the block list (an object of one buffer or less is one
//! PUT). Dropping the writer aborts: staged blocks stay uncommitted, invisible, and Azure drops
//! them after a week.

use std::io::{self, Write};
use std::sync::Arc;

use super::Inner;
use crate::storage::dal::DalBackend;
use crate::error::{Error, Result};
use crate::storage::s3::wait;
use crate::storage::ObjectWriter;

pub(crate) struct AzureWriter {
    inner: Arc<Inner>,
    key: String,
    w: Option<opendal::Writer>,
    buf: Vec<u8>,
    written: u64,
}

impl AzureWriter {
    pub(crate) fn new(inner: Arc<Inner>, key: &str) -> Result<AzureWriter> {
        let op = inner.operator("write", key)?;
        let (chunk, concurrent) = (inner.cfg.buffer_size, inner.cfg.max_buffers);
        let w = wait(async { op.writer_with(key).chunk(chunk).concurrent(concurrent).await })
            .map_err(|e| inner.error("write", key, &e))?;
        Ok(AzureWriter { key: key.to_string(), w: Some(w), buf: Vec::new(), written: 0, inner })
    }

    fn io_err(&self, e: &opendal::Error) -> io::Error {
        match self.inner.error("write", &self.key, e) {
            Error::Storage { source, .. } => source,
            other => io::Error::other(other.to_string()),
        }
    }

    /// Hand the buffer to OpenDAL (which uploads it as a block, or keeps it for one PUT).
    fn flush_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = bytes::Bytes::from(std::mem::take(&mut self.buf));
        let w = self.w.as_mut().ok_or_else(|| io::Error::other("writer already finished"))?;
        match wait(w.write(data)) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.io_err(&e)),
        }
    }
}

impl Write for AzureWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let cap = self.inner.cfg.buffer_size;
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(cap);
        }
        let n = data.len().min(cap - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        self.written += n as u64;
        if self.buf.len() >= cap {
            self.flush_buf()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for AzureWriter {
    fn finish(mut self: Box<Self>) -> Result<u64> {
        self.flush_buf().map_err(|e| Error::storage("write", self.key.clone(), e))?;
        let mut w = self.w.take().expect("not finished twice");
        wait(w.close()).map_err(|e| self.inner.error("write", &self.key, &e))?;
        Ok(self.written)
    }
}

impl Drop for AzureWriter {
    fn drop(&mut self) {
        if let Some(mut w) = self.w.take() {
            // Uncommitted blocks are never visible; aborting only tells OpenDAL to stop.
            let _ = wait(w.abort());
        }
    }
}
