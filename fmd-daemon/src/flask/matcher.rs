//! Route attribution: matches a captured request against the app's rules exactly as Werkzeug 3.x would
//! (its `StateMachineMatcher`), so fmd names the view that served a request without running any Python.
//!
//! How Werkzeug matches, and so how this module does:
//! - A rule is split at `/` into parts; the first part is the domain (the subdomain, or the host when the
//!   map does host matching). A part is static (plain text) or dynamic (a regex built from converters).
//!   A `path` converter makes its part "final": it swallows the rest of the URL, slashes included.
//! - All parts go into one tree of states. At each state a request segment first tries the static
//!   transition, then the dynamic ones sorted by weight (more static text first, then converter weights:
//!   `int`/`float` 50, most 100, `path` 200), backtracking on failure. Registration order only breaks ties.
//! - At the end of the path the first rule of the state whose methods allow the request wins; rules that
//!   fit the path but not the method are collected for the 405 `Allow` list. A rule `/a/` requested as
//!   `/a` raises a redirect (308) when strict, matches when not.
//! - Converter values are checked (`int` min/max/fixed_digits...) only after the rule is chosen: a failed
//!   check is a 404, not a fall-through to the next rule.
//! - With `merge_slashes`, a path that did not match is retried with runs of `/` merged; a hit there is a
//!   redirect to the merged path.
//!
//! The path is percent-decoded first (gunicorn unquotes PATH_INFO, Werkzeug decodes it as UTF-8 with
//! replacement), so `%2F` separates segments as it does in Flask. `tests/fixtures/werkzeug_match.json`
//! holds thousands of requests answered by Werkzeug itself; the `werkzeug_differential` test replays them.
//!
//! Not modelled, because `RouteInfo`/`MapOptions` do not carry it or fmd cannot see it:
//! - subdomain matching (`Flask(subdomain_matching=True)` with `SERVER_NAME`): the domain is always the
//!   default subdomain, as in a default Flask app, so rules on other subdomains never match;
//! - user converters' own regexes and `to_python` checks: they match like `default` (counted, see
//!   `Matcher::unknown_converters`);
//! - `Rule(defaults=...)` redirects (`redirect_defaults`), `redirect_to`, websocket rules, per-rule
//!   `merge_slashes`;
//! - non-ASCII hosts (Werkzeug compares their IDNA form) and `:443` (only `:80` is stripped from `Host`);
//! - `int`/`float` bounds checked on non-ASCII digits (Python reads them; here they fail the check).

use std::{
    borrow::Cow,
    cmp::Ordering,
    collections::{BTreeMap, BTreeSet, HashMap},
};

use percent_encoding::percent_decode_str;
use regex::Regex;
use serde::{Deserialize, Serialize};

use super::RouteInfo;

/// Map-wide settings of the app's `url_map` (Werkzeug's `Map` arguments).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapOptions {
    /// `Map.strict_slashes`. Informational: each `RouteInfo` carries its resolved value, which is used.
    pub strict_slashes: bool,
    /// `Map.merge_slashes`: merge runs of `/` in rules, and redirect requests that match only when merged.
    pub merge_slashes: bool,
    /// `Map.host_matching`: rules carry a host, matched against the request's `Host`.
    pub host_matching: bool,
    /// `Map.default_subdomain`: the subdomain of rules without one.
    pub default_subdomain: String,
}

impl Default for MapOptions {
    /// Flask's defaults.
    fn default() -> Self {
        Self {
            strict_slashes: true,
            merge_slashes: true,
            host_matching: false,
            default_subdomain: String::new(),
        }
    }
}

/// What the app does with a request, as Werkzeug's `MapAdapter.match` decides it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Match {
    /// The request reaches the view `endpoint` through `rule`.
    Endpoint { endpoint: String, rule: String },
    /// Werkzeug answers 308 with a slash-corrected URL (strict trailing slash, or `merge_slashes`);
    /// `endpoint`/`rule` name the rule the corrected URL goes to.
    RedirectSlash { endpoint: String, rule: String },
    /// 405: the path exists for other methods only.
    MethodNotAllowed { allowed: Vec<String> },
    /// 404.
    NotFound,
}

impl Match {
    /// The `(endpoint, rule)` to store with the request. Only a request that reached a view gets them:
    /// a 308, 404 or 405 is answered by Werkzeug before any view runs, so counting it against a view would
    /// skew that view's latency; those requests stay unattributed (grouped by status instead).
    pub fn attribution(&self) -> (Option<String>, Option<String>) {
        match self {
            Self::Endpoint { endpoint, rule } => (Some(endpoint.clone()), Some(rule.clone())),
            Self::RedirectSlash { .. } | Self::MethodNotAllowed { .. } | Self::NotFound => {
                (None, None)
            }
        }
    }
}

/// Why a rule of the route table could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("rule {rule:?} does not start with a slash")]
    NoLeadingSlash { rule: String },
    #[error("rule {rule:?} is malformed at byte {at}")]
    Malformed { rule: String, at: usize },
    #[error("cannot parse the converter arguments {args:?} of rule {rule:?}")]
    ConverterArgs { rule: String, args: String },
    #[error("converter {converter:?} of rule {rule:?} does not take these arguments: {reason}")]
    BadArgument {
        rule: String,
        converter: String,
        reason: &'static str,
    },
    #[error("rule {rule:?} compiles to a regex the regex crate refuses")]
    Regex {
        rule: String,
        #[source]
        source: regex::Error,
    },
}

/// A compiled route table. Build it once per route table; `route` is cheap and takes `&self`.
#[derive(Debug)]
pub struct Matcher {
    states: Vec<State>,
    parts: Vec<DynPart>,
    rules: Vec<Rule>,
    options: MapOptions,
    unknown_converters: BTreeMap<String, usize>,
}

#[derive(Debug, Default)]
struct State {
    statics: HashMap<String, usize>,
    /// `(index into Matcher::parts, next state)`, sorted by the part's weight.
    dynamic: Vec<(usize, usize)>,
    /// Indices into `Matcher::rules`, in registration order.
    rules: Vec<usize>,
}

#[derive(Debug)]
struct Rule {
    rule: String,
    endpoint: String,
    /// `None`: any method.
    methods: Option<BTreeSet<String>>,
    strict_slashes: bool,
    /// One converter per distinct variable name, in first-appearance order (Werkzeug's `_converters`);
    /// zipped with the captured values in order.
    converters: Vec<Conv>,
}

impl Rule {
    fn allows(&self, method: &str) -> bool {
        self.methods.as_ref().is_none_or(|m| m.contains(method))
    }

    fn validates(&self) -> bool {
        self.converters.iter().any(|c| !matches!(c, Conv::Plain))
    }
}

/// Werkzeug's `Weighting`: dynamic transitions are tried in ascending order of this tuple.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Weighting {
    number_static: i64,
    static_weights: Vec<(i64, i64)>,
    number_arguments: i64,
    argument_weights: Vec<i64>,
}

