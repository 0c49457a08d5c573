//! Where CPython keeps what fmd reads, per minor version: the generated offset table (`offsets.rs`) plus the
//! version-dependent rules no `offsetof` can express (which frame/dict scheme a version uses).

use super::{offsets::LAYOUTS, Error};

/// Byte offsets (and a few sizes, shifts and flag bits) inside CPython's structs for one minor version on
/// x86_64. `None` marks a field the version does not have. Produced by `cargo xtask gen-offsets`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub version: (u8, u8),
    /// `_PyRuntimeState.interpreters.head`.
    pub runtime_interpreters_head: u64,
    pub interp_next: u64,
    /// `threads.head` (3.11+), `tstate_head` before.
    pub interp_threads_head: u64,
    /// `sys.modules`: `imports.modules` (3.12+), `modules` before.
    pub interp_modules: u64,
    pub tstate_next: u64,
    pub tstate_interp: u64,
    /// `pthread_t` of the thread (an address of glibc's `struct pthread`).
    pub tstate_thread_id: u64,
    /// Kernel tid (3.11+).
    pub tstate_native_thread_id: Option<u64>,
    /// `PyFrameObject *frame` (3.8-3.10).
    pub tstate_frame: Option<u64>,
    /// `_PyCFrame *cframe` (3.11, 3.12) and its `current_frame`.
    pub tstate_cframe: Option<u64>,
    pub cframe_current_frame: Option<u64>,
    /// `_PyInterpreterFrame *current_frame` (3.13).
    pub tstate_current_frame: Option<u64>,
    /// `f_back` (3.8-3.10) or `previous`.
    pub frame_previous: u64,
    /// `f_code` or `f_executable` (3.13).
    pub frame_code: u64,
    /// `f_lasti` (int, 3.8-3.10), `prev_instr` (3.11, 3.12) or `instr_ptr` (3.13).
    pub frame_instr: u64,
    /// `is_entry` (3.11 only).
    pub frame_is_entry: Option<u64>,
    /// `owner` (3.11+).
    pub frame_owner: Option<u64>,
    /// `f_localsplus` / `localsplus`.
    pub frame_localsplus: u64,
    pub code_filename: u64,
    pub code_name: u64,
    pub code_qualname: Option<u64>,
    /// `co_localsplusnames` (3.11+) or `co_varnames`.
    pub code_localsplusnames: u64,
    /// `co_nlocalsplus` (3.11+) or `co_nlocals` (an int).
    pub code_nlocalsplus: u64,
    pub code_code_adaptive: Option<u64>,
    /// `co_code` bytes object (3.8-3.10).
    pub code_code: Option<u64>,
    pub code_firstlineno: u64,
    /// `co_linetable` (3.10+) or `co_lnotab`.
    pub code_linetable: u64,
    pub ob_type: u64,
    pub var_ob_size: u64,
    pub type_name: u64,
    pub type_basicsize: u64,
    pub type_flags: u64,
    pub type_dict: u64,
    pub type_dictoffset: u64,
    pub type_base: u64,
    pub type_mro: u64,
    pub heaptype_cached_keys: u64,
    pub module_dict: u64,
    /// Bit positions of `kind` (3 bits), `compact` and `ascii` in `PyASCIIObject.state`.
    pub unicode_kind_shift: u64,
    pub unicode_compact_shift: u64,
    pub unicode_ascii_shift: u64,
    pub unicode_length: u64,
    pub unicode_state: u64,
    /// Compact ASCII data follows a `PyASCIIObject`, other compact data a `PyCompactUnicodeObject`.
    pub unicode_ascii_size: u64,
    pub unicode_compact_size: u64,
    /// `PyUnicodeObject.data.any` (legacy, non-compact strings).
    pub unicode_data_any: u64,
    pub bytes_sval: u64,
    /// `long_value.lv_tag` (3.12+); before, the sign and digit count are `ob_size`.
    pub long_lv_tag: Option<u64>,
    pub long_digit: u64,
    pub long_shift: u64,
    pub long_digit_size: u64,
    pub float_fval: u64,
    pub tuple_item: u64,
    pub list_item: u64,
    pub dict_used: u64,
    pub dict_keys: u64,
    pub dict_values: u64,
    /// `dk_size` (3.8-3.10).
    pub dictkeys_size: Option<u64>,
    /// `dk_log2_size`, `dk_log2_index_bytes`, `dk_kind` (3.11+, one byte each).
    pub dictkeys_log2_size: Option<u64>,
    pub dictkeys_log2_index_bytes: Option<u64>,
    pub dictkeys_kind: Option<u64>,
    pub dictkeys_nentries: u64,
    pub dictkeys_indices: u64,
    pub dict_entry_size: u64,
    pub dict_entry_key: u64,
    pub dict_entry_value: u64,
    /// `PyDictUnicodeEntry` (3.11+): key, value.
    pub dict_unicode_entry_size: Option<u64>,
    /// `PyDictValues.values` (the array of a split dict's values).
    pub dictvalues_values: u64,
    pub tpflags_managed_dict: Option<u64>,
    /// Distance *before* the object of the managed dict slot (3.11+).
    pub managed_dict_offset: Option<u64>,
    /// Distance before the object of the managed values pointer (3.11 only).
    pub managed_values_offset: Option<u64>,
    pub tpflags_inline_values: Option<u64>,
    pub set_mask: u64,
    pub set_table: u64,
    pub set_entry_size: u64,
    pub set_entry_hash: u64,
    /// Where the fields of `_Py_DebugOffsets` (3.13+, at the start of `_PyRuntime`) sit.
    pub debug_offsets: Option<DebugOffsetsLayout>,
}

