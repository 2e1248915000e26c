//! The commands: `run` (the default when only `--config` is given), `check`, `demo` and `ctl`.
//! The command line is parsed here and each command is dispatched to its module; errors carry
//! their context (anyhow) only at this edge. Each subcommand's help lists only its own flags.

pub mod ctl;
pub mod ctl_args;
pub mod demo;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::app;
use ctl_args::CtlArgs;

/// Switchyard: a traffic-splitting reverse proxy for safe releases.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// `switchyard --config FILE` runs the proxy.
    #[command(flatten)]
    run: RunArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

/// How the proxy runs.
#[derive(Debug, Clone, clap::Args)]
struct RunArgs {
    /// Configuration file (YAML).
    #[arg(long, short, env = "SWITCHYARD_CONFIG")]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Runtime worker threads (default: one per core).
    #[arg(long, env = "SWITCHYARD_WORKER_THREADS")]
    worker_threads: Option<usize>,
    /// One accept loop per worker thread: each listener is bound once per worker with
    /// SO_REUSEPORT, and each worker is a single-threaded runtime serving its own sockets.
    #[arg(long, env = "SWITCHYARD_REUSE_PORT")]
    reuse_port: bool,
    /// CPU time slice the proxy's threads ask the kernel for (Linux 6.12+; default 100us), from
    /// 100us to 100ms, or `off` for the kernel's: a waking thread with a shorter slice preempts a
    /// task with a longer one, so a request does not wait out another task's slice on a shared core.
    #[arg(long, env = "SWITCHYARD_CPU_SLICE", value_parser = parse_cpu_slice)]
    cpu_slice: Option<CpuSlice>,
}

/// `--cpu-slice`: a duration in the kernel's range, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CpuSlice {
    Off,
    Of(std::time::Duration),
}

fn parse_cpu_slice(value: &str) -> Result<CpuSlice, String> {
    use crate::data::slice;
    if value == "off" {
        return Ok(CpuSlice::Off);
    }
    let slice = humantime::parse_duration(value)
        .map_err(|e| format!("{e}: expected a duration such as 100us or 1ms, or off"))?;
    if !(slice::MIN..=slice::MAX).contains(&slice) {
        return Err(format!(
            "{value} is outside the kernel's range for a slice, {:?} to {:?} (or off)",
            slice::MIN,
            slice::MAX
        ));
    }
    Ok(CpuSlice::Of(slice))
}

/// The file to check.
#[derive(Debug, Clone, clap::Args)]
struct CheckArgs {
    /// Configuration file (YAML).
    #[arg(long, short, env = "SWITCHYARD_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy (the default when only --config is given).
    Run(RunArgs),
    /// Validate a configuration file and exit: 0 when valid, 2 when not.
    Check(CheckArgs),
    /// Drive a running proxy through its admin API.
    Ctl(CtlArgs),
    /// Start built-in upstreams and the proxy in front of them, send some traffic, explain it.
    Demo {
        /// Where the demo proxy listens (any free port when this one is taken).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the demo's admin API listens (any free port when this one is taken).
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
        /// Print the account and exit instead of serving until Ctrl-C.
        #[arg(long)]
        once: bool,
    },
}

impl Cli {
    /// The run settings: the `run` subcommand's, else the top level's.
    fn run_args(&self) -> RunArgs {
        match &self.command {
            Some(Command::Run(args)) => RunArgs {
                config: args.config.clone().or_else(|| self.run.config.clone()),
                log_format: if args.log_format == LogFormat::Json {
                    LogFormat::Json
                } else {
                    self.run.log_format
                },
                worker_threads: args.worker_threads.or(self.run.worker_threads),
                reuse_port: args.reuse_port || self.run.reuse_port,
                cpu_slice: args.cpu_slice.or(self.run.cpu_slice),
            },
            _ => self.run.clone(),
        }
    }
}