#[derive(Debug)]
struct DynPart {
    /// Regex source without anchors: Werkzeug's content, minus the `(?<!/)(/?)` tail when `suffixed`.
    content: String,
    regex: Regex,
    /// The common `<name>` part: any non-empty segment, no regex needed.
    any_segment: bool,
    /// Swallows the rest of the path (contains a `path` converter).
    is_final: bool,
    /// A final part whose rule ends with `/`: the slash is optional at match time.
    suffixed: bool,
    weight: Weighting,
}

/// A converter's check on its captured value (`to_python` raising `ValidationError`).
#[derive(Clone, Debug, PartialEq)]
enum Conv {
    Plain,
    Int {
        fixed_digits: usize,
        min: Option<Num>,
        max: Option<Num>,
    },
    Float {
        min: Option<Num>,
        max: Option<Num>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Num {
    Int(i128),
    Float(f64),
}

/// A converter argument as Werkzeug's `_pythonize` reads it.
#[derive(Clone, Debug, PartialEq)]
enum Arg {
    None,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
}

/// One part of a parsed rule, before it joins the state tree.
struct RawPart {
    content: String,
    is_static: bool,
    is_final: bool,
    suffixed: bool,
    weight: Weighting,
}

struct Parser {
    part_re: Regex,
    args_re: Regex,
}

impl Parser {
    fn new() -> Result<Self, regex::Error> {
        Ok(Self {
            // Werkzeug's `_part_re`: a slash, static text, or `<converter(args):name>`.
            part_re: Regex::new(
                r"\A(?:(?P<slash>/)|(?P<static>[^</]+)|<(?:(?P<converter>[a-zA-Z_][a-zA-Z0-9_]*)(?:\((?P<arguments>.*?)\))?:)?(?P<variable>[a-zA-Z_][a-zA-Z0-9_]*)>)",
            )?,
            // Werkzeug's `_converter_args_re`, applied to the arguments plus a trailing comma.
            args_re: Regex::new(
                r#"\s*(?:(?P<name>\w+)\s*=\s*)?(?P<value>True|False|\d+.\d+|\d+.|\d+|[\w\d_.]+|[urUR]?(?P<stringval>"[^"]*?"|'[^']*'))\s*,"#,
            )?,
        })
    }
}

/// Converter arguments: `(source text or keyword, value)`.
type Args = Vec<(String, Arg)>;

/// Parses converter arguments into positional and keyword values (`parse_converter_args`).
fn parse_args(parser: &Parser, argstr: &str) -> Option<(Args, Args)> {
    let argstr = format!("{argstr},");
    let mut args = Vec::new();
    let mut kwargs = Vec::new();
    let mut position = 0;
    for caps in parser.args_re.captures_iter(&argstr) {
        let whole = caps.get(0)?;
        if whole.start() != position {
            return None;
        }
        let raw = caps
            .name("stringval")
            .or_else(|| caps.name("value"))?
            .as_str();
        let value = (raw.to_owned(), pythonize(raw));
        match caps.name("name") {
            Some(name) => kwargs.push((name.as_str().to_owned(), value.1)),
            None => args.push(value),
        }
        position = whole.end();
    }
    // Werkzeug ignores text after the last comma-terminated item; with the comma appended that is only
    // trailing text that failed to parse, which it reports when a later item starts past it.
    Some((args, kwargs))
}

fn pythonize(value: &str) -> Arg {
    match value {
        "None" => return Arg::None,
        "True" => return Arg::Bool(true),
        "False" => return Arg::Bool(false),
        _ => {}
    }
    let digits: String = value.chars().filter(|&c| c != '_').collect();
    let underscores_ok = !value.starts_with('_') && !value.ends_with('_') && !value.contains("__");
    if underscores_ok && !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = digits.parse::<i128>() {
            return Arg::Int(i);
        }
    }
    if let Ok(f) = value.parse::<f64>() {
        return Arg::Float(f);
    }
    let quoted = value.len() >= 2
        && (value.starts_with('"') && value.ends_with('"')
            || value.starts_with('\'') && value.ends_with('\''));
    if quoted {
        return Arg::Str(value[1..value.len() - 1].to_owned());
    }
    Arg::Str(value.to_owned())
}

/// Binds positional and keyword arguments to a converter's parameter names, as a Python call would.
fn bind_args(
    names: &[&'static str],
    args: Args,
    kwargs: Args,
) -> Result<HashMap<&'static str, Arg>, &'static str> {
    if args.len() > names.len() {
        return Err("too many positional arguments");
    }
    let mut bound: HashMap<&'static str, Arg> = names
        .iter()
        .copied()
        .zip(args.into_iter().map(|a| a.1))
        .collect();
    for (name, value) in kwargs {
        let Some(&key) = names.iter().find(|n| **n == name) else {
            return Err("unexpected keyword argument");
        };
        if bound.insert(key, value).is_some() {
            return Err("argument given twice");
        }
    }
    Ok(bound)
}

/// Python's `int(value)` for the argument kinds a rule can hold.
fn arg_int(arg: &Arg) -> Result<i128, &'static str> {
    match arg {
        Arg::Int(i) => Ok(*i),
        Arg::Bool(b) => Ok(i128::from(*b)),
        #[expect(
            clippy::cast_possible_truncation,
            reason = "Python's int() truncates floats too"
        )]
        Arg::Float(f) if f.is_finite() => Ok(f.trunc() as i128),
        Arg::Str(s) => s.trim().parse().map_err(|_| "not an integer"),
        Arg::Float(_) | Arg::None => Err("not an integer"),
    }
}

fn arg_bound(arg: Option<&Arg>) -> Result<Option<Num>, &'static str> {
    match arg {
        None | Some(Arg::None) => Ok(None),
        Some(Arg::Int(i)) => Ok(Some(Num::Int(*i))),
        Some(Arg::Bool(b)) => Ok(Some(Num::Int(i128::from(*b)))),
        Some(Arg::Float(f)) => Ok(Some(Num::Float(*f))),
        Some(Arg::Str(_)) => Err("min and max must be numbers"),
    }
}

fn truthy(arg: Option<&Arg>) -> bool {
    match arg {
        None | Some(Arg::None) => false,
        Some(Arg::Bool(b)) => *b,
        Some(Arg::Int(i)) => *i != 0,
        Some(Arg::Float(f)) => *f != 0.0,
        Some(Arg::Str(s)) => !s.is_empty(),
    }
}

/// A converter instance: its regex, weight, whether it stays within one segment, and its value check.
struct Converter {
    regex: String,
    weight: i64,
    part_isolating: bool,
    conv: Conv,
}

const UUID_RE: &str = "[A-Fa-f0-9]{8}-[A-Fa-f0-9]{4}-[A-Fa-f0-9]{4}-[A-Fa-f0-9]{4}-[A-Fa-f0-9]{12}";

