//! The Python stack sampler: on each CPU-clock tick (and, in wall-clock mode, when a thread is switched out)
//! a watched worker's thread has its CPython frame chain walked and sent as (code object, instruction)
//! pairs. The thread's `PyThreadState` comes from a `tid -> tstate` table the daemon keeps (never the GIL
//! holder, which may be another thread); the frame layout per process from `FMD_PYLAYOUTS`. No strings and
//! no line tables here: the daemon symbolises.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_loop, bpf_probe_read_user},
    macros::{map, perf_event, tracepoint},
    maps::{Array, HashMap, PerCpuArray},
    programs::{PerfEventContext, TracePointContext},
};
use fmd_common::{
    http::{kind, EventHeader, EVENT_HEADER_SIZE},
    profile::{
        OffCpu, PyLayout, RawFrame, SampleEvent, SamplerConfig, FLAG_OFF_CPU, FLAG_TRUNCATED,
        MAX_FRAMES, NO_FIELD, RAW_FRAME_SIZE,
    },
    stats,
};

use crate::{
    http::{header, ring_flags},
    maps::{count, FMD_EVENTS, FMD_SERVING},
};

/// Sends a header-only record; like every record, it does not wake the daemon (see `http::ring_flags`).
#[inline(always)]
pub(crate) fn send_quiet(h: &EventHeader) {
    match FMD_EVENTS.output::<EventHeader>(h, ring_flags()) {
        Ok(()) => count(stats::SAMPLES_SENT),
        Err(_) => count(stats::SAMPLE_DROPS),
    }
}

/// Scratch slots: one per program, so the two never share a half-built record on one CPU.
const SLOT_CPU: u32 = 0;
const SLOT_SWITCH: u32 = 1;

#[map]
static FMD_TSTATES: HashMap<u32, u64> = HashMap::with_max_entries(16384, 0);

#[map]
static FMD_PYLAYOUTS: HashMap<u32, PyLayout> = HashMap::with_max_entries(4096, 0);

#[map]
static FMD_SAMPLER_CONFIG: Array<SamplerConfig> = Array::with_max_entries(1, 0);

/// `tid -> when it was switched out` for threads whose off-CPU stack was sent.
#[map]
static FMD_OFFCPU: HashMap<u32, OffCpu> = HashMap::with_max_entries(16384, 0);

#[map]
static FMD_SAMPLE_SCRATCH: PerCpuArray<SampleEvent> = PerCpuArray::with_max_entries(2, 0);

#[perf_event]
pub fn fmd_sample(_ctx: PerfEventContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let _ = try_sample(id, 0, SLOT_CPU);
    0
}

/// `sched_switch` runs on the outgoing thread (current == prev): its stack is taken there; the incoming
/// thread's wait is measured from the time saved then.
#[tracepoint]
pub fn fmd_sched_switch(ctx: TracePointContext) -> u32 {
    let _ = try_switch(&ctx);
    0
}

#[inline(always)]
fn try_switch(ctx: &TracePointContext) -> Result<(), ()> {
    let config = FMD_SAMPLER_CONFIG.get(0).copied().ok_or(())?;
    if config.wall == 0 {
        return Ok(());
    }
    // SAFETY: the offset comes from this kernel's tracepoint format.
    if let Ok(next) = unsafe { ctx.read_at::<i32>(config.switch_next_pid as usize) } {
        let next = next as u32;
        // SAFETY: copied out at once.
        if let Some(off) = unsafe { FMD_OFFCPU.get(&next).copied() } {
            let _ = FMD_OFFCPU.remove(&next);
            let mut h = header(
                kind::WAKE,
                (u64::from(off.tgid) << 32) | u64::from(next),
                -1,
                0,
                0,
                0,
            );
            h.len = h.ts_ns.saturating_sub(off.since_ns);
            send_quiet(&h);
        }
    }
    let id = bpf_get_current_pid_tgid();
    let tid = id as u32;
    if tid == 0 {
        return Ok(());
    }
    // SAFETY: only the key's presence is read.
    if unsafe { FMD_SERVING.get(&tid) }.is_none() {
        return Ok(());
    }
    let ts = try_sample(id, FLAG_OFF_CPU, SLOT_SWITCH)?;
    let off = OffCpu {
        since_ns: ts,
        tgid: (id >> 32) as u32,
        _pad: 0,
    };
    if FMD_OFFCPU.insert(&tid, &off, 0).is_err() {
        count(stats::OFFCPU_TABLE_FULL);
    }
    Ok(())
}

#[inline(always)]
fn read_u64(addr: u64) -> u64 {
    // SAFETY: a user address read with the faulting-safe helper.
    unsafe { bpf_probe_read_user(addr as *const u64) }.unwrap_or(0)
}

