//! `palisade`: the one binary. Glue over the library crates; see
//! ARCHITECTURE.md. Exit codes: 0 success, 1 error, 2 usage error,
//! 3 `palisade status` found the agent not connected or not enforcing at the
//! policy's level.
#![forbid(unsafe_code)]

mod cli;
mod clicfg;
mod cmd;
mod logging;
mod shown;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    let _guard = logging::init(args.verbose);
    match cmd::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("palisade: error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
