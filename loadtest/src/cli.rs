//! The `switchyard-load` command line: flags, the progress line, the output.
//!
//! Flags become a [`Scenario`] that is laid over the `--scenario` file's (a flag always wins), then
//! a [`Plan`], checked before anything is sent. While the run goes, a progress line is written to
//! stderr about once a second; the report goes to stdout as a table, or as JSON with `--json`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use switchyard_loadtest::{
    LoadError, Plan, PlanError, Protocol, Scenario, ScenarioError, ScenarioUsers,
};
use tokio::time::Instant;

const EXAMPLES: &str = "\
Examples:
  switchyard-load --url http://127.0.0.1:8080/ --rate 500 --duration 30s --count-header x-served-by
  switchyard-load --url http://127.0.0.1:8080/ --concurrency 32 --requests 100000 --http2
  switchyard-load --scenario loadtest/scenarios/plain-split.yaml --duration 1m --json

Only loopback targets (127.0.0.0/8, ::1, localhost) are accepted.";

/// Open- and closed-loop HTTP load against a loopback target.
#[derive(Debug, Parser)]
#[command(name = "switchyard-load", version, after_help = EXAMPLES)]
pub struct Args {
    /// A scenario file (YAML); the flags below override its settings.
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,
    /// Target URL (http, loopback only). Repeat for several, used round robin.
    #[arg(long = "url", value_name = "URL")]
    pub urls: Vec<String>,
    /// Open loop: requests scheduled at this rate per second, latency from the scheduled time.
    #[arg(long, value_name = "PER_SEC", conflicts_with = "concurrency")]
    pub rate: Option<f64>,
    /// Closed loop: this many workers each waiting for its answer before the next request
    /// [default: 8].
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// How long the measured phase lasts, like 10s or 2m (at most 1h) [default: 10s when no
    /// --requests].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// How many requests the measured phase sends (the first of this and --duration ends it).
    #[arg(long, value_name = "N")]
    pub requests: Option<u64>,
    /// Connections per target address; URLs on one address share them [default: the
    /// concurrency, or 32 in open loop].
    #[arg(long, value_name = "N")]
    pub connections: Option<usize>,
    /// Speak HTTP/2 with prior knowledge (h2c) instead of HTTP/1.1.
    #[arg(long)]
    pub http2: bool,
    /// Request method [default: GET].
    #[arg(short = 'X', long)]
    pub method: Option<String>,
    /// An extra request header, 'name: value'. Repeatable.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Send this header with a synthetic user key (user-0 .. user-N-1) per request.
    #[arg(long, value_name = "NAME", requires = "users")]
    pub user_header: Option<String>,
    /// How many synthetic users for --user-header.
    #[arg(long, value_name = "N", requires = "user_header")]
    pub users: Option<u32>,
    /// Count responses per value of this response header (x-served-by, x-switchyard-version).
    #[arg(long, value_name = "NAME")]
    pub count_header: Option<String>,
    /// Per-request timeout [default: 5s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// Run this long first, with the same settings, and leave it out of the report.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub warmup: Option<Duration>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress line on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

/// What stops the command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The scenario file or a flag could not be read.
    #[error("bad settings")]
    Scenario(#[from] ScenarioError),
    /// The plan was refused.
    #[error("bad settings")]
    Plan(#[from] PlanError),
    /// The run could not take place.
    #[error("run failed")]
    Run(#[from] LoadError),
    /// The report could not be written as JSON.
    #[error("cannot write the report")]
    Json(#[from] serde_json::Error),
}

impl CliError {
    /// 2 for bad settings (as clap uses for bad arguments), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Scenario(_) | CliError::Plan(_) => 2,
            CliError::Run(_) | CliError::Json(_) => 1,
        }
    }
}

impl Args {
    /// The scenario file (if any) with the flags laid over it.
    pub fn scenario(&self) -> Result<Scenario, ScenarioError> {
        let base = match &self.scenario {
            Some(path) => Scenario::load(path)?,
            None => Scenario::default(),
        };
        let flags = Scenario {
            description: None,
            proxy_config: None,
            urls: self.urls.clone(),
            method: self.method.clone(),
            headers: self.headers.clone(),
            users: match (&self.user_header, self.users) {
                (Some(header), Some(count)) => Some(ScenarioUsers {
                    header: header.clone(),
                    count,
                }),
                _ => None,
            },
            count_header: self.count_header.clone(),
            protocol: self.http2.then_some(Protocol::Http2),
            rate: self.rate,
            concurrency: self.concurrency,
            duration: self.duration,
            requests: self.requests,
            connections: self.connections,
            timeout: self.timeout,
            warmup: self.warmup,
        };
        Ok(base.overlay(flags))
    }
}

/// Checks the settings, runs, prints the report.
pub async fn run(args: Args) -> Result<(), CliError> {
    let scenario = args.scenario()?;
    if !args.quiet {
        if let Some(description) = &scenario.description {
            eprintln!("scenario: {}", description.trim());
        }
        if let Some(config) = &scenario.proxy_config {
            eprintln!("expects proxy config: {}", config.trim());
        }
    }
    let plan: Plan = scenario.into_plan()?;
    plan.validate()?;

    let live = Arc::new(switchyard_loadtest::Live::default());
    let progress = (!args.quiet).then(|| tokio::spawn(progress(live.clone())));
    let result = switchyard_loadtest::run_observed(&plan, live).await;
    if let Some(task) = progress {
        task.abort();
    }
    let report = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

/// Writes a progress line about once a second until aborted.
async fn progress(live: Arc<switchyard_loadtest::Live>) {
    let start = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.tick().await; // the first tick is immediate
    let (mut last, mut last_at) = (live.snapshot(), Instant::now());
    loop {
        ticks.tick().await;
        let now = live.snapshot();
        let secs = last_at.elapsed().as_secs_f64();
        // The counters restart when the warm-up ends.
        let done = now
            .completed
            .checked_sub(last.completed)
            .unwrap_or(now.completed);
        let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
        eprintln!(
            "[{:>5.0}s]{} sent {}  completed {}  {:.0} req/s  errors {}",
            start.elapsed().as_secs_f64(),
            if now.warming { " warm-up" } else { "" },
            now.sent,
            now.completed,
            rate,
            now.errors,
        );
        (last, last_at) = (now, Instant::now());
    }
}
