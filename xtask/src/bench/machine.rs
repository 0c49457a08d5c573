//! The machine a run measured, for the report: CPU model and cores, memory, kernel, OS, Python, daemon.

use std::{fs, path::Path, process::Command};

use super::results::Machine;
use crate::command;

/// `app_venv` and `tools_venv` are the benchmark's venvs, whose package versions the report lists.
pub fn describe(app_venv: &Path, tools_venv: &Path, daemon: &Path) -> Machine {
    let python = app_venv.join("bin/python");
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
        python: first_line(Command::new(&python).arg("--version"))
            .unwrap_or_else(|| "unknown".into()),
        fmd_daemon: first_line(Command::new(daemon).arg("--version"))
            .unwrap_or_else(|| "no --version".into()),
        tools: [
            package_versions(&python, &["flask", "gunicorn", "flask-monitoringdashboard"]),
            package_versions(&tools_venv.join("bin/python"), &["py-spy", "duckdb"]),
            wrk_version(),
        ]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(", "),
    }
}

/// `name version` for each installed package, from the venv's own metadata.
fn package_versions(python: &Path, packages: &[&str]) -> String {
    let script = "import importlib.metadata as m, sys\n\
                  print(', '.join(f'{p} {m.version(p)}' for p in sys.argv[1:]))";
    command::output(Command::new(python).args(["-c", script]).args(packages))
        .map_or_else(|_| String::new(), |s| s.trim().to_owned())
}

/// wrk prints its version with `-v` and exits unsuccessfully, so its status is ignored.
fn wrk_version() -> String {
    Command::new("wrk").arg("-v").output().map_or_else(
        |_| String::new(),
        |o| {
            let text = String::from_utf8_lossy(&o.stdout);
            let first = text.lines().next().unwrap_or_default();
            first
                .split(" Copyright")
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned()
        },
    )
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