/// Werkzeug's `DEFAULT_CONVERTERS`; anything else is a user converter, treated like `default` (its real
/// regex lives in Python code fmd does not read) and counted in `unknown`.
fn converter(
    parser: &Parser,
    rule: &str,
    name: &str,
    argstr: Option<&str>,
    unknown: &mut BTreeMap<String, usize>,
) -> Result<Converter, Error> {
    let known = matches!(
        name,
        "default" | "string" | "any" | "path" | "int" | "float" | "uuid"
    );
    if !known {
        *unknown.entry(name.to_owned()).or_default() += 1;
        return Ok(Converter {
            regex: "[^/]+".to_owned(),
            weight: 100,
            part_isolating: true,
            conv: Conv::Plain,
        });
    }
    let (args, kwargs) =
        parse_args(parser, argstr.unwrap_or("")).ok_or_else(|| Error::ConverterArgs {
            rule: rule.to_owned(),
            args: argstr.unwrap_or("").to_owned(),
        })?;
    let bad = |reason| Error::BadArgument {
        rule: rule.to_owned(),
        converter: name.to_owned(),
        reason,
    };
    let plain = |regex: String, weight| Converter {
        regex,
        weight,
        part_isolating: true,
        conv: Conv::Plain,
    };
    Ok(match name {
        "default" | "string" => {
            let a = bind_args(&["minlength", "maxlength", "length"], args, kwargs).map_err(bad)?;
            let len = match a.get("length") {
                Some(l) if *l != Arg::None => format!("{{{}}}", arg_int(l).map_err(bad)?),
                _ => {
                    let min = a.get("minlength").map_or(Ok(1), arg_int).map_err(bad)?;
                    let max = match a.get("maxlength") {
                        None | Some(Arg::None) => String::new(),
                        Some(m) => arg_int(m).map_err(bad)?.to_string(),
                    };
                    format!("{{{min},{max}}}")
                }
            };
            plain(format!("[^/]{len}"), 100)
        }
        "any" => {
            if !kwargs.is_empty() {
                return Err(bad("any takes no keyword arguments"));
            }
            let items: Vec<String> = args
                .iter()
                .map(|(raw, arg)| match arg {
                    Arg::Str(s) => regex::escape(s),
                    _ => regex::escape(raw),
                })
                .collect();
            plain(format!("(?:{})", items.join("|")), 100)
        }
        // Werkzeug's BaseConverter accepts and ignores any arguments.
        "path" => Converter {
            regex: "[^/].*?".to_owned(),
            weight: 200,
            part_isolating: false,
            conv: Conv::Plain,
        },
        "uuid" => plain(UUID_RE.to_owned(), 100),
        "int" => {
            let a =
                bind_args(&["fixed_digits", "min", "max", "signed"], args, kwargs).map_err(bad)?;
            let fixed_digits = match a.get("fixed_digits") {
                None | Some(Arg::None) => 0,
                Some(f) => usize::try_from(arg_int(f).map_err(bad)?).unwrap_or(0),
            };
            let signed = truthy(a.get("signed"));
            Converter {
                regex: if signed { r"-?\d+" } else { r"\d+" }.to_owned(),
                weight: 50,
                part_isolating: true,
                conv: Conv::Int {
                    fixed_digits,
                    min: arg_bound(a.get("min")).map_err(bad)?,
                    max: arg_bound(a.get("max")).map_err(bad)?,
                },
            }
        }
        _ => {
            // "float"
            let a = bind_args(&["min", "max", "signed"], args, kwargs).map_err(bad)?;
            let signed = truthy(a.get("signed"));
            Converter {
                regex: if signed { r"-?\d+\.\d+" } else { r"\d+\.\d+" }.to_owned(),
                weight: 50,
                part_isolating: true,
                conv: Conv::Float {
                    min: arg_bound(a.get("min")).map_err(bad)?,
                    max: arg_bound(a.get("max")).map_err(bad)?,
                },
            }
        }
    })
}

fn weighting(static_weights: &[(i64, i64)], argument_weights: &[i64]) -> Weighting {
    Weighting {
        number_static: -len_i64(static_weights.len()),
        static_weights: static_weights.to_vec(),
        number_arguments: -len_i64(argument_weights.len()),
        argument_weights: argument_weights.to_vec(),
    }
}

fn len_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Splits one rule (or domain rule) into parts, Werkzeug's `Rule._parse_rule`. Converters are appended
/// to `converters` keyed by variable name.
fn parse_rule(
    parser: &Parser,
    full_rule: &str,
    rule: &str,
    converters: &mut Vec<(String, Conv)>,
    unknown: &mut BTreeMap<String, usize>,
) -> Result<Vec<RawPart>, Error> {
    let mut out = Vec::new();
    let mut content = String::new();
    let mut is_static = true;
    let mut argument_weights: Vec<i64> = Vec::new();
    let mut static_weights: Vec<(i64, i64)> = Vec::new();
    let mut is_final = false;
    let mut pos = 0;
    while pos < rule.len() {
        let caps = rule
            .get(pos..)
            .and_then(|rest| parser.part_re.captures(rest))
            .ok_or_else(|| Error::Malformed {
                rule: full_rule.to_owned(),
                at: pos,
            })?;
        let end = caps.get(0).map_or(0, |m| m.end());
        if end == 0 {
            return Err(Error::Malformed {
                rule: full_rule.to_owned(),
                at: pos,
            });
        }
        if let Some(text) = caps.name("static") {
            let text = text.as_str();
            static_weights.push((
                len_i64(static_weights.len()),
                -len_i64(text.chars().count()),
            ));
            if is_static {
                content.push_str(text);
            } else {
                content.push_str(&regex::escape(text));
            }
        }
        if let Some(var) = caps.name("variable") {
            if is_static {
                content = regex::escape(&content);
            }
            is_static = false;
            let name = caps.name("converter").map_or("default", |m| m.as_str());
            let conv = converter(
                parser,
                full_rule,
                name,
                caps.name("arguments").map(|m| m.as_str()),
                unknown,
            )?;
            // A repeated variable keeps its first position and takes the last converter (a Python dict).
            match converters.iter_mut().find(|(n, _)| n == var.as_str()) {
                Some(slot) => slot.1 = conv.conv,
                None => converters.push((var.as_str().to_owned(), conv.conv)),
            }
            if !conv.part_isolating {
                is_final = true;
            }
            content.push('(');
            content.push_str(&conv.regex);
            content.push(')');
            argument_weights.push(conv.weight);
        }
        if caps.name("slash").is_some() {
            if is_final {
                content.push('/');
            } else {
                out.push(RawPart {
                    content: std::mem::take(&mut content),
                    is_static,
                    is_final,
                    suffixed: false,
                    weight: weighting(&static_weights, &argument_weights),
                });
                is_static = true;
                argument_weights.clear();
                static_weights.clear();
                is_final = false;
            }
        }
        pos += end;
    }
    let suffixed = is_final && content.ends_with('/');
    if suffixed {
        // Werkzeug appends `(?<!/)(/?)`; the regex crate has no look-behind, so the optional slash is
        // handled in `Matcher::walk` instead and the content keeps only what precedes it.
        content.pop();
    }
    let weight = weighting(&static_weights, &argument_weights);
    out.push(RawPart {
        content,
        is_static,
        is_final,
        suffixed,
        weight: weight.clone(),
    });
    if suffixed {
        out.push(RawPart {
            content: String::new(),
            is_static: true,
            is_final: false,
            suffixed: false,
            weight,
        });
    }
    Ok(out)
}

