//! Records and tables of the Python stack sampler (`fmd-ebpf/src/sampler.rs`): the per-process frame layout
//! the daemon writes, and the sampled frames BPF sends. BPF only copies pointers and instruction offsets;
//! names, files and lines are worked out by the daemon (`python::symbols`).

/// Frames one sample carries: at least 128 Python frames plus the shim frames (3.12+, one per C-to-Python
/// entry, sent with `code` 0). Deeper stacks are cut there and flagged [`FLAG_TRUNCATED`].
pub const MAX_FRAMES: usize = 160;

/// An offset the interpreter version does not have.
pub const NO_FIELD: u32 = u32::MAX;

/// [`crate::http::EventHeader::fd`] bits of a sample record.
pub const FLAG_TRUNCATED: i32 = 1;
/// The stack was taken at switch-out (wall-clock mode); its weight arrives later in a [`crate::http::kind::WAKE`].
pub const FLAG_OFF_CPU: i32 = 2;

/// `tgid -> PyLayout`: where the frame chain is in one worker's interpreter. Built by the daemon from
/// `python::Layout` (3.8-3.10 `tstate->frame`/`f_back`/`f_lasti`; 3.11-3.12 `tstate->cframe->current_frame`,
/// `previous`, `prev_instr`, `owner`; 3.13 `tstate->current_frame`, `f_executable`, `instr_ptr`, `owner`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PyLayout {
    /// Offset in `PyThreadState` of the first pointer to follow: `frame` (3.8-3.10), `cframe` (3.11, 3.12)
    /// or `current_frame` (3.13).
    pub tstate_frame: u32,
    /// `_PyCFrame.current_frame` (3.11, 3.12), else [`NO_FIELD`].
    pub cframe_current_frame: u32,
    /// `f_back` (3.8-3.10) or `previous`.
    pub frame_previous: u32,
    /// `f_code` or `f_executable` (3.13).
    pub frame_code: u32,
    /// `f_lasti` (3.8-3.10), `prev_instr` (3.11, 3.12) or `instr_ptr` (3.13).
    pub frame_instr: u32,
    /// 4 for the `int f_lasti` of 3.8-3.10, 8 for the instruction pointers of 3.11+. BPF always reads 8
    /// bytes (one path less for the verifier); the daemon keeps the low 4 when this is 4.
    pub frame_instr_size: u32,
    /// `owner` (one byte, 3.12+; 3.11 has no C-stack-owned frames), else [`NO_FIELD`].
    pub frame_owner: u32,
    /// `FRAME_OWNED_BY_CSTACK` (3 in 3.12 and 3.13): shim frames, skipped.
    pub owner_cstack: u32,
}
const _: () = assert!(core::mem::size_of::<PyLayout>() == 32);

/// One sampled Python frame as BPF saw it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RawFrame {
    /// Address of the code object (`f_code` / `f_executable`; the latter may be another object in 3.13);
    /// 0 for a C-stack-owned shim frame.
    pub code: u64,
    /// 8 bytes at `f_lasti` (3.8-3.10: the low 4 are it) or the instruction pointer (3.11+).
    pub instr: u64,
}
pub const RAW_FRAME_SIZE: usize = core::mem::size_of::<RawFrame>();
const _: () = assert!(RAW_FRAME_SIZE == 16);

/// A sample as BPF assembles it before sending `EVENT_HEADER_SIZE + frames * RAW_FRAME_SIZE` bytes of it.
/// Header: `kind` = `SAMPLE`, `fd` = flags, `len` = weight in ns (0 for a CPU sample: the daemon knows the
/// period), `copied` = frame bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SampleEvent {
    pub header: crate::http::EventHeader,
    pub frames: [RawFrame; MAX_FRAMES],
}
const _: () = assert!(core::mem::size_of::<SampleEvent>() == 48 + 16 * MAX_FRAMES);

/// One-element array: how the sampler runs, written by the daemon.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SamplerConfig {
    /// Non-zero: take off-CPU stacks at `sched_switch` (wall-clock mode).
    pub wall: u32,
    /// Offset of `next_pid` in the `sched_switch` record (from tracefs; 56 on 6.x kernels).
    pub switch_next_pid: u32,
}
const _: () = assert!(core::mem::size_of::<SamplerConfig>() == 8);

/// Value of the `tid -> off-CPU start` table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct OffCpu {
    pub since_ns: u64,
    pub tgid: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<OffCpu>() == 16);
