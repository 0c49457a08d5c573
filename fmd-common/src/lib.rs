//! Types and names shared by the BPF programs (`fmd-ebpf`) and the daemon: every struct here crosses the
//! kernel/user boundary byte for byte, so each is `repr(C)`, padded explicitly and size-checked.
#![no_std]

pub mod http;
pub mod profile;

#[cfg(feature = "user")]
mod user;

/// Names of maps and programs, used by `fmd-ebpf` to declare them and by the daemon to find them.
pub mod names {
    /// Ring buffer carrying [`crate::http::EventHeader`]-prefixed records to the daemon.
    pub const EVENTS: &str = "FMD_EVENTS";
    /// `tgid -> role bits` of the processes under watch ([`crate::ROLE_MASTER`], [`crate::ROLE_WORKER`]).
    pub const PIDS: &str = "FMD_PIDS";
    /// Per-CPU counters indexed by [`crate::stats`].
    pub const STATS: &str = "FMD_STATS";
    /// `(tgid, fd) -> connection` for sockets the workers accepted.
    pub const CONNS: &str = "FMD_CONNS";
    /// One-element array holding the [`crate::BpfConfig`].
    pub const CONFIG: &str = "FMD_CONFIG";
    /// `(tgid, fd) -> http::log_fd` kind: the descriptors a serving thread's writes are copied from.
    pub const LOG_FDS: &str = "FMD_LOG_FDS";
    /// `tid -> PyThreadState address` of watched workers' Python threads, kept by the daemon.
    pub const TSTATES: &str = "FMD_TSTATES";
    /// `tgid -> profile::PyLayout`.
    pub const PYLAYOUTS: &str = "FMD_PYLAYOUTS";
    /// One-element array holding the [`crate::profile::SamplerConfig`].
    pub const SAMPLER_CONFIG: &str = "FMD_SAMPLER_CONFIG";
    /// The perf-event (CPU clock) program walking the sampled thread's Python stack.
    pub const SAMPLE_PROGRAM: &str = "fmd_sample";
    /// The `sched/sched_switch` program taking off-CPU stacks (wall-clock mode).
    pub const SWITCH_PROGRAM: &str = "fmd_sched_switch";
    /// Uprobes on CPython's USDT probes `python:gc__start` and `python:gc__done` (where built in).
    pub const GC_START_PROGRAM: &str = "fmd_gc_start";
    pub const GC_DONE_PROGRAM: &str = "fmd_gc_done";

    /// Every syscall tracepoint program, `(program name, tracepoint category, tracepoint name)`.
    pub const SYSCALL_PROGRAMS: &[(&str, &str, &str)] = &[
        ("fmd_enter_accept", "syscalls", "sys_enter_accept"),
        ("fmd_enter_accept4", "syscalls", "sys_enter_accept4"),
        ("fmd_exit_accept", "syscalls", "sys_exit_accept"),
        ("fmd_exit_accept4", "syscalls", "sys_exit_accept4"),
        ("fmd_enter_read", "syscalls", "sys_enter_read"),
        ("fmd_enter_recvfrom", "syscalls", "sys_enter_recvfrom"),
        ("fmd_enter_readv", "syscalls", "sys_enter_readv"),
        ("fmd_enter_recvmsg", "syscalls", "sys_enter_recvmsg"),
        ("fmd_exit_read", "syscalls", "sys_exit_read"),
        ("fmd_exit_recvfrom", "syscalls", "sys_exit_recvfrom"),
        ("fmd_exit_readv", "syscalls", "sys_exit_readv"),
        ("fmd_exit_recvmsg", "syscalls", "sys_exit_recvmsg"),
        ("fmd_enter_write", "syscalls", "sys_enter_write"),
        ("fmd_enter_sendto", "syscalls", "sys_enter_sendto"),
        ("fmd_enter_writev", "syscalls", "sys_enter_writev"),
        ("fmd_enter_sendmsg", "syscalls", "sys_enter_sendmsg"),
        ("fmd_enter_sendfile64", "syscalls", "sys_enter_sendfile64"),
        ("fmd_exit_write", "syscalls", "sys_exit_write"),
        ("fmd_exit_sendto", "syscalls", "sys_exit_sendto"),
        ("fmd_exit_writev", "syscalls", "sys_exit_writev"),
        ("fmd_exit_sendmsg", "syscalls", "sys_exit_sendmsg"),
        ("fmd_exit_sendfile64", "syscalls", "sys_exit_sendfile64"),
        ("fmd_enter_close", "syscalls", "sys_enter_close"),
        ("fmd_enter_shutdown", "syscalls", "sys_enter_shutdown"),
        ("fmd_enter_openat", "syscalls", "sys_enter_openat"),
        ("fmd_exit_openat", "syscalls", "sys_exit_openat"),
        ("fmd_process_fork", "sched", "sched_process_fork"),
        ("fmd_process_exit", "sched", "sched_process_exit"),
    ];
}

