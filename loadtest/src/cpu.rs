//! CPU time of a run: the generator's own (getrusage) and, with `--server-pid`, the server's, so
//! that a benchmark gets "server CPU-seconds per 1,000 requests" for exactly the span of each run
//! (a `--search` makes a dozen runs in one process; a wrapper script around the process could
//! only measure them all together).
//!
//! The server's time is the sum over its processes' threads of the first field of
//! `/proc/PID/task/TID/schedstat` (nanoseconds on a CPU, sched_info), finer than the 10 ms ticks
//! of `/proc/PID/stat`. Time of threads that exit during the run is lost; the servers measured
//! (a SIP proxy's workers, redis-server) keep their threads.

use std::path::Path;

/// CPU time used so far by the generator itself and by the `--server-pid` processes.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    /// User and system seconds; `None` if getrusage failed.
    generator_s: Option<(f64, f64)>,
    /// `None` when no pid was given or one of them could not be read (exited).
    server_ns: Option<u64>,
}

impl Snapshot {
    pub fn take(server_pids: &[u32]) -> Snapshot {
        let server_ns = if server_pids.is_empty() {
            None
        } else {
            server_pids
                .iter()
                .map(|&pid| process_cpu_ns(Path::new("/proc"), pid))
                .sum::<Option<u64>>()
        };
        Snapshot {
            generator_s: own_cpu_s(),
            server_ns,
        }
    }

    /// The run's `cpu_s` (the generator's, between `self` and `end`), null if unknown.
    pub fn generator_json(&self, end: &Snapshot) -> serde_json::Value {
        match (self.generator_s, end.generator_s) {
            (Some((user0, system0)), Some((user1, system1))) => serde_json::json!({
                "user": (user1 - user0).max(0.0),
                "system": (system1 - system0).max(0.0),
            }),
            _ => serde_json::Value::Null,
        }
    }

    /// The server's CPU seconds between `self` and `end`; `None` without `--server-pid` or when
    /// a process could not be read at either end.
    pub fn server_s(&self, end: &Snapshot) -> Option<f64> {
        Some(end.server_ns?.saturating_sub(self.server_ns?) as f64 / 1e9)
    }
}

/// The generator's user and system CPU seconds so far.
fn own_cpu_s() -> Option<(f64, f64)> {
    // SAFETY: getrusage fills the struct it is given; zeroed is a valid rusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return None;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some((secs(usage.ru_utime), secs(usage.ru_stime)))
}

/// Nanoseconds on a CPU of every thread of process `pid`, from `proc`/PID/task/*/schedstat;
/// `None` if the process is gone or a schedstat does not read as one. A thread that ends
/// between the listing and the read is skipped (its time is lost, as the module says).
fn process_cpu_ns(proc: &Path, pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(proc.join(pid.to_string()).join("task")).ok()?;
    let mut total = 0u64;
    for task in tasks.flatten() {
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        let on_cpu: u64 = text.split_whitespace().next()?.parse().ok()?;
        total = total.saturating_add(on_cpu);
    }
    Some(total)
}

/// `--server-pid PID[,PID...]` (repeatable): the pids, each checked to exist now.
pub fn parse_pids(value: &str, into: &mut Vec<u32>) -> Result<(), String> {
    for part in value.split(',') {
        let pid: u32 = part
            .trim()
            .parse()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("--server-pid: bad pid {part:?}"))?;
        if process_cpu_ns(Path::new("/proc"), pid).is_none() {
            return Err(format!(
                "--server-pid: no process {pid} whose threads' schedstat can be read"
            ));
        }
        into.push(pid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This thread's CPU time, seconds.
    fn thread_cpu_s() -> f64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid pointer to a timespec.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        assert_eq!(rc, 0, "clock_gettime");
        ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
    }

    /// Spins until this thread has used `seconds` more CPU time, so that a busy machine only
    /// makes it take longer. (The process's rusage would also count test threads that ended
    /// meanwhile, whose schedstat is gone with them.)
    fn burn(seconds: f64) -> u64 {
        let until = thread_cpu_s() + seconds;
        let mut x = 0u64;
        while thread_cpu_s() < until {
            for _ in 0..100_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                std::hint::black_box(x);
            }
        }
        x
    }

    #[test]
    fn a_busy_process_shows_its_cpu_time_and_a_gone_one_none() {
        let me = std::process::id();
        let before = Snapshot::take(&[me]);
        std::hint::black_box(burn(0.2));
        let after = Snapshot::take(&[me]);
        let server = before.server_s(&after).expect("own process readable");
        assert!((0.15..5.0).contains(&server), "{server}");
        let generator = before.generator_json(&after);
        let user = generator["user"].as_f64().expect("user");
        assert!(user > 0.1, "{generator}");
        // Without pids: no server time; an unknown pid is refused when parsed.
        assert_eq!(Snapshot::take(&[]).server_s(&Snapshot::take(&[])), None);
        let mut pids = Vec::new();
        assert!(parse_pids("4194305", &mut pids).is_err(), "beyond pid_max");
        assert!(parse_pids("0", &mut pids).is_err());
        assert!(parse_pids("x", &mut pids).is_err());
        parse_pids(&format!("{me},{me}"), &mut pids).expect("own pid twice");
        assert_eq!(pids, [me, me]);
    }

    #[test]
    fn schedstat_of_every_thread_is_summed() {
        let dir = std::env::temp_dir().join(format!("sipshard-cpu-test-{}", std::process::id()));
        for (tid, text) in [("7", "1000 5 3\n"), ("8", "2500 1 1\n")] {
            let task = dir.join("42/task").join(tid);
            std::fs::create_dir_all(&task).expect("mkdir");
            std::fs::write(task.join("schedstat"), text).expect("write");
        }
        assert_eq!(process_cpu_ns(&dir, 42), Some(3500));
        assert_eq!(process_cpu_ns(&dir, 43), None, "no such process");
        std::fs::write(dir.join("42/task/8/schedstat"), "garbage").expect("write");
        assert_eq!(process_cpu_ns(&dir, 42), None, "unreadable counts");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
