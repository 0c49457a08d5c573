//! Everything that touches the kernel: loading and attaching the BPF programs, the watched-process table,
//! draining the ring buffer and reading the drop counters. The only module that imports `aya`.

pub mod http;
pub mod logfds;
pub mod procs;
pub mod sampler;
pub mod usdt;

use std::{io, path::Path};

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{ProgramError, TracePoint},
    Ebpf, EbpfError,
};
use fmd_common::{names, stats, BpfConfig};

/// The BPF object built by build.rs from fmd-ebpf.
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fmd-ebpf"));

const TRACEFS: &str = "/sys/kernel/tracing";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot load BPF programs: permission denied (run fmd-daemon as root, or with CAP_BPF, CAP_PERFMON and \
         CAP_SYS_ADMIN)"
    )]
    Privileges,
    #[error("cannot load the BPF object")]
    Load(#[source] EbpfError),
    #[error("the kernel's verifier rejected program {program}: {reason}\n{log}")]
    Verifier {
        program: String,
        reason: io::Error,
        log: String,
    },
    #[error("cannot load or attach program {program}")]
    Program {
        program: String,
        #[source]
        source: ProgramError,
    },
    #[error("the BPF object has no {what} named {name}")]
    Missing {
        what: &'static str,
        name: &'static str,
    },
    #[error("cannot use BPF map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("tracefs is not available at {TRACEFS} and mounting it failed")]
    Tracefs(#[source] io::Error),
    #[error("cannot attach to the USDT probe {probe}")]
    Usdt {
        probe: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot list the online CPUs to attach the sampler to")]
    Cpus(#[source] io::Error),
    #[error("cannot read the format of tracepoint {tracepoint}")]
    TracepointFormat {
        tracepoint: String,
        source: io::Error,
    },
}

/// Counters the BPF programs keep, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BpfCounters {
    pub ringbuf_drops: u64,
    pub conn_table_full: u64,
    pub events_sent: u64,
    pub data_truncated: u64,
    /// Log writes longer than the copy bound (their tail was not copied).
    pub log_truncated: u64,
    /// New workers that did not fit in the pid table (not captured at all).
    pub pids_table_full: u64,
    /// Syscalls on accepted sockets whose arguments did not fit in the pending table (bytes missing).
    pub pending_table_full: u64,
}

/// The loaded programs and maps; dropping it detaches everything.
pub struct Capture {
    ebpf: Ebpf,
}

impl Capture {
    /// Loads the programs, writes their configuration and attaches every tracepoint.
    pub fn load() -> Result<Self, Error> {
        ensure_tracefs()?;
        let mut ebpf = Ebpf::load(BPF_OBJECT).map_err(|e| match e {
            EbpfError::MapError(aya::maps::MapError::CreateError { ref io_error, .. })
                if io_error.kind() == io::ErrorKind::PermissionDenied =>
            {
                Error::Privileges
            }
            e => Error::Load(e),
        })?;
        let config = BpfConfig {
            fork_child_pid_offset: field_offset("sched", "sched_process_fork", "child_pid")?,
            _pad: 0,
        };
        let mut array: Array<_, BpfConfig> = Array::try_from(map_mut(&mut ebpf, names::CONFIG)?)
            .map_err(|source| Error::Map {
                name: names::CONFIG,
                source,
            })?;
        array.set(0, config, 0).map_err(|source| Error::Map {
            name: names::CONFIG,
            source,
        })?;
        for &(program, category, tracepoint) in names::SYSCALL_PROGRAMS {
            let _span = tracing::debug_span!("attach", program, tracepoint).entered();
            let prog: &mut TracePoint = program_mut(&mut ebpf, program)?;
            prog.load()
                .map_err(|source| program_error(program, source))?;
            prog.attach(category, tracepoint)
                .map_err(|source| program_error(program, source))?;
        }
        tracing::debug!(
            programs = names::SYSCALL_PROGRAMS.len(),
            "BPF programs attached"
        );
        Ok(Self { ebpf })
    }

    /// Puts `pid` under watch with `role` (bits [`fmd_common::ROLE_MASTER`], [`fmd_common::ROLE_WORKER`]).
    pub fn watch(&mut self, pid: u32, role: u32) -> Result<(), Error> {
        self.pids()?
            .insert(pid, role, 0)
            .map_err(|source| Error::Map {
                name: names::PIDS,
                source,
            })
    }

    /// Puts sockets `pid` accepted before fmd attached into the connection table, so that their next
    /// requests are captured; a socket BPF already tracks (accepted meanwhile) is left alone.
    pub fn track_existing(&mut self, pid: u32, fds: &[i32], now_ns: u64) -> Result<usize, Error> {
        const BPF_NOEXIST: u64 = 1;
        let mut conns: HashMap<_, fmd_common::http::ConnKey, fmd_common::http::Conn> =
            HashMap::try_from(map_mut(&mut self.ebpf, names::CONNS)?).map_err(|source| {
                Error::Map {
                    name: names::CONNS,
                    source,
                }
            })?;
        let mut added = 0;
        for (i, &fd) in fds.iter().enumerate() {
            // A distinct, non-zero identity per socket, earlier than anything BPF stamps from now on.
            let conn = fmd_common::http::Conn {
                conn_ts: now_ns.saturating_sub(fds.len() as u64 - i as u64),
            };
            if conns
                .insert(
                    fmd_common::http::ConnKey { tgid: pid, fd },
                    conn,
                    BPF_NOEXIST,
                )
                .is_ok()
            {
                added += 1;
            }
        }
        Ok(added)
    }

    /// Stops watching `pid` (already gone, or a thread mistaken for a process).
    pub fn unwatch(&mut self, pid: u32) -> Result<(), Error> {
        match self.pids()?.remove(&pid) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(source) => Err(Error::Map {
                name: names::PIDS,
                source,
            }),
        }
    }

    /// Forgets the accepted sockets of a process that exited (its closes were never seen).
    pub fn forget_connections(&mut self, pid: u32) -> Result<usize, Error> {
        let mut conns: HashMap<_, fmd_common::http::ConnKey, fmd_common::http::Conn> =
            HashMap::try_from(map_mut(&mut self.ebpf, names::CONNS)?).map_err(|source| {
                Error::Map {
                    name: names::CONNS,
                    source,
                }
            })?;
        let stale: Vec<_> = conns
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.tgid == pid)
            .collect();
        for key in &stale {
            let _ = conns.remove(key);
        }
        Ok(stale.len())
    }

    /// Adds `pid`'s log descriptors (`(fd, kind)`, from [`logfds::log_descriptors`]) to `FMD_LOG_FDS`.
    pub fn watch_log_fds(&mut self, pid: u32, fds: &[(i32, u32)]) -> Result<(), Error> {
        let mut map = self.log_fds()?;
        for &(fd, kind) in fds {
            map.insert(fmd_common::http::ConnKey { tgid: pid, fd }, kind, 0)
                .map_err(|source| Error::Map {
                    name: names::LOG_FDS,
                    source,
                })?;
        }
        Ok(())
    }

    /// Forgets the log descriptors of a process that exited.
    pub fn forget_log_fds(&mut self, pid: u32) -> Result<(), Error> {
        let mut map = self.log_fds()?;
        let stale: Vec<_> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.tgid == pid)
            .collect();
        for key in &stale {
            let _ = map.remove(key);
        }
        Ok(())
    }

    fn log_fds(&mut self) -> Result<HashMap<&mut MapData, fmd_common::http::ConnKey, u32>, Error> {
        HashMap::try_from(map_mut(&mut self.ebpf, names::LOG_FDS)?).map_err(|source| Error::Map {
            name: names::LOG_FDS,
            source,
        })
    }

    /// Takes the ring buffer out, for the task that drains it.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, Error> {
        let map = self.ebpf.take_map(names::EVENTS).ok_or(Error::Missing {
            what: "map",
            name: names::EVENTS,
        })?;
        RingBuf::try_from(map).map_err(|source| Error::Map {
            name: names::EVENTS,
            source,
        })
    }

    pub fn counters(&self) -> Result<BpfCounters, Error> {
        let sums = self.stat_sums()?;
        let at = |index: u32| sums[index as usize];
        Ok(BpfCounters {
            ringbuf_drops: at(stats::RINGBUF_DROPS),
            conn_table_full: at(stats::CONN_TABLE_FULL),
            events_sent: at(stats::EVENTS_SENT),
            data_truncated: at(stats::DATA_TRUNCATED),
            log_truncated: at(stats::LOG_TRUNCATED),
            pids_table_full: at(stats::PIDS_TABLE_FULL),
            pending_table_full: at(stats::PENDING_TABLE_FULL),
        })
    }

    /// Every counter of `FMD_STATS`, summed over CPUs, indexed by `fmd_common::stats`.
    fn stat_sums(&self) -> Result<[u64; stats::COUNT as usize], Error> {
        let map = self.ebpf.map(names::STATS).ok_or(Error::Missing {
            what: "map",
            name: names::STATS,
        })?;
        let array: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map).map_err(|source| Error::Map {
                name: names::STATS,
                source,
            })?;
        let mut sums = [0; stats::COUNT as usize];
        for (index, sum) in (0..stats::COUNT).zip(sums.iter_mut()) {
            let values = array.get(&index, 0).map_err(|source| Error::Map {
                name: names::STATS,
                source,
            })?;
            *sum = values.iter().sum();
        }
        Ok(sums)
    }

    fn pids(&mut self) -> Result<HashMap<&mut MapData, u32, u32>, Error> {
        HashMap::try_from(map_mut(&mut self.ebpf, names::PIDS)?).map_err(|source| Error::Map {
            name: names::PIDS,
            source,
        })
    }
}

