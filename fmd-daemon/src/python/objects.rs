//! Reading Python objects out of another process: str, bytes, int, float, tuple, list, dict (every table
//! layout 3.8-3.13), set, type names, MROs and instance attributes (tp_dictoffset, managed dicts, inline
//! values). Every walk is bounded and checks types and lengths, because the target keeps running.

use std::collections::HashMap;

use super::{layout::Layout, memory::Memory, Error};

/// Limits that keep a walk over garbage or changing memory short.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_str_bytes: u64,
    pub max_items: u64,
    pub max_dict_entries: u64,
    pub max_mro: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // Route templates, endpoints and module names are short; 1 MiB is far beyond any of them.
            max_str_bytes: 1 << 20,
            max_items: 1 << 16,
            // sys.modules of a large app has a few thousand entries.
            max_dict_entries: 1 << 17,
            max_mro: 64,
        }
    }
}

/// Addresses of the builtin type objects (and singletons) in the target, used to check `ob_type`.
#[derive(Clone, Debug, Default)]
pub struct KnownTypes {
    pub by_name: HashMap<&'static str, u64>,
}

impl KnownTypes {
    pub fn get(&self, name: &str) -> Option<u64> {
        self.by_name.get(name).copied()
    }
}

/// A builtin kind of object, with its `tp_flags` subclass bit (`Py_TPFLAGS_*_SUBCLASS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Builtin {
    Str,
    Bytes,
    Int,
    Float,
    Tuple,
    List,
    Dict,
    Set,
    FrozenSet,
    Module,
    Type,
}

impl Builtin {
    fn symbol(self) -> &'static str {
        match self {
            Self::Str => "PyUnicode_Type",
            Self::Bytes => "PyBytes_Type",
            Self::Int => "PyLong_Type",
            Self::Float => "PyFloat_Type",
            Self::Tuple => "PyTuple_Type",
            Self::List => "PyList_Type",
            Self::Dict => "PyDict_Type",
            Self::Set => "PySet_Type",
            Self::FrozenSet => "PyFrozenSet_Type",
            Self::Module => "PyModule_Type",
            Self::Type => "PyType_Type",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Self::Str => "str",
            Self::Bytes => "bytes",
            Self::Int => "int",
            Self::Float => "float",
            Self::Tuple => "tuple",
            Self::List => "list",
            Self::Dict => "dict",
            Self::Set => "set",
            Self::FrozenSet => "frozenset",
            Self::Module => "module",
            Self::Type => "type",
        }
    }
    /// `Py_TPFLAGS_{LONG,LIST,TUPLE,BYTES,UNICODE,DICT,TYPE}_SUBCLASS` (same bits in 3.8-3.13).
    fn subclass_flag(self) -> Option<u64> {
        match self {
            Self::Int => Some(1 << 24),
            Self::List => Some(1 << 25),
            Self::Tuple => Some(1 << 26),
            Self::Bytes => Some(1 << 27),
            Self::Str => Some(1 << 28),
            Self::Dict => Some(1 << 29),
            Self::Type => Some(1 << 31),
            _ => None,
        }
    }
}

/// Where an object's instance attributes live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrStorage {
    /// A real dict object.
    Dict(u64),
    /// Values without a dict (3.11+): the values array and the type's shared keys (`ht_cached_keys`).
    Values {
        keys: u64,
        values: u64,
        capacity: Option<u64>,
    },
    /// No attributes at all.
    None,
}

const PY_TPFLAGS_HEAPTYPE: u64 = 1 << 9;

/// Reads objects of one interpreter.
pub struct Reader<'a, M: Memory> {
    pub mem: &'a M,
    pub layout: &'a Layout,
    pub types: &'a KnownTypes,
    pub limits: Limits,
}

// By hand: a derive would require `M: Copy`, but only references are copied.
impl<M: Memory> Clone for Reader<'_, M> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<M: Memory> Copy for Reader<'_, M> {}

impl<'a, M: Memory> Reader<'a, M> {
    pub fn new(mem: &'a M, layout: &'a Layout, types: &'a KnownTypes) -> Self {
        Self {
            mem,
            layout,
            types,
            limits: Limits::default(),
        }
    }

    fn l(&self) -> &Layout {
        self.layout
    }

    fn nonnull(addr: u64, what: &'static str) -> Result<u64, Error> {
        if addr == 0 {
            Err(Error::Null { what })
        } else if !addr.is_multiple_of(8) || !(0x1000..1 << 47).contains(&addr) {
            Err(Error::Invalid { what, addr })
        } else {
            Ok(addr)
        }
    }

