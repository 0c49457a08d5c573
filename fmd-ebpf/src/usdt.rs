//! CPython's USDT probes `python:gc__start` and `python:gc__done` (interpreters built `--with-dtrace`, like
//! Debian's python3.11), attached as uprobes with their semaphores raised by the kernel: each collection on
//! a watched worker's thread is sent with its length, for GC time per request.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{map, uprobe},
    maps::HashMap,
    programs::ProbeContext,
};
use fmd_common::{http::kind, stats};

use crate::{
    http::header,
    maps::{count, is_worker},
    sampler::send_quiet,
};

/// `tid -> start of the collection in progress`.
#[map]
static FMD_GC_START: HashMap<u32, u64> = HashMap::with_max_entries(16384, 0);

#[uprobe]
pub fn fmd_gc_start(_ctx: ProbeContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    if !is_worker((id >> 32) as u32) {
        return 0;
    }
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if FMD_GC_START.insert(&(id as u32), &now, 0).is_err() {
        count(stats::GC_TABLE_FULL);
    }
    0
}

#[uprobe]
pub fn fmd_gc_done(_ctx: ProbeContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let tid = id as u32;
    // SAFETY: copied out at once.
    let Some(start) = (unsafe { FMD_GC_START.get(&tid).copied() }) else {
        return 0;
    };
    let _ = FMD_GC_START.remove(&tid);
    let mut h = header(kind::GC, id, -1, 0, 0, 0);
    h.len = h.ts_ns.saturating_sub(start);
    send_quiet(&h);
    0
}
