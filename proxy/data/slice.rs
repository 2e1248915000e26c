//! The CPU time slice the proxy's threads ask the kernel for.
//!
//! Linux's fair scheduler (EEVDF, 6.6+) gives every task a slice; since 6.12 a task may ask for
//! a shorter one with `sched_setattr(2)` (`sched_runtime` of a `SCHED_OTHER` task), and a task
//! with a shorter slice that wakes up preempts one with a longer slice instead of waiting for its
//! turn. It changes no task's share of the CPU, only how soon a waking task runs. A proxy's
//! threads wake for every packet and do a few microseconds of work: on a core shared with a
//! kernel thread, an agent, or the service's own process, the default slice (0.75 ms times a
//! factor for the core count) is how long a request can wait for the proxy to be scheduled.
//!
//! [`request`] is called once at start, before any runtime thread exists: threads inherit the
//! slice of the thread that creates them, so every worker has it. A policy an operator chose
//! (`chrt`) and the nice value are kept.

use std::time::Duration;

/// The slice run uses unless told otherwise (`--cpu-slice`).
pub const DEFAULT: Duration = Duration::from_micros(100);
/// The range the kernel accepts for a fair task's slice.
pub const MIN: Duration = Duration::from_micros(100);
pub const MAX: Duration = Duration::from_millis(100);

/// What [`request`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The kernel reports the slice back: threads started from now on have it.
    Set(Duration),
    /// The process runs under another policy than `SCHED_OTHER` (its number): left as it is.
    OtherPolicy(u32),
    /// The kernel took the call but reports no custom slice (Linux before 6.12).
    NotSupported,
    /// The call failed (for example a seccomp filter): the kernel's default slice stays.
    Refused(std::io::ErrorKind),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Set(slice) => write!(f, "CPU slice of {slice:?} for the proxy's threads"),
            Outcome::OtherPolicy(policy) => write!(
                f,
                "CPU slice not set: the process runs under scheduling policy {policy}, kept"
            ),
            Outcome::NotSupported => write!(
                f,
                "CPU slice not set: this kernel has no per-task slices (Linux 6.12 or later)"
            ),
            Outcome::Refused(kind) => write!(f, "CPU slice not set: sched_setattr failed ({kind})"),
        }
    }
}

/// Asks the kernel for `slice` for the calling thread and the threads it creates from now on.
/// `slice` must be within [`MIN`]..=[`MAX`] (the command line checks it).
pub fn request(slice: Duration) -> Outcome {
    sys::request(slice)
}

#[cfg(target_os = "linux")]
mod sys {
    use std::time::Duration;

    use super::Outcome;

    /// `struct sched_attr` of `sched_setattr(2)`, its first version (48 bytes, without the
    /// utilisation clamps): the kernel reads `size` to know which version it was given.
    #[repr(C)]
    #[derive(Default)]
    struct SchedAttr {
        size: u32,
        policy: u32,
        flags: u64,
        nice: i32,
        priority: u32,
        runtime: u64,
        deadline: u64,
        period: u64,
    }

    const SCHED_OTHER: u32 = 0;

    pub(super) fn request(slice: Duration) -> Outcome {
        let mut attr = match get() {
            Ok(attr) => attr,
            Err(e) => return Outcome::Refused(e.kind()),
        };
        if attr.policy != SCHED_OTHER {
            return Outcome::OtherPolicy(attr.policy);
        }
        let wanted = u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX);
        // The policy and the nice value read above go back unchanged; only the slice is new.
        attr.runtime = wanted;
        attr.flags = 0;
        if let Err(e) = set(&attr) {
            return Outcome::Refused(e.kind());
        }
        match get() {
            // The kernel clamps and reports the slice it uses; an older kernel reports none.
            Ok(back) if back.runtime != 0 => Outcome::Set(Duration::from_nanos(back.runtime)),
            Ok(_) => Outcome::NotSupported,
            Err(e) => Outcome::Refused(e.kind()),
        }
    }

    fn get() -> std::io::Result<SchedAttr> {
        let mut attr = SchedAttr::default();
        let size = std::mem::size_of::<SchedAttr>() as u32;
        // SAFETY: `attr` is a live, writable `sched_attr` of `size` bytes for the call's
        // duration; pid 0 is the calling thread; the kernel writes at most `size` bytes.
        #[allow(unsafe_code)]
        let rc = unsafe {
            libc::syscall(
                libc::SYS_sched_getattr,
                0,
                &mut attr as *mut SchedAttr,
                size,
                0,
            )
        };
        if rc == 0 {
            Ok(attr)
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    fn set(attr: &SchedAttr) -> std::io::Result<()> {
        let mut attr = SchedAttr {
            size: std::mem::size_of::<SchedAttr>() as u32,
            ..*attr
        };
        // SAFETY: `attr` is a live `sched_attr` whose `size` field is its size; the kernel only
        // reads it; pid 0 is the calling thread.
        #[allow(unsafe_code)]
        let rc =
            unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &mut attr as *mut SchedAttr, 0) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use std::time::Duration;

    use super::Outcome;

    pub(super) fn request(_slice: Duration) -> Outcome {
        Outcome::NotSupported
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// On a kernel with per-task slices, a thread that asked for one has it, and a thread it
    /// starts inherits it (what `run` relies on: the runtime's threads start after the call).
    #[test]
    fn a_thread_started_after_the_request_inherits_the_slice() {
        // Per-task slices came with Linux 6.12; before, the call succeeds and changes nothing.
        let kernel_has_slices = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .and_then(|release| {
                let mut parts = release.split(['.', '-']);
                let major: u32 = parts.next()?.trim().parse().ok()?;
                let minor: u32 = parts.next()?.trim().parse().ok()?;
                Some((major, minor) >= (6, 12))
            })
            .unwrap_or(false);
        let outcome = std::thread::spawn(|| {
            let outcome = request(Duration::from_micros(300));
            let child = std::thread::spawn(slice_of_this_thread).join();
            (outcome, child)
        })
        .join();
        let Ok((outcome, Ok(child))) = outcome else {
            panic!("the test's threads panicked");
        };
        if !kernel_has_slices {
            assert_ne!(outcome, Outcome::Set(Duration::from_micros(300)));
            return;
        }
        assert_eq!(outcome, Outcome::Set(Duration::from_micros(300)));
        assert_eq!(
            child,
            Some(300_000),
            "a thread started after the request has the slice"
        );
        assert_ne!(
            slice_of_this_thread(),
            Some(300_000),
            "the test's own thread did not ask"
        );
    }

    /// `se.slice` of the calling thread, in nanoseconds, as the kernel shows it.
    fn slice_of_this_thread() -> Option<u64> {
        std::fs::read_to_string("/proc/thread-self/sched")
            .ok()?
            .lines()
            .find(|l| l.starts_with("se.slice"))?
            .rsplit(':')
            .next()?
            .trim()
            .parse()
            .ok()
    }
}