/// Role bit: the process's forks are followed (each child is watched with [`ROLE_WORKER`] from inside the
/// fork). Set on the `--pid` target unless it is itself a fork of the same program.
pub const ROLE_MASTER: u32 = 1;
/// Role bit: the process serves requests: its accepted sockets are captured and its stacks sampled. A
/// target that is not known to be a pure master (a gunicorn arbiter) has both bits: a single-process server
/// forks nothing, and a master that has not forked yet is followed all the same.
pub const ROLE_WORKER: u32 = 2;

/// Indexes into the per-CPU [`names::STATS`] array.
pub mod stats {
    /// Records the ring buffer had no room for (the daemon fell behind): requests may be incomplete.
    pub const RINGBUF_DROPS: u32 = 0;
    /// Accepted connections that did not fit in the connection table.
    pub const CONN_TABLE_FULL: u32 = 1;
    /// Records written to the ring buffer.
    pub const EVENTS_SENT: u32 = 2;
    /// Data records whose payload was cut to [`crate::http::MAX_DATA`] bytes (normal for large bodies).
    pub const DATA_TRUNCATED: u32 = 3;
    /// Sampler records written to the ring buffer: stacks (CPU and off-CPU), wake-ups and GC pauses.
    pub const SAMPLES_SENT: u32 = 4;
    /// Sampler records the ring buffer had no room for.
    pub const SAMPLE_DROPS: u32 = 5;
    /// Samples cut at [`crate::profile::MAX_FRAMES`] frames.
    pub const SAMPLES_TRUNCATED: u32 = 6;
    /// A watched master's forks that did not fit in `FMD_PIDS`: that worker is not captured at all.
    pub const PIDS_TABLE_FULL: u32 = 7;
    /// Syscalls on accepted sockets (accept, read, write) whose arguments did not fit in the pending table:
    /// their bytes are missing, so their request is desynchronised or lost.
    pub const PENDING_TABLE_FULL: u32 = 8;
    /// Threads that started serving a request but did not fit in `FMD_SERVING`: no off-CPU stacks for them.
    pub const SERVING_TABLE_FULL: u32 = 9;
    /// Off-CPU stacks whose switch-out time did not fit in the off-CPU table: their wait is not weighed.
    pub const OFFCPU_TABLE_FULL: u32 = 10;
    /// GC starts that did not fit in the GC table: that collection's time is not recorded.
    pub const GC_TABLE_FULL: u32 = 11;
    /// Log writes longer than `MAX_LOG_CHUNKS * MAX_DATA`: their tail was not copied.
    pub const LOG_TRUNCATED: u32 = 12;
    pub const COUNT: u32 = 13;
}

/// Settings the daemon writes into the [`names::CONFIG`] array before attaching anything.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BpfConfig {
    /// Offset of `child_pid` in the `sched_process_fork` record; it moved between kernels (44 before the
    /// comm fields became `__data_loc`, 20 after), so the daemon reads it from the tracepoint's format.
    pub fork_child_pid_offset: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<BpfConfig>() == 8);
