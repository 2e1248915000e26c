//! The command line of `switchyard ctl`: flags before or after the verb (`--admin`, `--token`,
//! `--json` are the ctl's own, accepted anywhere after `ctl`), and the verbs as `CtlCommand`s.

use clap::Subcommand;

use super::ctl::{self, CtlCommand, CtlError, Target};

/// Drive a running proxy through its admin API.
#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// Admin API base URL.
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_ADMIN",
        default_value = "http://127.0.0.1:9901"
    )]
    admin: String,
    /// Bearer token for changes.
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_ADMIN_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: CtlSub,
}

#[derive(Debug, Subcommand)]
pub enum CtlSub {
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

impl CtlArgs {
    /// Where to send the command, and the command.
    pub fn into_parts(self) -> Result<(Target, CtlCommand), CtlError> {
        let command = match self.command {
            CtlSub::Status => CtlCommand::Status,
            CtlSub::Weights { route, weights } => {
                CtlCommand::Weights(route, ctl::parse_weights(&weights)?)
            }
            CtlSub::Promote { route } => CtlCommand::Promote(route),
            CtlSub::Abort { route, reason } => CtlCommand::Abort(route, reason),
            CtlSub::Resume { route } => CtlCommand::Resume(route),
            CtlSub::Reset { route } => CtlCommand::Reset(route),
            CtlSub::Reload => CtlCommand::Reload,
            CtlSub::Rollout { verb, route } => CtlCommand::Rollout(verb, route),
            CtlSub::Switch { route } => CtlCommand::Switch(route),
            CtlSub::Report { route } => CtlCommand::Report(route),
            CtlSub::Fleet => CtlCommand::Fleet,
        };
        let target = Target {
            admin: self.admin,
            token: self.token,
            json: self.json,
        };
        Ok((target, command))
    }
}
