//! The `switchyard` binary: parse the command line, dispatch, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;

use switchyard::cli;

/// jemalloc keeps each size class in slabs of its own and gives pages back to the system once
/// they have been free for a while; glibc's allocator keeps freed buffers resident between the
/// long-lived allocations they were interleaved with. An idle connection gives its buffers back
/// (`limits.idle_release_after`); with jemalloc the process's resident memory goes down too.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read when it starts: a background thread returns free pages even while
/// the process idles (otherwise only allocations do), one second after they were freed
/// (`dirty_decay_ms`; the default is ten), at once and for real (`muzzy_decay_ms:0`: no lazy
/// `MADV_FREE` stage, which leaves pages counted as resident until the kernel needs them).
#[allow(unsafe_code)] // jemalloc reads its options from this exported symbol; it is only data
#[export_name = "_rjem_malloc_conf"]
static MALLOC_CONF: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

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