/// Werkzeug's `re.sub("/{2,}", "/", s)`.
fn merge_slashes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_slash = false;
    for c in s.chars() {
        if c == '/' && prev_slash {
            continue;
        }
        prev_slash = c == '/';
        out.push(c);
    }
    out
}

/// The remaining request parts at a point of the walk (Werkzeug's `parts` list).
#[derive(Clone, Copy)]
enum Rem {
    /// `parts[i..]`.
    At(usize),
    /// `[]`, after a final part.
    Empty,
    /// `[""]`, after a suffixed final part matched its trailing slash.
    Slash,
}

enum Walk {
    Found(usize),
    /// A strict rule matches with a trailing slash added (Werkzeug's `SlashRequired`, which ends the search).
    SlashRequired(usize),
    Miss,
}

/// Per-request state of the walk.
struct Cx<'p> {
    method: &'p str,
    domain: &'p str,
    path: &'p str,
    /// `[domain, *path.split("/")]`.
    parts: Vec<&'p str>,
    /// Byte offset in `path` of `parts[i]`, for `i >= 1`.
    offsets: Vec<usize>,
    allowed: BTreeSet<String>,
    /// The dynamic parts taken so far and the text each matched, to extract values once a rule wins.
    taken: Vec<(usize, Cow<'p, str>)>,
}

const EMPTY_PART: [&str; 1] = [""];

impl<'p> Cx<'p> {
    fn new(method: &'p str, domain: &'p str, path: &'p str) -> Self {
        let mut parts = vec![domain];
        let mut offsets = vec![0];
        let mut start = 0;
        for seg in path.split('/') {
            parts.push(seg);
            offsets.push(start);
            start += seg.len() + 1;
        }
        Self {
            method,
            domain,
            path,
            parts,
            offsets,
            allowed: BTreeSet::new(),
            taken: Vec::new(),
        }
    }

    fn rem_parts(&self, rem: Rem) -> &[&'p str] {
        match rem {
            Rem::At(i) => self.parts.get(i..).unwrap_or(&[]),
            Rem::Empty => &[],
            Rem::Slash => &EMPTY_PART,
        }
    }

    /// `"/".join(parts)` for the remaining parts.
    fn join(&self, rem: Rem) -> Cow<'p, str> {
        match rem {
            Rem::At(0) => Cow::Owned(format!("{}/{}", self.domain, self.path)),
            Rem::At(i) => match self.offsets.get(i).and_then(|&o| self.path.get(o..)) {
                Some(s) => Cow::Borrowed(s),
                None => Cow::Borrowed(""),
            },
            Rem::Empty | Rem::Slash => Cow::Borrowed(""),
        }
    }
}

fn advance(rem: Rem) -> Rem {
    match rem {
        Rem::At(i) => Rem::At(i + 1),
        Rem::Empty | Rem::Slash => Rem::Empty,
    }
}

impl Matcher {
    /// Compiles the route table. Fails on a rule Werkzeug would refuse too (no leading slash, malformed
    /// `<...>`, bad arguments of a built-in converter); rules read from a running app never do.
    pub fn new(routes: &[RouteInfo], options: MapOptions) -> Result<Self, Error> {
        let parser = Parser::new().map_err(|source| Error::Regex {
            rule: String::new(),
            source,
        })?;
        let mut m = Self {
            states: vec![State::default()],
            parts: Vec::new(),
            rules: Vec::new(),
            options,
            unknown_converters: BTreeMap::new(),
        };
        for route in routes {
            m.add(&parser, route)?;
        }
        for state in &mut m.states {
            let parts = &m.parts;
            // Stable, as Python's sort: equal weights keep registration order.
            state.dynamic.sort_by(|a, b| {
                parts
                    .get(a.0)
                    .map(|p| &p.weight)
                    .cmp(&parts.get(b.0).map(|p| &p.weight))
            });
        }
        Ok(m)
    }

    fn add(&mut self, parser: &Parser, route: &RouteInfo) -> Result<(), Error> {
        if !route.rule.starts_with('/') {
            return Err(Error::NoLeadingSlash {
                rule: route.rule.clone(),
            });
        }
        let domain_rule = if self.options.host_matching {
            route.host.clone().unwrap_or_default()
        } else {
            route
                .subdomain
                .clone()
                .unwrap_or_else(|| self.options.default_subdomain.clone())
        };
        let mut converters = Vec::new();
        let mut raw = if domain_rule.is_empty() {
            vec![RawPart {
                content: String::new(),
                is_static: true,
                is_final: false,
                suffixed: false,
                weight: weighting(&[], &[]),
            }]
        } else {
            parse_rule(
                parser,
                &route.rule,
                &domain_rule,
                &mut converters,
                &mut self.unknown_converters,
            )?
        };
        let rule_text = if self.options.merge_slashes {
            merge_slashes(&route.rule)
        } else {
            route.rule.clone()
        };
        raw.extend(parse_rule(
            parser,
            &route.rule,
            &rule_text,
            &mut converters,
            &mut self.unknown_converters,
        )?);

        let mut state = 0;
        for part in raw {
            state = if part.is_static {
                self.static_child(state, part.content)
            } else {
                self.dynamic_child(state, part, &route.rule)?
            };
        }
        let methods = if route.methods.is_empty() {
            None
        } else {
            let mut set: BTreeSet<String> = route
                .methods
                .iter()
                .map(|m| m.to_ascii_uppercase())
                .collect();
            // Werkzeug adds HEAD wherever GET is; Flask adds OPTIONS (provide_automatic_options).
            if set.contains("GET") {
                set.insert("HEAD".to_owned());
            }
            set.insert("OPTIONS".to_owned());
            Some(set)
        };
        self.rules.push(Rule {
            rule: route.rule.clone(),
            endpoint: route.endpoint.clone(),
            methods,
            strict_slashes: route.strict_slashes,
            converters: converters.into_iter().map(|c| c.1).collect(),
        });
        let idx = self.rules.len() - 1;
        if let Some(s) = self.states.get_mut(state) {
            s.rules.push(idx);
        }
        Ok(())
    }

    fn new_state(&mut self) -> usize {
        self.states.push(State::default());
        self.states.len() - 1
    }

    fn static_child(&mut self, state: usize, content: String) -> usize {
        if let Some(&next) = self.states.get(state).and_then(|s| s.statics.get(&content)) {
            return next;
        }
        let next = self.new_state();
        if let Some(s) = self.states.get_mut(state) {
            s.statics.insert(content, next);
        }
        next
    }

