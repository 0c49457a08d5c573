//! Which processes to watch for a `--pid`: a gunicorn master and its workers, or one worker (or any single
//! Python server process). Reads /proc only; the kernel-side table lives in `capture`.

use std::{fs, io, path::PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no process with PID {pid} (check the PID of the gunicorn master with `pgrep -f gunicorn`)"
    )]
    NoSuchProcess { pid: u32 },
    #[error("cannot inspect process {pid}: permission denied (run fmd-daemon as root)")]
    Permission { pid: u32 },
    #[error(
        "process {pid} ({exe}) is not a Python process: give the PID of a gunicorn master or worker running a \
         Flask app"
    )]
    NotPython { pid: u32, exe: String },
    #[error("cannot read /proc/{pid}/{file}")]
    Read {
        pid: u32,
        file: &'static str,
        #[source]
        source: io::Error,
    },
}

/// What `--pid` turned out to be, which decides its role bits in BPF's pid table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A gunicorn arbiter (known by its command line): it forks the workers and never serves, so its forks
    /// are followed and it is not captured itself.
    Master { pid: u32 },
    /// Not a fork of the same program, and not known to be a pure master: a master that has not forked its
    /// workers yet (`gunicorn app:app & fmd-daemon --pid $!`), a master of another kind, or a
    /// single-process server (`python app.py`). Its forks are followed *and* its own requests captured,
    /// whatever its children are at this moment.
    Server { pid: u32 },
    /// A fork of the same program (a gunicorn worker named directly): that process only.
    Worker { pid: u32 },
}

impl Target {
    pub fn pid(&self) -> u32 {
        match self {
            Self::Master { pid } | Self::Server { pid } | Self::Worker { pid } => *pid,
        }
    }

    /// The role bits written for the target into BPF's pid table.
    pub fn role(&self) -> u32 {
        match self {
            Self::Master { .. } => fmd_common::ROLE_MASTER,
            Self::Server { .. } => fmd_common::ROLE_MASTER | fmd_common::ROLE_WORKER,
            Self::Worker { .. } => fmd_common::ROLE_WORKER,
        }
    }

    /// Whether the target's forks become watched workers.
    pub fn follows_forks(&self) -> bool {
        self.role() & fmd_common::ROLE_MASTER != 0
    }

    /// Whether the target's own accepted connections are captured.
    pub fn serves(&self) -> bool {
        self.role() & fmd_common::ROLE_WORKER != 0
    }

    /// What was decided, for the log.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Master { .. } => {
                "gunicorn master: following its workers, present and future (it serves no request itself)"
            }
            Self::Server { .. } => {
                "not a fork of the same program: capturing its own requests and following every process it \
                 forks (a master before its workers start, or a single-process server)"
            }
            Self::Worker { .. } => {
                "a worker forked by a process of the same program: capturing this worker only (give the \
                 master's PID to follow every worker)"
            }
        }
    }
}

/// Facts about one process, read from /proc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: u32,
    pub ppid: u32,
    /// Thread-group id: equal to `pid` for a process, different for a thread.
    pub tgid: u32,
    pub exe: PathBuf,
    pub cmdline: Vec<String>,
    /// A libpython or python executable is mapped.
    pub python: bool,
}

pub fn inspect(pid: u32) -> Result<ProcInfo, Error> {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let status = match fs::read_to_string(dir.join("status")) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Error::NoSuchProcess { pid }),
        Err(source) => {
            return Err(Error::Read {
                pid,
                file: "status",
                source,
            })
        }
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u32>().ok())
            .unwrap_or(0)
    };
    let exe = match fs::read_link(dir.join("exe")) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(Error::Permission { pid })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Error::NoSuchProcess { pid }),
        // Kernel threads have no exe.
        Err(_) => PathBuf::new(),
    };
    let cmdline = fs::read(dir.join("cmdline")).map_err(|source| Error::Read {
        pid,
        file: "cmdline",
        source,
    })?;
    let cmdline = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let maps = match fs::read_to_string(dir.join("maps")) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(Error::Permission { pid })
        }
        Err(source) => {
            return Err(Error::Read {
                pid,
                file: "maps",
                source,
            })
        }
    };
    Ok(ProcInfo {
        pid,
        ppid: field("PPid:"),
        tgid: field("Tgid:"),
        python: maps_have_python(&maps, &exe),
        exe,
        cmdline,
    })
}

/// The thread-group id of `pid` (itself for a process, its process for a thread), from /proc/PID/status
/// alone; `None` when it is gone.
pub fn tgid(pid: u32) -> Option<u32> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))?
        .trim()
        .parse()
        .ok()
}

