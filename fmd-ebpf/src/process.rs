//! Process lifecycle: a watched master's forked children become watched workers at once (in the fork
//! itself, so a new worker's first request is never missed), and exits are reported for clean-up.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use fmd_common::{
    http::{kind, log_fd, ConnKey},
    stats, ROLE_MASTER, ROLE_WORKER,
};

use crate::{
    http::{header, send_header},
    maps::{config, count, role, FMD_LOG_FDS, FMD_PIDS, FMD_SERVING},
};

/// `sched_process_fork` runs in the parent. Thread creation fires it too; the daemon drops children that
/// turn out to be threads (a gunicorn master creates none).
#[tracepoint]
pub fn fmd_process_fork(ctx: TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    if role((id >> 32) as u32) & ROLE_MASTER == 0 {
        return 0;
    }
    let offset = config().fork_child_pid_offset as usize;
    if offset == 0 {
        return 0;
    }
    // SAFETY: the offset comes from this kernel's tracepoint format and is inside the record.
    let Ok(child) = (unsafe { ctx.read_at::<i32>(offset) }) else {
        return 0;
    };
    let child = child as u32;
    if FMD_PIDS.insert(&child, &ROLE_WORKER, 0).is_err() {
        count(stats::PIDS_TABLE_FULL);
    }
    // Its stdio at once (its first request may come before the daemon reads its descriptors).
    for fd in [1, 2] {
        let _ = FMD_LOG_FDS.insert(&ConnKey { tgid: child, fd }, &log_fd::STDIO, 0);
    }
    send_header(&header(kind::FORK, id, -1, 0, u64::from(child), 0));
    0
}

/// `sched_process_exit` runs in the exiting thread; the process is gone when its main thread is.
#[tracepoint]
pub fn fmd_process_exit(_ctx: TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    if role(tgid) == 0 {
        return 0;
    }
    // Any thread of a worker: its tid may be reused by an unrelated thread.
    let _ = FMD_SERVING.remove(&(id as u32));
    if id as u32 != tgid {
        return 0;
    }
    let _ = FMD_PIDS.remove(&tgid);
    send_header(&header(kind::EXIT, id, -1, 0, 0, 0));
    0
}
