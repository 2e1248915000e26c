//! Client connections spread over child processes, for counts past one process's open-file limit.
//!
//! A machine whose hard limit cannot be raised (a container without CAP_SYS_RESOURCE: 20,000 here)
//! cannot hold 50,000 client sockets in one process. The runner then starts this same binary again
//! in holder mode (`--hold ADDR --hold-first I --hold-count K`), a few times: each child opens its
//! share of the connections (indexes I..I+K, so source addresses stay those of one runner), writes
//! `held K`, and waits on its standard input: a line `count` is answered `open M` (connections the
//! contestant has not closed); the end of the input closes them all with RST and ends the child.
//! Every wait is bounded, and the children are killed by pid when the guard is dropped.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::client::{count_open, reset_all, Dialer};

/// How long a holder waits for its next command before it closes everything and ends.
const HOLD_AT_MOST: Duration = Duration::from_secs(3600);

/// Child processes holding client connections; dropping it ends them.
pub struct Holders {
    children: Vec<(Child, Option<ChildStdin>)>,
    lines: Receiver<(usize, String)>,
}

impl Holders {
    /// Starts `processes` holders that together open `n` connections to `addr`, `concurrency` at a
    /// time each, and waits (bounded by `deadline`) until each has written `held`.
    pub fn open(
        addr: SocketAddr,
        dial_args: Vec<std::ffi::OsString>,
        n: usize,
        processes: usize,
        concurrency: usize,
        deadline: Duration,
    ) -> Result<Holders> {
        let exe = std::env::current_exe()?;
        let (tx, lines) = mpsc::channel();
        let mut holders = Holders {
            children: Vec::new(),
            lines,
        };
        let share = n.div_ceil(processes);
        for (k, first) in (0..n).step_by(share).enumerate() {
            let count = share.min(n - first);
            let mut child = Command::new(&exe)
                .arg("--hold")
                .arg(addr.to_string())
                .args(["--hold-first", &first.to_string()])
                .args(["--hold-count", &count.to_string()])
                .args(["--concurrency", &concurrency.to_string()])
                .args(&dial_args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .with_context(|| format!("starting holder {k} ({})", exe.display()))?;
            let stdout = child.stdout.take().context("a holder's stdout")?;
            let stdin = child.stdin.take();
            holders.children.push((child, stdin));
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send((k, line)).is_err() {
                        break;
                    }
                }
            });
        }
        let held = holders.answers("held", deadline)?;
        let total: usize = held.iter().sum();
        if total != n {
            bail!("the holders opened {total} connections of {n}");
        }
        Ok(holders)
    }

    /// How many processes hold connections.
    pub fn len(&self) -> usize {
        self.children.len()
    }

    /// Connections the contestant has not closed, over all holders.
    pub fn count_open(&mut self) -> Result<usize> {
        for (k, (_, stdin)) in self.children.iter_mut().enumerate() {
            let stdin = stdin.as_mut().context("a holder's stdin")?;
            writeln!(stdin, "count").with_context(|| format!("asking holder {k}"))?;
            stdin.flush()?;
        }
        Ok(self.answers("open", Duration::from_secs(30))?.iter().sum())
    }

    /// Waits for one line `<word> <number>` from every holder; a holder's `error ...` line or its
    /// silence past `deadline` is an error.
    fn answers(&self, word: &str, deadline: Duration) -> Result<Vec<usize>> {
        let until = Instant::now() + deadline;
        let mut got: Vec<Option<usize>> = vec![None; self.children.len()];
        while got.iter().any(Option::is_none) {
            let left = until.saturating_duration_since(Instant::now());
            let (k, line) = self.lines.recv_timeout(left).map_err(|_| {
                anyhow::anyhow!("a holder did not answer `{word}` within {deadline:?}")
            })?;
            match line.split_once(' ') {
                Some((w, number)) if w == word => got[k] = Some(number.trim().parse()?),
                _ => bail!("holder {k}: {line}"),
            }
        }
        Ok(got.into_iter().flatten().collect())
    }
}

impl Drop for Holders {
    fn drop(&mut self) {
        // The end of its input makes a holder close its connections (RST) and exit.
        for (_, stdin) in &mut self.children {
            drop(stdin.take());
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        super::contestant::reap(self.children.iter_mut().map(|(c, _)| c), deadline);
    }
}

/// Holder mode: opens connections `first..first + count` as `dialer` says, answers the runner's commands
/// on stdin (see the module), and returns when its input ends or after [`HOLD_AT_MOST`].
pub async fn hold(dialer: Dialer, first: usize, count: usize, concurrency: usize) -> Result<()> {
    let streams = match dialer.open_range(first, count, concurrency).await {
        Ok(streams) => streams,
        Err(error) => {
            println!("error {error:#}");
            return Err(error);
        }
    };
    println!("held {}", streams.len());
    // Commands come from a thread reading stdin; the sockets need no polling while they idle.
    let (tx, commands) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let until = Instant::now() + HOLD_AT_MOST;
    let ended = loop {
        match commands.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(line) if line.trim() == "count" => {
                println!("open {}", count_open(&streams));
            }
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break Ok(()),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                break Err(anyhow::anyhow!(
                    "no word from the runner in {HOLD_AT_MOST:?}"
                ))
            }
        }
    };
    reset_all(&streams);
    ended
}