/// Offsets *inside* `_Py_DebugOffsets` of the values fmd cross-checks against its own table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DebugOffsetsLayout {
    pub version: u64,
    pub runtime_interpreters_head: u64,
    pub interp_next: u64,
    pub interp_threads_head: u64,
    pub interp_modules: u64,
    pub tstate_next: u64,
    pub tstate_interp: u64,
    pub tstate_current_frame: u64,
    pub tstate_thread_id: u64,
    pub tstate_native_thread_id: u64,
    pub frame_previous: u64,
    pub frame_executable: u64,
    pub frame_instr_ptr: u64,
    pub frame_localsplus: u64,
    pub frame_owner: u64,
    pub code_filename: u64,
    pub code_name: u64,
    pub code_qualname: u64,
    pub code_linetable: u64,
    pub code_firstlineno: u64,
    pub code_localsplusnames: u64,
    pub code_code_adaptive: u64,
    pub ob_type: u64,
    pub type_name: u64,
    pub type_flags: u64,
    pub tuple_item: u64,
    pub list_item: u64,
    pub dict_keys: u64,
    pub dict_values: u64,
    pub float_fval: u64,
    pub long_lv_tag: u64,
    pub long_digit: u64,
    pub bytes_sval: u64,
    pub unicode_state: u64,
    pub unicode_length: u64,
    pub unicode_ascii_size: u64,
}

/// The `_Py_DebugOffsets` cookie at the start of `_PyRuntime` (3.13+).
pub const DEBUG_OFFSETS_COOKIE: &[u8; 8] = b"xdebugpy";

