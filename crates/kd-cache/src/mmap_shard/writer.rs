//! Writing a `.kdc` shard.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{
    BlockEntry, RecordEntry, BLOCK_ENTRY, FOOTER_LEN, FOOTER_MAGIC, HEADER_LEN, MAGIC,
    RECORD_ENTRY, VERSION,
};
use crate::codec::encode_record;
use crate::error::{CacheError, Result};
use crate::manifest::ShardInfo;
use crate::record::Record;
use kd_core::fs::{HashingWriter, TmpFile};

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
