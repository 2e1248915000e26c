//! The `switchyard` binary: parse the command line, dispatch, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;

use switchyard::cli;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_tracing(&args);
    match cli::run(args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("switchyard: {error:#}");
            ExitCode::from(1)
        }
    }
}
