//! RAII fixtures: each one kills what it started when dropped, so a failing test leaves no workers behind.

use std::{
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

/// The daemon binary built by `cargo xtask build` (or `FMD_DAEMON`).
pub fn daemon_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("FMD_DAEMON") {
        return PathBuf::from(path);
    }
    workspace().join("target/release/fmd-daemon")
}

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_path_buf()
}

pub fn apps_dir() -> PathBuf {
    workspace().join("tests/apps")
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// True when this test can load BPF programs. Under `CI=true` a failure panics with the reason (CI is root
/// and must run these tests); elsewhere it prints `skipping: <reason>` and the test returns early.
pub fn require_bpf() -> bool {
    let binary = daemon_binary();
    let reason = match Command::new(&binary).arg("check").output() {
        Ok(out) if out.status.success() => return true,
        Ok(out) => format!(
            "`{} check` failed: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => format!(
            "cannot run {} ({e}); build it with `cargo xtask build`",
            binary.display()
        ),
    };
    assert!(!in_ci(), "BPF tests must run in CI, but: {reason}");
    println!("skipping: {reason}");
    false
}

/// A venv made by `cargo xtask setup` for one interpreter of the test matrix.
#[derive(Clone, Debug)]
pub struct Venv {
    pub label: String,
    pub dir: PathBuf,
}

impl Venv {
    /// The venv labelled `label` (`debian3.11`, `py3.8`...). Missing venvs fail under CI, else skip.
    pub fn get(label: &str) -> Option<Self> {
        let root = std::env::var_os("FMD_VENVS").map_or_else(
            || {
                PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
                    .join(".cache/fmd/venvs")
            },
            PathBuf::from,
        );
        let dir = root.join(label);
        if dir.join("bin/gunicorn").is_file() {
            return Some(Self {
                label: label.to_owned(),
                dir,
            });
        }
        let reason = format!("no venv {} (run `cargo xtask setup`)", dir.display());
        assert!(!in_ci(), "{reason}");
        println!("skipping {label}: {reason}");
        None
    }

    pub fn python(&self) -> PathBuf {
        self.dir.join("bin/python")
    }
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Waits until something accepts connections on `addr`.
pub fn wait_for_port(addr: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on {addr} after {timeout:?}");
}

fn terminate(child: &mut Child, signal: i32) {
    // SAFETY: kill(2) on a child we spawned and have not reaped yet.
    unsafe { libc::kill(child.id() as i32, signal) };
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Children of `pid`, from /proc.
pub fn children(pid: u32) -> Vec<u32> {
    let mut found: Vec<u32> = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|c| {
            std::fs::read_to_string(format!("/proc/{c}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                })
                == Some(pid)
        })
        .collect();
    found.sort_unstable();
    found
}

/// A gunicorn master serving an app from tests/apps, killed (with its workers) on drop.
pub struct Gunicorn {
    child: Child,
    pub addr: String,
}

pub struct GunicornOptions<'a> {
    pub app: &'a str,
    pub workers: u32,
    /// `sync` or `gthread`.
    pub worker_class: &'a str,
    pub threads: u32,
    /// `None`: a free TCP port on 127.0.0.1; `Some(path)`: a unix socket.
    pub unix_socket: Option<&'a Path>,
    pub extra: &'a [&'a str],
}

impl Default for GunicornOptions<'_> {
    fn default() -> Self {
        Self {
            app: "basic:app",
            workers: 2,
            worker_class: "sync",
            threads: 1,
            unix_socket: None,
            extra: &[],
        }
    }
}

impl Gunicorn {
    /// Starts gunicorn and waits until it listens with all its workers.
    pub fn start(venv: &Venv, options: &GunicornOptions<'_>) -> Self {
        let gunicorn = Self::spawn(venv, options);
        gunicorn.wait_ready(options);
        gunicorn
    }

    /// Starts gunicorn without waiting for it (it may still be importing the app, not yet bound or forked).
    pub fn spawn(venv: &Venv, options: &GunicornOptions<'_>) -> Self {
        let (bind, addr) = match options.unix_socket {
            Some(path) => (format!("unix:{}", path.display()), String::new()),
            None => {
                let addr = format!("127.0.0.1:{}", free_port());
                (addr.clone(), addr)
            }
        };
        let child = Command::new(venv.dir.join("bin/gunicorn"))
            .args(["--bind", &bind, "--workers", &options.workers.to_string()])
            .args([
                "--worker-class",
                options.worker_class,
                "--threads",
                &options.threads.to_string(),
            ])
            .args([
                "--access-logfile",
                "/dev/null",
                "--error-logfile",
                "-",
                "--log-level",
                "warning",
            ])
            .args(options.extra)
            .arg(options.app)
            .current_dir(apps_dir())
            .stdout(Stdio::null())
            .spawn()
            .expect("start gunicorn");
        Self { child, addr }
    }

    /// Waits until gunicorn listens and has `options.workers` workers.
    pub fn wait_ready(&self, options: &GunicornOptions<'_>) {
        match options.unix_socket {
            Some(path) => {
                let deadline = Instant::now() + Duration::from_secs(30);
                while !path.exists() {
                    assert!(
                        Instant::now() < deadline,
                        "gunicorn did not create {}",
                        path.display()
                    );
                    thread::sleep(Duration::from_millis(50));
                }
            }
            None => wait_for_port(&self.addr, Duration::from_secs(30)),
        }
        self.wait_for_workers(options.workers as usize);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn workers(&self) -> Vec<u32> {
        children(self.pid())
    }

    /// Waits until the master has `n` workers (after a start or a worker's death).
    pub fn wait_for_workers(&self, n: usize) -> Vec<u32> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let workers = self.workers();
            if workers.len() == n {
                return workers;
            }
            assert!(
                Instant::now() < deadline,
                "gunicorn has {} workers, expected {n}",
                workers.len()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Gunicorn {
    fn drop(&mut self) {
        terminate(&mut self.child, libc::SIGTERM);
    }
}

/// A running `fmd-daemon --pid`, stopped with SIGINT on drop (or explicitly with [`Daemon::stop`]).
pub struct Daemon {
    child: Option<Child>,
    pub db: PathBuf,
    pub listen: String,
}

impl Daemon {
    /// Starts the daemon on `pid` with a fresh store in `dir`, and waits until it has attached.
    pub fn start(pid: u32, dir: &Path) -> Self {
        Self::start_with(pid, &dir.join("fmd.duckdb"), &[])
    }

    pub fn start_with(pid: u32, db: &Path, extra: &[&str]) -> Self {
        Self::spawn(pid, db, extra, Stdio::inherit())
    }

    /// Like [`Daemon::start`] on `db`, with its stderr (logs and the first-start setup link) in `log`.
    pub fn start_logged(pid: u32, db: &Path, log: &Path) -> Self {
        let file = std::fs::File::create(log).expect("create the daemon's log");
        Self::spawn(pid, db, &[], Stdio::from(file))
    }

    fn spawn(pid: u32, db: &Path, extra: &[&str], stderr: Stdio) -> Self {
        let listen = format!("127.0.0.1:{}", free_port());
        let child = Command::new(daemon_binary())
            .arg("--pid")
            .arg(pid.to_string())
            .arg("--db")
            .arg(db)
            .args(["--listen", &listen])
            .args(extra)
            .env("RUST_LOG", "fmd_daemon=debug")
            .stderr(stderr)
            .spawn()
            .expect("start fmd-daemon");
        let daemon = Self {
            child: Some(child),
            db: db.to_path_buf(),
            listen,
        };
        // The daemon writes `<db>.daemon` once its programs are attached and its API listens.
        let marker = daemon.marker();
        // Loading the sampler is the kernel verifier's longest job: over a minute on a busy 2-core machine.
        let deadline = Instant::now() + Duration::from_secs(180);
        while !marker.exists() {
            assert!(
                Instant::now() < deadline,
                "fmd-daemon did not attach within 180 s"
            );
            thread::sleep(Duration::from_millis(50));
        }
        daemon
    }

    fn marker(&self) -> PathBuf {
        let mut name = self.db.clone().into_os_string();
        name.push(".daemon");
        PathBuf::from(name)
    }

    /// Stops the daemon with SIGINT and waits for it to flush and exit; panics if it fails.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let status = child.wait().expect("wait for fmd-daemon");
            assert!(status.success(), "fmd-daemon exited with {status}");
        }
    }

    /// The daemon's local credential (`<db>.token`, written at its start).
    pub fn token(&self) -> String {
        let mut name = self.db.clone().into_os_string();
        name.push(".token");
        std::fs::read_to_string(PathBuf::from(name))
            .expect("the daemon's local credential")
            .trim()
            .to_owned()
    }

    /// Sends `req` to the daemon's API with its local credential (an admin, no CSRF token needed).
    pub fn api(&self, req: &crate::client::Req) -> crate::client::Answer {
        let req = req
            .clone()
            .header("Authorization", &format!("Bearer {}", self.token()))
            .closing();
        crate::client::Conn::tcp(&self.listen)
            .and_then(|mut c| c.send(&req))
            .expect("call the daemon's API")
    }

    /// `fmd-daemon query <what> --db <db> --format json <args>`: one JSON value per output line.
    pub fn query(&self, what: &str, args: &[&str]) -> Vec<serde_json::Value> {
        query(&self.db, what, args)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, libc::SIGINT);
        }
    }
}

/// Runs `fmd-daemon query` on a store, with or without a running daemon.
pub fn query(db: &Path, what: &str, args: &[&str]) -> Vec<serde_json::Value> {
    let out = Command::new(daemon_binary())
        .args(["query", what, "--format", "json", "--db"])
        .arg(db)
        .args(args)
        .output()
        .expect("run fmd-daemon query");
    assert!(
        out.status.success(),
        "query {what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("UTF-8 output")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("fmd-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
