//! Finding the CPython interpreter inside a process: which ELF (python executable or libpython) holds it,
//! where it is loaded, its exact version and the addresses of `_PyRuntime` and the builtin type objects.
//! Files are opened through /proc/PID/root so this works across mount namespaces (containers).

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};

use super::{memory::Memory, Error};

/// A CPython version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u8,
    pub minor: u8,
    /// `None` when only `3.X` could be learned (file name).
    pub micro: Option<u8>,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.micro {
            Some(m) => write!(f, "{}.{}.{m}", self.major, self.minor),
            None => write!(f, "{}.{}", self.major, self.minor),
        }
    }
}

/// Symbols of the interpreter ELF fmd resolves (names as in CPython's exports).
pub const SYMBOLS: &[&str] = &[
    "_PyRuntime",
    "Py_Version",
    "PyUnicode_Type",
    "PyBytes_Type",
    "PyLong_Type",
    "PyBool_Type",
    "PyFloat_Type",
    "PyTuple_Type",
    "PyList_Type",
    "PyDict_Type",
    "PySet_Type",
    "PyFrozenSet_Type",
    "PyModule_Type",
    "PyType_Type",
    "PyCode_Type",
    "_Py_NoneStruct",
    "_Py_TrueStruct",
    "_Py_FalseStruct",
];

/// The interpreter ELF as mapped in one process.
#[derive(Clone, Debug)]
pub struct Binary {
    /// Path as seen inside the process (from /proc/PID/maps).
    pub path: PathBuf,
    /// Added to a symbol's value to get its address in the process.
    pub load_bias: u64,
    pub version: Version,
    /// Rebased addresses of the [`SYMBOLS`] found.
    pub symbols: HashMap<&'static str, u64>,
}

/// One line of /proc/PID/maps with a file path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    pub path: String,
}

/// Parses /proc/PID/maps text, keeping file-backed mappings.
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    text.lines()
        .filter_map(|line| {
            let mut it = line.split_ascii_whitespace();
            let range = it.next()?;
            let _perms = it.next()?;
            let offset = u64::from_str_radix(it.next()?, 16).ok()?;
            let _dev = it.next()?;
            let _inode = it.next()?;
            let path: Vec<&str> = it.collect();
            let path = path.join(" ");
            if !path.starts_with('/') {
                return None;
            }
            let (s, e) = range.split_once('-')?;
            Some(Mapping {
                start: u64::from_str_radix(s, 16).ok()?,
                end: u64::from_str_radix(e, 16).ok()?,
                offset,
                path,
            })
        })
        .collect()
}

