//! Maps shared by every program, and the small helpers that touch them.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};
use fmd_common::{
    http::{Conn, ConnKey, DataEvent},
    BpfConfig,
};

/// Records for the daemon. The daemon drains it every 20 ms and is woken once 1 MiB waits; 8 MiB holds
/// ~140 ms of the heaviest load measured (the capacity benchmark's ~58 MB/s of records). Not larger: the
/// kernel maps the data area twice, so the daemon's RSS carries twice this size.
#[map]
pub static FMD_EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// `tgid -> role bits` (`ROLE_MASTER | ROLE_WORKER`), written by the daemon (and by `fmd_process_fork` for
/// a master's new workers).
#[map]
pub static FMD_PIDS: HashMap<u32, u32> = HashMap::with_max_entries(4096, 0);

/// Sockets the watched workers accepted: only these are captured, so the app's own outgoing connections
/// (database, HTTP clients) never look like served requests.
#[map]
pub static FMD_CONNS: HashMap<ConnKey, Conn> = HashMap::with_max_entries(65536, 0);

/// Threads of watched workers between reading a request's bytes and closing the connection or accepting
/// the next one: only their switch-outs have their stacks walked in wall-clock mode, so a sync worker
/// waiting for its next connection costs no walk (the daemon would drop that wait anyway), and only their
/// writes to log descriptors are copied. A gthread
/// worker's pool threads never accept, so they stay marked once they served (their waits are still
/// walked, as before this table).
#[map]
pub static FMD_SERVING: HashMap<u32, u8> = HashMap::with_max_entries(16384, 0);

/// `(tgid, fd)` of the descriptors a worker logs through (stdout, stderr, files opened for appending, a
/// syslog socket): writes to them by a thread in `FMD_SERVING` are copied, so the daemon can find the
/// tracebacks the app logs while serving. Filled by the daemon from /proc, by `fmd_process_fork` (a new
/// worker's stdio) and by `fmd_exit_openat` (files a worker opens for appending); `close` removes.
#[map]
pub static FMD_LOG_FDS: HashMap<ConnKey, u32> = HashMap::with_max_entries(16384, 0);

#[map]
pub static FMD_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(fmd_common::stats::COUNT, 0);

#[map]
pub static FMD_CONFIG: Array<BpfConfig> = Array::with_max_entries(1, 0);

/// Scratch space to build a record in: 4 KiB does not fit on the 512-byte BPF stack.
#[map]
pub static FMD_SCRATCH: PerCpuArray<DataEvent> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub fn count(stat: u32) {
    if let Some(slot) = FMD_STATS.get_ptr_mut(stat) {
        // SAFETY: per-CPU slot, and programs are not preempted mid-run on one CPU.
        unsafe { *slot += 1 };
    }
}

/// The role bits of `tgid`; 0 when it is not watched.
#[inline(always)]
pub fn role(tgid: u32) -> u32 {
    // SAFETY: the value is a plain u32 copied out at once.
    unsafe { FMD_PIDS.get(&tgid).copied() }.unwrap_or(0)
}

/// Whether `tgid` serves requests that are captured ([`fmd_common::ROLE_WORKER`]).
#[inline(always)]
pub fn is_worker(tgid: u32) -> bool {
    role(tgid) & fmd_common::ROLE_WORKER != 0
}

#[inline(always)]
pub fn config() -> BpfConfig {
    FMD_CONFIG.get(0).copied().unwrap_or_default()
}
