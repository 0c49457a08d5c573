//! USDT probes (SystemTap `.note.stapsdt`) of an interpreter binary, and attaching a BPF program to one as
//! a uprobe whose semaphore the kernel raises (`perf_event_open` on the `uprobe` PMU with a reference
//! counter offset: aya 0.14's `UProbe::attach` cannot pass one, and a semaphore-guarded probe never fires
//! without it).

use std::{
    ffi::CString,
    io,
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use aya::programs::UProbe;
use object::{Object as _, ObjectSection as _, ObjectSegment as _};

use super::{program_error, program_mut, Capture, Error};

/// One probe: where to put the uprobe and the semaphore, as offsets in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsdtProbe {
    pub provider: String,
    pub name: String,
    pub file_offset: u64,
    /// 0 when the probe has no semaphore.
    pub semaphore_offset: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum UsdtError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot parse the ELF file {path}")]
    Elf {
        path: PathBuf,
        #[source]
        source: object::Error,
    },
}

/// The probes in the ELF file `data` (empty when it was built without them).
pub fn parse_probes(data: &[u8]) -> Result<Vec<UsdtProbe>, object::Error> {
    let file = object::File::parse(data)?;
    let Some(notes) = file.section_by_name(".note.stapsdt") else {
        return Ok(Vec::new());
    };
    let base = file.section_by_name(".stapsdt.base").map(|s| s.address());
    let notes = notes.data()?;
    let to_file = |addr: u64| -> Option<u64> {
        file.segments().find_map(|s| {
            let (offset, size) = s.file_range();
            (s.address() <= addr && addr < s.address() + size).then(|| addr - s.address() + offset)
        })
    };
    let mut out = Vec::new();
    let mut at = 0usize;
    let u32_at = |i: usize| {
        notes
            .get(i..i + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    };
    let u64_at = |d: &[u8], i: usize| {
        d.get(i..i + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let align4 = |n: usize| (n + 3) & !3;
    while let (Some(namesz), Some(descsz), Some(kind)) =
        (u32_at(at), u32_at(at + 4), u32_at(at + 8))
    {
        let name_start = at + 12;
        let desc_start = name_start + align4(namesz as usize);
        let next = desc_start + align4(descsz as usize);
        let (Some(name), Some(desc)) = (
            notes.get(name_start..name_start + namesz as usize),
            notes.get(desc_start..desc_start + descsz as usize),
        ) else {
            break;
        };
        at = next;
        if kind != 3 || name != b"stapsdt\0" {
            continue;
        }
        let (Some(pc), Some(note_base), Some(semaphore)) =
            (u64_at(desc, 0), u64_at(desc, 8), u64_at(desc, 16))
        else {
            continue;
        };
        let mut strings = desc.get(24..).unwrap_or_default().split(|&b| b == 0);
        let provider = String::from_utf8_lossy(strings.next().unwrap_or_default()).into_owned();
        let probe = String::from_utf8_lossy(strings.next().unwrap_or_default()).into_owned();
        // Prelinking moves the code; `.stapsdt.base` says by how much.
        let pc = match base {
            Some(b) if note_base != 0 => pc.wrapping_add(b).wrapping_sub(note_base),
            _ => pc,
        };
        let Some(file_offset) = to_file(pc) else {
            continue;
        };
        let semaphore_offset = if semaphore == 0 {
            0
        } else {
            to_file(semaphore).unwrap_or(0)
        };
        out.push(UsdtProbe {
            provider,
            name: probe,
            file_offset,
            semaphore_offset,
        });
    }
    Ok(out)
}

/// The probes of the file at `path`.
pub fn probes(path: &Path) -> Result<Vec<UsdtProbe>, UsdtError> {
    let data = std::fs::read(path).map_err(|source| UsdtError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_probes(&data).map_err(|source| UsdtError::Elf {
        path: path.to_owned(),
        source,
    })
}

/// `perf_event_attr` up to `config2` (`PERF_ATTR_SIZE_VER1` and later fields zero), as the kernel reads it.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
    rest: [u64; 8],
}
const _: () = assert!(std::mem::size_of::<PerfEventAttr>() == 136);

/// `_IOW('$', 8, __u32)` and `_IO('$', 0)` from `linux/perf_event.h`.
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
/// `PERF_FLAG_FD_CLOEXEC` from `linux/perf_event.h`.
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
/// `/sys/bus/event_source/devices/uprobe/format/ref_ctr_offset`: `config:32-63`.
const REF_CTR_SHIFT: u32 = 32;

impl Capture {
    /// Attaches `program` (a uprobe program) to `probe` of the binary at `path`, for every process; the
    /// returned fd keeps it attached.
    pub fn attach_usdt(
        &mut self,
        program: &'static str,
        path: &Path,
        probe: &UsdtProbe,
    ) -> Result<OwnedFd, Error> {
        let prog: &mut UProbe = program_mut(&mut self.ebpf, program)?;
        if prog.fd().is_err() {
            prog.load()
                .map_err(|source| program_error(program, source))?;
        }
        let prog_fd = prog
            .fd()
            .map_err(|source| Error::Program {
                program: program.to_owned(),
                source,
            })?
            .as_fd()
            .as_raw_fd();
        let io_err = |source: io::Error| Error::Usdt {
            probe: probe.name.clone(),
            source,
        };
        let pmu =
            std::fs::read_to_string("/sys/bus/event_source/devices/uprobe/type").map_err(io_err)?;
        let pmu: u32 = pmu.trim().parse().map_err(|_| {
            io_err(io::Error::new(
                io::ErrorKind::InvalidData,
                "uprobe PMU type",
            ))
        })?;
        let c_path = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| io_err(io::ErrorKind::InvalidInput.into()))?;
        let attr = PerfEventAttr {
            kind: pmu,
            size: std::mem::size_of::<PerfEventAttr>() as u32,
            config: probe.semaphore_offset << REF_CTR_SHIFT,
            sample_period: 1,
            wakeup_events: 1,
            config1: c_path.as_ptr() as u64,
            config2: probe.file_offset,
            ..PerfEventAttr::default()
        };
        // SAFETY: perf_event_open(2) with a fully initialised attr that outlives the call (as does the path).
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                &attr as *const PerfEventAttr,
                -1i32,
                0i32,
                -1i32,
                PERF_FLAG_FD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io_err(io::Error::last_os_error()));
        }
        // SAFETY: the kernel just returned this fd to us and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: ioctls on our perf event fd, with the program fd as argument.
        if unsafe { libc::ioctl(fd.as_raw_fd(), PERF_EVENT_IOC_SET_BPF as _, prog_fd) } != 0
            || unsafe { libc::ioctl(fd.as_raw_fd(), PERF_EVENT_IOC_ENABLE as _, 0) } != 0
        {
            return Err(io_err(io::Error::last_os_error()));
        }
        Ok(fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian's python3.11 has the gc probes (bpf-toolchain.md); their offsets must be inside the file and
    /// the semaphores in `.probes`. Skipped where that interpreter is absent.
    #[test]
    fn debian_python_gc_probes() {
        let path = Path::new("/usr/bin/python3.11");
        if !path.exists() {
            eprintln!("skipping: no {}", path.display());
            return;
        }
        let found = probes(path).expect("parse");
        let len = std::fs::metadata(path).expect("metadata").len();
        for name in ["gc__start", "gc__done"] {
            let p = found
                .iter()
                .find(|p| p.name == name)
                .unwrap_or_else(|| panic!("no {name} in {found:?}"));
            assert_eq!(p.provider, "python");
            assert!(p.file_offset > 0 && p.file_offset < len, "{p:?}");
            assert!(p.semaphore_offset > 0 && p.semaphore_offset < len, "{p:?}");
        }
        // pyenv's interpreters are built without probes.
        assert!(
            parse_probes(&std::fs::read("/proc/self/exe").expect("self"))
                .expect("parse")
                .is_empty()
        );
    }
}
