//! Garbage-memory tests: every reader over random bytes, cyclic pointers and huge lengths must return (an
//! error or a value), never panic or hang.

use std::time::{Duration, Instant};

use super::*;
use crate::python::{
    memory::SliceMemory,
    testutil::{memories, XorShift, BASE, SIZE},
};

pub(crate) fn types_in_region(rng: &mut XorShift) -> KnownTypes {
    let mut types = KnownTypes::default();
    for name in crate::python::binary::SYMBOLS {
        types
            .by_name
            .insert(name, BASE + (rng.next_u64() % (SIZE as u64 / 8)) * 8);
    }
    types
}

/// Runs every reader on `addr`; only checks that each call returns.
fn exercise<M: Memory>(r: &Reader<'_, M>, addr: u64) {
    let _ = r.str(addr);
    let _ = r.bytes(addr);
    let _ = r.int(addr);
    let _ = r.float(addr);
    let _ = r.tuple(addr);
    let _ = r.list(addr);
    let _ = r.dict(addr);
    let _ = r.dict_keys(addr, None, None);
    let _ = r.dict_keys(addr, Some(addr.wrapping_add(8)), Some(3));
    let _ = r.set(addr);
    let _ = r.object_type_name(addr);
    let _ = r.mro(addr);
    let _ = r.attributes(addr);
    let _ = r.getattr(addr, "url_map");
    let _ = r.module_dict(addr);
    let _ = r.str_dict(addr);
}

#[test]
fn garbage_memory_never_panics_or_hangs() {
    let start = Instant::now();
    for seed in [1u64, 0xdead_beef, 42] {
        let mut rng = XorShift(seed);
        for mem in memories(seed) {
            for layout in Layout::all() {
                let types = types_in_region(&mut rng);
                let r = Reader::new(&mem, layout, &types);
                for _ in 0..200 {
                    let addr = (BASE + rng.next_u64() % SIZE as u64) & !7;
                    exercise(&r, addr);
                }
                // Edges: null, unaligned, just before the end, outside.
                for addr in [
                    0,
                    1,
                    BASE - 8,
                    BASE + SIZE as u64 - 8,
                    BASE + SIZE as u64,
                    u64::MAX - 7,
                ] {
                    exercise(&r, addr);
                }
            }
        }
    }
    assert!(
        start.elapsed() < Duration::from_secs(120),
        "garbage walks took {:?}",
        start.elapsed()
    );
}

/// A hand-built 3.12 compact ASCII str and a 3.8 list, to show the readers decode what they should.
#[test]
fn hand_built_objects() {
    fn check(
        layout: &Layout,
        build: impl Fn(&mut Vec<u8>, u64),
        read: impl Fn(&Reader<'_, SliceMemory>) -> String,
        expect: &str,
    ) {
        let mut bytes = vec![0u8; 4096];
        build(&mut bytes, BASE);
        let mem = SliceMemory::new().with_region(BASE, bytes);
        let mut types = KnownTypes::default();
        types.by_name.insert("PyUnicode_Type", BASE + 0x800);
        types.by_name.insert("PyList_Type", BASE + 0x900);
        let r = Reader::new(&mem, layout, &types);
        assert_eq!(read(&r), expect, "{:?}", layout.version);
    }
    fn put(b: &mut [u8], at: u64, v: u64) {
        b[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes());
    }
    for layout in Layout::all() {
        let l = *layout;
        // str "hey" at +0x100: ob_type, length, state (kind 1, compact, ascii), data after PyASCIIObject.
        check(
            layout,
            |b, base| {
                put(b, 0x100 + l.ob_type, base + 0x800);
                put(b, 0x100 + l.unicode_length, 3);
                put(
                    b,
                    0x100 + l.unicode_state,
                    (1 << l.unicode_kind_shift)
                        | (1 << l.unicode_compact_shift)
                        | (1 << l.unicode_ascii_shift),
                );
                b[(0x100 + l.unicode_ascii_size) as usize..][..4].copy_from_slice(b"hey\0");
            },
            |r| r.str(BASE + 0x100).unwrap_or_else(|e| e.to_string()),
            "hey",
        );
        // list of 2 items at +0x200 whose item array is at +0x300.
        check(
            layout,
            |b, base| {
                put(b, 0x200 + l.ob_type, base + 0x900);
                put(b, 0x200 + l.var_ob_size, 2);
                put(b, 0x200 + l.list_item, base + 0x300);
                put(b, 0x300, 0x1111);
                put(b, 0x308, 0x2222);
            },
            |r| format!("{:x?}", r.list(BASE + 0x200).unwrap_or_default()),
            "[1111, 2222]",
        );
    }
}