    pub fn type_of(&self, obj: u64) -> Result<u64, Error> {
        let obj = Self::nonnull(obj, "object")?;
        Self::nonnull(
            self.mem.read_ptr(obj.wrapping_add(self.l().ob_type))?,
            "type",
        )
    }

    pub fn type_flags(&self, ty: u64) -> Result<u64, Error> {
        self.mem.read_u64(ty.wrapping_add(self.l().type_flags))
    }

    /// `tp_name` of a type object (`module.Name` for static types, the bare name for heap types).
    pub fn type_name(&self, ty: u64) -> Result<String, Error> {
        let name = self
            .mem
            .read_ptr(Self::nonnull(ty, "type")? + self.l().type_name)?;
        if name == 0 {
            return Err(Error::Null { what: "type name" });
        }
        let bytes = self.mem.read_cstr(name, 1024)?;
        String::from_utf8(bytes).map_err(|_| Error::Invalid {
            what: "type name",
            addr: name,
        })
    }

    pub fn object_type_name(&self, obj: u64) -> Result<String, Error> {
        self.type_name(self.type_of(obj)?)
    }

    /// Whether `obj` is a `kind` (the exact builtin, or a subclass when the builtin has a subclass flag).
    pub fn is(&self, obj: u64, kind: Builtin) -> Result<bool, Error> {
        let ty = self.type_of(obj)?;
        if let Some(known) = self.types.get(kind.symbol()) {
            if ty == known {
                return Ok(true);
            }
            return Ok(match kind.subclass_flag() {
                Some(f) => self.type_flags(ty)? & f != 0,
                None => false,
            });
        }
        // Without the symbol (never seen in practice), fall back on the flag or the type name.
        Ok(match kind.subclass_flag() {
            Some(f) => self.type_flags(ty)? & f != 0,
            None => self.type_name(ty)? == kind.name(),
        })
    }

    fn expect(&self, obj: u64, kind: Builtin) -> Result<(), Error> {
        if self.is(obj, kind)? {
            Ok(())
        } else {
            Err(Error::WrongType {
                addr: obj,
                expected: kind.name(),
            })
        }
    }

    fn var_size(&self, obj: u64, what: &'static str, max: u64) -> Result<u64, Error> {
        let n = self.mem.read_i64(obj.wrapping_add(self.l().var_ob_size))?;
        let n = u64::try_from(n).map_err(|_| Error::Invalid { what, addr: obj })?;
        if n > max {
            return Err(Error::TooLarge {
                what,
                addr: obj,
                len: n,
                max,
            });
        }
        Ok(n)
    }

