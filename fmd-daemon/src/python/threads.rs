//! The interpreter of a process as fmd sees it: version, layout, `_PyRuntime`, interpreter and thread
//! states, the kernel tid of each thread state, and `sys.modules`.

use std::{collections::HashMap, fs, sync::Mutex};

use super::{
    binary::{Binary, Version},
    layout::{Layout, DEBUG_OFFSETS_COOKIE},
    memory::{Memory, PageCache, ProcessMemory},
    objects::{KnownTypes, Reader},
    Error,
};

/// Bounds on the linked lists walked here (a torn list must not loop forever).
const MAX_INTERPRETERS: usize = 64;
const MAX_THREADS: usize = 4096;

/// One `PyThreadState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadState {
    pub addr: u64,
    pub interp: u64,
    /// `thread_id`: the thread's `pthread_t`.
    pub pthread: u64,
    /// Kernel tid, when known (`native_thread_id` in 3.11+, else from glibc's `struct pthread`).
    pub tid: Option<u32>,
}

/// One Python frame of a thread (newest first in [`Interpreter::frames`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// `PyFrameObject` (3.8-3.10) or `_PyInterpreterFrame` address.
    pub addr: u64,
    /// Its code object.
    pub code: u64,
}

/// Bound on frames walked per thread.
const MAX_FRAMES: usize = 512;
/// Bound on fast locals read per frame.
const MAX_LOCALS: u64 = 4096;
/// `FRAME_OWNED_BY_CSTACK` (3.12+): a C shim frame with no Python locals.
const FRAME_OWNED_BY_CSTACK: u8 = 3;

/// An attached CPython interpreter (never stopped: every read races with it).
pub struct Interpreter<M: Memory = ProcessMemory> {
    pub pid: u32,
    pub version: Version,
    pub layout: Layout,
    /// Address of `_PyRuntime`.
    pub runtime: u64,
    pub mem: M,
    pub types: KnownTypes,
    pub binary: Binary,
    /// Offset of `tid` inside glibc's `struct pthread` (3.8-3.10), found once.
    pthread_tid_offset: Mutex<Option<u64>>,
}

impl Interpreter<ProcessMemory> {
    /// Finds and checks the interpreter of `pid`.
    pub fn attach(pid: u32) -> Result<Self, Error> {
        let mem = ProcessMemory::new(pid);
        let binary = Binary::find(pid, &mem)?;
        Self::with_memory(pid, binary, mem)
    }
}

impl Interpreter<PageCache<ProcessMemory>> {
    /// Like [`Interpreter::attach`], reading through a page cache of at most `max_pages` pages: for one-off
    /// scans (route tables), not for state that must be fresh. Call `mem.clear()` between scans.
    pub fn attach_cached(pid: u32, max_pages: usize) -> Result<Self, Error> {
        let mem = PageCache::new(ProcessMemory::new(pid), max_pages);
        let binary = Binary::find(pid, mem.inner())?;
        Self::with_memory(pid, binary, mem)
    }
}

impl<M: Memory> Interpreter<M> {
    pub fn with_memory(pid: u32, binary: Binary, mem: M) -> Result<Self, Error> {
        let version = binary.version;
        let mut layout = *Layout::for_version(version.major, version.minor)?;
        let runtime = binary.symbol("_PyRuntime").ok_or(Error::MissingSymbol {
            path: binary.path.clone(),
            symbol: "_PyRuntime",
        })?;
        let types = KnownTypes {
            by_name: binary.symbols.iter().map(|(k, v)| (*k, *v)).collect(),
        };
        if layout.debug_offsets.is_some() {
            let mismatches = check_debug_offsets(&mem, &layout, runtime)?;
            for (field, table, process) in &mismatches {
                tracing::warn!(pid, %version, field, table, process, "_Py_DebugOffsets disagrees with fmd's table; using the process's value");
            }
            apply_debug_offsets(&mut layout, &mismatches);
        }
        let interp = Self {
            pid,
            version,
            layout,
            runtime,
            mem,
            types,
            binary,
            pthread_tid_offset: Mutex::new(None),
        };
        if interp.interpreters()?.is_empty() {
            return Err(Error::NoInterpreter { pid });
        }
        Ok(interp)
    }

