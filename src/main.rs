//! The `eqflow` binary: parse, set up logging and threads, dispatch, map errors to exit codes.

use clap::Parser;
use eqflow::cli::{dispatch, exit_code, Cli};

fn main() {
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
