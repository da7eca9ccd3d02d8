//! mmap shards: zstd blocks of encoded records, a block table, a record
//! index and a footer (layout in `schemas/cache-v1.md`).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use memmap2::Mmap;

use crate::codec::{decode_record, encode_record, peek_epoch_and_len};
use crate::error::{CacheError, Result};
use crate::fsutil::{HashingWriter, TmpFile};
use crate::manifest::ShardInfo;
use crate::record::Record;

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

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Writes one mmap shard to `name.tmp`, renamed into place by
/// [`finish`](Self::finish); dropped unfinished or after an error, it removes
/// `name.tmp`.
#[derive(Debug)]
pub struct MmapShardWriter {
    path: PathBuf,
    tmp: PathBuf,
    guard: TmpFile,
    out: Option<HashingWriter<BufWriter<File>>>,
    raw: Vec<u8>,
    blocks: Vec<BlockEntry>,
    records: Vec<RecordEntry>,
    block_bytes: usize,
    level: i32,
    tokens: u64,
    block_first: usize,
}

impl MmapShardWriter {
    /// Starts `path` (written as `path.tmp` until finished); blocks are cut
    /// once they hold `block_bytes` of encoded records, compressed at zstd `level`.
    pub fn create(path: &Path, block_bytes: usize, level: i32) -> Result<Self> {
        let (guard, file) = TmpFile::create(path)?;
        let tmp = guard.tmp().to_path_buf();
        let mut out = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        out.write_all(&header)
            .map_err(|e| CacheError::io(&tmp, e))?;
        Ok(MmapShardWriter {
            path: path.to_path_buf(),
            tmp,
            guard,
            out: Some(out),
            raw: Vec::new(),
            blocks: Vec::new(),
            records: Vec::new(),
            block_bytes: block_bytes.max(1),
            level,
            tokens: 0,
            block_first: 0,
        })
    }

    /// Records written so far.
    pub fn rows(&self) -> u64 {
        self.records.len() as u64
    }

    /// Appends a record (already checked against the targets).
    pub fn write(&mut self, r: &Record) -> Result<()> {
        let start = self.raw.len();
        if let Err(e) = encode_record(r, &mut self.raw) {
            self.raw.truncate(start);
            return Err(CacheError::Invalid(e));
        }
        let len = self.raw.len() - start;
        let (Ok(offset), Ok(len), Ok(_)) = (
            u32::try_from(start),
            u32::try_from(len),
            u32::try_from(self.raw.len()),
        ) else {
            self.raw.truncate(start);
            return Err(CacheError::Invalid("record or block over 4 GiB".into()));
        };
        self.records.push(RecordEntry {
            block: self.blocks.len() as u32,
            offset,
            len,
        });
        self.tokens += r.input_ids.len() as u64;
        if self.raw.len() >= self.block_bytes {
            self.flush_block()?;
        }
        Ok(())
    }

    fn flush_block(&mut self) -> Result<()> {
        if self.raw.is_empty() {
            return Ok(());
        }
        let packed = zstd::bulk::compress(&self.raw, self.level)
            .map_err(|e| CacheError::io(&self.tmp, e))?;
        let out = self.out.as_mut().ok_or_else(|| closed(&self.tmp))?;
        self.blocks.push(BlockEntry {
            offset: out.bytes(),
            compressed: u32::try_from(packed.len())
                .map_err(|_| CacheError::Invalid("block over 4 GiB".into()))?,
            raw: u32::try_from(self.raw.len())
                .map_err(|_| CacheError::Invalid("block over 4 GiB".into()))?,
            crc32: crc32fast::hash(&packed),
            first_record: self.block_first as u32,
        });
        self.block_first = self.records.len();
        out.write_all(&packed)
            .map_err(|e| CacheError::io(&self.tmp, e))?;
        self.raw.clear();
        Ok(())
    }

    /// Writes the last block, the index and the footer, fsyncs, renames
    /// `name.tmp` to `name` and returns the shard's description.
    pub fn finish(mut self) -> Result<ShardInfo> {
        self.flush_block()?;
        let mut index =
            Vec::with_capacity(self.blocks.len() * BLOCK_ENTRY + self.records.len() * RECORD_ENTRY);
        for b in &self.blocks {
            index.extend_from_slice(&b.offset.to_le_bytes());
            index.extend_from_slice(&b.compressed.to_le_bytes());
            index.extend_from_slice(&b.raw.to_le_bytes());
            index.extend_from_slice(&b.crc32.to_le_bytes());
            index.extend_from_slice(&b.first_record.to_le_bytes());
        }
        for r in &self.records {
            index.extend_from_slice(&r.block.to_le_bytes());
            index.extend_from_slice(&r.offset.to_le_bytes());
            index.extend_from_slice(&r.len.to_le_bytes());
        }
        let mut out = self.out.take().ok_or_else(|| closed(&self.tmp))?;
        let mut footer = Vec::with_capacity(FOOTER_LEN);
        footer.extend_from_slice(&out.bytes().to_le_bytes());
        footer.extend_from_slice(&(self.blocks.len() as u64).to_le_bytes());
        footer.extend_from_slice(&(self.records.len() as u64).to_le_bytes());
        footer.extend_from_slice(&crc32fast::hash(&index).to_le_bytes());
        footer.extend_from_slice(&VERSION.to_le_bytes());
        footer.extend_from_slice(FOOTER_MAGIC);
        let io = |e| CacheError::io(&self.tmp, e);
        out.write_all(&index).map_err(io)?;
        out.write_all(&footer).map_err(io)?;
        out.flush().map_err(io)?;
        let (buf, sha256, bytes) = out.finish();
        buf.into_inner()
            .map_err(|e| CacheError::io(&self.tmp, e.into_error()))?;
        self.guard.commit()?;
        Ok(ShardInfo {
            file: file_name(&self.path),
            rows: self.records.len() as u64,
            tokens: self.tokens,
            bytes,
            sha256,
        })
    }
}