    pub fn reader(&self) -> Reader<'_, M> {
        Reader::new(&self.mem, &self.layout, &self.types)
    }

    /// Addresses of all `PyInterpreterState`s, main first.
    pub fn interpreters(&self) -> Result<Vec<u64>, Error> {
        let mut out = Vec::new();
        let mut at = self.mem.read_ptr(
            self.runtime
                .wrapping_add(self.layout.runtime_interpreters_head),
        )?;
        while at != 0 {
            if out.len() >= MAX_INTERPRETERS || out.contains(&at) {
                return Err(Error::Invalid {
                    what: "interpreter list",
                    addr: self.runtime,
                });
            }
            out.push(at);
            at = self
                .mem
                .read_ptr(at.wrapping_add(self.layout.interp_next))?;
        }
        // The main interpreter is the last in the list (new ones are pushed at the head).
        out.reverse();
        Ok(out)
    }

    /// Thread states of the main interpreter, with their kernel tids.
    pub fn threads(&self) -> Result<Vec<ThreadState>, Error> {
        let main = *self
            .interpreters()?
            .first()
            .ok_or(Error::NoInterpreter { pid: self.pid })?;
        self.threads_of(main)
    }

    pub fn threads_of(&self, interp: u64) -> Result<Vec<ThreadState>, Error> {
        let l = &self.layout;
        let mut out: Vec<ThreadState> = Vec::new();
        let tasks = if l.tstate_native_thread_id.is_some() {
            Tasks::read(self.pid)
        } else {
            Tasks {
                ns_pid: self.pid,
                pairs: Vec::new(),
            }
        };
        let mut at = self
            .mem
            .read_ptr(interp.wrapping_add(l.interp_threads_head))?;
        while at != 0 {
            if out.len() >= MAX_THREADS || out.iter().any(|t| t.addr == at) {
                return Err(Error::Invalid {
                    what: "thread list",
                    addr: interp,
                });
            }
            let tid = match l.tstate_native_thread_id {
                Some(off) => u32::try_from(self.mem.read_u64(at.wrapping_add(off))?)
                    .ok()
                    .filter(|&t| t != 0),
                None => None,
            };
            let tid = tid.and_then(|t| tasks.host_tid(t));
            out.push(ThreadState {
                addr: at,
                interp: self.mem.read_ptr(at.wrapping_add(l.tstate_interp))?,
                pthread: self.mem.read_u64(at.wrapping_add(l.tstate_thread_id))?,
                tid,
            });
            at = self.mem.read_ptr(at.wrapping_add(l.tstate_next))?;
        }
        if l.tstate_native_thread_id.is_none() {
            self.fill_tids_from_pthread(&mut out)?;
        }
        Ok(out)
    }

    /// Kernel tid (in fmd's PID namespace) -> `PyThreadState` address, for the main interpreter.
    pub fn tid_map(&self) -> Result<HashMap<u32, u64>, Error> {
        Ok(self
            .threads()?
            .into_iter()
            .filter_map(|t| Some((t.tid?, t.addr)))
            .collect())
    }

    /// 3.8-3.10 keep only the `pthread_t`, the address of glibc's `struct pthread`, which holds the kernel tid
    /// (as the target's PID namespace numbers it) at an offset that depends on the glibc build. Find it once:
    /// the offset at which every thread's struct holds a live tid of the process, one of them the main
    /// thread's (tid == pid). Re-searched when the cached offset stops matching.
    fn fill_tids_from_pthread(&self, threads: &mut [ThreadState]) -> Result<(), Error> {
        let all = Tasks::read(self.pid);
        let tasks: Vec<u32> = all.pairs.iter().map(|(_, ns)| *ns).collect();
        let offset = {
            let mut cached = self
                .pthread_tid_offset
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let still_valid = cached.is_some_and(|off| {
                let tids: Vec<Option<u32>> = threads
                    .iter()
                    .map(|t| self.mem.read_u32(t.pthread.wrapping_add(off)).ok())
                    .collect();
                tids_plausible(&tids, all.ns_pid, &tasks)
            });
            if !still_valid {
                *cached = find_pthread_tid_offset(&self.mem, all.ns_pid, threads, &tasks);
            }
            *cached
        };
        let Some(off) = offset else { return Ok(()) };
        for t in threads.iter_mut() {
            t.tid = self
                .mem
                .read_u32(t.pthread.wrapping_add(off))
                .ok()
                .and_then(|ns| {
                    all.pairs
                        .iter()
                        .find(|(_, n)| *n == ns)
                        .map(|(host, _)| *host)
                });
        }
        Ok(())
    }

    /// The Python frames of a thread, newest first. Racy by nature: the thread keeps running.
    pub fn frames(&self, tstate: &ThreadState) -> Result<Vec<Frame>, Error> {
        let l = &self.layout;
        let mut at = match (
            l.tstate_frame,
            l.tstate_cframe,
            l.cframe_current_frame,
            l.tstate_current_frame,
        ) {
            (Some(off), ..) => self.mem.read_ptr(tstate.addr.wrapping_add(off))?,
            (None, Some(cf), Some(cur), _) => {
                let cframe = self.mem.read_ptr(tstate.addr.wrapping_add(cf))?;
                if cframe == 0 {
                    return Ok(Vec::new());
                }
                self.mem.read_ptr(cframe.wrapping_add(cur))?
            }
            (.., Some(off)) => self.mem.read_ptr(tstate.addr.wrapping_add(off))?,
            _ => {
                return Err(Error::Invalid {
                    what: "thread state layout",
                    addr: tstate.addr,
                })
            }
        };
        let code_type = self.types.get("PyCode_Type");
        let mut out = Vec::new();
        let mut seen = 0;
        while at != 0 {
            seen += 1;
            if seen > MAX_FRAMES {
                return Err(Error::TooLarge {
                    what: "frame chain",
                    addr: tstate.addr,
                    len: seen as u64,
                    max: MAX_FRAMES as u64,
                });
            }
            let shim = match l.frame_owner {
                Some(off) if l.minor() >= 12 => {
                    self.mem.read_u8(at.wrapping_add(off))? == FRAME_OWNED_BY_CSTACK
                }
                _ => false,
            };
            let code = self.mem.read_ptr(at.wrapping_add(l.frame_code))?;
            // 3.13's f_executable may be None or another non-code object.
            let is_code = code != 0
                && match code_type {
                    Some(t) => self
                        .mem
                        .read_ptr(code.wrapping_add(l.ob_type))
                        .is_ok_and(|ty| ty == t),
                    None => true,
                };
            if !shim && is_code {
                out.push(Frame { addr: at, code });
            }
            at = self.mem.read_ptr(at.wrapping_add(l.frame_previous))?;
        }
        Ok(out)
    }

    /// The fast locals of a frame as (name, value) pairs, skipping unset ones. Cell and free variables
    /// (3.11+) come as their cell objects.
    pub fn frame_locals(&self, frame: &Frame) -> Result<Vec<(String, u64)>, Error> {
        let l = &self.layout;
        let r = self.reader();
        let n = self
            .mem
            .read_i32(frame.code.wrapping_add(l.code_nlocalsplus))?;
        let n = u64::try_from(n).map_err(|_| Error::Invalid {
            what: "code object",
            addr: frame.code,
        })?;
        if n > MAX_LOCALS {
            return Err(Error::TooLarge {
                what: "locals",
                addr: frame.code,
                len: n,
                max: MAX_LOCALS,
            });
        }
        let names = r.tuple(
            self.mem
                .read_ptr(frame.code.wrapping_add(l.code_localsplusnames))?,
        )?;
        let n = n.min(names.len() as u64);
        let raw = self.mem.read_bytes(
            frame.addr.wrapping_add(l.frame_localsplus),
            n * 8,
            MAX_LOCALS * 8,
        )?;
        let mut out = Vec::new();
        for (name, value) in names.iter().zip(raw.chunks_exact(8)) {
            let value = u64::from_le_bytes(value.try_into().unwrap_or_default());
            if value != 0 {
                out.push((r.str(*name)?, value));
            }
        }
        Ok(out)
    }

    /// The qualified (3.11+) or plain name of a code object.
    pub fn code_name(&self, code: u64) -> Result<String, Error> {
        let off = self.layout.code_qualname.unwrap_or(self.layout.code_name);
        self.reader()
            .str(self.mem.read_ptr(code.wrapping_add(off))?)
    }

    /// `sys.modules` as (name, module object) pairs.
    pub fn modules(&self) -> Result<Vec<(String, u64)>, Error> {
        let main = *self
            .interpreters()?
            .first()
            .ok_or(Error::NoInterpreter { pid: self.pid })?;
        let dict = self
            .mem
            .read_ptr(main.wrapping_add(self.layout.interp_modules))?;
        self.reader().str_dict(dict)
    }
}

