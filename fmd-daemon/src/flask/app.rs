//! Finding a worker's Flask app object(s) from outside the process and reading its werkzeug route table
//! (`app.url_map`), so requests can be attributed to a rule template and endpoint without code changes.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::RouteInfo;
use crate::python::{
    self,
    objects::{Builtin, Reader},
    Interpreter, Memory,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no Flask app found in process {pid} (is it a gunicorn worker serving a Flask app?)")]
    NoFlaskApp { pid: u32 },
    #[error("unsupported Flask/Werkzeug version: {reason}")]
    UnsupportedVersion { reason: &'static str },
    #[error("cannot read the Python interpreter of process {pid}")]
    Python {
        pid: u32,
        #[source]
        source: python::Error,
    },
}

/// An app's route table with the map-wide settings werkzeug matches with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UrlMap {
    /// Sorted.
    pub routes: Vec<RouteInfo>,
    pub strict_slashes: bool,
    pub merge_slashes: bool,
    pub host_matching: bool,
    /// Converter names used by the templates -> class name of the map's converter (`int` -> `IntegerConverter`).
    pub converters: BTreeMap<String, String>,
    /// Rule template -> its `defaults` (values shown as read: str, int, or the type name), for rules that have
    /// some.
    pub defaults: BTreeMap<String, Vec<(String, String)>>,
    /// The app's `root_path` (the directory of its module, in the process's view): where its code, and
    /// the git checkout that gives its version, live.
    pub root_path: Option<String>,
}

/// A Flask app found in a process, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundApp {
    pub addr: u64,
    /// Where it was found, e.g. `module myapp.app` or `frame spawn_worker: worker.wsgi`.
    pub via: String,
}

/// Bounds on the search (objects looked at through wrapper attributes, modules scanned, frames walked).
const WRAPPER_DEPTH: u32 = 3;
const MAX_MODULES: usize = 20_000;
const MAX_RULES: usize = 100_000;
/// Attributes through which WSGI wrappers, gunicorn workers and apps lead to the Flask app.
/// Objects looked at in one search, at most (garbage memory must not make the search quadratic).
const MAX_VISITS: usize = 200_000;
const WRAPPER_ATTRS: &[&str] = &["app", "wsgi_app", "application", "wsgi", "callable", "_app"];

/// Attaches to `pid`, finds its Flask app(s) and reads the first one's url_map (see [`apps`] for all).
pub fn routes(pid: u32) -> Result<UrlMap, Error> {
    let mut all = apps(pid)?;
    if all.is_empty() {
        return Err(Error::NoFlaskApp { pid });
    }
    Ok(all.swap_remove(0).1)
}

/// Attaches to `pid` and reads the url_map of every Flask app found (several when a WSGI dispatcher mounts
/// more than one), in the order [`find_apps`] found them.
pub fn apps(pid: u32) -> Result<Vec<(FoundApp, UrlMap)>, Error> {
    let py = |source| Error::Python { pid, source };
    // One burst of reads over a snapshot-ish view: 16 MiB of pages at most.
    let interp = Interpreter::attach_cached(pid, 4096).map_err(py)?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let mut out = Vec::new();
    for app in find_apps(&interp, &cmdline)? {
        tracing::debug!(pid, app = app.addr, via = %app.via, "found Flask app");
        let map = read_url_map(&interp, app.addr)?;
        out.push((app, map));
    }
    Ok(out)
}

/// The `module:attr` app spec of a gunicorn command line: the argument shaped like `pkg.module:name` or
/// `pkg.module:factory(...)` (bind addresses such as `0.0.0.0:8000` or `unix:/run/x.sock` are not).
pub fn gunicorn_app_spec(cmdline: &[String]) -> Option<(String, String)> {
    if !cmdline.iter().take(3).any(|a| a.contains("gunicorn")) {
        return None;
    }
    let ident = |s: &str| {
        s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    };
    cmdline.iter().skip(1).rev().find_map(|a| {
        let (module, attr) = a.split_once(':')?;
        let name = attr.split('(').next().unwrap_or("");
        (!a.starts_with('-')
            && ident(module)
            && ident(name)
            && (name.len() == attr.len() || attr.ends_with(')')))
        .then(|| (module.to_owned(), attr.to_owned()))
    })
}

