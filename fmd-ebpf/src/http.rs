//! Syscall tracepoints on the sockets a watched worker accepted: `accept` marks a socket as served,
//! reads and writes copy a bounded prefix of their bytes (on syscall exit, with the real byte count),
//! `close`/`shutdown` end it. Which bytes form which HTTP request is decided in userspace.
//! Writes to a log descriptor (`FMD_LOG_FDS`) by a thread serving a request are copied too (up to
//! `MAX_LOG_CHUNKS` records), for the tracebacks the daemon recognises; `openat` with `O_APPEND` adds
//! a worker's new log files to that table.
//!
//! Tracepoint record layout (`/sys/kernel/tracing/events/syscalls/*/format`, stable since syscall
//! tracepoints exist): `sys_enter_*` has its arguments as 8-byte slots from offset 16, `sys_exit_*` has
//! `long ret` at offset 16.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user, bpf_probe_read_user_buf,
    },
    macros::{map, tracepoint},
    maps::HashMap,
    programs::TracePointContext,
};
use fmd_common::{
    http::{
        kind, log_fd, Conn, ConnKey, EventHeader, EVENT_HEADER_SIZE, MAX_DATA, MAX_LOG_CHUNKS,
        MAX_SOCKADDR,
    },
    stats,
};

use crate::maps::{count, is_worker, FMD_CONNS, FMD_EVENTS, FMD_LOG_FDS, FMD_SCRATCH, FMD_SERVING};

const ARG0: usize = 16;
const ARG1: usize = 24;
const ARG2: usize = 32;
const RET: usize = 16;

/// Where the data of a pending read or write is.
const HOW_PLAIN: u32 = 0; // a buffer pointer (read, write, recvfrom, sendto)
const HOW_IOVEC: u32 = 1; // an iovec array (readv, writev)
const HOW_MSGHDR: u32 = 2; // a user_msghdr (recvmsg, sendmsg)
const HOW_NONE: u32 = 3; // no user buffer (sendfile)
const HOW_ACCEPT: u32 = 4; // accept: buf = sockaddr, extra = socklen pointer
const HOW_OPEN: u32 = 5; // openat with O_APPEND for writing: the new fd is a log file

/// `Pending::extra` of a write to a log descriptor (plain writes have no other use for it).
const PENDING_LOG: u64 = 1;

/// `openat` flags (asm-generic/fcntl.h, the same on x86-64 and arm64).
const O_ACCMODE: u64 = 0o3;
const O_APPEND: u64 = 0o2000;

/// `struct user_msghdr`: `msg_iov` is at offset 16 on 64-bit kernels.
const MSGHDR_IOV: u64 = 16;

/// Arguments of a syscall in flight, saved on entry for its exit.
#[repr(C)]
#[derive(Clone, Copy)]
struct Pending {
    fd: i32,
    how: u32,
    buf: u64,
    extra: u64,
}

