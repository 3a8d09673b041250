//! The `eqflow` binary: parse, set up logging and threads, dispatch, map errors to exit codes.

use clap::Parser;
use eqflow::cli::{dispatch, exit_code, Cli};

fn main() {
    keep_large_allocations_in_the_heap();
    let cli = Cli::parse();
    eqflow::logging::init(cli.verbose, cli.quiet);
    if let Some(n) = cli.threads {
        // The global pool does the numerics; a fixed count makes outputs bit-identical between runs.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build_global();
    }
    if let Err(failure) = dispatch(&cli) {
        eprintln!("{failure}");
        std::process::exit(exit_code(&failure));
    }
}

/// glibc serves an allocation above its mmap threshold with a fresh mapping that it unmaps again on free, so
/// a UNet step on the CPU, which allocates and frees activations of a few MiB each, page-faults them in anew
/// every time (20 steps of a small UNet: 18.7 s with 3.5 s in the kernel; with this, 16.4 s and 1.3 s). A
/// fixed threshold at glibc's maximum (32 MiB) and a high trim threshold keep them in the heap; the numbers
/// computed are the same.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_large_allocations_in_the_heap() {
    // SAFETY: mallopt only sets allocator parameters; called first thing, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_large_allocations_in_the_heap() {}