struct Finder<'a, M: Memory> {
    r: Reader<'a, M>,
    flask_type: u64,
    is_flask_cache: HashMap<u64, bool>,
    found: Vec<FoundApp>,
    seen: HashSet<u64>,
    visits: usize,
}

impl<M: Memory> Finder<'_, M> {
    fn is_flask_type(&mut self, ty: u64) -> bool {
        if let Some(&b) = self.is_flask_cache.get(&ty) {
            return b;
        }
        let b = self
            .r
            .mro(ty)
            .is_ok_and(|mro| mro.contains(&self.flask_type));
        self.is_flask_cache.insert(ty, b);
        b
    }

    /// Looks at `obj` and, through wrapper attributes, what it leads to.
    fn visit(&mut self, obj: u64, via: &str, depth: u32) {
        if obj == 0 || self.r.is_none(obj) || self.visits >= MAX_VISITS || !self.seen.insert(obj) {
            return;
        }
        self.visits += 1;
        let Ok(ty) = self.r.type_of(obj) else { return };
        if self.is_flask_type(ty) {
            if !self.found.iter().any(|f| f.addr == obj) {
                self.found.push(FoundApp {
                    addr: obj,
                    via: via.to_owned(),
                });
            }
            return;
        }
        if depth == 0 {
            return;
        }
        let Ok(type_name) = self.r.type_name(ty) else {
            return;
        };
        match type_name.as_str() {
            // Builtins and functions never wrap an app (bound methods do: `ProxyFix(app.wsgi_app)`).
            "str"
            | "int"
            | "bytes"
            | "float"
            | "bool"
            | "tuple"
            | "list"
            | "dict"
            | "set"
            | "module"
            | "type"
            | "function"
            | "builtin_function_or_method"
            | "NoneType"
            | "code"
            | "frame"
            | "cell" => return,
            "method" => {
                // PyMethodObject: im_func then im_self after the object header (3.8-3.13).
                if let Ok(this) = self.r.mem.read_ptr(obj.wrapping_add(24)) {
                    self.visit(this, &format!("{via}.__self__"), depth - 1);
                }
                return;
            }
            _ => {}
        }
        let Ok(attrs) = self.r.attributes(obj) else {
            return;
        };
        for (k, v) in attrs {
            let Ok(name) = self.r.str(k) else { continue };
            if WRAPPER_ATTRS.contains(&name.as_str()) {
                self.visit(v, &format!("{via}.{name}"), depth - 1);
            } else if name == "mounts" {
                // werkzeug's DispatcherMiddleware: {prefix: app}.
                if let Ok(entries) = self.r.dict(v) {
                    for (_, app) in entries.into_iter().take(64) {
                        self.visit(app, &format!("{via}.mounts"), depth - 1);
                    }
                }
            }
        }
    }
}

