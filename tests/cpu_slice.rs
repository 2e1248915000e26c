//! `run --cpu-slice`: the proxy's threads run with the CPU slice the kernel was asked for (100 µs
//! unless told otherwise), as the kernel itself reports it in /proc; `off` leaves the kernel's.

#![allow(clippy::unwrap_used)] // tests may unwrap: a failure is the assertion

mod common;

use std::time::Duration;

use common::*;

/// Per-task slices came with Linux 6.12; before, `run` says so and the kernel's slice stays.
fn kernel_has_slices() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release.split(['.', '-']);
    let major: u32 = parts.next().unwrap().trim().parse().unwrap();
    let minor: u32 = parts.next().unwrap().trim().parse().unwrap();
    (major, minor) >= (6, 12)
}

/// `se.slice` (ns) of one task, from its sched file.
fn slice_of(sched: &std::path::Path) -> u64 {
    let text = std::fs::read_to_string(sched).unwrap();
    let line = text.lines().find(|l| l.starts_with("se.slice")).unwrap();
    line.rsplit(':').next().unwrap().trim().parse().unwrap()
}

/// (thread name, slice in ns) of every thread of `pid` but jemalloc's background threads, which
/// the allocator starts before `main`, so before the slice is asked for.
fn thread_slices(pid: u32) -> Vec<(String, u64)> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|task| task.unwrap().path())
        .map(|task| {
            let name = std::fs::read_to_string(task.join("comm")).unwrap();
            (name.trim().to_string(), slice_of(&task.join("sched")))
        })
        .filter(|(name, _)| !name.starts_with("jemalloc"))
        .collect()
}

#[tokio::test]
async fn the_proxys_threads_run_with_the_slice_asked_for() {
    if !kernel_has_slices() {
        eprintln!("skipped: this kernel has no per-task slices (Linux 6.12 or later)");
        return;
    }
    let stable = Upstream::start("stable").await;
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(
        dir.path(),
        &one_route("127.0.0.1:0", &stable.addr.to_string(), ""),
    );
    let kernel_default = slice_of(std::path::Path::new("/proc/thread-self/sched"));
    assert_ne!(
        kernel_default, 100_000,
        "the test itself runs with the kernel's slice"
    );
    for (args, expected) in [
        (&["run", "--worker-threads", "2"][..], 100_000),
        (
            &["run", "--worker-threads", "2", "--cpu-slice", "2ms"][..],
            2_000_000,
        ),
        (
            &["run", "--worker-threads", "2", "--cpu-slice", "off"][..],
            kernel_default,
        ),
    ] {
        let (mut child, addr) = spawn_proxy(args, &file);
        let request = b"GET / HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n";
        let answer = raw_exchange(addr, request, Duration::from_secs(10)).await;
        assert_eq!(status_of(&answer), 200, "{args:?}: {answer}");
        let threads = thread_slices(child.id());
        let workers = threads.iter().filter(|(name, _)| name == "tokio-rt-worker");
        assert_eq!(workers.count(), 2, "{args:?}: {threads:?}");
        for (name, slice) in &threads {
            assert_eq!(*slice, expected, "{args:?}: thread {name}: {threads:?}");
        }
        sigterm(&child);
        let status = exit_within(&mut child, Duration::from_secs(10)).await;
        assert_eq!(status.code(), Some(0), "{args:?}: exit status {status:?}");
    }
}