/// A CPython process maps either a `python3.X` executable with the interpreter linked in, or `libpython3.X`.
fn maps_have_python(maps: &str, exe: &std::path::Path) -> bool {
    let is_python_name = |name: &str| name.starts_with("python") || name.starts_with("libpython");
    exe.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(is_python_name)
        || maps
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .filter_map(|p| p.rsplit('/').next())
            .any(|n| n.starts_with("libpython"))
}

/// Children of `pid` (processes whose parent it is).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| {
            fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|s| parse_stat_ppid(&s))
                == Some(pid)
        })
        .collect()
}

/// `ppid` from /proc/PID/stat: after the `)` that closes the command name, which may hold spaces.
fn parse_stat_ppid(stat: &str) -> Option<u32> {
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Decides how to watch `pid`. A process whose parent runs the same program with the same command line
/// is a forked worker (gunicorn workers are forks of the master, not new programs). Any other process is a
/// master whatever its children are at this moment (it may not have forked yet); it also serves unless its
/// command line says it is a gunicorn arbiter, which never accepts a connection itself.
pub fn resolve(pid: u32) -> Result<Target, Error> {
    let info = inspect(pid)?;
    if !info.python {
        return Err(Error::NotPython {
            pid,
            exe: info.exe.display().to_string(),
        });
    }
    let parent = inspect(info.ppid).ok();
    Ok(classify(&info, parent.as_ref()))
}

fn classify(info: &ProcInfo, parent: Option<&ProcInfo>) -> Target {
    let pid = info.pid;
    let forked = parent.is_some_and(|p| p.python && p.exe == info.exe && p.cmdline == info.cmdline);
    if forked || is_gunicorn_worker_title(&info.cmdline) {
        Target::Worker { pid }
    } else if is_gunicorn_master(&info.cmdline) {
        Target::Master { pid }
    } else {
        Target::Server { pid }
    }
}

/// `gunicorn ...`, `python /venv/bin/gunicorn ...`, `python -m gunicorn ...`, or the title gunicorn sets
/// when `setproctitle` is installed (`gunicorn: master [app:app]`).
fn is_gunicorn_master(cmdline: &[String]) -> bool {
    let name = |arg: Option<&String>| {
        arg.and_then(|a| a.rsplit('/').next())
            .is_some_and(|n| n == "gunicorn")
    };
    let args: Vec<&String> = cmdline.iter().collect();
    name(args.first().copied())
        || (args.first().is_some_and(|a| a.contains("python"))
            && (name(args.get(1).copied())
                || (args.get(1).is_some_and(|a| *a == "-m") && name(args.get(2).copied()))))
        || cmdline
            .first()
            .is_some_and(|a| a.starts_with("gunicorn: master"))
}

/// gunicorn's workers are titled `gunicorn: worker [app:app]` with `setproctitle`, unlike their master.
fn is_gunicorn_worker_title(cmdline: &[String]) -> bool {
    cmdline
        .first()
        .is_some_and(|a| a.starts_with("gunicorn: worker"))
}

/// `pid`'s children that are forks of it (processes, not threads, running the same executable): the
/// workers a master started before fmd watched it.
pub fn forked_children(pid: u32) -> Vec<u32> {
    let Ok(info) = inspect(pid) else {
        return Vec::new();
    };
    let mut workers: Vec<u32> = children(pid)
        .into_iter()
        .filter(|&c| inspect(c).is_ok_and(|c| c.python && c.exe == info.exe && c.tgid == c.pid))
        .collect();
    workers.sort_unstable();
    workers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppid_from_stat_with_odd_command_names() {
        assert_eq!(
            parse_stat_ppid("1234 (gunicorn) S 99 1234 1234 0 -1"),
            Some(99)
        );
        assert_eq!(parse_stat_ppid("1234 (a) b (c) S 7 1 1"), Some(7));
        assert_eq!(parse_stat_ppid("garbage"), None);
    }

    #[test]
    fn python_detection_from_maps() {
        let maps =
            "7f00-7f01 r-xp 0 08:01 1 /root/.pyenv/versions/3.12.1/lib/libpython3.12.so.1.0\n";
        assert!(maps_have_python(
            maps,
            std::path::Path::new("/usr/bin/something")
        ));
        assert!(maps_have_python(
            "",
            std::path::Path::new("/usr/bin/python3.11")
        ));
        assert!(!maps_have_python(
            "7f00-7f01 r-xp 0 08:01 1 /usr/lib/libc.so.6\n",
            std::path::Path::new("/usr/bin/sleep")
        ));
    }

    fn proc(pid: u32, ppid: u32, exe: &str, cmdline: &[&str]) -> ProcInfo {
        ProcInfo {
            pid,
            ppid,
            tgid: pid,
            exe: exe.into(),
            cmdline: cmdline.iter().map(|&a| a.to_owned()).collect(),
            python: true,
        }
    }

    #[test]
    fn roles_follow_from_the_parent_not_the_children() {
        let py = "/usr/bin/python3.11";
        let master_cmd = ["/usr/bin/python3.11", "/venv/bin/gunicorn", "app:app"];
        let shell = ProcInfo {
            python: false,
            ..proc(10, 1, "/usr/bin/bash", &["bash"])
        };
        let master = proc(100, 10, py, &master_cmd);
        // The master as the target: followed, not captured, with or without workers yet.
        assert_eq!(classify(&master, Some(&shell)), Target::Master { pid: 100 });
        // One of its workers: captured alone.
        let worker = proc(101, 100, py, &master_cmd);
        assert_eq!(
            classify(&worker, Some(&master)),
            Target::Worker { pid: 101 }
        );
        // `python app.py`, a server with no master: captured, and its forks followed.
        let single = proc(200, 10, py, &["python3", "app.py"]);
        assert_eq!(classify(&single, Some(&shell)), Target::Server { pid: 200 });
        assert_eq!(classify(&single, None), Target::Server { pid: 200 });
        // Werkzeug's reloader runs the app as a child with the same command line: that child is a worker.
        let reloaded = proc(201, 200, py, &["python3", "app.py"]);
        assert_eq!(
            classify(&reloaded, Some(&single)),
            Target::Worker { pid: 201 }
        );
        // With setproctitle, master and workers have different titles.
        let titled = proc(300, 10, py, &["gunicorn: master [app:app]"]);
        assert_eq!(classify(&titled, Some(&shell)), Target::Master { pid: 300 });
        let titled_worker = proc(301, 300, py, &["gunicorn: worker [app:app]"]);
        assert_eq!(
            classify(&titled_worker, Some(&titled)),
            Target::Worker { pid: 301 }
        );
        let role = |t: Target| (t.follows_forks(), t.serves());
        assert_eq!(role(Target::Master { pid: 1 }), (true, false));
        assert_eq!(role(Target::Server { pid: 1 }), (true, true));
        assert_eq!(role(Target::Worker { pid: 1 }), (false, true));
    }

    #[test]
    fn gunicorn_masters_by_command_line() {
        let check = |cmdline: &[&str], expect: bool| {
            let cmdline: Vec<String> = cmdline.iter().map(|&a| a.to_owned()).collect();
            assert_eq!(is_gunicorn_master(&cmdline), expect, "{cmdline:?}");
        };
        check(&["/venv/bin/gunicorn", "app:app"], true);
        check(&["gunicorn"], true);
        check(&["/usr/bin/python3", "/venv/bin/gunicorn", "-w", "2"], true);
        check(&["python3.12", "-m", "gunicorn", "app:app"], true);
        check(&["gunicorn: master [app:app]"], true);
        check(&["python3", "app.py"], false);
        check(&["python3", "-m", "flask", "run"], false);
        check(&["/usr/bin/python3", "/opt/gunicorn-tools/run.py"], false);
        check(&[], false);
    }

    #[test]
    fn thread_group_of_a_thread_is_its_process() {
        let me = std::process::id();
        assert_eq!(tgid(me), Some(me));
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() } as u32).expect("send");
            std::thread::sleep(std::time::Duration::from_millis(200));
        });
        let tid = rx.recv().expect("tid");
        assert_eq!(tgid(tid), Some(me));
        thread.join().expect("join");
        assert_eq!(tgid(u32::MAX - 1), None);
    }

    #[test]
    fn missing_and_non_python_processes() {
        assert!(matches!(
            resolve(u32::MAX - 1),
            Err(Error::NoSuchProcess { .. })
        ));
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let err = resolve(child.id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(matches!(err, Err(Error::NotPython { .. })), "{err:?}");
    }
}

