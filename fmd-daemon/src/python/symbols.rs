//! Turning sampled frames (code object address, instruction) into source locations: the code object's
//! qualified name, file and first line, and the line being run. Cached per code object and re-validated on
//! every hit, so a code object freed and its address reused is never shown under the old name.

use std::collections::HashMap;

use super::{linetable::line_for, memory::Memory, objects::Reader, Error, Layout};

/// Most bytes of a line table read (the largest functions in the standard library have a few KiB).
const MAX_LINETABLE: u64 = 1 << 20;
/// Cached code objects per process before the cache is cleared (bounds memory on pathological apps).
const MAX_CACHED: usize = 65536;

/// What a sampled frame resolves to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    /// `co_qualname` (3.11+) or `co_name`.
    pub function: String,
    pub file: String,
    /// The line being run, or the function's first line when the table has none for the instruction.
    pub line: i32,
    pub first_line: i32,
}

impl Location {
    /// What is shown for a frame that could not be read.
    pub fn unknown() -> Self {
        Self {
            function: "<unknown>".to_owned(),
            file: "<unknown>".to_owned(),
            line: 0,
            first_line: 0,
        }
    }
}

/// A code object as read once: enough to validate the address later and to map offsets to lines.
#[derive(Clone, Debug)]
struct Code {
    /// The [`Symbolizer::begin_batch`] epoch in which the object was last checked.
    checked: u64,
    name_ptr: u64,
    first_line: i32,
    function: String,
    file: String,
    table: Vec<u8>,
}

/// Counters of what could not be symbolised (shown as `<unknown>`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SymbolCounters {
    pub resolved: u64,
    pub unknown: u64,
    /// Cache hits whose object no longer matched (freed and reused addresses).
    pub stale: u64,
}

/// Symbolises the frames of one process.
#[derive(Debug, Default)]
pub struct Symbolizer {
    cache: HashMap<u64, Code>,
    epoch: u64,
    pub counters: SymbolCounters,
}

impl Symbolizer {
    /// Starts a batch of samples (one ring-buffer drain): each cached code object is re-checked once per
    /// batch, not once per frame. The samples of a batch were taken moments before, so checking once is as
    /// sound as checking at every frame, and it saves most of the reads.
    pub fn begin_batch(&mut self) {
        self.epoch += 1;
    }

    pub fn new() -> Self {
        Self::default()
    }

    /// The location of a frame; `<unknown>` (and a count) when the code object cannot be read.
    pub fn locate<M: Memory>(&mut self, reader: &Reader<'_, M>, code: u64, instr: u64) -> Location {
        match self.try_locate(reader, code, instr) {
            Ok(l) => {
                self.counters.resolved += 1;
                l
            }
            Err(e) => {
                tracing::trace!(code, error = %e, "cannot symbolise a frame");
                self.counters.unknown += 1;
                Location::unknown()
            }
        }
    }

    fn try_locate<M: Memory>(
        &mut self,
        reader: &Reader<'_, M>,
        code: u64,
        instr: u64,
    ) -> Result<Location, Error> {
        let l = reader.layout;
        let epoch = self.epoch;
        let cached = match self.cache.get_mut(&code) {
            Some(c) if c.checked == epoch => true,
            Some(c) if still_valid(reader, code, c) => {
                c.checked = epoch;
                true
            }
            Some(_) => {
                self.counters.stale += 1;
                self.cache.remove(&code);
                false
            }
            None => false,
        };
        if !cached {
            let mut c = read_code(reader, code)?;
            c.checked = epoch;
            if self.cache.len() >= MAX_CACHED {
                self.cache.clear();
            }
            self.cache.insert(code, c);
        }
        let c = self.cache.get(&code).ok_or(Error::Invalid {
            what: "code cache",
            addr: code,
        })?;
        let addr = byte_offset(l, code, instr);
        let line = line_for(l.minor(), &c.table, c.first_line, addr).unwrap_or(c.first_line);
        Ok(Location {
            function: c.function.clone(),
            file: c.file.clone(),
            line,
            first_line: c.first_line,
        })
    }
}

/// The byte offset in the bytecode of the sampled instruction: `f_lasti` is bytes in 3.8/3.9 and code units
/// in 3.10; 3.11+ frames hold a pointer into `co_code_adaptive`, the tail of the code object.
pub fn byte_offset(l: &Layout, code: u64, instr: u64) -> i64 {
    match (l.minor(), l.code_code_adaptive) {
        (..=9, _) => i64::from(instr as u32 as i32),
        (10, _) => i64::from(instr as u32 as i32).saturating_mul(2),
        (_, Some(adaptive)) => (instr as i64).wrapping_sub(code.wrapping_add(adaptive) as i64),
        (_, None) => -1,
    }
}

fn is_code<M: Memory>(reader: &Reader<'_, M>, code: u64) -> Result<bool, Error> {
    let ty = reader.type_of(code)?;
    Ok(reader.types.get("PyCode_Type").is_none_or(|t| t == ty))
}

fn read_code<M: Memory>(reader: &Reader<'_, M>, code: u64) -> Result<Code, Error> {
    if code == 0 {
        return Err(Error::Null {
            what: "code object",
        });
    }
    // 3.13's f_executable may be another object (None for shims); anything but a code object is refused.
    if !is_code(reader, code)? {
        return Err(Error::WrongType {
            addr: code,
            expected: "code object",
        });
    }
    let l = reader.layout;
    let mem = reader.mem;
    let name_ptr = mem.read_ptr(code.wrapping_add(l.code_name))?;
    let first_line = mem.read_i32(code.wrapping_add(l.code_firstlineno))?;
    let function = match l.code_qualname {
        Some(q) => reader.str(mem.read_ptr(code.wrapping_add(q))?)?,
        None => reader.str(name_ptr)?,
    };
    let file = reader.str(mem.read_ptr(code.wrapping_add(l.code_filename))?)?;
    let table_obj = mem.read_ptr(code.wrapping_add(l.code_linetable))?;
    let table = reader.bytes(table_obj)?;
    if table.len() as u64 > MAX_LINETABLE {
        return Err(Error::TooLarge {
            what: "line table",
            addr: table_obj,
            len: table.len() as u64,
            max: MAX_LINETABLE,
        });
    }
    Ok(Code {
        checked: 0,
        name_ptr,
        first_line,
        function,
        file,
        table,
    })
}

/// The cached object still sits at `code`: same type, name object and first line.
fn still_valid<M: Memory>(reader: &Reader<'_, M>, code: u64, c: &Code) -> bool {
    // One read of the object's head covers its type, name pointer and first line.
    let l = reader.layout;
    let end = l.ob_type.max(l.code_name).max(l.code_firstlineno) + 8;
    let Ok(head) = reader.mem.read_bytes(code, end, end) else {
        return false;
    };
    let word = |off: u64| -> Option<u64> {
        let off = usize::try_from(off).ok()?;
        head.get(off..off + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let code_type = reader.types.get("PyCode_Type");
    word(l.ob_type).is_some_and(|t| code_type.is_none_or(|ct| ct == t))
        && word(l.code_name) == Some(c.name_ptr)
        && word(l.code_firstlineno).map(|v| v as u32 as i32) == Some(c.first_line)
}

#[cfg(test)]
mod tests;
