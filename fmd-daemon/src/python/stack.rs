//! The sampler's side of a Python stack, in userspace: the frame-chain offsets BPF is given for a version
//! (`PyLayout`, narrowed from `Layout`) and the same walk BPF does, over a [`Memory`], so the layout and
//! the symbolisation can be checked against live interpreters without BPF.

use fmd_common::profile::{PyLayout, RawFrame, MAX_FRAMES, NO_FIELD};

use super::{memory::Memory, Layout};

/// `FRAME_OWNED_BY_CSTACK` in 3.12 and 3.13 (`Include/internal/pycore_frame.h`).
const OWNED_BY_CSTACK: u32 = 3;

/// The sampler's view of one interpreter version's frame chain. `None` if the layout lacks a field the walk
/// needs (a table bug, not a user error).
pub fn py_layout(l: &Layout) -> Option<PyLayout> {
    let narrow = |v: u64| u32::try_from(v).ok();
    let (tstate_frame, cframe_current_frame) =
        match (l.tstate_frame, l.tstate_cframe, l.tstate_current_frame) {
            (Some(f), _, _) => (narrow(f)?, NO_FIELD),
            (None, Some(c), _) => (narrow(c)?, narrow(l.cframe_current_frame?)?),
            (None, None, Some(f)) => (narrow(f)?, NO_FIELD),
            _ => return None,
        };
    let pointer_instr = l.minor() >= 11;
    // 3.11 has owners but no C-stack-owned shim frames; 3.12+ marks its shims with FRAME_OWNED_BY_CSTACK.
    let (frame_owner, owner_cstack) = match l.frame_owner {
        Some(o) if l.minor() >= 12 => (narrow(o)?, OWNED_BY_CSTACK),
        _ => (NO_FIELD, NO_FIELD),
    };
    Some(PyLayout {
        tstate_frame,
        cframe_current_frame,
        frame_previous: narrow(l.frame_previous)?,
        frame_code: narrow(l.frame_code)?,
        frame_instr: narrow(l.frame_instr)?,
        frame_instr_size: if pointer_instr { 8 } else { 4 },
        frame_owner,
        owner_cstack,
    })
}

/// What BPF does (`fmd-ebpf/src/sampler.rs`): from a thread state, up to [`MAX_FRAMES`] (code, instr)
/// pairs, innermost first, shims with code 0; the flag says the stack was cut.
pub fn walk(mem: &impl Memory, p: &PyLayout, tstate: u64) -> (Vec<RawFrame>, bool) {
    let read = |addr: u64| mem.read_u64(addr).unwrap_or(0);
    let mut frame = read(tstate.wrapping_add(u64::from(p.tstate_frame)));
    if p.cframe_current_frame != NO_FIELD && frame != 0 {
        frame = read(frame.wrapping_add(u64::from(p.cframe_current_frame)));
    }
    let mut out = Vec::new();
    while out.len() < MAX_FRAMES && frame != 0 {
        let shim = p.frame_owner != NO_FIELD
            && mem
                .read_u8(frame.wrapping_add(u64::from(p.frame_owner)))
                .is_ok_and(|o| u32::from(o) == p.owner_cstack);
        let code = if shim {
            0
        } else {
            read(frame.wrapping_add(u64::from(p.frame_code)))
        };
        let instr = read(frame.wrapping_add(u64::from(p.frame_instr)));
        out.push(RawFrame { code, instr });
        frame = read(frame.wrapping_add(u64::from(p.frame_previous)));
    }
    (out, frame != 0)
}

/// The Python frames of a sample: shims (code 0) dropped, the instruction cut to the field's width.
pub fn python_frames<'a>(
    p: &'a PyLayout,
    frames: &'a [RawFrame],
) -> impl Iterator<Item = RawFrame> + 'a {
    frames
        .iter()
        .filter(|f| f.code != 0)
        .map(move |f| RawFrame {
            code: f.code,
            instr: if p.frame_instr_size == 4 {
                f.instr & 0xffff_ffff
            } else {
                f.instr
            },
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::Layout;

    fn check(minor: u8, expect: (u32, u32, u32, u32, u32, u32, u32, u32)) {
        let l = Layout::for_version(3, minor).expect("known version");
        let p = py_layout(l).expect("complete layout");
        let got = (
            p.tstate_frame,
            p.cframe_current_frame,
            p.frame_previous,
            p.frame_code,
            p.frame_instr,
            p.frame_instr_size,
            p.frame_owner,
            p.owner_cstack,
        );
        assert_eq!(got, expect, "3.{minor}");
    }

    /// Expected values from prior-art §2.2/§6.4 (pyroscope's DWARF tables and the OTel profiler agree).
    #[test]
    fn layouts_per_version() {
        check(8, (24, NO_FIELD, 24, 32, 104, 4, NO_FIELD, NO_FIELD));
        check(11, (56, 8, 48, 32, 56, 8, NO_FIELD, NO_FIELD));
        check(12, (56, 0, 8, 0, 56, 8, 70, 3));
        check(13, (72, NO_FIELD, 8, 0, 56, 8, 70, 3));
    }
}