/// Sockets `pid` had accepted before fmd attached (keep-alive connections of gthread workers, a request in
/// flight): established TCP sockets on a port the process listens on, and connected unix sockets bound to
/// a path it listens on. Their later requests are captured once they are in the connection table.
pub fn accepted_sockets(pid: u32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let inodes: std::collections::HashMap<u64, i32> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse::<i32>().ok()?;
            let target = fs::read_link(e.path()).ok()?;
            let inode = target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()?;
            Some((inode, fd))
        })
        .collect();
    let read =
        |name: &str| fs::read_to_string(format!("/proc/{pid}/net/{name}")).unwrap_or_default();
    let tcp = [read("tcp"), read("tcp6")].concat();
    let mut fds = server_tcp_inodes(&tcp, |i| inodes.contains_key(&i));
    fds.extend(server_unix_inodes(&read("unix"), |i| {
        inodes.contains_key(&i)
    }));
    let mut fds: Vec<i32> = fds.iter().filter_map(|i| inodes.get(i).copied()).collect();
    fds.sort_unstable();
    fds
}

/// Inodes of established TCP sockets whose local port is one a socket of the process listens on.
fn server_tcp_inodes(table: &str, ours: impl Fn(u64) -> bool) -> Vec<u64> {
    // `sl local_address rem_address st ... inode`: addresses are `HEXIP:HEXPORT`, state 0A = LISTEN,
    // 01 = ESTABLISHED, the inode is the 10th column.
    let rows: Vec<(u16, &str, u64)> = table
        .lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let port = u16::from_str_radix(cols.get(1)?.rsplit(':').next()?, 16).ok()?;
            Some((port, *cols.get(3)?, cols.get(9)?.parse().ok()?))
        })
        .filter(|&(_, _, inode)| ours(inode))
        .collect();
    let listening: Vec<u16> = rows.iter().filter(|r| r.1 == "0A").map(|r| r.0).collect();
    rows.iter()
        .filter(|r| r.1 == "01" && listening.contains(&r.0))
        .map(|r| r.2)
        .collect()
}

