//! The commands: `run` (the default when only `--config` is given), `check`, `demo` and `ctl`.
//! The command line is parsed here and each command is dispatched to its module; errors carry
//! their context (anyhow) only at this edge.

pub mod ctl;
pub mod demo;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::app;

/// Switchyard: a traffic-splitting reverse proxy for safe releases.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// Configuration file (YAML).
    #[arg(long, short, global = true, env = "SWITCHYARD_CONFIG")]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Runtime worker threads (default: one per core).
    #[arg(long, global = true, env = "SWITCHYARD_WORKER_THREADS")]
    worker_threads: Option<usize>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy (the default when only --config is given).
    Run,
    /// Validate a configuration file and exit: 0 when valid, 2 when not.
    Check,
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

#[derive(Debug, clap::Args)]
struct CtlArgs {
    /// Admin API base URL.
    #[arg(
        long,
        env = "SWITCHYARD_ADMIN",
        default_value = "http://127.0.0.1:9901"
    )]
    admin: String,
    /// Bearer token for changes.
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: CtlSub,
}

#[derive(Debug, Subcommand)]
enum CtlSub {
    /// Routes, versions, weights and where each weight comes from.
    Status,
    /// Set every version's weight: `weights ROUTE stable=90 canary=10`.
    Weights {
        /// Route name.
        route: String,
        /// VERSION=WEIGHT for every version of the route.
        #[arg(required = true)]
        weights: Vec<String>,
    },
    /// The canary (last version) takes 100%.
    Promote {
        /// Route name.
        route: String,
    },
    /// Kill switch: every version but the first to 0 at once, until resumed.
    Abort {
        /// Route name.
        route: String,
        /// Why, for the record.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Lift an abort.
    Resume {
        /// Route name.
        route: String,
    },
    /// Drop the route's API overrides: back to the file.
    Reset {
        /// Route name.
        route: String,
    },
    /// Reload the configuration file.
    Reload,
    /// Drive a route's rollout: start, pause, resume, promote or abort.
    Rollout {
        /// start, pause, resume, promote or abort.
        #[arg(value_parser = ["start", "pause", "resume", "promote", "abort"])]
        verb: String,
        /// Route name.
        route: String,
    },
    /// Blue/green: move all traffic to the standby if it is healthy.
    Switch {
        /// Route name.
        route: String,
    },
    /// The dark launch's comparison report: latency live vs shadow, identical %, top differences.
    Report {
        /// Route name.
        route: String,
    },
    /// The fleet: live replicas, the store's health, rollout leaders.
    Fleet,
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
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Runs the chosen subcommand.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = cli.worker_threads.filter(|n| *n > 0) {
        builder.worker_threads(n);
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
            let command = match args.command {
                CtlSub::Status => ctl::CtlCommand::Status,
                CtlSub::Weights { route, weights } => match ctl::parse_weights(&weights) {
                    Ok(w) => ctl::CtlCommand::Weights(route, w),
                    Err(e) => {
                        eprintln!("switchyard ctl: {e}");
                        return Ok(ExitCode::from(e.exit_code()));
                    }
                },
                CtlSub::Promote { route } => ctl::CtlCommand::Promote(route),
                CtlSub::Abort { route, reason } => ctl::CtlCommand::Abort(route, reason),
                CtlSub::Resume { route } => ctl::CtlCommand::Resume(route),
                CtlSub::Reset { route } => ctl::CtlCommand::Reset(route),
                CtlSub::Reload => ctl::CtlCommand::Reload,
                CtlSub::Rollout { verb, route } => ctl::CtlCommand::Rollout(verb, route),
                CtlSub::Switch { route } => ctl::CtlCommand::Switch(route),
                CtlSub::Report { route } => ctl::CtlCommand::Report(route),
                CtlSub::Fleet => ctl::CtlCommand::Fleet,
            };
            let target = ctl::Target {
                admin: args.admin,
                token: args.token,
                json: args.json,
            };
            match runtime.block_on(ctl::run(&target, &command)) {
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
        Some(Command::Check) => {
            let file = need_config(cli.config)?;
            match crate::control::load::load(&file).map(|l| l.config) {
                Ok(c) => {
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
        Some(Command::Run) | None => {
            let file = need_config(cli.config)?;
            runtime.block_on(serve(&file))
        }
    }
}

fn need_config(config: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    config.context("--config FILE is required (or try `switchyard demo`)")
}

async fn serve(file: &std::path::Path) -> anyhow::Result<ExitCode> {
    let running = match app::start_from_file(file).await {
        Ok(r) => r,
        Err(e @ app::StartError::Config(_)) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e.into()),
    };
    for (name, addr) in running.listeners() {
        // A stable line on stdout: scripts and tests read the bound port from it.
        println!("switchyard: listener {name} on http://{addr}");
    }
    if let Some(addr) = running.admin_addr() {
        println!("switchyard: admin on http://{addr}");
    }
    let signal = app::shutdown_signal().await;
    tracing::info!(
        signal,
        "shutting down: no new connections, draining in-flight requests"
    );
    running.shutdown().await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
