//! Decoding on a thread of its own: `ReadAhead` runs a reader (download, decryption,
//! decompression) on a helper thread that fills buffers ahead of the consumer (tar extraction,
//! file digests, writes), so one object's work is spread over two cores. A restore extracts its
//! parts in parallel, but the last large part otherwise finishes alone on one core while decoding
//! and writing take turns.
//!
//! Invariants:
//! - The consumer sees exactly the inner reader's bytes, in order, then its end or its error
//!   (same kind and message): a failure is never turned into an early end.
//! - Memory is bounded: `DEPTH` buffers of `CHUNK` bytes, recycled.
//! - Dropping the ReadAhead stops the helper and waits for it, so whatever the inner reader
//!   records as it reads (a VerifyingReader's verdict) is final once the ReadAhead is gone.

use std::io::{self, Read};
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};

const CHUNK: usize = 1 << 20;
const DEPTH: usize = 4;

pub struct ReadAhead {
    full: Option<Receiver<io::Result<Vec<u8>>>>,
    empty: Sender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
    done: bool,
    helper: Option<JoinHandle<()>>,
}

impl ReadAhead {
    /// Start reading `inner` ahead on a helper thread. If no thread can be started, the inner
    /// reader is read in the caller's thread instead (the same bytes, only slower).
    pub fn new(name: &str, inner: Box<dyn Read + Send>) -> Box<dyn Read + Send> {
        let (full_tx, full_rx) = bounded::<io::Result<Vec<u8>>>(DEPTH);
        let (empty_tx, empty_rx) = bounded::<Vec<u8>>(DEPTH + 1);
        // The helper owns `inner` only once the spawn succeeded; keep it reachable otherwise.
        let slot = std::sync::Arc::new(std::sync::Mutex::new(Some(inner)));
        let theirs = slot.clone();
        let spawned = crate::threads::spawn(format!("walg-decode-{name}"), move || {
            let Some(inner) = theirs.lock().unwrap_or_else(|p| p.into_inner()).take() else { return };
            fill(inner, &full_tx, &empty_rx);
        });
        match spawned {
            Ok(helper) => Box::new(ReadAhead { full: Some(full_rx), empty: empty_tx, current: Vec::new(), pos: 0, done: false, helper: Some(helper) }),
            Err(_) => slot.lock().unwrap_or_else(|p| p.into_inner()).take().expect("not taken: the thread never started"),
        }
    }
}

/// The helper's loop: read `inner` into recycled buffers until its end, its error or the
/// consumer going away.
fn fill(mut inner: Box<dyn Read + Send>, full: &Sender<io::Result<Vec<u8>>>, empty: &Receiver<Vec<u8>>) {
    loop {
        let mut buf = empty.try_recv().unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        buf.resize(CHUNK, 0);
        let mut n = 0;
        let outcome = loop {
            match inner.read(&mut buf[n..]) {
                Ok(0) => break Ok(true),
                Ok(k) => {
                    n += k;
                    if n == CHUNK {
                        break Ok(false);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        buf.truncate(n);
        match outcome {
            Ok(at_end) => {
                if n > 0 && full.send(Ok(buf)).is_err() {
                    return;
                }
                if at_end {
                    return; // the channel's close is the end
                }
            }
            Err(e) => {
                // Bytes read before the error first, then the error itself.
                if n > 0 && full.send(Ok(buf)).is_err() {
                    return;
                }
                let _ = full.send(Err(e));
                return;
            }
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        while self.pos == self.current.len() {
            if self.done {
                return Ok(0);
            }
            let next = self.full.as_ref().and_then(|rx| rx.recv().ok());
            let used = std::mem::take(&mut self.current);
            if used.capacity() > 0 {
                let _ = self.empty.try_send(used);
            }
            self.pos = 0;
            match next {
                Some(Ok(buf)) => self.current = buf,
                Some(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                None => self.done = true,
            }
        }
        let n = out.len().min(self.current.len() - self.pos);
        out[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        // Closing the channel makes the helper's next send fail, so it stops after the read it
        // is in; waiting for it makes the inner reader's own records final.
        self.full = None;
        if let Some(h) = self.helper.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Yields `data` in odd-sized pieces, then `fail` (if any) instead of the end.
    struct Pieces {
        data: Vec<u8>,
        pos: usize,
        fail: Option<io::ErrorKind>,
    }

    impl Read for Pieces {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.pos == self.data.len() {
                return match self.fail.take() {
                    Some(k) => Err(io::Error::new(k, "storage went away")),
                    None => Ok(0),
                };
            }
            let n = out.len().min(7919).min(self.data.len() - self.pos);
            out[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn the_same_bytes_in_order_for_every_size() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 12345] {
            let want = data(len);
            let mut r = ReadAhead::new("t", Box::new(Pieces { data: want.clone(), pos: 0, fail: None }));
            let mut got = Vec::new();
            r.read_to_end(&mut got).unwrap();
            assert!(got == want, "length {len}: got {} bytes", got.len());
            assert_eq!(r.read(&mut [0u8; 10]).unwrap(), 0, "stays at its end");
        }
    }

    #[test]
    fn an_error_comes_after_the_bytes_before_it_never_as_an_end() {
        let want = data(3 * CHUNK + 99);
        let mut r = ReadAhead::new("t", Box::new(Pieces { data: want.clone(), pos: 0, fail: Some(io::ErrorKind::ConnectionAborted) }));
        let mut got = Vec::new();
        let e = r.read_to_end(&mut got).unwrap_err();
        assert_eq!((e.kind(), e.to_string()), (io::ErrorKind::ConnectionAborted, "storage went away".to_string()));
        assert!(got == want, "every byte before the error arrives: {} of {}", got.len(), want.len());
    }

    /// Dropped half-way, the helper stops and is waited for: the inner reader is gone (dropped
    /// by the helper) when the drop returns.
    #[test]
    fn dropping_it_stops_and_joins_the_helper() {
        struct Flag(std::sync::Arc<std::sync::atomic::AtomicBool>, Pieces);
        impl Read for Flag {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                self.1.read(out)
            }
        }
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let inner = Flag(dropped.clone(), Pieces { data: data(64 * CHUNK), pos: 0, fail: None });
        let mut r = ReadAhead::new("t", Box::new(inner));
        let mut first = vec![0u8; 1000];
        r.read_exact(&mut first).unwrap();
        assert_eq!(first, data(1000));
        drop(r);
        assert!(dropped.load(std::sync::atomic::Ordering::SeqCst), "the inner reader outlived the ReadAhead");
    }
}