/// The state of one stack walk, handed to [`walk_frame`] by `bpf_loop`.
#[repr(C)]
struct Walk {
    /// The next frame to read (0: the chain ended).
    frame: u64,
    /// `SampleEvent::frames` of the scratch slot.
    frames: *mut RawFrame,
    layout: PyLayout,
    /// Frames written so far.
    n: u32,
    _pad: u32,
}

/// One iteration of the walk: records frame `index` and moves to the previous one. Returns 1 (stop) when
/// the chain ended.
#[inline(never)]
extern "C" fn walk_frame(index: u32, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Walk` on `try_sample`'s stack, alive for the whole bpf_loop call.
    let walk = unsafe { &mut *(ctx as *mut Walk) };
    let frame = walk.frame;
    if frame == 0 || index as usize >= MAX_FRAMES {
        return 1;
    }
    let layout = &walk.layout;
    let mut code = read_u64(frame + u64::from(layout.frame_code));
    if layout.frame_owner != NO_FIELD {
        // SAFETY: as in `read_u64`.
        let owner =
            unsafe { bpf_probe_read_user((frame + u64::from(layout.frame_owner)) as *const u8) };
        if owner.is_ok_and(|o| u32::from(o) == layout.owner_cstack) {
            code = 0;
        }
    }
    let instr = read_u64(frame + u64::from(layout.frame_instr));
    // SAFETY: `index < MAX_FRAMES`, the length of the array `frames` points into.
    unsafe { *walk.frames.add(index as usize) = RawFrame { code, instr } };
    walk.frame = read_u64(frame + u64::from(layout.frame_previous));
    walk.n = index + 1;
    0
}

/// Walks and sends the current thread's Python stack; returns the sample's timestamp.
#[inline(always)]
fn try_sample(id: u64, flags: i32, slot: u32) -> Result<u64, ()> {
    let tgid = (id >> 32) as u32;
    let tid = id as u32;
    // Only serving processes' threads are in the table: the daemon fills it for watched workers (role
    // `ROLE_WORKER`) and empties it when they exit, so it is the filter (one lookup instead of two).
    // SAFETY: plain values copied out at once.
    let tstate = unsafe { FMD_TSTATES.get(&tid).copied() }.ok_or(())?;
    // SAFETY: as above.
    let layout = unsafe { FMD_PYLAYOUTS.get(&tgid).copied() }.ok_or(())?;
    let event = FMD_SAMPLE_SCRATCH.get_ptr_mut(slot).ok_or(())?;
    // SAFETY: a per-CPU slot used by this program only, which does not run twice at once on one CPU.
    let event = unsafe { &mut *event };

    let mut frame = read_u64(tstate + u64::from(layout.tstate_frame));
    if layout.cframe_current_frame != NO_FIELD && frame != 0 {
        frame = read_u64(frame + u64::from(layout.cframe_current_frame));
    }
    let mut walk = Walk {
        frame,
        frames: event.frames.as_mut_ptr(),
        layout,
        n: 0,
        _pad: 0,
    };
    // bpf_loop (5.17+) has the verifier check one frame's body once instead of once per iteration: an
    // open-coded 160-frame loop needed over a million verified instructions on 6.18 and was refused.
    // SAFETY: `walk_frame` has the callback signature bpf_loop expects and `walk` outlives the call.
    let looped = unsafe {
        bpf_loop(
            MAX_FRAMES as u32,
            walk_frame as *mut c_void,
            &mut walk as *mut Walk as *mut c_void,
            0,
        )
    };
    if looped < 0 {
        return Err(());
    }
    let n = walk.n as usize;
    let frame = walk.frame;
    let mut flags = flags;
    if frame != 0 {
        flags |= FLAG_TRUNCATED;
        count(stats::SAMPLES_TRUNCATED);
    }
    if n > MAX_FRAMES {
        return Err(());
    }
    let copied = n * RAW_FRAME_SIZE;
    event.header = header(kind::SAMPLE, id, flags, 0, 0, copied as u32);
    let ts = event.header.ts_ns;
    let size = EVENT_HEADER_SIZE + copied;
    if size > core::mem::size_of::<SampleEvent>() {
        return Err(());
    }
    // SAFETY: `size` is at most `size_of::<SampleEvent>()`, checked just above.
    let bytes =
        unsafe { core::slice::from_raw_parts(event as *const SampleEvent as *const u8, size) };
    match FMD_EVENTS.output::<[u8]>(bytes, ring_flags()) {
        Ok(()) => count(stats::SAMPLES_SENT),
        Err(_) => {
            count(stats::SAMPLE_DROPS);
            return Err(());
        }
    }
    Ok(ts)
}
