/* Prints the CPython struct offsets fmd's out-of-process reader needs, as the body of a Rust `Layout` literal.
 * Compiled by `cargo xtask gen-offsets` against each interpreter's own headers (-DPy_BUILD_CORE for internal/). */
#define Py_BUILD_CORE 1
#include <Python.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#if PY_VERSION_HEX < 0x03090000
#include "internal/pycore_pystate.h"
#else
#include "internal/pycore_runtime.h"
#include "internal/pycore_interp.h"
#endif
#if __has_include("internal/pycore_moduleobject.h")
#include "internal/pycore_moduleobject.h"
#else
/* Not in the installed headers: copied from Objects/moduleobject.c (the dict follows the object header). */
typedef struct {
    PyObject_HEAD
    PyObject *md_dict;
} PyModuleObject;
#endif
#if PY_VERSION_HEX >= 0x030B0000
#include "internal/pycore_frame.h"
#include "internal/pycore_dict.h"
#include "internal/pycore_code.h"
#include "internal/pycore_object.h"
#else
#include <frameobject.h>
/* Not in the installed headers before 3.11: copied from Objects/dict-common.h (identical in 3.8, 3.9, 3.10). */
typedef struct {
    Py_ssize_t me_hash;
    PyObject *me_key;
    PyObject *me_value;
} fmd_PyDictKeyEntry;
typedef struct {
    Py_ssize_t dk_refcnt;
    Py_ssize_t dk_size;
    void *dk_lookup;
    Py_ssize_t dk_usable;
    Py_ssize_t dk_nentries;
    char dk_indices[];
} fmd_PyDictKeysObject;
#endif

#define F(name, expr) printf("        " #name ": %zu,\n", (size_t)(expr))
#define S(name, expr) printf("        " #name ": Some(%zu),\n", (size_t)(expr))
#define N(name) printf("        " #name ": None,\n")
#define O(type, field) offsetof(type, field)

static unsigned bit_shift(unsigned long long v) {
    unsigned s = 0;
    while (v && !(v & 1)) { v >>= 1; s++; }
    return s;
}

