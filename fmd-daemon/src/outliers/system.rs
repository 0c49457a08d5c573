//! The machine's state when an outlier is seen, as FMD records it: CPU use per core (from `/proc/stat`
//! deltas between two readings), the worker's resident memory and the machine's memory in use.

use std::time::{Duration, Instant};

/// A reading closer than this to the previous one is too noisy to use; the previous percentages are kept.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// Per-core (busy, total) jiffies.
type Times = Vec<(u64, u64)>;

/// Per-core CPU use between readings of `/proc/stat`; [`CpuMeter::read`] is called on the daemon's tick
/// so an outlier's reading covers the last half second or so.
#[derive(Debug, Default)]
pub struct CpuMeter {
    last: Option<(Instant, Times)>,
    percent: Vec<f64>,
}

impl CpuMeter {
    /// Reads `/proc/stat` (unless the last reading is too recent) and returns the use per core, in percent,
    /// since the previous reading.
    pub fn read(&mut self) -> Vec<f64> {
        let now = Instant::now();
        if self
            .last
            .as_ref()
            .is_some_and(|(at, _)| now.duration_since(*at) < MIN_INTERVAL)
        {
            return self.percent.clone();
        }
        let Ok(text) = std::fs::read_to_string("/proc/stat") else {
            return self.percent.clone();
        };
        let times = parse_stat(&text);
        if let Some((_, before)) = &self.last {
            self.percent = percent(before, &times);
        }
        self.last = Some((now, times));
        self.percent.clone()
    }
}

/// `cpuN` lines of `/proc/stat` -> (busy, total) jiffies per core; idle and iowait are not busy.
pub fn parse_stat(text: &str) -> Times {
    text.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .map(|n| n.parse().unwrap_or(0))
                .collect();
            let total: u64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            (total.saturating_sub(idle), total)
        })
        .collect()
}

/// Percent busy per core between two readings.
pub fn percent(before: &Times, after: &Times) -> Vec<f64> {
    after
        .iter()
        .zip(before)
        .map(|(&(busy, total), &(busy0, total0))| {
            let dt = total.saturating_sub(total0);
            if dt == 0 {
                0.0
            } else {
                let p = 100.0 * busy.saturating_sub(busy0) as f64 / dt as f64;
                (p * 10.0).round() / 10.0
            }
        })
        .collect()
}

/// Resident memory of `pid` in bytes (`/proc/PID/statm`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// The machine's memory in use in bytes: `MemTotal - MemAvailable` (what `free` shows as used, plus
/// the unreclaimable caches).
pub fn machine_memory_used_bytes() -> Option<u64> {
    parse_meminfo(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

pub fn parse_meminfo(text: &str) -> Option<u64> {
    let kib = |key: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some(kib("MemTotal")?.saturating_sub(kib("MemAvailable")?) * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_percent_per_core_from_two_readings() {
        let a = parse_stat("cpu  9 9 9 9 9 0 0 0 0 0\ncpu0 100 0 100 700 100 0 0 0 0 0\ncpu1 0 0 0 1000 0 0 0 0 0 0\nintr 5\n");
        let b = parse_stat("cpu  9 9 9 9 9 0 0 0 0 0\ncpu0 150 0 150 750 150 0 0 0 0 0\ncpu1 0 0 0 1100 0 0 0 0 0 0\n");
        assert_eq!(a, [(200, 1000), (0, 1000)]);
        assert_eq!(percent(&a, &b), [50.0, 0.0]);
        assert_eq!(percent(&a, &a), [0.0, 0.0]);
    }

    #[test]
    fn memory_used() {
        let text = "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    400 kB\n";
        assert_eq!(parse_meminfo(text), Some(600 * 1024));
        assert_eq!(parse_meminfo("MemTotal: 5 kB\n"), None);
        assert!(rss_bytes(std::process::id()).is_some_and(|b| b > 0));
        assert!(machine_memory_used_bytes().is_some_and(|b| b > 0));
    }
}