/// `3.X` from a file name such as `libpython3.11.so.1.0`, `python3.9` or `libpython3.12d.so`.
pub fn version_from_file_name(name: &str) -> Option<(u8, u8)> {
    let rest = name
        .strip_prefix("libpython")
        .or_else(|| name.strip_prefix("python"))?;
    let (major, rest) = rest.split_once('.')?;
    let minor: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Decodes `Py_Version` / `PY_VERSION_HEX` (0xMMmmuu..).
pub fn version_from_hex(hex: u32) -> Version {
    Version {
        major: (hex >> 24) as u8,
        minor: (hex >> 16) as u8,
        micro: Some((hex >> 8) as u8),
    }
}

/// Finds the `PY_VERSION` literal (`3.M.u` NUL-terminated) in read-only data, for versions without
/// `Py_Version`. The linker may merge it into the tail of a longer string (`.../versions/3.8.18`), so the byte
/// before it need only not continue a number.
pub fn version_from_rodata(data: &[u8], major: u8, minor: u8) -> Option<u8> {
    let needle = format!("{major}.{minor}.");
    let needle = needle.as_bytes();
    let mut at = 0;
    while let Some(pos) = data
        .get(at..)?
        .windows(needle.len())
        .position(|w| w == needle)
    {
        let begin = at + pos;
        let start = begin + needle.len();
        let before_ok = begin == 0
            || data
                .get(begin - 1)
                .is_some_and(|b| !b.is_ascii_digit() && *b != b'.');
        let digits: Vec<u8> = data
            .get(start..)?
            .iter()
            .copied()
            .take_while(u8::is_ascii_digit)
            .collect();
        if before_ok
            && !digits.is_empty()
            && digits.len() <= 3
            && data.get(start + digits.len()) == Some(&0)
        {
            return std::str::from_utf8(&digits).ok()?.parse().ok();
        }
        at = start;
    }
    None
}

fn is_interpreter_candidate(path: &str) -> bool {
    let name = Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("");
    name.starts_with("libpython3.") || (name.starts_with("python3") && !name.contains(".so"))
}

impl Binary {
    /// Locates the interpreter of process `pid` (libpython first, then the executable if it contains
    /// `_PyRuntime`).
    pub fn find(pid: u32, mem: &impl Memory) -> Result<Binary, Error> {
        let maps =
            fs::read_to_string(format!("/proc/{pid}/maps")).map_err(|source| Error::Proc {
                pid,
                file: "maps".into(),
                source,
            })?;
        let maps = parse_maps(&maps);
        let mut candidates: Vec<&Mapping> = maps
            .iter()
            .filter(|m| is_interpreter_candidate(&m.path))
            .collect();
        // libpython before the executable: with a shared build, the executable has no `_PyRuntime`.
        candidates.sort_by_key(|m| {
            !Path::new(&m.path)
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("lib"))
        });
        let mut seen = Vec::new();
        let mut last_err = None;
        for m in candidates {
            if seen.contains(&m.path) {
                continue;
            }
            seen.push(m.path.clone());
            match Self::load(pid, &maps, &m.path, mem) {
                Ok(b) => return Ok(b),
                Err(e) => {
                    tracing::debug!(pid, path = %m.path, error = %e, "not the interpreter");
                    last_err = Some(e);
                }
            }
        }
        Err(match last_err {
            Some(e @ (Error::UnsupportedVersion { .. } | Error::UnknownVersion { .. })) => e,
            _ => Error::NotPython { pid },
        })
    }

    fn load(pid: u32, maps: &[Mapping], path: &str, mem: &impl Memory) -> Result<Binary, Error> {
        let host_path = PathBuf::from(format!("/proc/{pid}/root{path}"));
        let data = match fs::read(&host_path) {
            Ok(d) => d,
            // Replaced or deleted on disk since it was mapped: the kernel still has it.
            Err(_) => {
                let m = maps
                    .iter()
                    .find(|m| m.path == path)
                    .ok_or(Error::NotPython { pid })?;
                let alt = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
                fs::read(&alt).map_err(|source| Error::Proc {
                    pid,
                    file: alt,
                    source,
                })?
            }
        };
        let elf_err = |source| Error::Elf {
            path: PathBuf::from(path),
            source,
        };
        let file = object::File::parse(&*data).map_err(elf_err)?;

        // Load bias from any mapping of the file whose offset falls in a PT_LOAD segment.
        let load_bias = maps
            .iter()
            .filter(|m| m.path == path)
            .find_map(|m| {
                file.segments().find_map(|seg| {
                    let (off, size) = seg.file_range();
                    let page_off = off & !0xfff;
                    (m.offset >= page_off && m.offset < off + size.max(1)).then(|| {
                        m.start
                            .wrapping_sub(m.offset)
                            .wrapping_sub(seg.address().wrapping_sub(off))
                    })
                })
            })
            .ok_or(Error::NotPython { pid })?;

        let mut symbols = HashMap::new();
        for sym in file.dynamic_symbols().chain(file.symbols()) {
            let Ok(name) = sym.name() else { continue };
            if let Some(want) = SYMBOLS.iter().find(|s| **s == name) {
                if sym.address() != 0 {
                    symbols
                        .entry(*want)
                        .or_insert(sym.address().wrapping_add(load_bias));
                }
            }
        }
        if !symbols.contains_key("_PyRuntime") {
            return Err(Error::MissingSymbol {
                path: PathBuf::from(path),
                symbol: "_PyRuntime",
            });
        }

        let file_name = Path::new(path)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("");
        let version = match symbols.get("Py_Version") {
            Some(&addr) => version_from_hex(mem.read_u32(addr)?),
            None => {
                let rodata = file.section_by_name(".rodata").and_then(|s| s.data().ok());
                match version_from_file_name(file_name) {
                    Some((major, minor)) => Version {
                        major,
                        minor,
                        micro: rodata.and_then(|d| version_from_rodata(d, major, minor)),
                    },
                    // A bare `python3`: the versions without `Py_Version` are 3.8 to 3.10.
                    None => (8..=10)
                        .find_map(|minor| {
                            let micro = version_from_rodata(rodata?, 3, minor)?;
                            Some(Version {
                                major: 3,
                                minor,
                                micro: Some(micro),
                            })
                        })
                        .ok_or(Error::UnknownVersion {
                            path: PathBuf::from(path),
                        })?,
                }
            }
        };
        if version.major != 3 || !(8..=13).contains(&version.minor) {
            return Err(Error::UnsupportedVersion {
                major: version.major,
                minor: version.minor,
            });
        }
        Ok(Binary {
            path: PathBuf::from(path),
            load_bias,
            version,
            symbols,
        })
    }

    pub fn symbol(&self, name: &'static str) -> Option<u64> {
        self.symbols.get(name).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        fn check(name: &str, expect: Option<(u8, u8)>) {
            assert_eq!(version_from_file_name(name), expect, "{name}");
        }
        check("libpython3.11.so.1.0", Some((3, 11)));
        check("libpython3.8.so.1.0", Some((3, 8)));
        check("python3.13", Some((3, 13)));
        check("libpython3.12d.so", Some((3, 12)));
        check("python3", None);
        check("bash", None);
    }

    #[test]
    fn rodata_versions() {
        fn check(data: &[u8], expect: Option<u8>) {
            assert_eq!(
                version_from_rodata(data, 3, 9),
                expect,
                "{:?}",
                String::from_utf8_lossy(data)
            );
        }
        check(b"xx\x003.9.18\0yy", Some(18));
        check(b"\x003.9.\0\x003.9.7\0", Some(7));
        check(b"\x003.9.18+\0", None);
        check(b"/versions/3.9.18/lib\0/versions/3.9.18\0", Some(18));
        check(b"13.9.1\0", None);
        check(b"\x003.10.1\0", None);
        check(b"", None);
        assert_eq!(
            version_from_hex(0x030B07F0),
            Version {
                major: 3,
                minor: 11,
                micro: Some(7)
            }
        );
    }

    #[test]
    fn maps() {
        let text = "55d0c000-55d0d000 r--p 00000000 08:01 123 /usr/bin/python3.11\n\
                    7f00-8f00 rw-p 00000000 00:00 0 \n\
                    7f10-7f20 r-xp 00001000 08:01 9 /opt/my dir/libpython3.9.so.1.0\n";
        let m = parse_maps(text);
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[1],
            Mapping {
                start: 0x7f10,
                end: 0x7f20,
                offset: 0x1000,
                path: "/opt/my dir/libpython3.9.so.1.0".into()
            }
        );
    }
}