int main(void) {
    printf("        version: (%d, %d),\n", PY_MAJOR_VERSION, PY_MINOR_VERSION);
    /* runtime and interpreter */
    F(runtime_interpreters_head, O(_PyRuntimeState, interpreters.head));
    F(interp_next, O(PyInterpreterState, next));
#if PY_VERSION_HEX >= 0x030B0000
    F(interp_threads_head, O(PyInterpreterState, threads.head));
#else
    F(interp_threads_head, O(PyInterpreterState, tstate_head));
#endif
#if PY_VERSION_HEX >= 0x030C0000
    F(interp_modules, O(PyInterpreterState, imports.modules));
#else
    F(interp_modules, O(PyInterpreterState, modules));
#endif
    /* thread state */
    F(tstate_next, O(PyThreadState, next));
    F(tstate_interp, O(PyThreadState, interp));
    F(tstate_thread_id, O(PyThreadState, thread_id));
#if PY_VERSION_HEX >= 0x030B0000
    S(tstate_native_thread_id, O(PyThreadState, native_thread_id));
#else
    N(tstate_native_thread_id);
#endif
#if PY_VERSION_HEX >= 0x030D0000
    N(tstate_frame);
    N(tstate_cframe);
    N(cframe_current_frame);
    S(tstate_current_frame, O(PyThreadState, current_frame));
#elif PY_VERSION_HEX >= 0x030B0000
    N(tstate_frame);
    S(tstate_cframe, O(PyThreadState, cframe));
    S(cframe_current_frame, O(_PyCFrame, current_frame));
    N(tstate_current_frame);
#else
    S(tstate_frame, O(PyThreadState, frame));
    N(tstate_cframe);
    N(cframe_current_frame);
    N(tstate_current_frame);
#endif
    /* frames: PyFrameObject before 3.11, _PyInterpreterFrame from 3.11 */
#if PY_VERSION_HEX >= 0x030B0000
    F(frame_previous, O(_PyInterpreterFrame, previous));
#if PY_VERSION_HEX >= 0x030D0000
    F(frame_code, O(_PyInterpreterFrame, f_executable));
    F(frame_instr, O(_PyInterpreterFrame, instr_ptr));
#else
    F(frame_code, O(_PyInterpreterFrame, f_code));
    F(frame_instr, O(_PyInterpreterFrame, prev_instr));
#endif
#if PY_VERSION_HEX < 0x030C0000
    S(frame_is_entry, O(_PyInterpreterFrame, is_entry));
#else
    N(frame_is_entry);
#endif
    S(frame_owner, O(_PyInterpreterFrame, owner));
    F(frame_localsplus, O(_PyInterpreterFrame, localsplus));
#else
    F(frame_previous, O(PyFrameObject, f_back));
    F(frame_code, O(PyFrameObject, f_code));
    F(frame_instr, O(PyFrameObject, f_lasti));
    N(frame_is_entry);
    N(frame_owner);
    F(frame_localsplus, O(PyFrameObject, f_localsplus));
#endif
    /* code objects */
    F(code_filename, O(PyCodeObject, co_filename));
    F(code_name, O(PyCodeObject, co_name));
#if PY_VERSION_HEX >= 0x030B0000
    S(code_qualname, O(PyCodeObject, co_qualname));
    F(code_localsplusnames, O(PyCodeObject, co_localsplusnames));
    F(code_nlocalsplus, O(PyCodeObject, co_nlocalsplus));
    S(code_code_adaptive, O(PyCodeObject, co_code_adaptive));
    N(code_code);
#else
    N(code_qualname);
    F(code_localsplusnames, O(PyCodeObject, co_varnames));
    F(code_nlocalsplus, O(PyCodeObject, co_nlocals));
    N(code_code_adaptive);
    S(code_code, O(PyCodeObject, co_code));
#endif
    F(code_firstlineno, O(PyCodeObject, co_firstlineno));
#if PY_VERSION_HEX >= 0x030A0000
    F(code_linetable, O(PyCodeObject, co_linetable));
#else
    F(code_linetable, O(PyCodeObject, co_lnotab));
#endif
    /* objects */
    F(ob_type, O(PyObject, ob_type));
    F(var_ob_size, O(PyVarObject, ob_size));
    F(type_name, O(PyTypeObject, tp_name));
    F(type_basicsize, O(PyTypeObject, tp_basicsize));
    F(type_flags, O(PyTypeObject, tp_flags));
    F(type_dict, O(PyTypeObject, tp_dict));
    F(type_dictoffset, O(PyTypeObject, tp_dictoffset));
    F(type_base, O(PyTypeObject, tp_base));
    F(type_mro, O(PyTypeObject, tp_mro));
    F(heaptype_cached_keys, O(PyHeapTypeObject, ht_cached_keys));
    F(module_dict, O(PyModuleObject, md_dict));
    /* str */
    {
        PyASCIIObject a;
        memset(&a, 0, sizeof a);
        a.state.kind = 7;
        unsigned long long w = 0;
        memcpy(&w, &a.state, sizeof a.state < sizeof w ? sizeof a.state : sizeof w);
        F(unicode_kind_shift, bit_shift(w));
        memset(&a, 0, sizeof a);
        a.state.compact = 1;
        w = 0;
        memcpy(&w, &a.state, sizeof a.state < sizeof w ? sizeof a.state : sizeof w);
        F(unicode_compact_shift, bit_shift(w));
        memset(&a, 0, sizeof a);
        a.state.ascii = 1;
        w = 0;
        memcpy(&w, &a.state, sizeof a.state < sizeof w ? sizeof a.state : sizeof w);
        F(unicode_ascii_shift, bit_shift(w));
    }
    F(unicode_length, O(PyASCIIObject, length));
    F(unicode_state, O(PyASCIIObject, state));
    F(unicode_ascii_size, sizeof(PyASCIIObject));
    F(unicode_compact_size, sizeof(PyCompactUnicodeObject));
    F(unicode_data_any, O(PyUnicodeObject, data.any));
    /* bytes, int, float, tuple, list */
    F(bytes_sval, O(PyBytesObject, ob_sval));
#if PY_VERSION_HEX >= 0x030C0000
    S(long_lv_tag, O(PyLongObject, long_value.lv_tag));
    F(long_digit, O(PyLongObject, long_value.ob_digit));
#else
    N(long_lv_tag);
    F(long_digit, O(PyLongObject, ob_digit));
#endif
    F(long_shift, PyLong_SHIFT);
    F(long_digit_size, sizeof(digit));
    F(float_fval, O(PyFloatObject, ob_fval));
    F(tuple_item, O(PyTupleObject, ob_item));
    F(list_item, O(PyListObject, ob_item));
    /* dict */
    F(dict_used, O(PyDictObject, ma_used));
    F(dict_keys, O(PyDictObject, ma_keys));
    F(dict_values, O(PyDictObject, ma_values));
#if PY_VERSION_HEX >= 0x030B0000
    N(dictkeys_size);
    S(dictkeys_log2_size, O(PyDictKeysObject, dk_log2_size));
    S(dictkeys_log2_index_bytes, O(PyDictKeysObject, dk_log2_index_bytes));
    S(dictkeys_kind, O(PyDictKeysObject, dk_kind));
    F(dictkeys_nentries, O(PyDictKeysObject, dk_nentries));
    F(dictkeys_indices, O(PyDictKeysObject, dk_indices));
    F(dict_entry_size, sizeof(PyDictKeyEntry));
    F(dict_entry_key, O(PyDictKeyEntry, me_key));
    F(dict_entry_value, O(PyDictKeyEntry, me_value));
    S(dict_unicode_entry_size, sizeof(PyDictUnicodeEntry));
    F(dictvalues_values, O(PyDictValues, values));
#else
    S(dictkeys_size, O(fmd_PyDictKeysObject, dk_size));
    N(dictkeys_log2_size);
    N(dictkeys_log2_index_bytes);
    N(dictkeys_kind);
    F(dictkeys_nentries, O(fmd_PyDictKeysObject, dk_nentries));
    F(dictkeys_indices, O(fmd_PyDictKeysObject, dk_indices));
    F(dict_entry_size, sizeof(fmd_PyDictKeyEntry));
    F(dict_entry_key, O(fmd_PyDictKeyEntry, me_key));
    F(dict_entry_value, O(fmd_PyDictKeyEntry, me_value));
    N(dict_unicode_entry_size);
    F(dictvalues_values, 0);
#endif
#ifdef Py_TPFLAGS_MANAGED_DICT
#if PY_VERSION_HEX >= 0x030C0000 && PY_VERSION_HEX < 0x030D0000
    /* 3.12 has no MANAGED_DICT_OFFSET: _PyObject_DictOrValuesPointer is ((PyDictOrValues *)obj)-3, a tagged slot
     * holding the dict, or the values pointer + 1 */
    S(tpflags_managed_dict, Py_TPFLAGS_MANAGED_DICT);
    S(managed_dict_offset, 3 * sizeof(PyObject *));
#else
    S(tpflags_managed_dict, Py_TPFLAGS_MANAGED_DICT);
    S(managed_dict_offset, -(long)MANAGED_DICT_OFFSET);
#endif
#else
    N(tpflags_managed_dict);
    N(managed_dict_offset);
#endif
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
    /* 3.11: _PyObject_ValuesPointer is ((PyDictValues **)obj)-4 */
    S(managed_values_offset, 4 * sizeof(PyObject *));
#else
    N(managed_values_offset);
#endif
#ifdef Py_TPFLAGS_INLINE_VALUES
    S(tpflags_inline_values, Py_TPFLAGS_INLINE_VALUES);
#else
    N(tpflags_inline_values);
#endif
    /* set */
    F(set_mask, O(PySetObject, mask));
    F(set_table, O(PySetObject, table));
    F(set_entry_size, sizeof(setentry));
    F(set_entry_hash, O(setentry, hash));
    /* _Py_DebugOffsets (3.13+): where each value we cross-check sits inside the struct at _PyRuntime */
#if PY_VERSION_HEX >= 0x030D0000
    printf("        debug_offsets: Some(DebugOffsetsLayout {\n");
#define D(name, field) printf("            " #name ": %zu,\n", (size_t)O(_Py_DebugOffsets, field))
    D(version, version);
    D(runtime_interpreters_head, runtime_state.interpreters_head);
    D(interp_next, interpreter_state.next);
    D(interp_threads_head, interpreter_state.threads_head);
    D(interp_modules, interpreter_state.imports_modules);
    D(tstate_next, thread_state.next);
    D(tstate_interp, thread_state.interp);
    D(tstate_current_frame, thread_state.current_frame);
    D(tstate_thread_id, thread_state.thread_id);
    D(tstate_native_thread_id, thread_state.native_thread_id);
    D(frame_previous, interpreter_frame.previous);
    D(frame_executable, interpreter_frame.executable);
    D(frame_instr_ptr, interpreter_frame.instr_ptr);
    D(frame_localsplus, interpreter_frame.localsplus);
    D(frame_owner, interpreter_frame.owner);
    D(code_filename, code_object.filename);
    D(code_name, code_object.name);
    D(code_qualname, code_object.qualname);
    D(code_linetable, code_object.linetable);
    D(code_firstlineno, code_object.firstlineno);
    D(code_localsplusnames, code_object.localsplusnames);
    D(code_code_adaptive, code_object.co_code_adaptive);
    D(ob_type, pyobject.ob_type);
    D(type_name, type_object.tp_name);
    D(type_flags, type_object.tp_flags);
    D(tuple_item, tuple_object.ob_item);
    D(list_item, list_object.ob_item);
    D(dict_keys, dict_object.ma_keys);
    D(dict_values, dict_object.ma_values);
    D(float_fval, float_object.ob_fval);
    D(long_lv_tag, long_object.lv_tag);
    D(long_digit, long_object.ob_digit);
    D(bytes_sval, bytes_object.ob_sval);
    D(unicode_state, unicode_object.state);
    D(unicode_length, unicode_object.length);
    D(unicode_ascii_size, unicode_object.asciiobject_size);
    printf("        }),\n");
#else
    N(debug_offsets);
#endif
    return 0;
}
