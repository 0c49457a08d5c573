//! Instruction offset → source line, with each CPython version's line table: `co_lnotab` (3.8, 3.9), the
//! 3.10 `co_linetable`, and the 3.11+ location table (`Objects/locations.md`). Pure functions over the
//! table's bytes, run in the daemon (line tables are unbounded loops, kept out of BPF).

/// The line of the instruction at byte offset `addr` in code whose first line is `first`. `None` when the
/// table says the instruction has no line (or is garbage); a negative offset (a frame that has not started
/// yet) is its first line, as in `PyCode_Addr2Line`.
pub fn line_for(minor: u8, table: &[u8], first: i32, addr: i64) -> Option<i32> {
    if addr < 0 {
        return Some(first);
    }
    match minor {
        ..=9 => Some(lnotab(table, first, addr)),
        10 => linetable_310(table, first, addr),
        _ => locations(table, first, addr),
    }
}

/// `co_lnotab` (3.8, 3.9): pairs (byte-offset increment, signed line increment); see `Objects/lnotab_notes.txt`.
fn lnotab(table: &[u8], first: i32, addr: i64) -> i32 {
    let mut line = first;
    let mut at: i64 = 0;
    for pair in table.chunks_exact(2) {
        at += i64::from(pair[0]);
        if at > addr {
            break;
        }
        line += i32::from(pair[1] as i8);
    }
    line
}

/// 3.10 `co_linetable`: pairs (byte length, signed line delta, -128 = no line); the range `[start, end)`
/// gets the running line (`_PyLineTable_NextAddressRange`).
fn linetable_310(table: &[u8], first: i32, addr: i64) -> Option<i32> {
    let mut computed = first;
    let mut end: i64 = 0;
    for pair in table.chunks_exact(2) {
        let start = end;
        end += i64::from(pair[0]);
        let delta = pair[1] as i8;
        let line = if delta == -128 {
            None
        } else {
            computed += i32::from(delta);
            Some(computed)
        };
        if start <= addr && addr < end {
            return line;
        }
    }
    None
}

/// 3.11+ location table. Each entry: a byte `1 kkkk lll` (kind, code units - 1) and kind-specific varints.
fn locations(table: &[u8], first: i32, addr: i64) -> Option<i32> {
    let mut it = table.iter().copied().peekable();
    let mut line = first;
    let mut end: i64 = 0;
    while let Some(head) = it.next() {
        if head & 0x80 == 0 {
            return None;
        }
        let kind = (head >> 3) & 0x0f;
        let start = end;
        end += 2 * (i64::from(head & 7) + 1);
        let here = match kind {
            15 => None,
            14 => {
                line += svarint(&mut it)?;
                varint(&mut it)?;
                varint(&mut it)?;
                varint(&mut it)?;
                Some(line)
            }
            13 => {
                line += svarint(&mut it)?;
                Some(line)
            }
            10..=12 => {
                line += i32::from(kind) - 10;
                it.next()?;
                it.next()?;
                Some(line)
            }
            _ => {
                it.next()?;
                Some(line)
            }
        };
        if start <= addr && addr < end {
            return here;
        }
        // Continuation bytes never have the top bit; a new entry always does.
        if it.peek().is_some_and(|b| b & 0x80 == 0) {
            return None;
        }
    }
    None
}

/// 6-bit little-endian chunks, bit 6 = more.
fn varint(it: &mut impl Iterator<Item = u8>) -> Option<u32> {
    let mut b = it.next()?;
    let mut value = u32::from(b & 63);
    let mut shift = 0;
    while b & 64 != 0 {
        b = it.next()?;
        shift += 6;
        if shift > 30 {
            return None;
        }
        value |= u32::from(b & 63) << shift;
    }
    Some(value)
}

fn svarint(it: &mut impl Iterator<Item = u8>) -> Option<i32> {
    let v = varint(it)?;
    let magnitude = i32::try_from(v >> 1).ok()?;
    Some(if v & 1 == 1 { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests;
