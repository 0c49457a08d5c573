//! Test support: spawning the real interpreters fmd supports (pyenv 3.8-3.13 and Debian's non-PIE
//! /usr/bin/python3.11) running a script, and reading the JSON line it prints.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The interpreters to test against, with a label; the missing ones are reported and skipped.
pub fn interpreters() -> Vec<(String, PathBuf)> {
    let root = Command::new("pyenv")
        .arg("root")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| PathBuf::from(s.trim()))
        .unwrap_or_else(|| PathBuf::from("/root/.pyenv"));
    let mut out = Vec::new();
    for minor in 8..=13 {
        let found = std::fs::read_dir(root.join("versions")).ok().and_then(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&format!("3.{minor}.")))
                })
                .max()
        });
        match found.map(|d| d.join(format!("bin/python3.{minor}"))) {
            Some(p) if p.exists() => out.push((format!("pyenv 3.{minor}"), p)),
            _ => eprintln!(
                "skipping CPython 3.{minor}: no pyenv interpreter under {}",
                root.display()
            ),
        }
    }
    let debian = Path::new("/usr/bin/python3.11");
    if debian.exists() {
        out.push(("debian 3.11".into(), debian.to_path_buf()));
    } else {
        eprintln!("skipping Debian python3.11: /usr/bin/python3.11 missing");
    }
    out
}

/// A child process killed on drop.
pub struct Spawned {
    pub child: Child,
    pub json: serde_json::Value,
}

impl Spawned {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Spawned {
    /// SIGTERM first, so a gunicorn master stops its workers, then SIGKILL after 3 s.
    fn drop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: plain kill(2) on our own child, which has not been reaped yet.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cmd` and waits (up to `timeout`) for the first stdout line that parses as JSON.
pub fn spawn_json(mut cmd: Command, timeout: Duration) -> anyhow::Result<Spawned> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if v.is_object() {
                    let _ = tx.send(v);
                }
            }
        }
    });
    let start = Instant::now();
    let mut spawned = Spawned {
        child,
        json: serde_json::Value::Null,
    };
    spawned.json = rx
        .recv_timeout(timeout.saturating_sub(start.elapsed()))
        .map_err(|_| anyhow::anyhow!("no JSON line from {cmd:?} within {timeout:?}"))?;
    Ok(spawned)
}

/// A deterministic xorshift generator for garbage-memory tests (no rand dependency needed).
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

pub const BASE: u64 = 0x10_0000;
pub const SIZE: usize = 1 << 16;

/// Random bytes; or every word a pointer into the region (cycles everywhere); or huge lengths.
pub fn garbage(seed: u64) -> Vec<Vec<u8>> {
    let mut rng = XorShift(seed);
    let random: Vec<u8> = (0..SIZE / 8)
        .flat_map(|_| rng.next_u64().to_le_bytes())
        .collect();
    let cyclic: Vec<u8> = (0..SIZE / 8)
        .flat_map(|_| (BASE + (rng.next_u64() % (SIZE as u64 / 8)) * 8).to_le_bytes())
        .collect();
    let mixed: Vec<u8> = (0..SIZE / 8)
        .flat_map(|i| {
            let w = match i % 4 {
                0 => BASE + (rng.next_u64() % (SIZE as u64 / 8)) * 8,
                1 => u64::MAX - (rng.next_u64() % 4),
                2 => rng.next_u64() % 64,
                _ => 0x7fff_ffff_ffff_fff0,
            };
            w.to_le_bytes()
        })
        .collect();
    vec![random, cyclic, mixed]
}

/// [`garbage`] as address spaces at [`BASE`].
pub fn memories(seed: u64) -> Vec<super::SliceMemory> {
    garbage(seed)
        .into_iter()
        .map(|b| super::SliceMemory::new().with_region(BASE, b))
        .collect()
}