/// Logs go to stderr; `RUST_LOG` filters them (default `info`).
pub fn init_tracing(cli: &Cli) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match cli.run_args().log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Asks for the proxy's CPU slice (default [`slice::DEFAULT`](crate::data::slice::DEFAULT)) and
/// says what the kernel did; a refusal leaves the kernel's default and is only a warning.
fn request_cpu_slice(setting: Option<CpuSlice>) {
    use crate::data::slice::{self, Outcome};
    let wanted = match setting {
        Some(CpuSlice::Off) => return,
        Some(CpuSlice::Of(slice)) => slice,
        None => slice::DEFAULT,
    };
    match slice::request(wanted) {
        outcome @ Outcome::Refused(_) => tracing::warn!("{outcome}"),
        outcome => tracing::info!("{outcome}"),
    }
}

/// Runs the chosen subcommand.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let run_args = cli.run_args();
    let workers = run_args.worker_threads.filter(|n| *n > 0);
    let accept = if run_args.reuse_port {
        let n =
            workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        app::Accept::PerWorker(n)
    } else {
        app::Accept::Shared
    };
    // One worker: tokio's single-threaded scheduler, which does the same work without the
    // multi-threaded one's bookkeeping (3% less CPU per request in loadtest/compare). With
    // --reuse-port the workers have runtimes of their own, and this one keeps the control plane.
    let mut builder = if workers == Some(1) || run_args.reuse_port {
        let mut builder = tokio::runtime::Builder::new_current_thread();
        builder.event_interval(crate::data::workers::EVENT_INTERVAL);
        builder
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder.enable_all();
    if let (Some(n), app::Accept::Shared) = (workers, accept) {
        builder.worker_threads(n);
    }
    if matches!(cli.command, Some(Command::Run(_)) | None) {
        // Before the runtime starts its threads: they inherit the slice of this one.
        request_cpu_slice(run_args.cpu_slice);
    }
    let runtime = builder.build().context("cannot start the async runtime")?;
    match cli.command {
        Some(Command::Demo {
            listen,
            admin,
            once,
        }) => {
            runtime.block_on(demo::run(demo::DemoOptions {
                listen,
                admin,
                once,
            }))?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Ctl(args)) => {
            let outcome = match args.into_parts() {
                Ok((target, command)) => runtime.block_on(ctl::run(&target, &command)),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(out) => {
                    print!("{out}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("switchyard ctl: {e}");
                    Ok(ExitCode::from(e.exit_code()))
                }
            }
        }
        Some(Command::Check(args)) => check(args.config.or(run_args.config)),
        Some(Command::Run(_)) | None => {
            let file = need_config(run_args.config)?;
            runtime.block_on(serve(&file, accept))
        }
    }
}

/// `check`: the same gate as start-up and reload; exit 0 when valid, 2 when not.
fn check(config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let file = need_config(config)?;
    match crate::control::load::load(&file) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                eprintln!("{}: warning: {warning}", file.display());
            }
            let c = loaded.config;
            println!(
                "{}: ok ({} listener(s), {} route(s))",
                file.display(),
                c.listeners.len(),
                c.routes.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::from(2))
        }
    }
}

fn need_config(config: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    config.context("--config FILE is required (or try `switchyard demo`)")
}

async fn serve(file: &std::path::Path, accept: app::Accept) -> anyhow::Result<ExitCode> {
    let running = match app::start_from_file_with(file, accept).await {
        Ok(r) => r,
        Err(e @ app::StartError::Config(_)) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e.into()),
    };
    // Before the lines that say the proxy is up: a SIGTERM sent on reading them must drain.
    let signal = app::shutdown_signal();
    // Stable lines on stdout: scripts and tests read the bound ports from them. Written without
    // `println!`, which panics when stdout is closed (a reader that stopped after the first).
    let mut out = std::io::stdout().lock();
    for l in running.listeners() {
        let _ = writeln!(
            out,
            "switchyard: listener {} on {}://{}",
            l.name,
            l.scheme(),
            l.addr
        );
    }
    if let Some(addr) = running.admin_addr() {
        let _ = writeln!(out, "switchyard: admin on http://{addr}");
    }
    let _ = out.flush();
    drop(out);
    let signal = signal.await;
    tracing::info!(
        signal,
        "shutting down: no new connections, draining in-flight requests"
    );
    running.shutdown().await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