/// Pairs (our table's value, the value at a `DebugOffsetsLayout` position) fmd cross-checks, by name.
type Check = (&'static str, Option<u64>, u64);

impl Layout {
    /// The layout for CPython `major.minor`, or `UnsupportedVersion`.
    pub fn for_version(major: u8, minor: u8) -> Result<&'static Layout, Error> {
        LAYOUTS
            .iter()
            .find(|l| l.version == (major, minor))
            .ok_or(Error::UnsupportedVersion { major, minor })
    }

    pub fn minor(&self) -> u8 {
        self.version.1
    }

    /// Pairs of (name, our value, position in `_Py_DebugOffsets`) to compare with what a 3.13+ process
    /// publishes. Empty before 3.13.
    pub fn debug_offset_checks(&self) -> Vec<Check> {
        let Some(d) = self.debug_offsets else {
            return Vec::new();
        };
        vec![
            (
                "runtime_state.interpreters_head",
                Some(self.runtime_interpreters_head),
                d.runtime_interpreters_head,
            ),
            (
                "interpreter_state.next",
                Some(self.interp_next),
                d.interp_next,
            ),
            (
                "interpreter_state.threads_head",
                Some(self.interp_threads_head),
                d.interp_threads_head,
            ),
            (
                "interpreter_state.imports_modules",
                Some(self.interp_modules),
                d.interp_modules,
            ),
            ("thread_state.next", Some(self.tstate_next), d.tstate_next),
            (
                "thread_state.interp",
                Some(self.tstate_interp),
                d.tstate_interp,
            ),
            (
                "thread_state.current_frame",
                self.tstate_current_frame,
                d.tstate_current_frame,
            ),
            (
                "thread_state.thread_id",
                Some(self.tstate_thread_id),
                d.tstate_thread_id,
            ),
            (
                "thread_state.native_thread_id",
                self.tstate_native_thread_id,
                d.tstate_native_thread_id,
            ),
            (
                "interpreter_frame.previous",
                Some(self.frame_previous),
                d.frame_previous,
            ),
            (
                "interpreter_frame.executable",
                Some(self.frame_code),
                d.frame_executable,
            ),
            (
                "interpreter_frame.instr_ptr",
                Some(self.frame_instr),
                d.frame_instr_ptr,
            ),
            (
                "interpreter_frame.localsplus",
                Some(self.frame_localsplus),
                d.frame_localsplus,
            ),
            ("interpreter_frame.owner", self.frame_owner, d.frame_owner),
            (
                "code_object.filename",
                Some(self.code_filename),
                d.code_filename,
            ),
            ("code_object.name", Some(self.code_name), d.code_name),
            ("code_object.qualname", self.code_qualname, d.code_qualname),
            (
                "code_object.linetable",
                Some(self.code_linetable),
                d.code_linetable,
            ),
            (
                "code_object.firstlineno",
                Some(self.code_firstlineno),
                d.code_firstlineno,
            ),
            (
                "code_object.localsplusnames",
                Some(self.code_localsplusnames),
                d.code_localsplusnames,
            ),
            (
                "code_object.co_code_adaptive",
                self.code_code_adaptive,
                d.code_code_adaptive,
            ),
            ("pyobject.ob_type", Some(self.ob_type), d.ob_type),
            ("type_object.tp_name", Some(self.type_name), d.type_name),
            ("type_object.tp_flags", Some(self.type_flags), d.type_flags),
            ("tuple_object.ob_item", Some(self.tuple_item), d.tuple_item),
            ("list_object.ob_item", Some(self.list_item), d.list_item),
            ("dict_object.ma_keys", Some(self.dict_keys), d.dict_keys),
            (
                "dict_object.ma_values",
                Some(self.dict_values),
                d.dict_values,
            ),
            ("float_object.ob_fval", Some(self.float_fval), d.float_fval),
            ("long_object.lv_tag", self.long_lv_tag, d.long_lv_tag),
            ("long_object.ob_digit", Some(self.long_digit), d.long_digit),
            ("bytes_object.ob_sval", Some(self.bytes_sval), d.bytes_sval),
            (
                "unicode_object.state",
                Some(self.unicode_state),
                d.unicode_state,
            ),
            (
                "unicode_object.length",
                Some(self.unicode_length),
                d.unicode_length,
            ),
            (
                "unicode_object.asciiobject_size",
                Some(self.unicode_ascii_size),
                d.unicode_ascii_size,
            ),
        ]
    }

    /// All the layouts fmd knows, oldest first.
    pub fn all() -> &'static [Layout] {
        LAYOUTS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which optional fields a version must (not) have, as the version rules in `python/` expect.
    fn check(l: &Layout) {
        let m = l.minor();
        let has = |o: Option<u64>| o.is_some();
        assert_eq!(l.version.0, 3, "{:?}", l.version);
        assert_eq!(
            has(l.tstate_native_thread_id),
            m >= 11,
            "native_thread_id in 3.{m}"
        );
        assert_eq!(has(l.tstate_frame), m <= 10, "tstate.frame in 3.{m}");
        assert_eq!(
            has(l.tstate_cframe) && has(l.cframe_current_frame),
            m == 11 || m == 12,
            "cframe in 3.{m}"
        );
        assert_eq!(
            has(l.tstate_current_frame),
            m >= 13,
            "current_frame in 3.{m}"
        );
        assert_eq!(has(l.frame_is_entry), m == 11, "is_entry in 3.{m}");
        assert_eq!(has(l.frame_owner), m >= 11, "owner in 3.{m}");
        assert_eq!(
            has(l.code_qualname) && has(l.code_code_adaptive),
            m >= 11,
            "qualname in 3.{m}"
        );
        assert_eq!(has(l.code_code), m <= 10, "co_code in 3.{m}");
        assert_eq!(has(l.long_lv_tag), m >= 12, "lv_tag in 3.{m}");
        assert_eq!(has(l.dictkeys_size), m <= 10, "dk_size in 3.{m}");
        assert_eq!(
            has(l.dictkeys_kind) && has(l.dict_unicode_entry_size),
            m >= 11,
            "dk_kind in 3.{m}"
        );
        assert_eq!(
            has(l.tpflags_managed_dict) && has(l.managed_dict_offset),
            m >= 11,
            "managed dict 3.{m}"
        );
        assert_eq!(
            has(l.managed_values_offset),
            m == 11,
            "managed values in 3.{m}"
        );
        assert_eq!(
            has(l.tpflags_inline_values),
            m >= 13,
            "inline values in 3.{m}"
        );
        assert_eq!(l.debug_offsets.is_some(), m >= 13, "debug offsets in 3.{m}");
        // What every version shares (and the readers assume) on x86_64.
        assert_eq!(
            (l.ob_type, l.var_ob_size, l.tuple_item, l.module_dict),
            (8, 16, 24, 16)
        );
        assert_eq!((l.long_shift, l.long_digit_size), (30, 4));
        assert_eq!(l.dict_entry_size, 24);
        assert!(l.unicode_compact_size > l.unicode_ascii_size);
        assert!(
            l.unicode_ascii_shift > l.unicode_compact_shift
                && l.unicode_compact_shift > l.unicode_kind_shift
        );
        // Offsets must be inside (generously sized) structs and pointer-aligned where they hold pointers.
        for (name, off) in [
            ("interp_next", l.interp_next),
            ("interp_threads_head", l.interp_threads_head),
            ("interp_modules", l.interp_modules),
            ("tstate_next", l.tstate_next),
            ("frame_previous", l.frame_previous),
            ("frame_code", l.frame_code),
            ("code_filename", l.code_filename),
            ("code_linetable", l.code_linetable),
            ("type_mro", l.type_mro),
            ("heaptype_cached_keys", l.heaptype_cached_keys),
        ] {
            assert!(off % 8 == 0 && off < 16384, "3.{m} {name} = {off}");
        }
        // The debug-offsets fields are consecutive u64s after cookie, version and free_threaded.
        if let Some(d) = l.debug_offsets {
            assert_eq!(d.version, 8);
            for (name, ours, pos) in l.debug_offset_checks() {
                assert!(ours.is_some(), "3.{m}: {name} has no table value");
                assert!(pos % 8 == 0 && pos > d.version, "3.{m}: {name} at {pos}");
            }
        }
    }

    #[test]
    fn table_is_consistent() {
        let all = Layout::all();
        let versions: Vec<_> = all.iter().map(|l| l.version).collect();
        assert_eq!(versions, (8..=13).map(|m| (3, m)).collect::<Vec<_>>());
        for l in all {
            check(l);
        }
        assert!(matches!(
            Layout::for_version(3, 7),
            Err(Error::UnsupportedVersion { major: 3, minor: 7 })
        ));
        assert_eq!(
            Layout::for_version(3, 12).map(|l| l.version).ok(),
            Some((3, 12))
        );
    }
}
