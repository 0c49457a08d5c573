//! The machine a run measured, for the report: CPU model and cores, memory, kernel, OS, Python, daemon.

use std::{fs, path::Path, process::Command};

use super::results::Machine;
use crate::command;

pub fn describe(python: &Path, daemon: &Path) -> Machine {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let first_line = |cmd: &mut Command| {
        command::output(cmd)
            .ok()
            .and_then(|s| s.lines().next().map(|l| l.trim().to_owned()))
    };
    Machine {
        cpu: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".into()),
        cores: std::thread::available_parallelism().map_or(0, |n| n.get() as u32),
        memory_gib: mem_total_kib(&meminfo).map_or(0.0, |kib| kib as f64 / 1024.0 / 1024.0),
        kernel: first_line(Command::new("uname").args(["-srm"]))
            .unwrap_or_else(|| "unknown".into()),
        os: fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|s| pretty_name(&s))
            .unwrap_or_else(|| "unknown".into()),
        python: first_line(Command::new(python).arg("--version"))
            .unwrap_or_else(|| "unknown".into()),
        fmd_daemon: first_line(Command::new(daemon).arg("--version"))
            .unwrap_or_else(|| "no --version".into()),
    }
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    let line = cpuinfo.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_owned())
}

fn mem_total_kib(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    line.trim_start_matches("MemTotal:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn pretty_name(os_release: &str) -> Option<String> {
    let line = os_release.lines().find(|l| l.starts_with("PRETTY_NAME="))?;
    Some(
        line.trim_start_matches("PRETTY_NAME=")
            .trim_matches('"')
            .to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<T: PartialEq + std::fmt::Debug>(
        f: fn(&str) -> Option<T>,
        input: &str,
        expect: Option<T>,
    ) {
        assert_eq!(f(input), expect, "input: {input:?}");
    }

    #[test]
    fn fields() {
        check(
            cpu_model,
            "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t: fpu\n",
            Some("AMD EPYC 7B13".to_owned()),
        );
        check(cpu_model, "processor\t: 0\n", None);
        check(
            mem_total_kib,
            "MemTotal:        8131096 kB\nMemFree: 1 kB\n",
            Some(8_131_096),
        );
        check(
            pretty_name,
            "NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n",
            Some("Debian GNU/Linux 12 (bookworm)".to_owned()),
        );
    }
}
