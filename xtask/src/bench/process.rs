//! The processes a benchmark run starts (gunicorn, fmd-daemon, py-spy) as guards that stop them however the
//! run ends, and what /proc says about their CPU time and memory.

use std::{
    fs,
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

/// Stops its process when dropped: `signal` first (SIGINT lets the daemon and py-spy flush), then SIGKILL
/// after `grace` to it and its children, so that a gunicorn worker cannot outlive a killed master and load the
/// next measurement. (The processes stay in xtask's process group, so Ctrl-C still reaches them all.)
pub struct Guard {
    child: Child,
    signal: i32,
    grace: Duration,
    name: String,
}

impl Guard {
    /// Starts `cmd` with its output in `log` (created or truncated), so a failed run can be diagnosed.
    pub fn spawn(
        name: &str,
        cmd: &mut Command,
        log: &Path,
        signal: i32,
        grace: Duration,
    ) -> Result<Self> {
        let out =
            fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Self {
            child,
            signal,
            grace,
            name: name.into(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has already ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Signals the process and waits for it; an error when it had to be killed.
    pub fn stop(mut self) -> Result<()> {
        let clean = self.stop_inner();
        if !clean {
            bail!(
                "{} did not stop within {} s and was killed",
                self.name,
                self.grace.as_secs()
            );
        }
        Ok(())
    }

    fn stop_inner(&mut self) -> bool {
        if self.exited().is_some() {
            return true;
        }
        // SAFETY: kill(2) on a pid we spawned and have not reaped.
        unsafe { libc::kill(self.child.id() as i32, self.signal) };
        let deadline = Instant::now() + self.grace;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return true;
            }
            thread::sleep(Duration::from_millis(50));
        }
        // Children first: while their parent lives (it is stuck, or we would not be here) nobody reaps them,
        // so their pids cannot have been reused.
        for pid in children(self.child.id()) {
            // SAFETY: kill(2) on a live child of our unreaped child.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

pub fn wait_for_port(addr: &str, what: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "{what} did not start listening on {addr} within {} s",
        timeout.as_secs()
    )
}

/// The direct children of `pid` (gunicorn's workers when `pid` is its master).
pub fn children(pid: u32) -> Vec<u32> {
    let path = format!("/proc/{pid}/task/{pid}/children");
    fs::read_to_string(path)
        .map(|s| parse_children(&s))
        .unwrap_or_default()
}

fn parse_children(text: &str) -> Vec<u32> {
    text.split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// User plus system CPU time of `pid` so far, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    parse_cpu_ticks(&stat).map(|t| t as f64 / ticks.max(1) as f64)
}

/// utime + stime (fields 14 and 15) from a /proc/PID/stat line. The command name (field 2) may hold spaces
/// and parentheses, so fields are counted from the last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The peak resident set size of `pid` (VmHWM), in MiB.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    status_kib(pid, "VmHWM:").map(|kib| kib as f64 / 1024.0)
}

/// The resident set size of `pid` now (VmRSS), in MiB.
pub fn rss_mib(pid: u32) -> Option<f64> {
    status_kib(pid, "VmRSS:").map(|kib| kib as f64 / 1024.0)
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&status, field)
}

/// A `Field:   1234 kB` line of /proc/PID/status, in KiB.
fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.trim_start_matches(field)
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<T: PartialEq + std::fmt::Debug>(f: fn(&str) -> T, input: &str, expect: T) {
        assert_eq!(f(input), expect, "input: {input:?}");
    }

    #[test]
    fn cpu_ticks_are_utime_plus_stime() {
        check(
            parse_cpu_ticks,
            "1234 (fmd-daemon) S 1 1234 1234 0 -1 4194560 500 0 0 0 70 30 0 0 20 0 3 0 100 0 0",
            Some(100),
        );
        // A command name with spaces and a parenthesis must not shift the fields.
        check(
            parse_cpu_ticks,
            "7 (a) b (c) R 1 7 7 0 -1 0 0 0 0 0 5 6 0 0 20 0 1 0 1 0 0",
            Some(11),
        );
        check(parse_cpu_ticks, "7 (truncated) R 1", None);
        check(parse_cpu_ticks, "", None);
    }

    #[test]
    fn rss_fields_of_proc_status() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmHWM:\t   20480 kB\nVmRSS:\t 100 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM:"), Some(20480));
        assert_eq!(parse_status_kib(status, "VmRSS:"), Some(100));
        assert_eq!(parse_status_kib("Name:\tkthread\n", "VmHWM:"), None);
    }

    #[test]
    fn children_are_whitespace_separated_pids() {
        check(parse_children, "101 102 \n", vec![101, 102]);
        check(parse_children, "", vec![]);
    }
}