    /// A `str` (all compact kinds, and legacy ready strings).
    pub fn str(&self, obj: u64) -> Result<String, Error> {
        self.expect(obj, Builtin::Str)?;
        let l = self.l();
        let len = self.mem.read_i64(obj.wrapping_add(l.unicode_length))?;
        let len = u64::try_from(len).map_err(|_| Error::Invalid {
            what: "str",
            addr: obj,
        })?;
        let state = self.mem.read_u32(obj.wrapping_add(l.unicode_state))? as u64;
        let kind = (state >> l.unicode_kind_shift) & 7;
        let compact = (state >> l.unicode_compact_shift) & 1 == 1;
        let ascii = (state >> l.unicode_ascii_shift) & 1 == 1;
        let width = match kind {
            1 => 1,
            2 => 2,
            4 => 4,
            _ => {
                return Err(Error::Invalid {
                    what: "str kind",
                    addr: obj,
                })
            }
        };
        if ascii && width != 1 {
            return Err(Error::Invalid {
                what: "str kind",
                addr: obj,
            });
        }
        let nbytes = len.checked_mul(width).ok_or(Error::Invalid {
            what: "str",
            addr: obj,
        })?;
        if nbytes > self.limits.max_str_bytes {
            return Err(Error::TooLarge {
                what: "str",
                addr: obj,
                len: nbytes,
                max: self.limits.max_str_bytes,
            });
        }
        let data = match (compact, ascii) {
            (true, true) => obj.wrapping_add(l.unicode_ascii_size),
            (true, false) => obj.wrapping_add(l.unicode_compact_size),
            (false, _) => Self::nonnull(
                self.mem.read_ptr(obj.wrapping_add(l.unicode_data_any))?,
                "str data",
            )?,
        };
        let raw = self
            .mem
            .read_bytes(data, nbytes, self.limits.max_str_bytes)?;
        let bad = || Error::Invalid {
            what: "str data",
            addr: obj,
        };
        match width {
            1 if ascii => {
                if !raw.is_ascii() {
                    return Err(bad());
                }
                String::from_utf8(raw).map_err(|_| bad())
            }
            1 => Ok(raw.iter().map(|&b| char::from(b)).collect()),
            2 => char::decode_utf16(
                raw.chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]])),
            )
            .map(|c| c.map_err(|_| bad()))
            .collect(),
            _ => raw
                .chunks_exact(4)
                .map(|c| {
                    char::from_u32(u32::from_le_bytes([c[0], c[1], c[2], c[3]])).ok_or_else(bad)
                })
                .collect(),
        }
    }

    pub fn bytes(&self, obj: u64) -> Result<Vec<u8>, Error> {
        self.expect(obj, Builtin::Bytes)?;
        let n = self.var_size(obj, "bytes", self.limits.max_str_bytes)?;
        self.mem.read_bytes(
            obj.wrapping_add(self.l().bytes_sval),
            n,
            self.limits.max_str_bytes,
        )
    }

    /// An `int` (or bool), up to 120 bits.
    pub fn int(&self, obj: u64) -> Result<i128, Error> {
        self.expect(obj, Builtin::Int)?;
        let l = self.l();
        let (negative, ndigits) = match l.long_lv_tag {
            Some(tag_off) => {
                // 3.12+: lv_tag = ndigits << 3 | sign (0 positive, 1 zero, 2 negative).
                let tag = self.mem.read_u64(obj.wrapping_add(tag_off))?;
                match tag & 3 {
                    0 => (false, tag >> 3),
                    1 => return Ok(0),
                    2 => (true, tag >> 3),
                    _ => {
                        return Err(Error::Invalid {
                            what: "int",
                            addr: obj,
                        })
                    }
                }
            }
            None => {
                let size = self.mem.read_i64(obj.wrapping_add(l.var_ob_size))?;
                (size < 0, size.unsigned_abs())
            }
        };
        let max_digits = 120 / l.long_shift;
        if ndigits > max_digits {
            return Err(Error::TooLarge {
                what: "int",
                addr: obj,
                len: ndigits,
                max: max_digits,
            });
        }
        let mut v: i128 = 0;
        for i in (0..ndigits).rev() {
            let d = self.mem.read_u32(
                obj.wrapping_add(l.long_digit)
                    .wrapping_add(i * l.long_digit_size),
            )?;
            if u64::from(d) >> l.long_shift != 0 {
                return Err(Error::Invalid {
                    what: "int digit",
                    addr: obj,
                });
            }
            v = (v << l.long_shift) | i128::from(d);
        }
        Ok(if negative { -v } else { v })
    }

    pub fn float(&self, obj: u64) -> Result<f64, Error> {
        let ty = self.type_of(obj)?;
        if self.types.get("PyFloat_Type").is_some_and(|t| t != ty) && self.type_name(ty)? != "float"
        {
            return Err(Error::WrongType {
                addr: obj,
                expected: "float",
            });
        }
        Ok(f64::from_bits(
            self.mem.read_u64(obj.wrapping_add(self.l().float_fval))?,
        ))
    }

    /// `True`/`False` by identity with the singletons.
    pub fn bool(&self, obj: u64) -> Result<bool, Error> {
        match (
            self.types.get("_Py_TrueStruct"),
            self.types.get("_Py_FalseStruct"),
        ) {
            (Some(t), _) if t == obj => Ok(true),
            (_, Some(f)) if f == obj => Ok(false),
            _ => Err(Error::WrongType {
                addr: obj,
                expected: "bool",
            }),
        }
    }

    pub fn is_none(&self, obj: u64) -> bool {
        self.types.get("_Py_NoneStruct") == Some(obj)
    }

    pub fn tuple(&self, obj: u64) -> Result<Vec<u64>, Error> {
        self.expect(obj, Builtin::Tuple)?;
        let n = self.var_size(obj, "tuple", self.limits.max_items)?;
        self.ptr_array(obj.wrapping_add(self.l().tuple_item), n)
    }

    pub fn list(&self, obj: u64) -> Result<Vec<u64>, Error> {
        self.expect(obj, Builtin::List)?;
        let n = self.var_size(obj, "list", self.limits.max_items)?;
        let items = self.mem.read_ptr(obj.wrapping_add(self.l().list_item))?;
        if n == 0 {
            return Ok(Vec::new());
        }
        self.ptr_array(Self::nonnull(items, "list items")?, n)
    }

    fn ptr_array(&self, addr: u64, n: u64) -> Result<Vec<u64>, Error> {
        let raw = self
            .mem
            .read_bytes(addr, n * 8, self.limits.max_items * 8)?;
        Ok(raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect())
    }

    /// The (key, value) pointers of a dict, in table order.
    pub fn dict(&self, obj: u64) -> Result<Vec<(u64, u64)>, Error> {
        self.expect(obj, Builtin::Dict)?;
        let l = self.l();
        let keys = Self::nonnull(
            self.mem.read_ptr(obj.wrapping_add(l.dict_keys))?,
            "dict keys",
        )?;
        let values = self.mem.read_ptr(obj.wrapping_add(l.dict_values))?;
        let values = if values == 0 {
            None
        } else {
            Some(Self::nonnull(values, "dict values")? + l.dictvalues_values)
        };
        let capacity = match (values, l.tpflags_inline_values) {
            // 3.13: PyDictValues starts with its capacity byte.
            (Some(v), Some(_)) => Some(u64::from(self.mem.read_u8(v - l.dictvalues_values)?)),
            _ => None,
        };
        self.dict_keys(keys, values, capacity)
    }

    /// Entries of a `PyDictKeysObject`; with `values`, a split table whose values are in that array.
    pub fn dict_keys(
        &self,
        keys: u64,
        values: Option<u64>,
        capacity: Option<u64>,
    ) -> Result<Vec<(u64, u64)>, Error> {
        let l = self.l();
        let max = self.limits.max_dict_entries;
        let bad = |what| Error::Invalid { what, addr: keys };
        let nentries = self.mem.read_i64(keys.wrapping_add(l.dictkeys_nentries))?;
        let nentries = u64::try_from(nentries).map_err(|_| bad("dict entry count"))?;
        let (entries, entry_size, has_hash) = match (l.dictkeys_size, l.dictkeys_log2_size) {
            (Some(size_off), _) => {
                // 3.8-3.10: dk_size slots, indices of 1/2/4/8 bytes, then PyDictKeyEntry {hash, key, value}.
                let size = self.mem.read_i64(keys.wrapping_add(size_off))?;
                let size = u64::try_from(size).map_err(|_| bad("dict size"))?;
                if !size.is_power_of_two() || size > max * 2 || nentries > size {
                    return Err(bad("dict size"));
                }
                let index_bytes = if size <= 0xff {
                    1
                } else if size <= 0xffff {
                    2
                } else if size <= 0xffff_ffff {
                    4
                } else {
                    8
                };
                (
                    keys.wrapping_add(l.dictkeys_indices)
                        .wrapping_add(size * index_bytes),
                    l.dict_entry_size,
                    true,
                )
            }
            (None, Some(log2_off)) => {
                // 3.11+: dk_kind 0 = general (hash, key, value), 1 = unicode, 2 = split (key, value).
                let log2_size = self.mem.read_u8(keys.wrapping_add(log2_off))?;
                let log2_index_bytes = self
                    .mem
                    .read_u8(keys.wrapping_add(l.dictkeys_log2_index_bytes.unwrap_or(0)))?;
                let kind = self
                    .mem
                    .read_u8(keys.wrapping_add(l.dictkeys_kind.unwrap_or(0)))?;
                if log2_size > 40 || log2_index_bytes > 43 || log2_index_bytes < log2_size {
                    return Err(bad("dict size"));
                }
                if nentries > 1 << log2_size {
                    return Err(bad("dict entry count"));
                }
                let entries = keys
                    .wrapping_add(l.dictkeys_indices)
                    .wrapping_add(1u64 << log2_index_bytes);
                match kind {
                    0 => (entries, l.dict_entry_size, true),
                    1 | 2 => (entries, l.dict_unicode_entry_size.unwrap_or(16), false),
                    _ => return Err(bad("dict kind")),
                }
            }
            (None, None) => return Err(bad("dict layout")),
        };
        if nentries > max {
            return Err(Error::TooLarge {
                what: "dict",
                addr: keys,
                len: nentries,
                max,
            });
        }
        let raw = self
            .mem
            .read_bytes(entries, nentries * entry_size, max * 24)?;
        let n_values = match capacity {
            Some(c) => nentries.min(c),
            None => nentries,
        };
        let vals = match values {
            Some(v) if n_values > 0 => Some(self.ptr_array(v, n_values)?),
            _ => None,
        };
        let word = |chunk: &[u8], at: usize| -> u64 {
            chunk
                .get(at..at.wrapping_add(8))
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .unwrap_or(0)
        };
        let (key_at, value_at) = if has_hash {
            (l.dict_entry_key as usize, l.dict_entry_value as usize)
        } else {
            (0, 8)
        };
        let mut out = Vec::new();
        for (i, chunk) in raw.chunks_exact(entry_size as usize).enumerate() {
            let key = word(chunk, key_at);
            let value = match (&vals, values) {
                (Some(v), _) => v.get(i).copied().unwrap_or(0),
                (None, Some(_)) => 0,
                (None, None) => word(chunk, value_at),
            };
            if key != 0 && value != 0 {
                out.push((key, value));
            }
        }
        Ok(out)
    }

    /// Looks a `str` key up in a dict by reading keys (no hashing: the target's hash seed is unknown).
    pub fn dict_get(&self, dict: u64, name: &str) -> Result<Option<u64>, Error> {
        self.find_str_key(&self.dict(dict)?, name)
    }

    fn find_str_key(&self, entries: &[(u64, u64)], name: &str) -> Result<Option<u64>, Error> {
        for &(k, v) in entries {
            // Keys that are not str (or torn) are skipped: attribute and module dicts are keyed by str.
            if let Ok(s) = self.str(k) {
                if s == name {
                    return Ok(Some(v));
                }
            }
        }
        Ok(None)
    }

    /// Elements of a set or frozenset.
    pub fn set(&self, obj: u64) -> Result<Vec<u64>, Error> {
        if !(self.is(obj, Builtin::Set)? || self.is(obj, Builtin::FrozenSet)?) {
            return Err(Error::WrongType {
                addr: obj,
                expected: "set",
            });
        }
        let l = self.l();
        let mask = self.mem.read_i64(obj.wrapping_add(l.set_mask))?;
        let mask = u64::try_from(mask).map_err(|_| Error::Invalid {
            what: "set",
            addr: obj,
        })?;
        if !(mask + 1).is_power_of_two() || mask >= self.limits.max_items * 4 {
            return Err(Error::Invalid {
                what: "set",
                addr: obj,
            });
        }
        let table = Self::nonnull(
            self.mem.read_ptr(obj.wrapping_add(l.set_table))?,
            "set table",
        )?;
        let raw = self.mem.read_bytes(
            table,
            (mask + 1) * l.set_entry_size,
            self.limits.max_items * 64,
        )?;
        let mut out = Vec::new();
        for chunk in raw.chunks_exact(l.set_entry_size as usize) {
            let key = chunk
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .unwrap_or(0);
            let hash_at = l.set_entry_hash as usize;
            let hash = chunk
                .get(hash_at..hash_at + 8)
                .and_then(|b| b.try_into().ok())
                .map(i64::from_le_bytes);
            // Deleted slots hold the dummy key with hash -1 (no real hash is -1).
            if key != 0 && hash != Some(-1) {
                out.push(key);
            }
        }
        Ok(out)
    }

    /// The method resolution order of a type (`tp_mro`), or its `tp_base` chain when that is not set.
    pub fn mro(&self, ty: u64) -> Result<Vec<u64>, Error> {
        let mro = self
            .mem
            .read_ptr(Self::nonnull(ty, "type")? + self.l().type_mro)?;
        if mro != 0 {
            if let Ok(items) = self.tuple(mro) {
                if items.len() as u64 <= self.limits.max_mro {
                    return Ok(items);
                }
            }
        }
        let mut out = vec![ty];
        let mut t = ty;
        while out.len() < self.limits.max_mro as usize {
            t = self.mem.read_ptr(t.wrapping_add(self.l().type_base))?;
            if t == 0 || out.contains(&t) {
                return Ok(out);
            }
            out.push(t);
        }
        Err(Error::TooLarge {
            what: "type hierarchy",
            addr: ty,
            len: out.len() as u64,
            max: self.limits.max_mro,
        })
    }

    /// Where an instance keeps its attributes.
    pub fn attr_storage(&self, obj: u64) -> Result<AttrStorage, Error> {
        let l = self.l();
        let ty = self.type_of(obj)?;
        let flags = self.type_flags(ty)?;
        let cached_keys = || -> Result<u64, Error> {
            if flags & PY_TPFLAGS_HEAPTYPE == 0 {
                return Err(Error::Invalid {
                    what: "managed dict type",
                    addr: ty,
                });
            }
            Self::nonnull(
                self.mem.read_ptr(ty.wrapping_add(l.heaptype_cached_keys))?,
                "cached keys",
            )
        };
        if let (Some(managed), Some(dict_off)) = (l.tpflags_managed_dict, l.managed_dict_offset) {
            if flags & managed != 0 {
                let slot = self.mem.read_ptr(obj.wrapping_sub(dict_off))?;
                match (l.tpflags_inline_values, l.managed_values_offset) {
                    // 3.13: the dict if one was materialised, else inline values after the object.
                    (Some(inline), _) => {
                        if slot != 0 {
                            return Ok(AttrStorage::Dict(slot));
                        }
                        if flags & inline == 0 {
                            return Ok(AttrStorage::None);
                        }
                        let basic = self.mem.read_u64(ty.wrapping_add(l.type_basicsize))?;
                        if basic > 1 << 20 {
                            return Err(Error::Invalid {
                                what: "tp_basicsize",
                                addr: ty,
                            });
                        }
                        let values = obj.wrapping_add(basic);
                        let valid = self.mem.read_u8(values.wrapping_add(3))?;
                        if valid == 0 {
                            return Ok(AttrStorage::None);
                        }
                        let capacity = u64::from(self.mem.read_u8(values)?);
                        return Ok(AttrStorage::Values {
                            keys: cached_keys()?,
                            values: values.wrapping_add(l.dictvalues_values),
                            capacity: Some(capacity),
                        });
                    }
                    // 3.11: values pointer and dict pointer in two slots before the object.
                    (None, Some(values_off)) => {
                        if slot != 0 {
                            return Ok(AttrStorage::Dict(slot));
                        }
                        let values = self.mem.read_ptr(obj.wrapping_sub(values_off))?;
                        if values == 0 {
                            return Ok(AttrStorage::None);
                        }
                        return Ok(AttrStorage::Values {
                            keys: cached_keys()?,
                            values,
                            capacity: None,
                        });
                    }
                    // 3.12: one tagged slot, the dict or (values pointer - 1), odd (`_PyDictOrValues_SetValues`).
                    (None, None) => {
                        if slot == 0 {
                            return Ok(AttrStorage::None);
                        }
                        if slot & 1 == 1 {
                            return Ok(AttrStorage::Values {
                                keys: cached_keys()?,
                                values: slot.wrapping_add(1),
                                capacity: None,
                            });
                        }
                        return Ok(AttrStorage::Dict(slot));
                    }
                }
            }
        }
        let off = self.mem.read_i64(ty.wrapping_add(l.type_dictoffset))?;
        if off == 0 {
            return Ok(AttrStorage::None);
        }
        if !(0..=1 << 20).contains(&off) {
            // Negative offsets (variable-size instances such as int subclasses) are not needed by fmd.
            return Err(Error::Invalid {
                what: "tp_dictoffset",
                addr: ty,
            });
        }
        let dict = self.mem.read_ptr(obj.wrapping_add(off as u64))?;
        Ok(if dict == 0 {
            AttrStorage::None
        } else {
            AttrStorage::Dict(dict)
        })
    }

    /// The (name pointer, value pointer) pairs of an instance's `__dict__`.
    pub fn attributes(&self, obj: u64) -> Result<Vec<(u64, u64)>, Error> {
        match self.attr_storage(obj)? {
            AttrStorage::Dict(d) => self.dict(d),
            AttrStorage::Values {
                keys,
                values,
                capacity,
            } => self.dict_keys(keys, Some(values), capacity),
            AttrStorage::None => Ok(Vec::new()),
        }
    }

    /// `obj.__dict__[name]`, if present.
    pub fn getattr(&self, obj: u64, name: &str) -> Result<Option<u64>, Error> {
        self.find_str_key(&self.attributes(obj)?, name)
    }

    /// A module's `__dict__`.
    pub fn module_dict(&self, module: u64) -> Result<u64, Error> {
        self.expect(module, Builtin::Module)?;
        Self::nonnull(
            self.mem.read_ptr(module + self.l().module_dict)?,
            "module dict",
        )
    }

    /// The `str` keys of a dict with their values, skipping keys that are not str.
    pub fn str_dict(&self, dict: u64) -> Result<Vec<(String, u64)>, Error> {
        Ok(self
            .dict(dict)?
            .into_iter()
            .filter_map(|(k, v)| self.str(k).ok().map(|s| (s, v)))
            .collect())
    }
}

#[cfg(test)]
pub(crate) mod tests;