fn map_mut<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut aya::maps::Map, Error> {
    ebpf.map_mut(name)
        .ok_or(Error::Missing { what: "map", name })
}

/// The program `name` as its concrete type (`TracePoint`, `PerfEvent`, `UProbe`).
pub(crate) fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, Error>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(Error::Missing {
            what: "program",
            name,
        })?
        .try_into()
        .map_err(|source| Error::Program {
            program: name.to_owned(),
            source,
        })
}

fn program_error(program: &str, source: ProgramError) -> Error {
    match source {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            if io_error.kind() == io::ErrorKind::PermissionDenied {
                return Error::Privileges;
            }
            Error::Verifier {
                program: program.to_owned(),
                reason: io_error,
                log: verifier_log.to_string(),
            }
        }
        source => Error::Program {
            program: program.to_owned(),
            source,
        },
    }
}

/// aya attaches tracepoints through tracefs, which this kernel does not mount by default.
fn ensure_tracefs() -> Result<(), Error> {
    let events = Path::new(TRACEFS).join("events");
    if events.is_dir() {
        return Ok(());
    }
    let target = c"/sys/kernel/tracing";
    // SAFETY: plain mount(2) with static NUL-terminated strings and no data.
    let rc = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::PermissionDenied {
            return Err(Error::Privileges);
        }
        return Err(Error::Tracefs(err));
    }
    Ok(())
}

