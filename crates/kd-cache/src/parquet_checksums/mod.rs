//! CRC-32 checksums of Parquet shards, kept in the file's key-value metadata
//! (`schemas/cache-v2.md`, section 5.1).
//!
//! The `parquet` crate writes no page checksums, and page checksums would not
//! cover page headers or the footer anyway. So a shard carries, under the key
//! [`KEY`], one CRC-32 per column chunk (every byte a reader decodes: page
//! headers and pages) and one of the footer itself:
//!
//! ```text
//! {"footer_crc32":"1a2b3c4d","row_groups":[["0badf00d","12345678",...],...]}
//! ```
//!
//! `row_groups[g][c]` covers column chunk `c` (leaf column order) of row group
//! `g`: its bytes from the dictionary or first data page offset, for its
//! compressed size. `footer_crc32` covers the Thrift footer (the `footer_len`
//! bytes before the final length and magic) with its own eight hex digits
//! read as `00000000`. Readers check the footer when opening and each column
//! chunk before decoding it, from the bytes they decode.

mod chunks;
mod sink;

use parquet::file::metadata::{ParquetMetaData, RowGroupMetaData};

pub(crate) use chunks::{read_checked, FileChunks};
pub(crate) use sink::ChecksumSink;

/// Key of the checksum entry in the Parquet key-value metadata.
pub(crate) const KEY: &str = "kd.checksums";

/// How the entry starts; the footer CRC's hex digits follow.
const PREFIX: &str = "{\"footer_crc32\":\"";

/// Hex digits of one CRC-32.
const DIGITS: usize = 8;

/// Type of an error message (the caller adds the file and location).
pub(crate) type Msg = String;

/// The checksum entry of a shard (`row_groups[g][c]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checksums {
    /// CRC-32 of each column chunk of each row group.
    pub row_groups: Vec<Vec<u32>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Entry {
    footer_crc32: String,
    row_groups: Vec<Vec<String>>,
}

fn hex(crc: u32) -> String {
    format!("{crc:08x}")
}

fn parse_hex(s: &str) -> Result<u32, Msg> {
    if s.len() != DIGITS {
        return Err(format!("checksum `{s}` is not {DIGITS} hex digits"));
    }
    u32::from_str_radix(s, 16).map_err(|_| format!("checksum `{s}` is not hex"))
}

impl Checksums {
    /// The entry's text with the footer CRC as `00000000`; every entry for
    /// the same shape has the same length, so a placeholder written with zero
    /// checksums can be overwritten in place.
    pub(crate) fn entry(&self) -> String {
        let e = Entry {
            footer_crc32: hex(0),
            row_groups: self
                .row_groups
                .iter()
                .map(|rg| rg.iter().map(|&c| hex(c)).collect())
                .collect(),
        };
        // Plain strings and lists: serialization cannot fail.
        serde_json::to_string(&e).unwrap_or_default()
    }
}

/// Byte range `(start, len)` of column chunk `c` of row group `rg`, or an
/// error for negative offsets or sizes.
pub(crate) fn chunk_range(rg: &RowGroupMetaData, c: usize) -> Result<(u64, u64), Msg> {
    let col = rg
        .columns()
        .get(c)
        .ok_or_else(|| format!("no column chunk {c}"))?;
    let start = col
        .dictionary_page_offset()
        .unwrap_or(col.data_page_offset());
    let len = col.compressed_size();
    match (u64::try_from(start), u64::try_from(len)) {
        (Ok(s), Ok(l)) => Ok((s, l)),
        _ => Err(format!(
            "column chunk {c} has offset {start} and size {len}"
        )),
    }
}

/// Positions of `needle` in `hay`.
fn find_all<'a>(hay: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    hay.windows(needle.len().max(1))
        .enumerate()
        .filter(move |(_, w)| *w == needle)
        .map(|(i, _)| i)
}

