//! Base helpers every kd crate shares, each written once:
//!
//! - [`fs`]: atomic writes (fsync of the file, rename, fsync of the folder), a temporary-file
//!   guard that removes the temporary on error, directory replacement, positional reads and
//!   SHA-256 of files and bytes.
//! - [`rng`]: ChaCha8 streams seeded from a SHA-256 of a purpose tag and numbers, the
//!   integer draws the data order is built on (each pinned, so results do not change with the
//!   version of `rand`) and Fisher–Yates shuffles over them.

pub mod fs;
pub mod rng;