/// Offset of `field` in a tracepoint record, from its tracefs `format` file.
fn field_offset(category: &str, name: &str, field: &str) -> Result<u32, Error> {
    let path = Path::new(TRACEFS)
        .join("events")
        .join(category)
        .join(name)
        .join("format");
    let tracepoint = format!("{category}/{name}");
    let text = std::fs::read_to_string(&path).map_err(|source| Error::TracepointFormat {
        tracepoint: tracepoint.clone(),
        source,
    })?;
    parse_field_offset(&text, field).ok_or_else(|| Error::TracepointFormat {
        tracepoint,
        source: io::Error::new(io::ErrorKind::InvalidData, format!("no field {field}")),
    })
}

fn parse_field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';').map(str::trim);
        let decl = parts.next()?.strip_prefix("field:")?;
        let name = decl.rsplit([' ', '*']).next()?;
        if name != field {
            return None;
        }
        parts.find_map(|p| p.strip_prefix("offset:"))?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::parse_field_offset;

    const FORK_6_18: &str = "name: sched_process_fork\nID: 366\nformat:\n\
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
        \tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;\n\
        \tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;\n\
        \tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;\n\
        \tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;\n";
    const FORK_5_15: &str =
        "format:\n\tfield:char parent_comm[16];\toffset:8;\tsize:16;\tsigned:1;\n\
        \tfield:pid_t parent_pid;\toffset:24;\tsize:4;\tsigned:1;\n\
        \tfield:char child_comm[16];\toffset:28;\tsize:16;\tsigned:1;\n\
        \tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;\n";

    #[test]
    fn fork_child_pid_offset_across_kernels() {
        assert_eq!(parse_field_offset(FORK_6_18, "child_pid"), Some(20));
        assert_eq!(parse_field_offset(FORK_5_15, "child_pid"), Some(44));
        assert_eq!(parse_field_offset(FORK_5_15, "parent_pid"), Some(24));
        assert_eq!(parse_field_offset(FORK_5_15, "pid"), None);
    }
}
