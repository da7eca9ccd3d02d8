//! The byte stream of a Parquet shard being written: CRC-32 of column chunks,
//! SHA-256 of the file, and the tail kept for the footer's checksums.

use std::collections::VecDeque;
use std::io::{self, Write};

use sha2::{Digest, Sha256};

/// Passes everything to `inner`, counts it, hashes it (SHA-256) and computes
/// the CRC-32 of registered byte ranges.
///
/// Ranges are registered once their position is known, which can be after
/// their bytes went through (the Parquet writer learns where a column chunk
/// lies only when it has written it); bytes past the last registered range
/// are kept until then (at most one row group). Bytes from
/// [`keep_tail_from`](Self::keep_tail_from) on are kept instead of hashed, so
/// the footer can be patched before it is hashed.
#[derive(Debug)]
pub(crate) struct ChecksumSink<W> {
    inner: W,
    pos: u64,
    sha: Sha256,
    tail_from: Option<u64>,
    tail: Vec<u8>,
    pending: Vec<u8>,
    pending_start: u64,
    ranges: VecDeque<(u64, u64)>,
    registered_end: u64,
    crcs: Vec<u32>,
    /// A range registered below bytes already dropped (a writer bug).
    bad_range: bool,
}

/// What a finished [`ChecksumSink`] hands back.
#[derive(Debug)]
pub(crate) struct SinkParts<W> {
    /// The inner writer.
    pub inner: W,
    /// Bytes written.
    pub bytes: u64,
    /// SHA-256 state over the bytes before the tail.
    pub sha: Sha256,
    /// The bytes from the tail offset on.
    pub tail: Vec<u8>,
    /// CRC-32 of each registered range, in order.
    pub crcs: Vec<u32>,
}

impl<W: Write> ChecksumSink<W> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: W) -> Self {
        ChecksumSink {
            inner,
            pos: 0,
            sha: Sha256::new(),
            tail_from: None,
            tail: Vec::new(),
            pending: Vec::new(),
            pending_start: 0,
            ranges: VecDeque::new(),
            registered_end: 0,
            crcs: Vec::new(),
            bad_range: false,
        }
    }

    /// Adds the range `[start, start + len)`; ranges come in file order.
    pub(crate) fn register(&mut self, start: u64, len: u64) {
        if start < self.pending_start.max(self.registered_end) {
            self.bad_range = true;
            return;
        }
        self.ranges.push_back((start, start + len));
        self.registered_end = start + len;
        self.settle();
    }

    /// Keeps the bytes from offset `at` on (the page indexes and footer still
    /// to come) instead of hashing them.
    pub(crate) fn keep_tail_from(&mut self, at: u64) {
        self.tail_from = Some(at);
    }

    /// Completes the ranges whose bytes have all arrived and drops the bytes
    /// no range can need any more.
    fn settle(&mut self) {
        while let Some(&(s, e)) = self.ranges.front() {
            if e > self.pos {
                break;
            }
            let (a, b) = (
                (s - self.pending_start) as usize,
                (e - self.pending_start) as usize,
            );
            self.crcs.push(crc32fast::hash(&self.pending[a..b]));
            self.ranges.pop_front();
        }
        let keep_from = self
            .ranges
            .front()
            .map_or(self.registered_end, |r| r.0)
            .min(self.pos);
        if keep_from > self.pending_start {
            self.pending
                .drain(..(keep_from - self.pending_start) as usize);
            self.pending_start = keep_from;
        }
    }

    /// The parts, once every byte went through; an error when a registered
    /// range is incomplete or was registered too late.
    pub(crate) fn finish(self) -> io::Result<SinkParts<W>> {
        if self.bad_range || !self.ranges.is_empty() {
            return Err(io::Error::other("column chunk checksums are incomplete"));
        }
        Ok(SinkParts {
            inner: self.inner,
            bytes: self.pos,
            sha: self.sha,
            tail: self.tail,
            crcs: self.crcs,
        })
    }
}

impl<W: Write> Write for ChecksumSink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        let data = &buf[..n];
        let hashed = match self.tail_from {
            Some(t) => (t.saturating_sub(self.pos) as usize).min(n),
            None => n,
        };
        self.sha.update(&data[..hashed]);
        self.tail.extend_from_slice(&data[hashed..]);
        self.pending.extend_from_slice(data);
        self.pos += n as u64;
        self.settle();
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
