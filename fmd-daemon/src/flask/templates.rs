//! Fallback attribution when the app's route table cannot be read: raw paths are grouped into templates
//! (`/users/<int>/posts`) so per-route statistics stay meaningful, and their number stays bounded whatever
//! the traffic (ids, tokens, scanners probing random paths).

use std::collections::HashMap;

/// Above this many trie nodes no new literal is learnt anywhere: memory stays bounded even when every
/// prefix is below its own cap.
pub const MAX_NODES: usize = 50_000;
/// Segments past this depth collapse into one `<*>`.
pub const MAX_DEPTH: usize = 16;
/// A literal segment longer than this is not worth keeping verbatim.
const MAX_LITERAL_LEN: usize = 64;

/// Learns templates from the paths it is shown. One per app; not thread-safe by itself (`&mut self`).
#[derive(Debug)]
pub struct Templater {
    max_cardinality: usize,
    root: Node,
    nodes: usize,
}

/// One prefix of the template trie; children keyed by the next template segment.
#[derive(Debug, Default)]
struct Node {
    children: HashMap<String, Node>,
    /// How many distinct literal (non-placeholder) segments were learnt under this prefix.
    literals: usize,
}

impl Templater {
    /// `max_cardinality`: how many distinct literal segments one position under one prefix may hold
    /// before further new ones become `<*>`.
    pub fn new(max_cardinality: usize) -> Self {
        Self {
            max_cardinality,
            root: Node::default(),
            nodes: 0,
        }
    }

    /// The template for `path` (percent-encoded request path; a query string is ignored).
    pub fn template(&mut self, path: &str) -> String {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        let rest = path.strip_prefix('/').unwrap_or(path);
        let Self {
            max_cardinality,
            root,
            nodes,
        } = self;
        let mut out = String::with_capacity(path.len() + 8);
        let mut node = root;
        for (depth, seg) in rest.split('/').enumerate() {
            out.push('/');
            if depth >= MAX_DEPTH {
                out.push_str("<*>");
                break;
            }
            let key = match placeholder(seg) {
                Some(p) => p,
                None if node.children.contains_key(seg) => seg,
                None if node.literals >= *max_cardinality || *nodes >= MAX_NODES => "<*>",
                None => {
                    node.literals += 1;
                    seg
                }
            };
            out.push_str(key);
            if !node.children.contains_key(key) {
                if *nodes >= MAX_NODES {
                    // Placeholders are not learnt either once full; the rest of the path still templates
                    // segment by segment, without a node to remember it.
                    for seg in rest
                        .split('/')
                        .skip(depth + 1)
                        .take(MAX_DEPTH.saturating_sub(depth + 1))
                    {
                        out.push('/');
                        out.push_str(placeholder(seg).unwrap_or("<*>"));
                    }
                    return out;
                }
                *nodes += 1;
            }
            node = node.children.entry(key.to_owned()).or_default();
        }
        out
    }

    /// Trie nodes held, for metrics.
    pub fn nodes(&self) -> usize {
        self.nodes
    }
}

/// The placeholder a segment stands for, if it looks like an identifier rather than a route word.
fn placeholder(seg: &str) -> Option<&'static str> {
    if seg.is_empty() {
        return None;
    }
    let b = seg.as_bytes();
    if b.iter().all(u8::is_ascii_digit) {
        return Some("<int>");
    }
    if is_uuid(b) {
        return Some("<uuid>");
    }
    if is_date(b) {
        return Some("<date>");
    }
    let has_digit = b.iter().any(u8::is_ascii_digit);
    if b.len() >= 8 && has_digit && b.iter().all(u8::is_ascii_hexdigit) {
        return Some("<hex>");
    }
    if b.len() >= 16 && has_digit && is_token(b) {
        return Some("<token>");
    }
    if b.len() > MAX_LITERAL_LEN {
        return Some("<*>");
    }
    None
}

