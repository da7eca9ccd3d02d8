//! `.kdc` shards ("mmap" backend): zstd blocks of encoded records, a block
//! table, a record index and a footer (layout in `schemas/cache-v2.md`).
//!
//! The reader keeps the file open and reads blocks with positional reads: a
//! shard truncated or rewritten while it is open gives an error naming it
//! (never a bus error, as a memory map would), and each block's CRC is checked
//! on the very bytes that are then decompressed.

mod index;
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::codec::{decode_record, peek_epoch_and_len};
use crate::error::{CacheError, Result};
use crate::record::Record;
use kd_core::fs::{describe_read_error, read_exact_at};

pub use writer::{file_name, MmapShardWriter};

/// First 8 bytes of a shard.
pub const MAGIC: &[u8; 8] = b"KDCSHARD";
/// Last 8 bytes of a shard.
pub const FOOTER_MAGIC: &[u8; 8] = b"KDCFOOT1";
/// Format version in the header and the footer.
pub const VERSION: u32 = 1;
/// Header size: magic, version, reserved.
pub const HEADER_LEN: usize = 16;
/// Footer size: index offset, blocks, records, index crc32, version, magic.
pub const FOOTER_LEN: usize = 40;
/// Bytes per block-table entry: offset u64, compressed u32, raw u32, crc32 u32, first record u32.
pub const BLOCK_ENTRY: usize = 24;
/// Bytes per record-index entry: block u32, offset u32, length u32.
pub const RECORD_ENTRY: usize = 12;

/// One zstd block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockEntry {
    /// File offset of the compressed bytes.
    pub offset: u64,
    /// Compressed length.
    pub compressed: u32,
    /// Decompressed length.
    pub raw: u32,
    /// CRC-32 (IEEE) of the compressed bytes.
    pub crc32: u32,
    /// Index of its first record.
    pub first_record: u32,
}

/// Where one record lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordEntry {
    /// Block index.
    pub block: u32,
    /// Offset in the decompressed block.
    pub offset: u32,
    /// Encoded length.
    pub len: u32,
}

/// A `.kdc` shard opened for reading (the name is the backend's; blocks are
/// read through the open file, see the module documentation).
#[derive(Debug)]
pub struct MmapShard {
    path: PathBuf,
    file: File,
    /// File size when opened; every block lies below it.
    len: u64,
    blocks: Vec<BlockEntry>,
    records: Vec<RecordEntry>,
    cache: Mutex<Option<(u32, Arc<Vec<u8>>)>>,
}

