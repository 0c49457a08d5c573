//! fmd's out-of-process CPython reader: finds the interpreter in a process, knows each version's struct layout
//! (3.8 to 3.13, x86_64 Linux) and reads objects, threads and modules through a [`memory::Memory`], never
//! stopping the target. Pure functions over that trait, so every walk can be fuzzed with garbage memory.

pub mod binary;
pub mod layout;
pub mod linetable;
pub mod memory;
pub mod objects;
mod offsets;
pub mod stack;
pub mod symbols;
pub mod threads;

use std::{io, path::PathBuf};

pub use binary::{Binary, Version};
pub use layout::Layout;
pub use memory::{Memory, PageCache, ProcessMemory, SliceMemory};
pub use objects::Reader;
pub use threads::{Frame, Interpreter, ThreadState};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {len} bytes at {addr:#x} in the target process")]
    Read {
        addr: u64,
        len: usize,
        #[source]
        source: io::Error,
    },
    #[error("short read at {addr:#x}: {got} of {len} bytes")]
    ShortRead { addr: u64, len: usize, got: usize },
    #[error("cannot read /proc/{pid}/{file}")]
    Proc {
        pid: u32,
        file: String,
        #[source]
        source: io::Error,
    },
    #[error("process {pid} has no libpython or python executable mapped: give the PID of a Python process")]
    NotPython { pid: u32 },
    #[error("cannot read the ELF file {path}")]
    Elf {
        path: PathBuf,
        #[source]
        source: object::Error,
    },
    #[error("{path} has no symbol {symbol} (is it a stripped interpreter?)")]
    MissingSymbol { path: PathBuf, symbol: &'static str },
    #[error("cannot tell which Python version {path} is")]
    UnknownVersion { path: PathBuf },
    #[error("CPython {major}.{minor} is not supported (fmd reads 3.8 to 3.13)")]
    UnsupportedVersion { major: u8, minor: u8 },
    #[error("no Python interpreter state found in process {pid} (is it still starting up?)")]
    NoInterpreter { pid: u32 },
    #[error("_Py_DebugOffsets at {addr:#x} is invalid ({reason})")]
    BadDebugOffsets { addr: u64, reason: &'static str },
    #[error(
        "_Py_DebugOffsets disagrees with fmd's table on {field}: table {table}, process {process}"
    )]
    DebugOffsetsMismatch {
        field: &'static str,
        table: u64,
        process: u64,
    },
    #[error("object at {addr:#x} is not a {expected}")]
    WrongType { addr: u64, expected: &'static str },
    #[error("{what} at {addr:#x} is too large ({len} > {max})")]
    TooLarge {
        what: &'static str,
        addr: u64,
        len: u64,
        max: u64,
    },
    #[error("{what} at {addr:#x} is corrupt or changed while being read")]
    Invalid { what: &'static str, addr: u64 },
    #[error("null pointer where a {what} was expected")]
    Null { what: &'static str },
}

impl Error {
    /// Whether the error comes from the target's memory (unmapped, torn or garbage data) rather than from the
    /// setup (no such process, unsupported interpreter).
    pub fn is_memory(&self) -> bool {
        matches!(
            self,
            Self::Read { .. }
                | Self::ShortRead { .. }
                | Self::WrongType { .. }
                | Self::TooLarge { .. }
                | Self::Invalid { .. }
                | Self::Null { .. }
        )
    }
}

#[cfg(test)]
mod live_tests;
#[cfg(test)]
pub(crate) mod testutil;
