//! Reads known values out of real interpreters (every supported version) and compares them with what the
//! interpreter printed about itself.

use std::{collections::BTreeMap, process::Command, time::Duration};

use serde_json::{json, Value};

use super::{
    objects::{Builtin, Reader},
    testutil::{interpreters, spawn_json},
    Interpreter, Memory,
};

const SCRIPT: &str = include_str!("testdata/values.py");

/// Reads `obj` the way the script's `expect()` encoded it.
fn read_value<M: Memory>(r: &Reader<'_, M>, obj: u64, depth: u32) -> anyhow::Result<Value> {
    anyhow::ensure!(depth < 4, "too deep");
    let ty = r.object_type_name(obj)?;
    Ok(match ty.as_str() {
        "str" => json!(r.str(obj)?),
        "bytes" => json!({ "bytes": r.bytes(obj)? }),
        "int" => {
            let v = r.int(obj)?;
            if v.unsigned_abs() >= 1 << 53 {
                json!(v.to_string())
            } else {
                json!(v as i64)
            }
        }
        "float" => json!(r.float(obj)?),
        "tuple" => Value::Array(
            r.tuple(obj)?
                .into_iter()
                .map(|o| read_value(r, o, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        "list" => Value::Array(
            r.list(obj)?
                .into_iter()
                .map(|o| read_value(r, o, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        "set" | "frozenset" => {
            let mut items: Vec<String> = r
                .set(obj)?
                .into_iter()
                .map(|o| r.str(o))
                .collect::<Result<_, _>>()?;
            items.sort();
            json!(items)
        }
        "dict" => {
            let mut m = serde_json::Map::new();
            for (k, v) in r.dict(obj)? {
                let key = match read_value(r, k, depth + 1)? {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                m.insert(key, read_value(r, v, depth + 1)?);
            }
            Value::Object(m)
        }
        other => anyhow::bail!("unexpected type {other}"),
    })
}

fn check(
    label: &str,
    r: &Reader<'_, impl Memory>,
    name: &str,
    obj: u64,
    expect: &Value,
    attrs: bool,
) {
    let got = if attrs {
        let mut m = serde_json::Map::new();
        for (k, v) in r
            .attributes(obj)
            .unwrap_or_else(|e| panic!("{label} {name}: attributes: {e}"))
        {
            let key = r
                .str(k)
                .unwrap_or_else(|e| panic!("{label} {name}: key: {e}"));
            m.insert(
                key,
                read_value(r, v, 0).unwrap_or_else(|e| panic!("{label} {name}.{k:#x}: {e:#}")),
            );
        }
        Value::Object(m)
    } else {
        read_value(r, obj, 0).unwrap_or_else(|e| panic!("{label} {name}: {e:#}"))
    };
    assert_eq!(&got, expect, "{label}: {name}");
}

#[test]
fn reads_values_threads_and_modules_of_every_version() {
    let all = interpreters();
    assert!(!all.is_empty(), "no interpreter to test against");
    for (label, python) in all {
        let mut cmd = Command::new(&python);
        cmd.arg("-c").arg(SCRIPT);
        let child =
            spawn_json(cmd, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{label}: {e:#}"));
        let pid = child.pid();
        let j = &child.json;
        let interp = Interpreter::attach(pid).unwrap_or_else(|e| panic!("{label}: attach: {e}"));
        let v = &j["version"];
        assert_eq!(
            (
                u64::from(interp.version.major),
                u64::from(interp.version.minor),
                interp.version.micro.map(u64::from)
            ),
            (
                v[0].as_u64().unwrap_or(0),
                v[1].as_u64().unwrap_or(0),
                v[2].as_u64()
            ),
            "{label}: version"
        );
        // 3.13+: the runtime's own _Py_DebugOffsets must agree with the generated table, field by field.
        let table = super::Layout::for_version(interp.version.major, interp.version.minor)
            .expect("supported");
        let mismatches = super::threads::check_debug_offsets(&interp.mem, table, interp.runtime)
            .unwrap_or_else(|e| panic!("{label}: debug offsets: {e}"));
        assert_eq!(
            mismatches,
            Vec::new(),
            "{label}: _Py_DebugOffsets disagrees with offsets.rs"
        );
        assert_eq!(table.debug_offsets.is_some(), interp.version.minor >= 13);
        let r = interp.reader();
        for (name, e) in j["values"].as_object().into_iter().flatten() {
            check(
                &label,
                &r,
                name,
                e["id"].as_u64().unwrap_or(0),
                &e["expect"],
                false,
            );
        }
        for (name, e) in j["attrs"].as_object().into_iter().flatten() {
            check(
                &label,
                &r,
                name,
                e["id"].as_u64().unwrap_or(0),
                &e["expect"],
                true,
            );
        }

        // Threads: every worker's kernel tid and the main thread (tid == pid) map to a thread state.
        let tids = interp
            .tid_map()
            .unwrap_or_else(|e| panic!("{label}: threads: {e}"));
        let mut want: Vec<u32> = j["tids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_u64())
            .map(|t| t as u32)
            .collect();
        want.push(pid);
        want.sort_unstable();
        let mut got: Vec<u32> = tids.keys().copied().collect();
        got.sort_unstable();
        assert_eq!(got, want, "{label}: tids");

        // sys.modules, and the script's globals through __main__'s dict.
        let modules: BTreeMap<String, u64> = interp
            .modules()
            .unwrap_or_else(|e| panic!("{label}: modules: {e}"))
            .into_iter()
            .collect();
        for m in ["__main__", "json", "threading", "sys"] {
            assert!(modules.contains_key(m), "{label}: sys.modules lacks {m}");
        }
        let main_dict = r
            .module_dict(modules["__main__"])
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        let vals = r
            .dict_get(main_dict, "vals")
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(vals, j["vals_id"].as_u64(), "{label}: __main__.vals");
        assert!(
            r.is(modules["json"], Builtin::Module).unwrap_or(false),
            "{label}: json is a module"
        );
        eprintln!(
            "{label}: ok ({} values, {} threads, {} modules)",
            j["values"].as_object().map_or(0, |m| m.len()),
            tids.len(),
            modules.len()
        );
    }
}

/// In a PID namespace (a container), the target numbers its threads differently: tids must come out in
/// fmd's numbering, for both the `native_thread_id` (3.11+) and the `struct pthread` (3.8-3.10) paths.
#[test]
fn tids_are_translated_out_of_pid_namespaces() {
    if !std::path::Path::new("/usr/bin/unshare").exists() {
        eprintln!("skipping: no /usr/bin/unshare");
        return;
    }
    for (label, python) in interpreters()
        .into_iter()
        .filter(|(l, _)| l == "pyenv 3.9" || l == "pyenv 3.12")
    {
        let mut cmd = Command::new("/usr/bin/unshare");
        cmd.args(["--pid", "--fork", "--mount-proc", "--kill-child"])
            .arg(&python)
            .arg("-c")
            .arg(SCRIPT);
        let child =
            spawn_json(cmd, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{label}: {e:#}"));
        let outer = child.pid();
        let children = std::fs::read_to_string(format!("/proc/{outer}/task/{outer}/children"))
            .unwrap_or_default();
        let pid: u32 = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .expect("python under unshare");
        let inner: Vec<u64> = child.json["tids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_u64())
            .collect();
        assert!(
            inner.iter().all(|&t| t < 100),
            "{label}: not in a new PID namespace: {inner:?}"
        );
        let mut want: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .expect("task dir")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        want.sort_unstable();
        let interp = Interpreter::attach(pid).unwrap_or_else(|e| panic!("{label}: attach: {e}"));
        let mut got: Vec<u32> = interp
            .tid_map()
            .unwrap_or_else(|e| panic!("{label}: {e}"))
            .into_keys()
            .collect();
        got.sort_unstable();
        assert_eq!(got, want, "{label}: host tids");
        assert!(got.contains(&pid), "{label}: main thread");
    }
}
