//! `kd cache inspect|verify|merge`: look at, check and join teacher caches.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use kd_cache::{inspect, merge, MergeMode};
use std::path::PathBuf;

/// Arguments of `kd cache`.
#[derive(Debug, Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    action: CacheAction,
}

/// What to do with a cache.
#[derive(Debug, Subcommand)]
enum CacheAction {
    /// Rows, tokens, bytes per token by column, teacher, targets.
    Inspect {
        /// Cache directory.
        dir: PathBuf,
    },
    /// Check every checksum and decode every record; names the first bad file and record.
    Verify {
        /// Cache directory.
        dir: PathBuf,
    },
    /// Join the parts of a `--shard i/N` run into one cache.
    Merge {
        /// The part directories (any order).
        #[arg(required = true, num_args = 1..)]
        parts: Vec<PathBuf>,
        /// The merged cache directory.
        #[arg(long)]
        out: PathBuf,
        /// Move the shard files instead of copying them.
        #[arg(long)]
        move_files: bool,
    },
}

/// Runs `kd cache`.
pub fn run(a: &CacheArgs) -> Result<()> {
    match &a.action {
        CacheAction::Inspect { dir } => {
            let r = inspect(dir).with_context(|| format!("inspect {}", dir.display()))?;
            super::print_stdout(&r.to_string())?;
        }
        CacheAction::Verify { dir } => {
            let r = kd_cache::verify::verify(dir)
                .with_context(|| format!("verify {}", dir.display()))?;
            super::print_stdout(&r.to_string())?;
        }
        CacheAction::Merge {
            parts,
            out,
            move_files,
        } => {
            let mode = if *move_files {
                MergeMode::Move
            } else {
                MergeMode::Copy
            };
            let m =
                merge(parts, out, mode).with_context(|| format!("merge into {}", out.display()))?;
            super::print_stdout(&format!(
                "merged {} parts: {} shards, {} records, {} tokens\n",
                parts.len(),
                m.shards.len(),
                m.rows(),
                m.tokens()
            ))?;
        }
    }
    Ok(())
}