/// Checks the footer's CRC-32 from its raw bytes, before anything decodes
/// them: the position of the checksum entry, or `None` when the footer holds
/// none (a shard written without checksums, or one whose entry was damaged:
/// [`check_entry`] tells them apart once the footer is decoded).
pub(crate) fn check_footer_crc(footer: &[u8]) -> Result<Option<usize>, Msg> {
    let mut first_mismatch = None;
    for p in find_all(footer, PREFIX.as_bytes()) {
        let digits = p + PREFIX.len()..p + PREFIX.len() + DIGITS;
        let Some(Ok(stored)) = footer
            .get(digits.clone())
            .map(|d| parse_hex(std::str::from_utf8(d).unwrap_or("")))
        else {
            continue;
        };
        let mut h = crc32fast::Hasher::new();
        h.update(&footer[..digits.start]);
        h.update(&[b'0'; DIGITS]);
        h.update(&footer[digits.end..]);
        let crc = h.finalize();
        if crc == stored {
            return Ok(Some(p));
        }
        first_mismatch.get_or_insert((crc, stored));
    }
    match first_mismatch {
        Some((crc, stored)) => Err(format!(
            "crc32 {crc:08x} != {stored:08x} in its checksum entry"
        )),
        None => Ok(None),
    }
}

/// The checksum entry of a shard whose Thrift footer `footer` passed
/// [`check_footer_crc`] (entry at `at`) and decoded to `meta`: `None` for a
/// shard written without checksums; an error when the entry is missing,
/// misplaced or does not fit the metadata (row groups, columns).
pub(crate) fn check_entry(
    footer: &[u8],
    at: Option<usize>,
    meta: &ParquetMetaData,
) -> Result<Option<Checksums>, Msg> {
    let kv = meta.file_metadata().key_value_metadata();
    let entry = kv.and_then(|kv| kv.iter().find(|e| e.key == KEY));
    let (entry, at) = match (entry, at) {
        (None, None) => return Ok(None),
        (Some(e), Some(at)) => (e, at),
        (None, Some(_)) => return Err(format!("the footer has a checksum but no `{KEY}` entry")),
        (Some(_), None) => return Err(format!("`{KEY}` is damaged (no checksum found)")),
    };
    let value = entry
        .value
        .as_deref()
        .ok_or_else(|| format!("`{KEY}` has no value"))?;
    if footer.get(at..at + value.len()) != Some(value.as_bytes()) {
        return Err(format!("`{KEY}` is not where its checksum was found"));
    }
    let e: Entry = serde_json::from_str(value).map_err(|e| format!("`{KEY}`: {e}"))?;
    let row_groups = e
        .row_groups
        .iter()
        .map(|rg| {
            rg.iter()
                .map(|s| parse_hex(s))
                .collect::<Result<Vec<u32>, Msg>>()
        })
        .collect::<Result<Vec<_>, Msg>>()?;
    if row_groups.len() != meta.num_row_groups() {
        return Err(format!(
            "`{KEY}` lists {} row groups, the footer {}",
            row_groups.len(),
            meta.num_row_groups()
        ));
    }
    for (g, (sums, rg)) in row_groups.iter().zip(meta.row_groups()).enumerate() {
        if sums.len() != rg.num_columns() {
            return Err(format!(
                "`{KEY}` lists {} column chunks for row group {g}, the footer {}",
                sums.len(),
                rg.num_columns()
            ));
        }
    }
    Ok(Some(Checksums { row_groups }))
}

/// Writes the checksums into the placeholder entry of a finished shard's
/// `tail` (its last bytes, footer included), then the footer CRC.
pub(crate) fn patch_footer(
    tail: &mut [u8],
    placeholder: &str,
    sums: &Checksums,
) -> Result<(), Msg> {
    let entry = sums.entry();
    if entry.len() != placeholder.len() {
        return Err("the checksum entry changed length".into());
    }
    let n = tail.len();
    let footer_len = match tail.get(n.saturating_sub(8)..n.saturating_sub(4)) {
        Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize,
        None => return Err("the file is shorter than a Parquet footer".into()),
    };
    let start = n
        .checked_sub(8 + footer_len)
        .ok_or("the footer starts before the bytes kept for it")?;
    let footer = &mut tail[start..n - 8];
    let found: Vec<usize> = find_all(footer, placeholder.as_bytes()).take(2).collect();
    let [p] = found[..] else {
        return Err(format!("`{KEY}` is not found once in the footer"));
    };
    footer[p..p + entry.len()].copy_from_slice(entry.as_bytes());
    let crc = crc32fast::hash(footer);
    let digits = p + PREFIX.len();
    footer[digits..digits + DIGITS].copy_from_slice(hex(crc).as_bytes());
    Ok(())
}
