//! `kd`: knowledge distillation of BERT with an offline teacher cache.
//!
//! A thin command-line front end over the `kd-bert`, `kd-data` and `kd-train` crates: one
//! subcommand per stage, dispatched through [`commands::Command`].

mod commands;
mod device;
mod pipeline;
mod settings;

use clap::Parser;

/// candle allocates a fresh buffer per op; mimalloc reuses them instead of paging memory in
/// and out of the kernel on every large tensor.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::process::ExitCode;

/// Command-line arguments of `kd`.
#[derive(Debug, Parser)]
#[command(name = "kd", version, about, long_about = None)]
struct Cli {
    /// Options shared by every subcommand.
    #[command(flatten)]
    global: commands::GlobalArgs,
    /// The stage to run.
    #[command(subcommand)]
    command: commands::Command,
}

fn main() -> ExitCode {
    // candle's element-wise worker pool spins 25k iterations after each op before parking; on
    // small machines that steals the core the GEMM threads need. Keep a user's explicit choice.
    // Keep freed tensor buffers mapped instead of returning them to the kernel and faulting
    // fresh zeroed pages in on the next op (option 15 = `mi_option_purge_delay`, -1 = never).
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a plain integer option of the allocator; no memory is touched.
        unsafe { libmimalloc_sys::mi_option_set(15, -1) };
    }
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "200");
    }
    let cli = Cli::parse();
    match cli.command.run(&cli.global) {
        Ok(()) => ExitCode::SUCCESS,
        // A closed stdout (`kd ... | head`) is not a failure of kd.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Whether an error was caused by writing to a closed pipe.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
