//! The `Read` side shared by every streaming reader (s3, azure, gcs, swift): the caller's reads are
//! served from the body piece received last, and the next piece is asked for only when it is used
//! up. What differs between backends (how a piece is fetched, how a broken body is resumed and
//! how often) is their `Body`; the byte count kept here is where a resume starts.

use std::io::{self, Read};

use bytes::Bytes;

/// An object's body, piece by piece.
pub(crate) trait Body {
    /// The next piece from byte `pos` of the object on (resuming after a break, within the
    /// backend's retries); None at the end of the object, never before it (a body that ends
    /// early is resumed or an error).
    fn next_piece(&mut self, pos: u64) -> io::Result<Option<Bytes>>;
}

pub(crate) struct BodyReader<B> {
    body: B,
    piece: Bytes,
    /// Bytes handed to the caller so far.
    pos: u64,
}

impl<B: Body> BodyReader<B> {
    pub(crate) fn new(body: B) -> BodyReader<B> {
        BodyReader { body, piece: Bytes::new(), pos: 0 }
    }
}

impl<B: Body> Read for BodyReader<B> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        // An empty piece (a body may send one) is passed over.
        while self.piece.is_empty() {
            match self.body.next_piece(self.pos)? {
                Some(p) => self.piece = p,
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.piece.len());
        out[..n].copy_from_slice(&self.piece.split_to(n));
        self.pos += n as u64;
        Ok(n)
    }
}