    fn dynamic_child(&mut self, state: usize, part: RawPart, rule: &str) -> Result<usize, Error> {
        let existing = self.states.get(state).and_then(|s| {
            s.dynamic.iter().find(|(p, _)| {
                self.parts.get(*p).is_some_and(|d| {
                    d.content == part.content
                        && d.is_final == part.is_final
                        && d.suffixed == part.suffixed
                        && d.weight == part.weight
                })
            })
        });
        if let Some(&(_, next)) = existing {
            return Ok(next);
        }
        let regex =
            Regex::new(&format!(r"\A(?:{})\z", part.content)).map_err(|source| Error::Regex {
                rule: rule.to_owned(),
                source,
            })?;
        self.parts.push(DynPart {
            any_segment: part.content == "([^/]+)",
            content: part.content,
            regex,
            is_final: part.is_final,
            suffixed: part.suffixed,
            weight: part.weight,
        });
        let p = self.parts.len() - 1;
        let next = self.new_state();
        if let Some(s) = self.states.get_mut(state) {
            s.dynamic.push((p, next));
        }
        Ok(next)
    }

    /// Converters outside Werkzeug's built-ins, by name, with how many rule variables use each. They are
    /// matched like `default` (one non-empty segment), which can differ from the app's own converter.
    pub fn unknown_converters(&self) -> &BTreeMap<String, usize> {
        &self.unknown_converters
    }

    /// How many rules were compiled.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Matches a request as Werkzeug would. `path` is the request target's path as sent (percent-encoded,
    /// no query); `host` the `Host` header, used only with host matching (without it, Flask matches every
    /// request against the default subdomain, and so does this).
    pub fn route(&self, method: &str, path: &str, host: Option<&str>) -> Match {
        let method = method.to_ascii_uppercase();
        let raw = path.split_once('?').map_or(path, |(p, _)| p);
        let raw = strip_absolute_form(raw);
        // gunicorn unquotes PATH_INFO to bytes and Werkzeug decodes them as UTF-8 with replacement.
        let decoded = percent_decode_str(raw).decode_utf8_lossy();
        // MapAdapter.match: `f"/{path_info.lstrip('/')}" if path_info else ""`.
        let path_part = if decoded.is_empty() {
            String::new()
        } else {
            format!("/{}", decoded.trim_start_matches('/'))
        };
        let domain: Cow<'_, str> = if self.options.host_matching {
            let h = host.unwrap_or("").to_lowercase();
            Cow::Owned(h.strip_suffix(":80").map(str::to_owned).unwrap_or(h))
        } else {
            Cow::Borrowed(&self.options.default_subdomain)
        };

        let mut cx = Cx::new(&method, &domain, &path_part);
        let mut allowed = BTreeSet::new();
        match self.walk(0, Rem::At(0), &mut cx) {
            Walk::SlashRequired(r) => return self.redirect(r),
            Walk::Found(r) => {
                return match self.rules.get(r) {
                    Some(rule) if self.values_ok(rule, &cx) => Match::Endpoint {
                        endpoint: rule.endpoint.clone(),
                        rule: rule.rule.clone(),
                    },
                    _ => not_found(cx.allowed),
                };
            }
            Walk::Miss => allowed.append(&mut cx.allowed),
        }
        if self.options.merge_slashes {
            let merged = merge_slashes(&path_part);
            let mut cx = Cx::new(&method, &domain, &merged);
            match self.walk(0, Rem::At(0), &mut cx) {
                Walk::SlashRequired(r) | Walk::Found(r) => return self.redirect(r),
                Walk::Miss => allowed.append(&mut cx.allowed),
            }
        }
        not_found(allowed)
    }

    fn redirect(&self, rule: usize) -> Match {
        match self.rules.get(rule) {
            Some(r) => Match::RedirectSlash {
                endpoint: r.endpoint.clone(),
                rule: r.rule.clone(),
            },
            None => Match::NotFound,
        }
    }

    /// Runs the chosen rule's converter checks on the values captured along the walk.
    fn values_ok(&self, rule: &Rule, cx: &Cx<'_>) -> bool {
        if !rule.validates() {
            return true;
        }
        let mut values: Vec<&str> = Vec::new();
        for (p, text) in &cx.taken {
            let Some(part) = self.parts.get(*p) else {
                return false;
            };
            let Some(caps) = part.regex.captures(text) else {
                return false;
            };
            values.extend(caps.iter().skip(1).map(|g| g.map_or("", |m| m.as_str())));
        }
        rule.converters
            .iter()
            .zip(values)
            .all(|(c, v)| c.accepts(v))
    }

    fn walk<'p>(&self, state: usize, rem: Rem, cx: &mut Cx<'p>) -> Walk {
        let Some(st) = self.states.get(state) else {
            return Walk::Miss;
        };
        let parts = cx.rem_parts(rem);
        let Some(&part) = parts.first() else {
            for &r in &st.rules {
                let Some(rule) = self.rules.get(r) else {
                    continue;
                };
                if rule.allows(cx.method) {
                    return Walk::Found(r);
                }
                cx.allowed.extend(rule.methods.iter().flatten().cloned());
            }
            if let Some(slash) = st.statics.get("").and_then(|&s| self.states.get(s)) {
                for &r in &slash.rules {
                    match self.rules.get(r) {
                        Some(rule) if rule.allows(cx.method) => {
                            return if rule.strict_slashes {
                                Walk::SlashRequired(r)
                            } else {
                                Walk::Found(r)
                            };
                        }
                        _ => {}
                    }
                }
            }
            return Walk::Miss;
        };
        let only_empty = parts.len() == 1 && part.is_empty();

        if let Some(&next) = st.statics.get(part) {
            match self.walk(next, advance(rem), cx) {
                Walk::Miss => {}
                done => return done,
            }
        }
        for &(p, next) in &st.dynamic {
            let Some(dp) = self.parts.get(p) else {
                continue;
            };
            let (mut target, mut next_rem) = if dp.is_final {
                (cx.join(rem), Rem::Empty)
            } else {
                (Cow::Borrowed(part), advance(rem))
            };
            if dp.suffixed {
                // `(?<!/)(/?)\Z`: an optional final slash, the text before it not ending in `/`.
                if let Some(body) = target.strip_suffix('/') {
                    if body.ends_with('/') {
                        continue;
                    }
                    target = Cow::Owned(body.to_owned());
                    next_rem = Rem::Slash;
                }
            }
            let hit = if dp.any_segment {
                !target.is_empty() && !target.contains('/')
            } else {
                dp.regex.is_match(&target)
            };
            if !hit {
                continue;
            }
            cx.taken.push((p, target));
            match self.walk(next, next_rem, cx) {
                Walk::Miss => {
                    cx.taken.pop();
                }
                done => return done,
            }
        }
        if only_empty {
            for &r in &st.rules {
                let Some(rule) = self.rules.get(r) else {
                    continue;
                };
                if rule.strict_slashes {
                    continue;
                }
                if rule.allows(cx.method) {
                    return Walk::Found(r);
                }
                cx.allowed.extend(rule.methods.iter().flatten().cloned());
            }
        }
        Walk::Miss
    }
}