fn closed(path: &Path) -> CacheError {
    CacheError::Invalid(format!("{}: writer already finished", path.display()))
}

/// The file name of `path` as a string.
pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A memory-mapped shard opened for reading.
#[derive(Debug)]
pub struct MmapShard {
    path: PathBuf,
    map: Mmap,
    blocks: Vec<BlockEntry>,
    records: Vec<RecordEntry>,
    cache: Mutex<Option<(u32, Arc<Vec<u8>>)>>,
}

impl MmapShard {
    /// Maps `path` and checks header, footer, index checksum and index bounds.
    ///
    /// The file must not be truncated or rewritten while it is mapped.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| CacheError::io(path, e))?;
        // SAFETY: cache shards are written once (to a temporary name, then
        // renamed) and never modified in place; the map is read-only.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| CacheError::io(path, e))?;
        let (blocks, records) =
            parse_index(&map).map_err(|(loc, msg)| CacheError::corrupt(path, loc, msg))?;
        Ok(MmapShard {
            path: path.to_path_buf(),
            map,
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
        let start = e.offset as usize;
        let bytes = &self.map[start..start + e.compressed as usize];
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

type IndexParts = (Vec<BlockEntry>, Vec<RecordEntry>);

fn parse_index(b: &[u8]) -> std::result::Result<IndexParts, (String, String)> {
    let fail = |loc: &str, msg: String| Err((loc.to_string(), msg));
    if b.len() < HEADER_LEN + FOOTER_LEN {
        return fail(
            "header",
            format!("{} bytes is too short for a shard", b.len()),
        );
    }
    if &b[..8] != MAGIC || le_u32(b, 8) != VERSION || le_u32(b, 12) != 0 {
        return fail("header", "bad magic, version or reserved field".into());
    }
    let f = b.len() - FOOTER_LEN;
    if &b[f + 32..] != FOOTER_MAGIC || le_u32(b, f + 28) != VERSION {
        return fail("footer", "bad magic or version (truncated file?)".into());
    }
    let index_offset = le_u64(b, f);
    let n_blocks = le_u64(b, f + 8);
    let n_records = le_u64(b, f + 16);
    let size = n_blocks
        .checked_mul(BLOCK_ENTRY as u64)
        .zip(n_records.checked_mul(RECORD_ENTRY as u64))
        .and_then(|(a, r)| a.checked_add(r))
        .and_then(|s| s.checked_add(index_offset));
    if index_offset < HEADER_LEN as u64 || size != Some(f as u64) {
        return fail(
            "footer",
            "index offset and counts do not fit the file".into(),
        );
    }
    let index = &b[index_offset as usize..f];
    if crc32fast::hash(index) != le_u32(b, f + 24) {
        return fail("index", "crc32 mismatch".into());
    }
    let mut blocks = Vec::with_capacity(n_blocks as usize);
    let mut next = HEADER_LEN as u64;
    for i in 0..n_blocks as usize {
        let at = i * BLOCK_ENTRY;
        let e = BlockEntry {
            offset: le_u64(index, at),
            compressed: le_u32(index, at + 8),
            raw: le_u32(index, at + 12),
            crc32: le_u32(index, at + 16),
            first_record: le_u32(index, at + 20),
        };
        if e.offset != next {
            return fail(
                "index",
                format!("block {i} starts at {}, expected {next}", e.offset),
            );
        }
        next += u64::from(e.compressed);
        blocks.push(e);
    }
    if next != index_offset {
        return fail("index", "blocks do not end where the index starts".into());
    }
    let base = blocks.len() * BLOCK_ENTRY;
    let mut records = Vec::with_capacity(n_records as usize);
    for i in 0..n_records as usize {
        let at = base + i * RECORD_ENTRY;
        let e = RecordEntry {
            block: le_u32(index, at),
            offset: le_u32(index, at + 4),
            len: le_u32(index, at + 8),
        };
        let fits = blocks
            .get(e.block as usize)
            .is_some_and(|blk| u64::from(e.offset) + u64::from(e.len) <= u64::from(blk.raw));
        if !fits {
            return fail(
                &format!("record {i}"),
                "index entry outside its block".into(),
            );
        }
        records.push(e);
    }
    Ok((blocks, records))
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