/// `pid_tgid -> Pending`; one entry per thread, so a syscall that never returns only costs its slot.
#[map]
static FMD_PENDING: HashMap<u64, Pending> = HashMap::with_max_entries(16384, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct Iovec {
    base: u64,
    len: u64,
}

/// The daemon drains the ring buffer on a short timer, so records do not wake it up one by one (a wakeup
/// per syscall cost the app more than the capture itself); only a filling buffer forces a wakeup.
const WAKEUP_BYTES: u64 = 1 << 20;
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

#[inline(always)]
pub(crate) fn ring_flags() -> u64 {
    if FMD_EVENTS.query(BPF_RB_AVAIL_DATA) >= WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

#[inline(always)]
fn arg(ctx: &TracePointContext, offset: usize) -> u64 {
    // SAFETY: offsets are inside the syscall tracepoint record (see the module comment).
    unsafe { ctx.read_at::<u64>(offset) }.unwrap_or(0)
}

#[inline(always)]
pub(crate) fn header(
    kind: u32,
    id: u64,
    fd: i32,
    conn_ts: u64,
    len: u64,
    copied: u32,
) -> EventHeader {
    EventHeader {
        kind,
        tgid: (id >> 32) as u32,
        tid: id as u32,
        fd,
        // SAFETY: no preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        conn_ts,
        len,
        copied,
        _pad: 0,
    }
}

#[inline(always)]
pub(crate) fn send_header(h: &EventHeader) {
    match FMD_EVENTS.output::<EventHeader>(h, ring_flags()) {
        Ok(()) => count(stats::EVENTS_SENT),
        Err(_) => count(stats::RINGBUF_DROPS),
    }
}

#[inline(always)]
fn conn(tgid: u32, fd: i32) -> Option<Conn> {
    // SAFETY: the value is copied out at once.
    unsafe { FMD_CONNS.get(&ConnKey { tgid, fd }).copied() }
}

/// Entry of a read or write: remember the buffer if `fd` is a socket the worker accepted, or (a write)
/// a log descriptor of a thread serving a request.
#[inline(always)]
fn enter_data(ctx: &TracePointContext, how: u32, write: bool) {
    let id = bpf_get_current_pid_tgid();
    if !is_worker((id >> 32) as u32) {
        return;
    }
    let fd = arg(ctx, ARG0) as i32;
    let tgid = (id >> 32) as u32;
    let extra = if conn(tgid, fd).is_some() {
        0
    } else {
        // Cheapest test first: most writes that are not to a client go to neither table.
        // SAFETY: only the keys' presence is read.
        if !write
            || unsafe { FMD_LOG_FDS.get(&ConnKey { tgid, fd }) }.is_none()
            || unsafe { FMD_SERVING.get(&(id as u32)) }.is_none()
        {
            return;
        }
        PENDING_LOG
    };
    let pending = Pending {
        fd,
        how,
        buf: arg(ctx, ARG1),
        extra,
    };
    if FMD_PENDING.insert(&id, &pending, 0).is_err() {
        count(stats::PENDING_TABLE_FULL);
    }
}

/// Exit of a read or write: send what it moved, with up to [`MAX_DATA`] of its bytes.
#[inline(always)]
fn exit_data(ctx: &TracePointContext, event_kind: u32) {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: copied out at once.
    let Some(pending) = (unsafe { FMD_PENDING.get(&id).copied() }) else {
        return;
    };
    let _ = FMD_PENDING.remove(&id);
    let ret = arg(ctx, RET) as i64;
    if ret <= 0 {
        return;
    }
    if pending.extra == PENDING_LOG {
        send_log(id, &pending, ret as u64);
        return;
    }
    // Another thread may have closed the socket while this syscall ran.
    let Some(conn) = conn((id >> 32) as u32, pending.fd) else {
        return;
    };
    // Serving from the first request byte read: the sampler's off-CPU walks and the log copies use it (so
    // it is kept in every mode, not only wall-clock).
    // SAFETY: only the key's presence is read.
    if event_kind == kind::READ
        && unsafe { FMD_SERVING.get(&(id as u32)) }.is_none()
        && FMD_SERVING.insert(&(id as u32), &1, 0).is_err()
    {
        count(stats::SERVING_TABLE_FULL);
    }
    send_data(event_kind, id, &pending, conn.conn_ts, ret as u64);
}

/// Sends a log write as records of up to [`MAX_DATA`] bytes each (`conn_ts` = offset in the write), at
/// most [`MAX_LOG_CHUNKS`] of them; a longer write's tail is counted, not copied.
#[inline(always)]
fn send_log(id: u64, pending: &Pending, total: u64) {
    let Some(event) = FMD_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: as in `send_data`.
    let event = unsafe { &mut *event };
    let (src, avail) = user_buffer(pending);
    if src == 0 {
        return;
    }
    let size = if avail < total { avail } else { total };
    if size > (MAX_LOG_CHUNKS * MAX_DATA) as u64 {
        count(stats::LOG_TRUNCATED);
    }
    for i in 0..MAX_LOG_CHUNKS {
        let offset = (i * MAX_DATA) as u64;
        if offset >= size {
            break;
        }
        let left = size - offset;
        let n = if left > MAX_DATA as u64 {
            MAX_DATA
        } else {
            left as usize
        };
        let Some(dst) = event.data.get_mut(..n) else {
            return;
        };
        // SAFETY: a user pointer, read with the faulting-safe helper into a bounded slice.
        if unsafe { bpf_probe_read_user_buf((src + offset) as *const u8, dst) }.is_err() {
            return;
        }
        event.header = header(kind::LOG, id, pending.fd, offset, total, n as u32);
        let bytes_len = EVENT_HEADER_SIZE + n;
        if bytes_len > EVENT_HEADER_SIZE + MAX_DATA {
            return;
        }
        // SAFETY: `bytes_len` is at most `size_of::<DataEvent>()`, checked just above.
        let bytes =
            unsafe { core::slice::from_raw_parts(event as *const _ as *const u8, bytes_len) };
        match FMD_EVENTS.output::<[u8]>(bytes, ring_flags()) {
            Ok(()) => count(stats::EVENTS_SENT),
            Err(_) => count(stats::RINGBUF_DROPS),
        }
    }
}

/// Entry of `openat`: a worker opening a file for appending is opening a log file (logging's
/// `FileHandler` and gunicorn's error log open with mode `a`).
#[inline(always)]
fn enter_openat(ctx: &TracePointContext) {
    let flags = arg(ctx, ARG2);
    if flags & O_APPEND == 0 || flags & O_ACCMODE == 0 {
        return;
    }
    let id = bpf_get_current_pid_tgid();
    if !is_worker((id >> 32) as u32) {
        return;
    }
    let pending = Pending {
        fd: -1,
        how: HOW_OPEN,
        buf: 0,
        extra: 0,
    };
    let _ = FMD_PENDING.insert(&id, &pending, 0);
}

#[inline(always)]
fn exit_openat(ctx: &TracePointContext) {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: copied out at once.
    let Some(pending) = (unsafe { FMD_PENDING.get(&id).copied() }) else {
        return;
    };
    let _ = FMD_PENDING.remove(&id);
    let fd = arg(ctx, RET) as i64;
    if pending.how != HOW_OPEN || fd < 0 {
        return;
    }
    let key = ConnKey {
        tgid: (id >> 32) as u32,
        fd: fd as i32,
    };
    let _ = FMD_LOG_FDS.insert(&key, &log_fd::FILE, 0);
}

#[inline(always)]
fn user_buffer(pending: &Pending) -> (u64, u64) {
    match pending.how {
        HOW_PLAIN => (pending.buf, u64::MAX),
        HOW_IOVEC => first_iovec(pending.buf),
        HOW_MSGHDR => {
            // SAFETY: a user pointer, read with the faulting-safe helper.
            let iov = unsafe { bpf_probe_read_user((pending.buf + MSGHDR_IOV) as *const u64) }
                .unwrap_or(0);
            first_iovec(iov)
        }
        _ => (0, 0),
    }
}

/// Only the first iovec is copied: the prefix is what userspace needs (request line, headers, status).
#[inline(always)]
fn first_iovec(iov: u64) -> (u64, u64) {
    if iov == 0 {
        return (0, 0);
    }
    // SAFETY: a user pointer, read with the faulting-safe helper.
    match unsafe { bpf_probe_read_user(iov as *const Iovec) } {
        Ok(v) => (v.base, v.len),
        Err(_) => (0, 0),
    }
}

#[inline(always)]
fn send_data(event_kind: u32, id: u64, pending: &Pending, conn_ts: u64, total: u64) {
    let Some(event) = FMD_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a per-CPU map value of the right type, used by one program at a time on this CPU.
    let event = unsafe { &mut *event };
    let (src, avail) = user_buffer(pending);
    let mut n = if avail < total { avail } else { total };
    if n > MAX_DATA as u64 {
        n = MAX_DATA as u64;
        count(stats::DATA_TRUNCATED);
    }
    let mut n = n as usize;
    if src == 0 || n > MAX_DATA {
        n = 0;
    }
    if n > 0 {
        if let Some(dst) = event.data.get_mut(..n) {
            // SAFETY: a user pointer, read with the faulting-safe helper into a bounded slice.
            if unsafe { bpf_probe_read_user_buf(src as *const u8, dst) }.is_err() {
                n = 0;
            }
        }
    }
    event.header = header(event_kind, id, pending.fd, conn_ts, total, n as u32);
    let size = EVENT_HEADER_SIZE + n;
    if size > EVENT_HEADER_SIZE + MAX_DATA {
        return;
    }
    // SAFETY: `size` is at most `size_of::<DataEvent>()`, checked just above.
    let bytes = unsafe { core::slice::from_raw_parts(event as *const _ as *const u8, size) };
    match FMD_EVENTS.output::<[u8]>(bytes, ring_flags()) {
        Ok(()) => count(stats::EVENTS_SENT),
        Err(_) => count(stats::RINGBUF_DROPS),
    }
}

#[inline(always)]
fn enter_accept(ctx: &TracePointContext) {
    let id = bpf_get_current_pid_tgid();
    if !is_worker((id >> 32) as u32) {
        return;
    }
    // Back to waiting for a connection: not serving a request any more.
    let _ = FMD_SERVING.remove(&(id as u32));
    let pending = Pending {
        fd: -1,
        how: HOW_ACCEPT,
        buf: arg(ctx, ARG1),
        extra: arg(ctx, ARG2),
    };
    if FMD_PENDING.insert(&id, &pending, 0).is_err() {
        count(stats::PENDING_TABLE_FULL);
    }
}

#[inline(always)]
fn exit_accept(ctx: &TracePointContext) {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: copied out at once.
    let Some(pending) = (unsafe { FMD_PENDING.get(&id).copied() }) else {
        return;
    };
    let _ = FMD_PENDING.remove(&id);
    let fd = arg(ctx, RET) as i64;
    if pending.how != HOW_ACCEPT || fd < 0 {
        return;
    }
    let fd = fd as i32;
    // SAFETY: no preconditions.
    let conn_ts = unsafe { bpf_ktime_get_ns() };
    let key = ConnKey {
        tgid: (id >> 32) as u32,
        fd,
    };
    if FMD_CONNS.insert(&key, &Conn { conn_ts }, 0).is_err() {
        count(stats::CONN_TABLE_FULL);
        return;
    }
    let Some(event) = FMD_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: as in `send_data`.
    let event = unsafe { &mut *event };
    let mut addr_len = 0u64;
    let mut copied = 0usize;
    if pending.buf != 0 && pending.extra != 0 {
        // SAFETY: user pointers, read with the faulting-safe helpers.
        addr_len = unsafe { bpf_probe_read_user(pending.extra as *const u32) }.unwrap_or(0) as u64;
        if let Some(dst) = event.data.get_mut(..MAX_SOCKADDR) {
            if unsafe { bpf_probe_read_user_buf(pending.buf as *const u8, dst) }.is_ok() {
                copied = MAX_SOCKADDR;
            }
        }
    }
    event.header = header(kind::ACCEPT, id, fd, conn_ts, addr_len, copied as u32);
    let size = if copied == 0 {
        EVENT_HEADER_SIZE
    } else {
        EVENT_HEADER_SIZE + MAX_SOCKADDR
    };
    // SAFETY: `size` is within the scratch record.
    let bytes = unsafe { core::slice::from_raw_parts(event as *const _ as *const u8, size) };
    match FMD_EVENTS.output::<[u8]>(bytes, ring_flags()) {
        Ok(()) => count(stats::EVENTS_SENT),
        Err(_) => count(stats::RINGBUF_DROPS),
    }
}

/// `close` or `shutdown` of an accepted socket; `close` also forgets it.
#[inline(always)]
fn enter_end(ctx: &TracePointContext, event_kind: u32) {
    let id = bpf_get_current_pid_tgid();
    if !is_worker((id >> 32) as u32) {
        return;
    }
    let fd = arg(ctx, ARG0) as i32;
    let tgid = (id >> 32) as u32;
    let Some(conn) = conn(tgid, fd) else {
        if event_kind == kind::CLOSE {
            // A log file closed (rotated, handler removed): its number may be reused for anything.
            let _ = FMD_LOG_FDS.remove(&ConnKey { tgid, fd });
        }
        return;
    };
    if event_kind == kind::CLOSE {
        let _ = FMD_CONNS.remove(&ConnKey { tgid, fd });
        let _ = FMD_SERVING.remove(&(id as u32));
    }
    send_header(&header(event_kind, id, fd, conn.conn_ts, 0, 0));
}

macro_rules! programs {
    ($($name:ident => $body:expr;)*) => {$(
        #[tracepoint]
        pub fn $name(ctx: TracePointContext) -> u32 {
            let f: fn(&TracePointContext) = $body;
            f(&ctx);
            0
        }
    )*};
}

programs! {
    fmd_enter_accept => enter_accept;
    fmd_enter_accept4 => enter_accept;
    fmd_exit_accept => exit_accept;
    fmd_exit_accept4 => exit_accept;
    fmd_enter_read => |c| enter_data(c, HOW_PLAIN, false);
    fmd_enter_recvfrom => |c| enter_data(c, HOW_PLAIN, false);
    fmd_enter_readv => |c| enter_data(c, HOW_IOVEC, false);
    fmd_enter_recvmsg => |c| enter_data(c, HOW_MSGHDR, false);
    fmd_exit_read => |c| exit_data(c, kind::READ);
    fmd_exit_recvfrom => |c| exit_data(c, kind::READ);
    fmd_exit_readv => |c| exit_data(c, kind::READ);
    fmd_exit_recvmsg => |c| exit_data(c, kind::READ);
    fmd_enter_write => |c| enter_data(c, HOW_PLAIN, true);
    fmd_enter_sendto => |c| enter_data(c, HOW_PLAIN, true);
    fmd_enter_writev => |c| enter_data(c, HOW_IOVEC, true);
    fmd_enter_sendmsg => |c| enter_data(c, HOW_MSGHDR, true);
    fmd_enter_sendfile64 => |c| enter_data(c, HOW_NONE, false);
    fmd_exit_write => |c| exit_data(c, kind::WRITE);
    fmd_exit_sendto => |c| exit_data(c, kind::WRITE);
    fmd_exit_writev => |c| exit_data(c, kind::WRITE);
    fmd_exit_sendmsg => |c| exit_data(c, kind::WRITE);
    fmd_exit_sendfile64 => |c| exit_data(c, kind::WRITE);
    fmd_enter_close => |c| enter_end(c, kind::CLOSE);
    fmd_enter_shutdown => |c| enter_end(c, kind::SHUTDOWN);
    fmd_enter_openat => enter_openat;
    fmd_exit_openat => exit_openat;
}