/// The threads of a process as (tid in fmd's PID namespace, tid in the target's innermost namespace).
struct Tasks {
    /// The process's own pid in its innermost namespace.
    ns_pid: u32,
    pairs: Vec<(u32, u32)>,
}

impl Tasks {
    /// Translates a tid as the target sees it (its PID namespace) into ours. Identity when /proc told
    /// nothing (the thread list could not be read).
    fn host_tid(&self, ns_tid: u32) -> Option<u32> {
        if self.pairs.is_empty() {
            return Some(ns_tid);
        }
        self.pairs
            .iter()
            .find(|(_, ns)| *ns == ns_tid)
            .map(|(host, _)| *host)
    }

    fn read(pid: u32) -> Tasks {
        let mut pairs = Vec::new();
        let mut ns_pid = pid;
        if let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) {
            for e in dir.flatten() {
                let Some(host) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                    continue;
                };
                let status = fs::read_to_string(e.path().join("status")).unwrap_or_default();
                let ns = parse_nspid(&status).unwrap_or(host);
                if host == pid {
                    ns_pid = ns;
                }
                pairs.push((host, ns));
            }
        }
        Tasks { ns_pid, pairs }
    }
}

/// The innermost id of a `/proc/.../status` `NSpid:` line (kernels without it: `None`).
pub fn parse_nspid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_ascii_whitespace()
        .last()?
        .parse()
        .ok()
}

