//! What the Parquet decoder reads from: column chunks read once and checked
//! ([`read_checked`]), or the open file itself for shards without checksums
//! ([`FileChunks`]). Both read with positional reads of one open file, so
//! threads sharing a shard never move each other's file position.

use std::fs::File;
use std::io::{BufReader, Read};
use std::sync::Arc;

use bytes::{Buf, Bytes};
use parquet::errors::ParquetError;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::reader::{ChunkReader, Length};

use super::{chunk_range, Checksums, Msg};
use kd_core::fs::{describe_read_error, read_exact_at};

/// Column chunks held in memory, each checked against its CRC-32; reads
/// outside them fail.
#[derive(Debug)]
pub(crate) struct CheckedChunks {
    len: u64,
    /// `(file offset, bytes)`, by offset.
    chunks: Vec<(u64, Bytes)>,
}

/// Reads column chunks `columns` (leaf indices) of row group `rg` from
/// `file` (`opened_len` bytes when opened) and checks each against `sums`.
pub(crate) fn read_checked(
    file: &File,
    opened_len: u64,
    meta: &ParquetMetaData,
    sums: &Checksums,
    rg: usize,
    columns: &[usize],
) -> Result<CheckedChunks, Msg> {
    let group = meta
        .row_groups()
        .get(rg)
        .ok_or_else(|| format!("no row group {rg}"))?;
    let expected = sums
        .row_groups
        .get(rg)
        .ok_or_else(|| format!("no checksums for row group {rg}"))?;
    let mut chunks = Vec::with_capacity(columns.len());
    for &c in columns {
        let name = group.columns().get(c).map_or_else(
            || c.to_string(),
            |col| format!("`{}`", col.column_path().string()),
        );
        let (start, len) = chunk_range(group, c)?;
        if start.checked_add(len).is_none_or(|end| end > opened_len) {
            return Err(format!(
                "column {name}: bytes {start}+{len} lie past the end of the file ({opened_len})"
            ));
        }
        let mut buf = vec![0u8; len as usize];
        read_exact_at(file, &mut buf, start).map_err(|e| {
            format!(
                "column {name}: {}",
                describe_read_error(file, opened_len, &e)
            )
        })?;
        let crc = crc32fast::hash(&buf);
        let want = expected.get(c).copied().unwrap_or(!crc);
        if crc != want {
            return Err(format!(
                "column {name}: crc32 {crc:08x} != {want:08x} in the footer"
            ));
        }
        chunks.push((start, Bytes::from(buf)));
    }
    chunks.sort_by_key(|(s, _)| *s);
    Ok(CheckedChunks {
        len: opened_len,
        chunks,
    })
}

impl CheckedChunks {
    /// `length` bytes (or all to the end of its chunk) from file offset `start`.
    fn slice(&self, start: u64, length: Option<usize>) -> parquet::errors::Result<Bytes> {
        let i = self.chunks.partition_point(|(s, _)| *s <= start);
        let outside = || {
            ParquetError::General(format!(
                "read at {start} lies outside the checked column chunks"
            ))
        };
        let (s, b) = i
            .checked_sub(1)
            .and_then(|i| self.chunks.get(i))
            .ok_or_else(outside)?;
        let off = (start - s) as usize;
        let end = match length {
            Some(l) => off.checked_add(l).ok_or_else(outside)?,
            None => b.len(),
        };
        if off > b.len() || end > b.len() {
            return Err(outside());
        }
        Ok(b.slice(off..end))
    }
}

impl Length for CheckedChunks {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for CheckedChunks {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(self.slice(start, None)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.slice(start, Some(length))
    }
}

/// The open file of a shard without checksums, read with positional reads.
#[derive(Debug, Clone)]
pub(crate) struct FileChunks {
    /// The file.
    pub file: Arc<File>,
    /// Its size when opened.
    pub len: u64,
}

/// A reader from a file offset to the end of the file.
#[derive(Debug)]
pub(crate) struct FileRead {
    chunks: FileChunks,
    pos: u64,
}

impl Read for FileRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (self.chunks.len.saturating_sub(self.pos)).min(buf.len() as u64) as usize;
        read_exact_at(&self.chunks.file, &mut buf[..n], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Length for FileChunks {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for FileChunks {
    type T = BufReader<FileRead>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        // Page headers are decoded a few bytes at a time: buffer the reads.
        Ok(BufReader::with_capacity(
            64 << 10,
            FileRead {
                chunks: self.clone(),
                pos: start,
            },
        ))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        if start
            .checked_add(length as u64)
            .is_none_or(|end| end > self.len)
        {
            return Err(ParquetError::EOF(format!(
                "{length} bytes at {start} lie past the end of the file ({})",
                self.len
            )));
        }
        let mut buf = vec![0u8; length];
        read_exact_at(&self.file, &mut buf, start)
            .map_err(|e| ParquetError::General(describe_read_error(&self.file, self.len, &e)))?;
        Ok(Bytes::from(buf))
    }
}