/// Finds the Flask apps of a process: the gunicorn command line's `module:attr` first, then module globals
/// (through WSGI wrappers), then the locals of the main thread's frames (app factories under gunicorn, whose
/// worker keeps the app as `self.wsgi`).
pub fn find_apps<M: Memory>(
    interp: &Interpreter<M>,
    cmdline: &[String],
) -> Result<Vec<FoundApp>, Error> {
    let pid = interp.pid;
    let py = |source| Error::Python { pid, source };
    let r = interp.reader();
    let modules: HashMap<String, u64> = interp.modules().map_err(py)?.into_iter().collect();
    let Some(&flask_app) = modules.get("flask.app") else {
        return Err(Error::NoFlaskApp { pid });
    };
    let flask_type = r
        .module_dict(flask_app)
        .and_then(|d| r.dict_get(d, "Flask"))
        .map_err(py)?
        .ok_or(Error::UnsupportedVersion {
            reason: "flask.app has no Flask class",
        })?;
    let mut f = Finder {
        r,
        flask_type,
        is_flask_cache: HashMap::new(),
        found: Vec::new(),
        seen: HashSet::new(),
        visits: 0,
    };

    // 1. gunicorn's `module:attr` (a factory call `create_app()` is not stored anywhere: see 3.).
    if let Some((module, attr)) = gunicorn_app_spec(cmdline) {
        if let Some(&m) = modules.get(&module) {
            let name = attr.split('(').next().unwrap_or("").trim().to_owned();
            if !attr.contains('(') {
                if let Ok(Some(obj)) = r.module_dict(m).and_then(|d| r.dict_get(d, &name)) {
                    f.visit(obj, &format!("gunicorn {module}:{attr}"), WRAPPER_DEPTH);
                }
            }
        }
        if !f.found.is_empty() {
            return Ok(f.found);
        }
    }

    // 2. Module globals of every loaded module (werkzeug and flask themselves hold no app).
    let mut names: Vec<&String> = modules.keys().collect();
    names.sort();
    for name in names.into_iter().take(MAX_MODULES) {
        if name.starts_with("flask.")
            || name.starts_with("werkzeug.")
            || name.starts_with("gunicorn.")
        {
            continue;
        }
        let Ok(dict) = r.module_dict(modules[name]) else {
            continue;
        };
        let Ok(entries) = r.dict(dict) else { continue };
        for (k, v) in entries {
            let Ok(key) = r.str(k) else { continue };
            f.visit(v, &format!("module {name}.{key}"), WRAPPER_DEPTH);
        }
    }
    if !f.found.is_empty() {
        return Ok(f.found);
    }

    // 3. Locals of the threads' frames: the gunicorn worker (`self` in its run loop) keeps `wsgi`.
    f.seen.clear();
    for t in interp.threads().map_err(py)? {
        let Ok(frames) = interp.frames(&t) else {
            continue;
        };
        for frame in frames {
            let Ok(locals) = interp.frame_locals(&frame) else {
                continue;
            };
            let code = interp.code_name(frame.code).unwrap_or_default();
            for (name, v) in locals {
                f.visit(v, &format!("frame {code}: {name}"), WRAPPER_DEPTH);
            }
        }
    }
    if f.found.is_empty() {
        return Err(Error::NoFlaskApp { pid });
    }
    Ok(f.found)
}

/// Converter names used in a rule template: `<int:id>` -> `int`, `<any(a,b):x>` -> `any`, `<x>` -> `default`.
pub fn template_converters(rule: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = rule;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>') else {
            break;
        };
        let inner = &rest[open + 1..open + close];
        let conv = match inner.rfind(':') {
            Some(colon) => inner[..colon].split('(').next().unwrap_or("").trim(),
            None => "default",
        };
        out.push(conv.to_owned());
        rest = &rest[open + close + 1..];
    }
    out
}