/// An absolute-form request target (`GET http://host/path`, sent to proxies) reaches Flask as its path
/// only: gunicorn splits it off.
fn strip_absolute_form(target: &str) -> &str {
    let lower = |n: usize| target.get(..n).map(str::to_ascii_lowercase);
    let scheme_len = if lower(7).as_deref() == Some("http://") {
        7
    } else if lower(8).as_deref() == Some("https://") {
        8
    } else {
        return target;
    };
    let rest = target.get(scheme_len..).unwrap_or("");
    rest.find('/').and_then(|i| rest.get(i..)).unwrap_or("")
}

fn not_found(allowed: BTreeSet<String>) -> Match {
    if allowed.is_empty() {
        Match::NotFound
    } else {
        Match::MethodNotAllowed {
            allowed: allowed.into_iter().collect(),
        }
    }
}

impl Conv {
    /// Werkzeug's `NumberConverter.to_python` not raising `ValidationError`.
    fn accepts(&self, value: &str) -> bool {
        match self {
            Self::Plain => true,
            Self::Int {
                fixed_digits,
                min,
                max,
            } => {
                if *fixed_digits != 0 && value.chars().count() != *fixed_digits {
                    return false;
                }
                if min.is_none() && max.is_none() {
                    return true;
                }
                let Some(v) = IntValue::parse(value) else {
                    // Non-ASCII digits: Python's int() reads them, fmd does not; refuse rather than guess.
                    return false;
                };
                !(min.is_some_and(|b| v.cmp_num(b) == Some(Ordering::Less))
                    || max.is_some_and(|b| v.cmp_num(b) == Some(Ordering::Greater)))
            }
            Self::Float { min, max } => {
                if min.is_none() && max.is_none() {
                    return true;
                }
                let Ok(v) = value.parse::<f64>() else {
                    return false;
                };
                let cmp = |b: Num| v.partial_cmp(&b.as_f64());
                !(min.is_some_and(|b| cmp(b) == Some(Ordering::Less))
                    || max.is_some_and(|b| cmp(b) == Some(Ordering::Greater)))
            }
        }
    }
}

impl Num {
    #[expect(
        clippy::cast_precision_loss,
        reason = "Python compares int and float bounds the same loose way"
    )]
    fn as_f64(self) -> f64 {
        match self {
            Self::Int(i) => i as f64,
            Self::Float(f) => f,
        }
    }
}

/// An `int` converter's value: exact when it fits an i128, else only its sign matters for comparing.
enum IntValue {
    Small(i128),
    Huge { negative: bool },
}