impl MmapShard {
    /// Opens `path` and checks header, footer, index checksum and index bounds.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| CacheError::io(path, e))?;
        let len = file.metadata().map_err(|e| CacheError::io(path, e))?.len();
        let corrupt = |(loc, msg): index::Bad| CacheError::corrupt(path, loc, msg);
        if len < (HEADER_LEN + FOOTER_LEN) as u64 {
            return Err(corrupt((
                "header".into(),
                format!("{len} bytes is too short for a shard"),
            )));
        }
        let mut header = [0u8; HEADER_LEN];
        let mut footer = [0u8; FOOTER_LEN];
        read_exact_at(&file, &mut header, 0).map_err(|e| CacheError::io(path, e))?;
        read_exact_at(&file, &mut footer, len - FOOTER_LEN as u64)
            .map_err(|e| CacheError::io(path, e))?;
        let f = index::parse_ends(&header, &footer, len).map_err(corrupt)?;
        // parse_ends checked that the index fits between index_offset and the footer.
        let mut table = vec![0u8; (len - FOOTER_LEN as u64 - f.index_offset) as usize];
        read_exact_at(&file, &mut table, f.index_offset).map_err(|e| CacheError::io(path, e))?;
        let (blocks, records) = index::parse_index(&table, &f).map_err(corrupt)?;
        Ok(MmapShard {
            path: path.to_path_buf(),
            file,
            len,
            blocks,
            records,
            cache: Mutex::new(None),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the shard has no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The block table.
    pub fn blocks(&self) -> &[BlockEntry] {
        &self.blocks
    }

    /// The record index.
    pub fn records(&self) -> &[RecordEntry] {
        &self.records
    }

    /// Decompressed block `b`, its CRC checked (the last one is cached).
    pub fn block(&self, b: u32) -> Result<Arc<Vec<u8>>> {
        if let Ok(guard) = self.cache.lock() {
            if let Some((cb, data)) = guard.as_ref() {
                if *cb == b {
                    return Ok(data.clone());
                }
            }
        }
        let loc = || format!("block {b}");
        let e = self
            .blocks
            .get(b as usize)
            .ok_or_else(|| CacheError::corrupt(&self.path, loc(), "no such block"))?;
        let mut packed = vec![0u8; e.compressed as usize];
        read_exact_at(&self.file, &mut packed, e.offset).map_err(|err| {
            CacheError::corrupt(
                &self.path,
                loc(),
                describe_read_error(&self.file, self.len, &err),
            )
        })?;
        let bytes = packed.as_slice();
        let crc = crc32fast::hash(bytes);
        if crc != e.crc32 {
            return Err(CacheError::corrupt(
                &self.path,
                loc(),
                format!("crc32 {crc:08x} != {:08x} in the block table", e.crc32),
            ));
        }
        let raw = zstd::bulk::decompress(bytes, e.raw as usize)
            .map_err(|err| CacheError::corrupt(&self.path, loc(), format!("zstd: {err}")))?;
        if raw.len() != e.raw as usize {
            return Err(CacheError::corrupt(
                &self.path,
                loc(),
                format!("decompressed to {} bytes, expected {}", raw.len(), e.raw),
            ));
        }
        let raw = Arc::new(raw);
        if let Ok(mut guard) = self.cache.lock() {
            *guard = Some((b, raw.clone()));
        }
        Ok(raw)
    }

    /// Decodes record `i` from `block`, its decompressed block.
    pub fn decode_at(&self, i: usize, block: &[u8]) -> Result<Record> {
        let loc = |e: &RecordEntry| format!("record {i} (block {})", e.block);
        let e = self.records.get(i).ok_or_else(|| {
            CacheError::corrupt(&self.path, format!("record {i}"), "out of range")
        })?;
        let start = e.offset as usize;
        let bytes = block
            .get(start..start + e.len as usize)
            .ok_or_else(|| CacheError::corrupt(&self.path, loc(e), "outside its block"))?;
        decode_record(bytes).map_err(|m| CacheError::corrupt(&self.path, loc(e), m))
    }

    /// The `(epoch, token count)` of every record, from the record headers: blocks are
    /// decompressed but no record is decoded.
    pub fn epochs_and_lengths(&self) -> Result<Vec<(u32, u32)>> {
        let mut out = Vec::with_capacity(self.records.len());
        for (i, e) in self.records.iter().enumerate() {
            // Records of a block are consecutive and `block` keeps the last one decompressed.
            let block = self.block(e.block).map_err(|err| at_record(err, i))?;
            let loc = || format!("record {i} (block {})", e.block);
            let start = e.offset as usize;
            let bytes = block
                .get(start..start + e.len as usize)
                .ok_or_else(|| CacheError::corrupt(&self.path, loc(), "outside its block"))?;
            out.push(
                peek_epoch_and_len(bytes).map_err(|m| CacheError::corrupt(&self.path, loc(), m))?,
            );
        }
        Ok(out)
    }

    /// Record `i` (decompresses its block unless it is the cached one).
    pub fn get(&self, i: usize) -> Result<Record> {
        let e = self.records.get(i).ok_or_else(|| {
            CacheError::corrupt(
                &self.path,
                format!("record {i}"),
                format!("out of range ({} records)", self.records.len()),
            )
        })?;
        let block = self.block(e.block).map_err(|err| at_record(err, i))?;
        self.decode_at(i, &block)
    }
}

/// Adds "record i" to the location of a block error.
fn at_record(err: CacheError, i: usize) -> CacheError {
    match err {
        CacheError::Corrupt {
            file,
            location,
            message,
        } => CacheError::Corrupt {
            file,
            location: format!("record {i} ({location})"),
            message,
        },
        other => other,
    }
}

/// Streams the records of a shard in order, one block at a time.
#[derive(Debug)]
pub struct MmapIter<'a> {
    shard: &'a MmapShard,
    next: usize,
    block: Option<(u32, Arc<Vec<u8>>)>,
}

impl<'a> MmapIter<'a> {
    /// Iterates `shard` from its first record.
    pub fn new(shard: &'a MmapShard) -> Self {
        MmapIter {
            shard,
            next: 0,
            block: None,
        }
    }

    /// The shard being read.
    pub fn shard(&self) -> &'a MmapShard {
        self.shard
    }
}

impl Iterator for MmapIter<'_> {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        let i = self.next;
        let e = *self.shard.records.get(i)?;
        self.next += 1;
        let cached = matches!(&self.block, Some((b, _)) if *b == e.block);
        if !cached {
            match self.shard.block(e.block) {
                Ok(data) => self.block = Some((e.block, data)),
                Err(err) => {
                    // A bad block fails every record in it; skip to the next block.
                    while self
                        .shard
                        .records
                        .get(self.next)
                        .is_some_and(|r| r.block == e.block)
                    {
                        self.next += 1;
                    }
                    return Some(Err(at_record(err, i)));
                }
            }
        }
        let data = self.block.as_ref().map(|(_, d)| d.clone())?;
        Some(self.shard.decode_at(i, &data))
    }
}