/// `tid` in glibc's `struct pthread` on x86_64 (glibc 2.26 and later), tried before searching.
const GLIBC_PTHREAD_TID: u64 = 0x2d0;

/// Whether the values read at one offset of every thread's `struct pthread` can be their tids: all live
/// tids of the process, pairwise distinct, one of them the main thread's.
fn tids_plausible(tids: &[Option<u32>], pid: u32, tasks: &[u32]) -> bool {
    let mut seen = Vec::with_capacity(tids.len());
    for t in tids {
        match t {
            Some(t) if tasks.contains(t) && !seen.contains(t) => seen.push(*t),
            _ => return false,
        }
    }
    seen.contains(&pid)
}

/// Searches `struct pthread` (first 4 KiB) for the offset of `tid`, glibc's usual offset first; see
/// `fill_tids_from_pthread`. With a single thread whose tid is a small number (PID 1 in a container) many
/// fields could match, which is why the known offset goes first.
pub fn find_pthread_tid_offset(
    mem: &impl Memory,
    pid: u32,
    threads: &[ThreadState],
    tasks: &[u32],
) -> Option<u64> {
    const SPAN: u64 = 4096;
    // As much of each struct as is mapped (the main thread's may sit at the end of its mapping).
    let structs: Vec<Vec<u8>> = threads
        .iter()
        .map(|t| {
            let mut s = Vec::new();
            for chunk in 0..SPAN / 256 {
                match mem.read_bytes(t.pthread.wrapping_add(chunk * 256), 256, 256) {
                    Ok(b) => s.extend(b),
                    Err(_) => break,
                }
            }
            s
        })
        .collect();
    let at = |s: &Vec<u8>, off: u64| {
        let off = usize::try_from(off).ok()?;
        s.get(off..off + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    };
    std::iter::once(GLIBC_PTHREAD_TID)
        .chain((0..SPAN - 4).step_by(4))
        .find(|&off| {
            let tids: Vec<Option<u32>> = structs.iter().map(|s| at(s, off)).collect();
            tids_plausible(&tids, pid, tasks)
        })
}

/// Compares `_Py_DebugOffsets` (3.13+, at `_PyRuntime`) with the table; returns the fields that differ.
pub fn check_debug_offsets(
    mem: &impl Memory,
    layout: &Layout,
    runtime: u64,
) -> Result<Vec<(&'static str, u64, u64)>, Error> {
    let Some(d) = layout.debug_offsets else {
        return Ok(Vec::new());
    };
    let cookie = mem.read_array::<8>(runtime)?;
    if &cookie != DEBUG_OFFSETS_COOKIE {
        return Err(Error::BadDebugOffsets {
            addr: runtime,
            reason: "no xdebugpy cookie",
        });
    }
    let version = mem.read_u64(runtime.wrapping_add(d.version))?;
    // `free_threaded` follows `version`: a free-threaded (3.13t) build has other object headers.
    if mem.read_u64(runtime.wrapping_add(d.version + 8))? != 0 {
        return Err(Error::BadDebugOffsets {
            addr: runtime,
            reason: "free-threaded builds are not supported",
        });
    }
    if (version >> 24, (version >> 16) & 0xff)
        != (u64::from(layout.version.0), u64::from(layout.version.1))
    {
        return Err(Error::BadDebugOffsets {
            addr: runtime,
            reason: "version differs from the binary's",
        });
    }
    let mut out = Vec::new();
    for (field, ours, pos) in layout.debug_offset_checks() {
        let theirs = mem.read_u64(runtime.wrapping_add(pos))?;
        let ours = ours.unwrap_or(u64::MAX);
        if ours != theirs {
            out.push((field, ours, theirs));
        }
    }
    Ok(out)
}

/// Takes the process's word for the fields the runtime publishes.
fn apply_debug_offsets(layout: &mut Layout, mismatches: &[(&'static str, u64, u64)]) {
    for &(field, _, v) in mismatches {
        let slot: Option<&mut u64> = match field {
            "runtime_state.interpreters_head" => Some(&mut layout.runtime_interpreters_head),
            "interpreter_state.next" => Some(&mut layout.interp_next),
            "interpreter_state.threads_head" => Some(&mut layout.interp_threads_head),
            "interpreter_state.imports_modules" => Some(&mut layout.interp_modules),
            "thread_state.next" => Some(&mut layout.tstate_next),
            "thread_state.interp" => Some(&mut layout.tstate_interp),
            "thread_state.thread_id" => Some(&mut layout.tstate_thread_id),
            "interpreter_frame.previous" => Some(&mut layout.frame_previous),
            "interpreter_frame.executable" => Some(&mut layout.frame_code),
            "interpreter_frame.instr_ptr" => Some(&mut layout.frame_instr),
            "interpreter_frame.localsplus" => Some(&mut layout.frame_localsplus),
            "code_object.filename" => Some(&mut layout.code_filename),
            "code_object.name" => Some(&mut layout.code_name),
            "code_object.linetable" => Some(&mut layout.code_linetable),
            "code_object.firstlineno" => Some(&mut layout.code_firstlineno),
            "code_object.localsplusnames" => Some(&mut layout.code_localsplusnames),
            "pyobject.ob_type" => Some(&mut layout.ob_type),
            "type_object.tp_name" => Some(&mut layout.type_name),
            "type_object.tp_flags" => Some(&mut layout.type_flags),
            "tuple_object.ob_item" => Some(&mut layout.tuple_item),
            "list_object.ob_item" => Some(&mut layout.list_item),
            "dict_object.ma_keys" => Some(&mut layout.dict_keys),
            "dict_object.ma_values" => Some(&mut layout.dict_values),
            "float_object.ob_fval" => Some(&mut layout.float_fval),
            "long_object.ob_digit" => Some(&mut layout.long_digit),
            "bytes_object.ob_sval" => Some(&mut layout.bytes_sval),
            "unicode_object.state" => Some(&mut layout.unicode_state),
            "unicode_object.length" => Some(&mut layout.unicode_length),
            "unicode_object.asciiobject_size" => Some(&mut layout.unicode_ascii_size),
            _ => None,
        };
        match slot {
            Some(s) => *s = v,
            None => match field {
                "thread_state.current_frame" => layout.tstate_current_frame = Some(v),
                "thread_state.native_thread_id" => layout.tstate_native_thread_id = Some(v),
                "interpreter_frame.owner" => layout.frame_owner = Some(v),
                "code_object.qualname" => layout.code_qualname = Some(v),
                "code_object.co_code_adaptive" => layout.code_code_adaptive = Some(v),
                "long_object.lv_tag" => layout.long_lv_tag = Some(v),
                _ => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nspid_lines() {
        fn check(status: &str, expect: Option<u32>) {
            assert_eq!(parse_nspid(status), expect, "{status:?}");
        }
        check("Name:\tpython\nNSpid:\t4242\n", Some(4242));
        check("NSpid:\t4242\t17\t1\n", Some(1));
        check("Name:\tpython\n", None);
        check("NSpid:\n", None);
    }

    #[test]
    fn debug_offsets_cross_check() {
        use crate::python::memory::SliceMemory;
        let layout = Layout::for_version(3, 13).expect("3.13");
        let d = layout.debug_offsets.expect("3.13 has debug offsets");
        const RUNTIME: u64 = 0x1000;
        // A _PyRuntime whose _Py_DebugOffsets says what the table says, then altered by `edit`.
        fn check(layout: &Layout, edit: impl Fn(&mut Vec<u8>), expect: Result<Vec<&str>, &str>) {
            let d = layout.debug_offsets.expect("3.13");
            let mut b = vec![0u8; 4096];
            b[..8].copy_from_slice(b"xdebugpy");
            b[d.version as usize..][..8].copy_from_slice(&0x030D_00F0u64.to_le_bytes());
            for (_, ours, pos) in layout.debug_offset_checks() {
                b[pos as usize..][..8].copy_from_slice(&ours.unwrap_or(0).to_le_bytes());
            }
            edit(&mut b);
            let mem = SliceMemory::new().with_region(RUNTIME, b);
            let got = check_debug_offsets(&mem, layout, RUNTIME)
                .map(|m| m.into_iter().map(|(f, _, _)| f).collect::<Vec<_>>())
                .map_err(|e| match e {
                    Error::BadDebugOffsets { reason, .. } => reason,
                    _ => "other error",
                });
            assert_eq!(got, expect);
        }
        check(layout, |_| {}, Ok(vec![]));
        let native = d.tstate_native_thread_id as usize;
        check(
            layout,
            |b| b[native] ^= 8,
            Ok(vec!["thread_state.native_thread_id"]),
        );
        check(layout, |b| b[0] = b'X', Err("no xdebugpy cookie"));
        check(
            layout,
            |b| b[d.version as usize + 2] = 12,
            Err("version differs from the binary's"),
        );
        check(
            layout,
            |b| b[d.version as usize + 8] = 1,
            Err("free-threaded builds are not supported"),
        );
        // And a process whose values differ gets them applied.
        let mut l = *layout;
        apply_debug_offsets(
            &mut l,
            &[
                ("thread_state.native_thread_id", 160, 168),
                ("interpreter_state.next", 0, 8),
            ],
        );
        assert_eq!((l.tstate_native_thread_id, l.interp_next), (Some(168), 8));
    }
}