/// Inodes of connected unix stream sockets bound to a path a socket of the process listens on (the server
/// side of an accepted connection carries the listening socket's path; the client side has none).
fn server_unix_inodes(table: &str, ours: impl Fn(u64) -> bool) -> Vec<u64> {
    // `Num RefCount Protocol Flags Type St Inode Path`: flag 0x10000 = accepting, state 03 = connected.
    let rows: Vec<(u32, &str, u64, &str)> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let flags = u32::from_str_radix(cols.get(3)?, 16).ok()?;
            Some((
                flags,
                *cols.get(5)?,
                cols.get(6)?.parse().ok()?,
                *cols.get(7)?,
            ))
        })
        .filter(|&(_, _, inode, _)| ours(inode))
        .collect();
    let listening: Vec<&str> = rows
        .iter()
        .filter(|r| r.0 & 0x10000 != 0)
        .map(|r| r.3)
        .collect();
    rows.iter()
        .filter(|r| r.1 == "03" && listening.contains(&r.3))
        .map(|r| r.2)
        .collect()
}

#[cfg(test)]
mod socket_tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 100 1 0 100 0 0 10 0\n\
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 101 1 0 20 4 30 10 -1\n\
   2: 0100007F:C351 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 102 1 0 20 4 30 10 -1\n\
   3: 0100007F:D000 0100007F:18EB 01 00000000:00000000 00:00000000 00000000     0        0 103 1 0 20 4 30 10 -1\n\
   4: 0100007F:1F90 0100007F:C352 01 00000000:00000000 00:00000000 00000000     0        0 999 1 0 20 4 30 10 -1\n";

    #[test]
    fn accepted_tcp_sockets_are_on_a_listening_port() {
        // 101: accepted on :8080; 102: a client connection *to* :8080 (local port is ephemeral); 103: an
        // outgoing connection; 999: accepted, but by another process.
        let ours = |i: u64| i != 999;
        assert_eq!(server_tcp_inodes(TCP, ours), vec![101]);
        assert_eq!(
            server_tcp_inodes(TCP, |i| i == 101),
            Vec::<u64>::new(),
            "no listening socket of ours"
        );
    }

    #[test]
    fn accepted_unix_sockets_carry_the_listening_path() {
        let unix = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000000000001: 00000002 00000000 00010000 0001 01 200 /run/app.sock\n\
            0000000000000002: 00000003 00000000 00000000 0001 03 201 /run/app.sock\n\
            0000000000000003: 00000003 00000000 00000000 0001 03 202\n\
            0000000000000004: 00000003 00000000 00000000 0001 03 203 /run/other.sock\n";
        assert_eq!(server_unix_inodes(unix, |_| true), vec![201]);
    }

    #[test]
    fn a_process_without_sockets_has_no_accepted_sockets() {
        // A child of its own: this test process may host other tests' servers and their connections.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let fds = accepted_sockets(child.id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(fds.is_empty(), "{fds:?}");
    }
}
