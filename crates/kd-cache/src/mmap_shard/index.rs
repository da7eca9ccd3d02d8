//! The header, footer, block table and record index of a `.kdc` shard.

use super::{
    BlockEntry, RecordEntry, BLOCK_ENTRY, FOOTER_LEN, FOOTER_MAGIC, HEADER_LEN, MAGIC,
    RECORD_ENTRY, VERSION,
};

/// An error at a location of the shard: `(location, message)`.
pub(super) type Bad = (String, String);

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn fail<T>(loc: &str, msg: impl Into<String>) -> Result<T, Bad> {
    Err((loc.to_string(), msg.into()))
}

/// What the footer says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Footer {
    /// File offset of the block table.
    pub index_offset: u64,
    /// Blocks.
    pub n_blocks: u64,
    /// Records.
    pub n_records: u64,
    /// CRC-32 of block table and record index.
    pub index_crc32: u32,
}

/// Checks the header and the footer of a file of `file_len` bytes; the index
/// they describe fits the file exactly.
pub(super) fn parse_ends(
    header: &[u8; HEADER_LEN],
    footer: &[u8; FOOTER_LEN],
    file_len: u64,
) -> Result<Footer, Bad> {
    if &header[..8] != MAGIC || le_u32(header, 8) != VERSION || le_u32(header, 12) != 0 {
        return fail("header", "bad magic, version or reserved field");
    }
    if &footer[32..] != FOOTER_MAGIC || le_u32(footer, 28) != VERSION {
        return fail("footer", "bad magic or version (truncated file?)");
    }
    let f = Footer {
        index_offset: le_u64(footer, 0),
        n_blocks: le_u64(footer, 8),
        n_records: le_u64(footer, 16),
        index_crc32: le_u32(footer, 24),
    };
    let end = f
        .n_blocks
        .checked_mul(BLOCK_ENTRY as u64)
        .zip(f.n_records.checked_mul(RECORD_ENTRY as u64))
        .and_then(|(a, r)| a.checked_add(r))
        .and_then(|s| s.checked_add(f.index_offset));
    if f.index_offset < HEADER_LEN as u64 || end != Some(file_len - FOOTER_LEN as u64) {
        return fail("footer", "index offset and counts do not fit the file");
    }
    Ok(f)
}

/// The block table and record index (`index`, as the footer `f` describes
/// them): CRC, contiguous blocks from the header to the index, every record
/// inside its block.
pub(super) fn parse_index(
    index: &[u8],
    f: &Footer,
) -> Result<(Vec<BlockEntry>, Vec<RecordEntry>), Bad> {
    if crc32fast::hash(index) != f.index_crc32 {
        return fail("index", "crc32 mismatch");
    }
    // The footer was checked against the file length, so these counts fit in memory.
    let mut blocks = Vec::with_capacity(f.n_blocks as usize);
    let mut next = HEADER_LEN as u64;
    for (i, at) in (0..f.n_blocks as usize).map(|i| (i, i * BLOCK_ENTRY)) {
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
    if next != f.index_offset {
        return fail("index", "blocks do not end where the index starts");
    }
    let base = blocks.len() * BLOCK_ENTRY;
    let mut records = Vec::with_capacity(f.n_records as usize);
    for i in 0..f.n_records as usize {
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
            return fail(&format!("record {i}"), "index entry outside its block");
        }
        records.push(e);
    }
    Ok((blocks, records))
}