/// Reads `app.url_map` of the Flask app at `app`.
pub fn read_url_map<M: Memory>(interp: &Interpreter<M>, app: u64) -> Result<UrlMap, Error> {
    let pid = interp.pid;
    let py = |source| Error::Python { pid, source };
    let r = interp.reader();
    let attrs: HashMap<String, u64> = str_attrs(&r, app).map_err(py)?;
    let map = *attrs.get("url_map").ok_or(Error::UnsupportedVersion {
        reason: "the app has no url_map",
    })?;
    let map_attrs = str_attrs(&r, map).map_err(py)?;
    let flag = |name: &str, default: bool| {
        map_attrs
            .get(name)
            .and_then(|&v| r.bool(v).ok())
            .unwrap_or(default)
    };
    let strict_slashes = flag("strict_slashes", true);
    // Werkzeug >= 2.2 keeps it on the matcher (`Map.merge_slashes` is a property).
    let merge_slashes = match map_attrs.get("merge_slashes") {
        Some(&v) => r.bool(v).unwrap_or(true),
        None => map_attrs
            .get("_matcher")
            .and_then(|&m| str_attrs(&r, m).ok())
            .and_then(|a| a.get("merge_slashes").and_then(|&v| r.bool(v).ok()))
            .unwrap_or(true),
    };
    let host_matching = flag("host_matching", false);

    // Werkzeug >= 2.2 keeps rules only by endpoint; older versions also have a `_rules` list.
    let rules: Vec<u64> = if let Some(&by_endpoint) = map_attrs.get("_rules_by_endpoint") {
        let mut rules = Vec::new();
        for (_, list) in r.dict(by_endpoint).map_err(py)? {
            rules.extend(r.list(list).map_err(py)?);
            if rules.len() > MAX_RULES {
                return Err(py(python::Error::TooLarge {
                    what: "url_map",
                    addr: map,
                    len: rules.len() as u64,
                    max: MAX_RULES as u64,
                }));
            }
        }
        rules
    } else if let Some(&list) = map_attrs.get("_rules") {
        r.list(list).map_err(py)?
    } else {
        return Err(Error::UnsupportedVersion {
            reason: "werkzeug Map has neither _rules_by_endpoint nor _rules",
        });
    };

    let map_converters: HashMap<String, u64> = map_attrs
        .get("converters")
        .and_then(|&d| r.str_dict(d).ok())
        .unwrap_or_default()
        .into_iter()
        .collect();
    let opt_str = |v: Option<&u64>| -> Result<Option<String>, python::Error> {
        match v {
            None => Ok(None),
            Some(&v) if r.is_none(v) => Ok(None),
            Some(&v) => Ok(Some(r.str(v)?).filter(|s| !s.is_empty())),
        }
    };
    let mut out = UrlMap {
        strict_slashes,
        merge_slashes,
        host_matching,
        root_path: attrs.get("root_path").and_then(|&v| r.str(v).ok()),
        ..UrlMap::default()
    };
    let mut seen = HashSet::new();
    for rule in rules {
        if !seen.insert(rule) {
            continue;
        }
        let a = str_attrs(&r, rule).map_err(py)?;
        let template = r
            .str(*a.get("rule").ok_or(Error::UnsupportedVersion {
                reason: "Rule has no rule",
            })?)
            .map_err(py)?;
        let endpoint = match a.get("endpoint") {
            Some(&e) if !r.is_none(e) => r.str(e).map_err(py)?,
            _ => String::new(),
        };
        let mut methods = match a.get("methods") {
            Some(&m) if !r.is_none(m) => r
                .set(m)
                .and_then(|s| s.into_iter().map(|x| r.str(x)).collect())
                .map_err(py)?,
            _ => Vec::new(),
        };
        methods.sort();
        let rule_strict = a
            .get("strict_slashes")
            .and_then(|&v| r.bool(v).ok())
            .unwrap_or(strict_slashes);
        let host = opt_str(a.get("host")).map_err(py)?;
        let subdomain = opt_str(a.get("subdomain")).map_err(py)?;
        if let Some(&d) = a.get("defaults") {
            if !r.is_none(d) {
                let mut defaults: Vec<(String, String)> = r
                    .str_dict(d)
                    .map_err(py)?
                    .into_iter()
                    .map(|(k, v)| (k, show(&r, v)))
                    .collect();
                defaults.sort();
                if !defaults.is_empty() {
                    out.defaults.insert(template.clone(), defaults);
                }
            }
        }
        for conv in template_converters(&template) {
            let class = map_converters
                .get(&conv)
                .and_then(|&c| r.type_name(c).ok())
                .unwrap_or_default();
            out.converters.entry(conv).or_insert(class);
        }
        out.routes.push(RouteInfo {
            rule: template,
            endpoint,
            methods,
            strict_slashes: rule_strict,
            host,
            subdomain,
        });
    }
    out.routes.sort();
    Ok(out)
}

/// A short rendering of a default value: the str, the int, or `<type name>`.
fn show<M: Memory>(r: &Reader<'_, M>, v: u64) -> String {
    if let Ok(s) = r.str(v) {
        return s;
    }
    if r.is(v, Builtin::Int).unwrap_or(false) {
        if let Ok(b) = r.bool(v) {
            return if b { "True".into() } else { "False".into() };
        }
        if let Ok(i) = r.int(v) {
            return i.to_string();
        }
    }
    format!("<{}>", r.object_type_name(v).unwrap_or_default())
}

fn str_attrs<M: Memory>(
    r: &Reader<'_, M>,
    obj: u64,
) -> Result<HashMap<String, u64>, python::Error> {
    Ok(r.attributes(obj)?
        .into_iter()
        .filter_map(|(k, v)| Some((r.str(k).ok()?, v)))
        .collect())
}

#[cfg(test)]
mod tests;