impl IntValue {
    fn parse(value: &str) -> Option<Self> {
        let (negative, digits) = match value.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, value),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let digits = digits.trim_start_matches('0');
        if digits.len() > 36 {
            return Some(Self::Huge { negative });
        }
        let n: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().ok()?
        };
        Some(Self::Small(if negative { -n } else { n }))
    }

    #[expect(
        clippy::cast_precision_loss,
        reason = "Python compares int and float bounds the same loose way"
    )]
    fn cmp_num(&self, bound: Num) -> Option<Ordering> {
        match (self, bound) {
            (Self::Small(v), Num::Int(b)) => Some(v.cmp(&b)),
            (Self::Small(v), Num::Float(b)) => (*v as f64).partial_cmp(&b),
            (Self::Huge { .. }, Num::Float(b)) if b.is_nan() => None,
            (Self::Huge { .. }, Num::Float(b)) if b.is_infinite() => Some(if b > 0.0 {
                Ordering::Less
            } else {
                Ordering::Greater
            }),
            (Self::Huge { negative: true }, _) => Some(Ordering::Less),
            (Self::Huge { negative: false }, _) => Some(Ordering::Greater),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `rule endpoint METHOD,METHOD` (methods optional, default GET; `!` suffix on the rule = not strict).
    fn routes(spec: &[&str]) -> Vec<RouteInfo> {
        spec.iter()
            .map(|line| {
                let mut it = line.split_whitespace();
                let rule = it.next().unwrap_or("/");
                let endpoint = it.next().unwrap_or("e").to_owned();
                let methods = it
                    .next()
                    .unwrap_or("GET")
                    .split(',')
                    .map(str::to_owned)
                    .collect();
                let (rule, strict) = match rule.strip_suffix('!') {
                    Some(r) => (r, false),
                    None => (rule, true),
                };
                RouteInfo {
                    rule: rule.replace('~', " "),
                    endpoint,
                    methods,
                    strict_slashes: strict,
                    host: None,
                    subdomain: None,
                }
            })
            .collect()
    }

    fn short(m: &Match) -> String {
        match m {
            Match::Endpoint { endpoint, .. } => endpoint.clone(),
            Match::RedirectSlash { endpoint, .. } => format!("308 {endpoint}"),
            Match::MethodNotAllowed { allowed } => format!("405 {}", allowed.join(",")),
            Match::NotFound => "404".to_owned(),
        }
    }

    /// Each case: `(method, path, expected)` where expected is an endpoint, `308 endpoint`,
    /// `405 METHODS` or `404`.
    fn check_with(options: MapOptions, rules: &[&str], cases: &[(&str, &str, &str)]) {
        let m = Matcher::new(&routes(rules), options).expect("rules compile");
        for (method, path, expect) in cases {
            assert_eq!(
                short(&m.route(method, path, None)),
                *expect,
                "{method} {path}"
            );
        }
    }

    fn check(rules: &[&str], cases: &[(&str, &str, &str)]) {
        check_with(MapOptions::default(), rules, cases);
    }

    #[test]
    fn default_and_string_converters() {
        check(
            &[
                "/a/<x> a",
                "/b/<string(length=2):x> b",
                "/c/<string(minlength=3,maxlength=4):x> c",
                "/d/<string(2):x> d",
                "/e/<default(maxlength=1):x> e",
            ],
            &[
                ("GET", "/a/hello", "a"),
                ("GET", "/a/", "404"),
                ("GET", "/a/x/y", "404"),
                ("GET", "/b/fr", "b"),
                ("GET", "/b/fra", "404"),
                ("GET", "/c/ab", "404"),
                ("GET", "/c/abc", "c"),
                ("GET", "/c/abcd", "c"),
                ("GET", "/c/abcde", "404"),
                ("GET", "/d/a", "404"),
                ("GET", "/d/ab", "d"),
                ("GET", "/e/z", "e"),
                ("GET", "/e/zz", "404"),
            ],
        );
    }

    #[test]
    fn int_converter() {
        check(
            &[
                "/i/<int:x> plain",
                "/s/<int(signed=True):x> signed",
                "/f/<int(fixed_digits=3):x> fixed",
                "/p/<int(4):x> positional",
                "/r/<int(min=1,max=10):x> range",
            ],
            &[
                ("GET", "/i/42", "plain"),
                ("GET", "/i/-42", "404"),
                ("GET", "/i/4.2", "404"),
                (
                    "GET",
                    "/i/123456789012345678901234567890123456789012345",
                    "plain",
                ),
                ("GET", "/s/-42", "signed"),
                ("GET", "/s/42", "signed"),
                ("GET", "/f/007", "fixed"),
                ("GET", "/f/07", "404"),
                ("GET", "/p/0001", "positional"),
                ("GET", "/p/1", "404"),
                ("GET", "/r/0", "404"),
                ("GET", "/r/1", "range"),
                ("GET", "/r/010", "range"),
                ("GET", "/r/11", "404"),
                (
                    "GET",
                    "/r/99999999999999999999999999999999999999999999",
                    "404",
                ),
            ],
        );
    }

    #[test]
    fn float_uuid_any_path_converters() {
        check(
            &[
                "/f/<float:x> float",
                "/g/<float(signed=True,max=2.5):x> fmax",
                "/u/<uuid:x> uuid",
                r#"/any/<any(a,b,"c~d"):x> any"#,
                "/files/<path:p> path",
                "/wiki/<path:p>/edit wikiedit",
            ],
            &[
                ("GET", "/f/1.5", "float"),
                ("GET", "/f/1", "404"),
                ("GET", "/f/-1.5", "404"),
                ("GET", "/g/-1.5", "fmax"),
                ("GET", "/g/2.6", "404"),
                ("GET", "/u/123e4567-e89b-12d3-a456-426614174000", "uuid"),
                ("GET", "/u/123E4567-E89B-12D3-A456-426614174000", "uuid"),
                ("GET", "/u/123e4567e89b12d3a456426614174000", "404"),
                ("GET", "/any/a", "any"),
                ("GET", "/any/c%20d", "any"),
                ("GET", "/any/c", "404"),
                ("GET", "/files/a/b/c.txt", "path"),
                ("GET", "/files/", "404"),
                ("GET", "/wiki/Main/Page/edit", "wikiedit"),
            ],
        );
    }

    #[test]
    fn unknown_converters_match_like_default_and_are_counted() {
        let rules = routes(&[
            r#"/re/<regex("[a-z]+"):x> re"#,
            "/l/<list:ids> list",
            "/m/<list:a>/<list:b> two",
        ]);
        let m = Matcher::new(&rules, MapOptions::default()).expect("rules compile");
        assert_eq!(short(&m.route("GET", "/re/ABC", None)), "re");
        assert_eq!(short(&m.route("GET", "/l/1,2,3", None)), "list");
        assert_eq!(short(&m.route("GET", "/l/a/b", None)), "404");
        let counts: Vec<_> = m
            .unknown_converters()
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        assert_eq!(counts, [("list", 3), ("regex", 1)]);
    }

    #[test]
    fn priorities() {
        check(
            &[
                "/<path:p> catchall",
                "/users/<name> user",
                "/users/new new",
                "/n/<x> n_default",
                "/n/<int:x> n_int",
                "/x/<a>.json json",
                "/x/<a> x",
                "/v/<a>/<b> two",
                "/v/<a>/b static_tail",
            ],
            &[
                ("GET", "/users/new", "new"),
                ("GET", "/users/bob", "user"),
                ("GET", "/n/12", "n_int"),
                ("GET", "/n/ab", "n_default"),
                ("GET", "/x/a.json", "json"),
                ("GET", "/x/a", "x"),
                ("GET", "/v/a/b", "static_tail"),
                ("GET", "/v/a/c", "two"),
                ("GET", "/anything/else", "catchall"),
                ("GET", "/users", "catchall"),
            ],
        );
    }

    #[test]
    fn methods_head_options_and_405() {
        check(
            &[
                "/item get_item GET",
                "/item create_item POST",
                "/ro ro GET",
                "/any any_method",
            ],
            &[
                ("GET", "/item", "get_item"),
                ("post", "/item", "create_item"),
                ("HEAD", "/item", "get_item"),
                ("OPTIONS", "/item", "get_item"),
                ("DELETE", "/item", "405 GET,HEAD,OPTIONS,POST"),
                ("PUT", "/ro", "405 GET,HEAD,OPTIONS"),
                ("HEAD", "/any", "any_method"),
            ],
        );
        // Empty methods: any method (Werkzeug's `methods=None`).
        let m = Matcher::new(
            &[RouteInfo {
                rule: "/all".into(),
                endpoint: "all".into(),
                methods: vec![],
                strict_slashes: true,
                host: None,
                subdomain: None,
            }],
            MapOptions::default(),
        )
        .expect("rules compile");
        assert_eq!(short(&m.route("BREW", "/all", None)), "all");
    }

    #[test]
    fn strict_slashes_both_ways() {
        check(
            &[
                "/dir/ dir",
                "/file file",
                "/loose/! loose",
                "/lf! lf",
                "/files/<path:p>/ pdir",
            ],
            &[
                ("GET", "/dir/", "dir"),
                ("GET", "/dir", "308 dir"),
                ("POST", "/dir", "404"),
                ("GET", "/file", "file"),
                ("GET", "/file/", "404"),
                ("GET", "/loose/", "loose"),
                ("GET", "/loose", "loose"),
                ("GET", "/lf", "lf"),
                ("GET", "/lf/", "lf"),
                ("GET", "/files/a/b/", "pdir"),
                ("GET", "/files/a/b", "308 pdir"),
                ("GET", "/files/a//", "308 pdir"),
            ],
        );
    }

    #[test]
    fn merge_slashes_and_percent_decoding() {
        check(
            &["/a/b ab", "/a/<x> ax", "/sp/<x> sp"],
            &[
                ("GET", "//a/b", "ab"),
                ("GET", "/a//b", "308 ab"),
                ("GET", "/a/%62", "ab"),
                ("GET", "/a%2Fb", "ab"),
                ("GET", "/sp/hello%20world", "sp"),
                ("GET", "/sp/%C3%A9t%C3%A9", "sp"),
                ("GET", "/sp/%FF", "sp"),
                ("GET", "/a/b?q=1", "ab"),
                ("GET", "http://example.com/a/b", "ab"),
                ("GET", "HTTPS://example.com:8443/a/b?x", "ab"),
                ("GET", "http://example.com", "404"),
            ],
        );
        let no_merge = MapOptions {
            merge_slashes: false,
            ..MapOptions::default()
        };
        check_with(
            no_merge,
            &["/a/b ab"],
            &[("GET", "/a//b", "404"), ("GET", "/a/b", "ab")],
        );
    }

    #[test]
    fn blueprint_prefixes() {
        check(
            &[
                "/admin/ admin.index",
                "/admin/users/<int:id> admin.user",
                "/api/v1/items/<int:id> api.item GET",
                "/api/v1/items/<int:id> api.update PUT,PATCH",
                "/static/<path:filename> static",
            ],
            &[
                ("GET", "/admin/", "admin.index"),
                ("GET", "/admin", "308 admin.index"),
                ("GET", "/admin/users/3", "admin.user"),
                ("PATCH", "/api/v1/items/3", "api.update"),
                ("GET", "/api/v1/items/3", "api.item"),
                (
                    "DELETE",
                    "/api/v1/items/3",
                    "405 GET,HEAD,OPTIONS,PATCH,PUT",
                ),
                ("GET", "/static/css/site.css", "static"),
            ],
        );
    }

    #[test]
    fn host_matching() {
        let mk = |rule: &str, endpoint: &str, host: &str| RouteInfo {
            rule: rule.into(),
            endpoint: endpoint.into(),
            methods: vec!["GET".into()],
            strict_slashes: true,
            host: Some(host.into()),
            subdomain: None,
        };
        let m = Matcher::new(
            &[
                mk("/", "main", "example.com"),
                mk("/", "tenant", "<t>.example.com"),
                mk("/", "api", "api.example.com"),
            ],
            MapOptions {
                host_matching: true,
                ..MapOptions::default()
            },
        )
        .expect("rules compile");
        for (host, expect) in [
            (Some("example.com"), "main"),
            (Some("EXAMPLE.com:80"), "main"),
            (Some("api.example.com"), "api"),
            (Some("acme.example.com"), "tenant"),
            (Some("example.org"), "404"),
            (None, "404"),
        ] {
            assert_eq!(short(&m.route("GET", "/", host)), expect, "{host:?}");
        }
    }

    #[test]
    fn errors_on_rules_werkzeug_refuses() {
        for bad in [
            "nolead",
            "/a/<int(x=1):y>",
            "/a/<unclosed",
            "/a/<int(min='a'):y>",
        ] {
            assert!(
                Matcher::new(&routes(&[bad]), MapOptions::default()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn matcher_is_shareable_across_tasks() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Matcher>();
    }

    #[test]
    fn attribution_only_for_views() {
        let m = Matcher::new(&routes(&["/a/ a"]), MapOptions::default()).expect("rules compile");
        assert_eq!(
            m.route("GET", "/a/", None).attribution(),
            (Some("a".into()), Some("/a/".into()))
        );
        assert_eq!(m.route("GET", "/a", None).attribution(), (None, None));
        assert_eq!(m.route("GET", "/b", None).attribution(), (None, None));
    }

    #[test]
    fn thousand_rules() {
        let mut spec = Vec::new();
        for i in 0..250 {
            spec.push(format!("/svc{i}/items svc{i}.list"));
            spec.push(format!("/svc{i}/items/<int:id> svc{i}.get"));
            spec.push(format!("/svc{i}/items/<int:id> svc{i}.put PUT"));
            spec.push(format!("/svc{i}/items/<slug>/<path:rest> svc{i}.deep"));
        }
        let spec: Vec<&str> = spec.iter().map(String::as_str).collect();
        let m = Matcher::new(&routes(&spec), MapOptions::default()).expect("rules compile");
        for i in [0, 1, 137, 249] {
            assert_eq!(
                short(&m.route("GET", &format!("/svc{i}/items"), None)),
                format!("svc{i}.list")
            );
            assert_eq!(
                short(&m.route("GET", &format!("/svc{i}/items/7"), None)),
                format!("svc{i}.get")
            );
            assert_eq!(
                short(&m.route("PUT", &format!("/svc{i}/items/7"), None)),
                format!("svc{i}.put")
            );
            assert_eq!(
                short(&m.route("GET", &format!("/svc{i}/items/x/y/z"), None)),
                format!("svc{i}.deep")
            );
            assert_eq!(
                short(&m.route("DELETE", &format!("/svc{i}/items/7"), None)),
                "405 GET,HEAD,OPTIONS,PUT"
            );
        }
        assert_eq!(short(&m.route("GET", "/svc250/items", None)), "404");
        assert_eq!(m.rule_count(), 1_000);
    }

    #[derive(Deserialize)]
    struct Fixture {
        werkzeug: String,
        tables: Vec<Table>,
    }

    #[derive(Deserialize)]
    struct Table {
        name: String,
        options: MapOptions,
        routes: Vec<RouteInfo>,
        cases: Vec<Case>,
    }

    #[derive(Deserialize)]
    struct Case {
        method: String,
        path: String,
        host: Option<String>,
        expect: Expect,
    }

    /// Werkzeug's answer; a redirect whose target Werkzeug could not match again has no endpoint.
    #[derive(Deserialize)]
    struct Expect {
        kind: String,
        endpoint: Option<String>,
        rule: Option<String>,
        allowed: Option<Vec<String>>,
    }

    fn agrees(expect: &Expect, got: &Match) -> bool {
        match (expect.kind.as_str(), got) {
            ("endpoint", Match::Endpoint { endpoint, rule }) => {
                expect.endpoint.as_ref() == Some(endpoint) && expect.rule.as_ref() == Some(rule)
            }
            ("redirect_slash", Match::RedirectSlash { endpoint, rule }) => {
                expect.endpoint.is_none()
                    || expect.endpoint.as_ref() == Some(endpoint)
                        && expect.rule.as_ref() == Some(rule)
            }
            ("method_not_allowed", Match::MethodNotAllowed { allowed }) => {
                expect.allowed.as_ref() == Some(allowed)
            }
            ("not_found", Match::NotFound) => true,
            _ => false,
        }
    }

    /// Replays requests answered by Werkzeug itself (tests/fixtures/gen_werkzeug_match.py): every one
    /// must get the same answer.
    #[test]
    fn werkzeug_differential() {
        let fixture: Fixture =
            serde_json::from_str(include_str!("../../tests/fixtures/werkzeug_match.json"))
                .expect("fixture parses");
        let mut total = 0;
        let mut failures = Vec::new();
        for table in &fixture.tables {
            let m = Matcher::new(&table.routes, table.options.clone())
                .unwrap_or_else(|e| panic!("table {}: {e}", table.name));
            for case in &table.cases {
                total += 1;
                let got = m.route(&case.method, &case.path, case.host.as_deref());
                if !agrees(&case.expect, &got) {
                    failures.push(format!(
                        "{}: {} {} host={:?}: werkzeug {} {:?} {:?} {:?}, fmd {got:?}",
                        table.name,
                        case.method,
                        case.path,
                        case.host,
                        case.expect.kind,
                        case.expect.endpoint,
                        case.expect.rule,
                        case.expect.allowed
                    ));
                }
            }
        }
        assert!(total > 4_000, "fixture too small: {total} cases");
        assert!(
            failures.is_empty(),
            "{} of {total} cases disagree with werkzeug {}:\n{}",
            failures.len(),
            fixture.werkzeug,
            failures
                .iter()
                .take(40)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
