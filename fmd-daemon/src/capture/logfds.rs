//! Which descriptors of a worker are log destinations, for `FMD_LOG_FDS`: stdout and stderr, regular
//! files open for appending (logging's `FileHandler`, gunicorn's `--error-logfile`), and unix datagram
//! sockets (`SysLogHandler` on `/dev/log`). Read from /proc when a worker is found; BPF adds the files a
//! worker opens later itself (`fmd_exit_openat`).

use std::{collections::HashSet, fs};

use fmd_common::http::log_fd;

/// `O_APPEND` and the access mode bits of `/proc/PID/fdinfo/N`'s `flags` (octal).
const O_APPEND: u64 = 0o2000;
const O_ACCMODE: u64 = 0o3;
/// `/proc/net/unix`'s `Type` of a datagram socket.
const SOCK_DGRAM: &str = "0002";

/// The log descriptors of `pid` with their kind ([`log_fd`]); empty when its /proc cannot be read.
pub fn log_descriptors(pid: u32) -> Vec<(i32, u32)> {
    let Ok(entries) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let fds: Vec<(i32, String, u64)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse::<i32>().ok()?;
            let target = fs::read_link(e.path()).ok()?.to_str()?.to_owned();
            let flags = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
                .ok()
                .and_then(|info| fdinfo_flags(&info))
                .unwrap_or(0);
            Some((fd, target, flags))
        })
        .collect();
    let unix = fs::read_to_string(format!("/proc/{pid}/net/unix")).unwrap_or_default();
    classify(&fds, &unix)
}

/// `flags:\t0102001` in an fdinfo file.
fn fdinfo_flags(info: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 8).ok())
}

/// `(fd, readlink target, open flags)` and the process's `/proc/net/unix` → the log descriptors.
fn classify(fds: &[(i32, String, u64)], unix_table: &str) -> Vec<(i32, u32)> {
    let datagram: HashSet<&str> = unix_table
        .lines()
        .skip(1)
        .filter_map(|line| {
            // `Num RefCount Protocol Flags Type St Inode Path`
            let cols: Vec<&str> = line.split_whitespace().collect();
            (*cols.get(4)? == SOCK_DGRAM).then_some(*cols.get(6)?)
        })
        .collect();
    let mut out: Vec<(i32, u32)> = fds
        .iter()
        .filter_map(|(fd, target, flags)| {
            if *fd == 1 || *fd == 2 {
                return Some((*fd, log_fd::STDIO));
            }
            if let Some(inode) = target
                .strip_prefix("socket:[")
                .and_then(|t| t.strip_suffix(']'))
            {
                return datagram.contains(inode).then_some((*fd, log_fd::SYSLOG));
            }
            let appending = flags & O_APPEND != 0 && flags & O_ACCMODE != 0;
            (target.starts_with('/') && appending).then_some((*fd, log_fd::FILE))
        })
        .collect();
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdio_appended_files_and_datagram_sockets_are_log_destinations() {
        let unix = "Num       RefCount Protocol Flags    Type St Inode Path\n\
                    0000000000000000: 00000002 00000000 00000000 0002 01 31337\n\
                    0000000000000000: 00000002 00000000 00010000 0001 01 4242 /tmp/gunicorn.sock\n";
        let fds = [
            (0, "/dev/null".to_owned(), 0o100000),
            (1, "pipe:[77]".to_owned(), 0o1),
            (2, "/dev/pts/0".to_owned(), 0o2),
            // logging.FileHandler('app.log'): O_WRONLY | O_APPEND | O_CLOEXEC | O_CREAT (not kept).
            (5, "/var/log/app.log".to_owned(), 0o2102001),
            // A data file open for reading and writing, not appending.
            (6, "/srv/data.db".to_owned(), 0o2),
            // Opened read-only with O_APPEND: nothing to write.
            (7, "/var/log/other.log".to_owned(), 0o2000),
            (8, "socket:[31337]".to_owned(), 0o2),
            (9, "socket:[4242]".to_owned(), 0o2),
            (10, "anon_inode:[eventpoll]".to_owned(), 0o2),
        ];
        assert_eq!(
            classify(&fds, unix),
            [
                (1, log_fd::STDIO),
                (2, log_fd::STDIO),
                (5, log_fd::FILE),
                (8, log_fd::SYSLOG)
            ]
        );
        assert_eq!(
            fdinfo_flags("pos:\t0\nflags:\t02102001\nmnt_id:\t30\n"),
            Some(0o2102001)
        );
    }

    #[test]
    fn our_own_stderr_is_found() {
        let fds = log_descriptors(std::process::id());
        assert!(fds.contains(&(2, log_fd::STDIO)), "{fds:?}");
    }
}