/// `8-4-4-4-12` hex digits.
fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// `YYYY-MM-DD`.
fn is_date(b: &[u8]) -> bool {
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

/// Random-looking: only `[A-Za-z0-9_-]`, with letters and digits alternating at least twice (a slug
/// such as `release-notes-2024` switches once).
fn is_token(b: &[u8]) -> bool {
    if !b
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
    {
        return false;
    }
    let mut switches = 0;
    let mut last_digit: Option<bool> = None;
    for c in b.iter().filter(|c| c.is_ascii_alphanumeric()) {
        let digit = c.is_ascii_digit();
        if last_digit.is_some_and(|d| d != digit) {
            switches += 1;
        }
        last_digit = Some(digit);
    }
    switches >= 2
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// Feeds `paths` in order to a fresh templater and compares each template.
    fn check(max_cardinality: usize, cases: &[(&str, &str)]) {
        let mut t = Templater::new(max_cardinality);
        for (path, expect) in cases {
            assert_eq!(t.template(path), *expect, "path {path:?}");
        }
    }

    #[test]
    fn placeholders() {
        check(
            100,
            &[
                ("/", "/"),
                ("", "/"),
                ("/users/42", "/users/<int>"),
                ("/users/42/", "/users/<int>/"),
                ("/users/42?x=1", "/users/<int>"),
                (
                    "/o/123e4567-e89b-12d3-a456-426614174000/edit",
                    "/o/<uuid>/edit",
                ),
                ("/o/123E4567-E89B-12D3-A456-426614174000", "/o/<uuid>"),
                ("/commit/deadbeef12", "/commit/<hex>"),
                ("/commit/deadbeef", "/commit/deadbeef"),
                ("/c/abc123", "/c/abc123"),
                ("/reset/aB3xK9mPq2LzR8vT4nW", "/reset/<token>"),
                ("/blog/release-notes-2024", "/blog/release-notes-2024"),
                ("/archive/2024-05-17", "/archive/<date>"),
                ("/static/app.min.js", "/static/app.min.js"),
                (&format!("/x/{}", "a".repeat(65)), "/x/<*>"),
            ],
        );
    }

    #[test]
    fn cardinality_cap_per_prefix() {
        check(
            2,
            &[
                ("/a/x", "/a/x"),
                ("/a/y", "/a/y"),
                ("/a/z", "/a/<*>"),
                ("/a/x", "/a/x"),
                ("/a/1", "/a/<int>"),
                ("/b/z", "/b/z"),
                ("/c", "/<*>"),
                ("/c/q", "/<*>/q"),
                ("/a/z/deeper", "/a/<*>/deeper"),
            ],
        );
    }

    #[test]
    fn depth_is_capped() {
        let deep = "/s".repeat(40);
        let expect = format!("{}/<*>", "/s".repeat(MAX_DEPTH));
        check(10, &[(&deep, &expect)]);
    }

    /// xorshift: deterministic pseudo-random words without a dependency.
    fn words(seed: &mut u64, n: usize) -> String {
        (0..n)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                let len = 3 + (*seed % 8) as usize;
                (0..len)
                    .map(|i| char::from(b'a' + ((*seed >> (i * 5)) % 26) as u8))
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    #[test]
    fn random_traffic_stays_bounded() {
        let max = 20;
        let mut t = Templater::new(max);
        let mut seed = 0x9e37_79b9_7f4a_7c15;
        let mut seen = HashSet::new();
        for i in 0..100_000 {
            let path = format!("/{}", words(&mut seed, 1 + i % 4));
            seen.insert(t.template(&path));
        }
        // Each level holds at most `max` literals plus `<*>`: (max + 1) + (max + 1)^2 + ... for 4 levels.
        let bound: usize = (1..=4).map(|d| (max + 1).pow(d)).sum();
        assert!(seen.len() <= bound, "{} templates", seen.len());
        assert!(t.nodes() <= MAX_NODES);
        // The cap really bites: random words would otherwise give ~100,000 templates.
        assert!(seen.len() < 10_000, "{} templates", seen.len());
    }

    #[test]
    fn node_cap_holds_under_adversarial_prefixes() {
        let mut t = Templater::new(usize::MAX);
        for i in 0..(MAX_NODES + 1_000) {
            let tpl = t.template(&format!("/w{i}x"));
            if i >= MAX_NODES {
                assert_eq!(tpl, "/<*>");
            }
        }
        assert!(t.nodes() <= MAX_NODES + 1);
    }
}
