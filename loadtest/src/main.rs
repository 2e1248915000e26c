//! `switchyard-load`: parse the flags, run, exit 0 on a finished run (whatever its error count),
//! 2 on bad settings, 1 when the run could not take place.

mod cli;

use std::error::Error;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // clap prints its own message and exits 2 on bad arguments.
    let args = cli::Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("switchyard-load: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut message = format!("switchyard-load: {e}");
            let mut cause = e.source();
            while let Some(c) = cause {
                message.push_str(&format!(": {c}"));
                cause = c.source();
            }
            eprintln!("{message}");
            ExitCode::from(e.exit_code())
        }
    }
}
