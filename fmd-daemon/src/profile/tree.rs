//! FMD's profile views, computed from stored per-request stacks: one request's execution tree (each node a
//! code line with its time and share of the request) and an endpoint's merged profile over its last N
//! requests (per code line hits, average, standard deviation and total, as a tree and a flat table), plus
//! folded stacks for flame-graph tools. Pure functions over (stack, weight) rows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One stack of one request as stored: frames outermost first (store ids), its weight and sample count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackWeight {
    /// Index of the request in the list given to [`grouped`] (0 for a single request).
    pub request: usize,
    pub frames: Vec<i64>,
    pub weight_ns: u64,
    pub samples: u64,
}

/// A node of an execution tree: one code line reached through its ancestors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub frame: i64,
    /// Samples whose stack passes through this node.
    pub hits: u64,
    /// Time under this node: in one request, or the total over the merged requests.
    pub time_ms: f64,
    /// `time_ms` over the request's duration (or the merged requests' total duration).
    pub share: f64,
    /// Merged profiles only: mean and standard deviation of the per-request time (absent = 0 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std_ms: Option<f64>,
    pub children: Vec<Node>,
}

/// Builds the tree of merged stacks; `per_request` adds mean/std over `n_requests`.
fn build(stacks: &[StackWeight], total_ns: u64, n_requests: Option<usize>) -> Vec<Node> {
    #[derive(Default)]
    struct Acc {
        hits: u64,
        per_request: BTreeMap<usize, u64>,
        children: BTreeMap<i64, Acc>,
    }
    let mut root = Acc::default();
    for s in stacks {
        let mut at = &mut root;
        for &f in &s.frames {
            at = at.children.entry(f).or_default();
            at.hits += s.samples;
            *at.per_request.entry(s.request).or_default() += s.weight_ns;
        }
    }
    fn emit(frame: i64, acc: &Acc, total_ns: u64, n: Option<usize>) -> Node {
        let time_ns: u64 = acc.per_request.values().sum();
        let (avg_ms, std_ms) = match n {
            Some(n) if n > 0 => {
                let (mean, std) = mean_std(acc.per_request.values().map(|&v| ns_to_ms(v)), n);
                (Some(mean), Some(std))
            }
            _ => (None, None),
        };
        let mut children: Vec<Node> = acc
            .children
            .iter()
            .map(|(f, a)| emit(*f, a, total_ns, n))
            .collect();
        children.sort_by(|a, b| b.time_ms.total_cmp(&a.time_ms).then(a.frame.cmp(&b.frame)));
        Node {
            frame,
            hits: acc.hits,
            time_ms: ns_to_ms(time_ns),
            share: if total_ns == 0 {
                0.0
            } else {
                time_ns as f64 / total_ns as f64
            },
            avg_ms,
            std_ms,
            children,
        }
    }
    let mut out: Vec<Node> = root
        .children
        .iter()
        .map(|(f, a)| emit(*f, a, total_ns, n_requests))
        .collect();
    out.sort_by(|a, b| b.time_ms.total_cmp(&a.time_ms).then(a.frame.cmp(&b.frame)));
    out
}

fn ns_to_ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Mean and population standard deviation of `values` padded with zeros up to `n` entries.
fn mean_std(values: impl Iterator<Item = f64>, n: usize) -> (f64, f64) {
    let values: Vec<f64> = values.collect();
    let n = n.max(values.len()) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let zeros = n - values.len() as f64;
    let var = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() + zeros * mean * mean) / n;
    (mean, var.sqrt())
}

/// A tree node in pre-order with its depth and parent (an index into the same list), so that deep stacks
/// (recursion) need no deep nesting in JSON: serde_json and browsers stop at about 128 levels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TreeNode {
    pub parent: Option<usize>,
    pub depth: usize,
    pub frame: i64,
    pub hits: u64,
    pub time_ms: f64,
    pub share: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std_ms: Option<f64>,
}

/// The nested tree as a pre-order list (iterative: a tree may be as deep as the sampler's stacks).
pub fn flatten(nodes: &[Node]) -> Vec<TreeNode> {
    let mut out = Vec::new();
    let mut todo: Vec<(&Node, Option<usize>, usize)> =
        nodes.iter().rev().map(|n| (n, None, 0)).collect();
    while let Some((n, parent, depth)) = todo.pop() {
        let at = out.len();
        out.push(TreeNode {
            parent,
            depth,
            frame: n.frame,
            hits: n.hits,
            time_ms: n.time_ms,
            share: n.share,
            avg_ms: n.avg_ms,
            std_ms: n.std_ms,
        });
        todo.extend(n.children.iter().rev().map(|c| (c, Some(at), depth + 1)));
    }
    out
}

/// What shares are taken of: each request's duration, or the weight of its samples when that is more (a
/// sample's weight runs to the sampler's next tick, or to the end of a wait, which can pass the request's
/// end), so that no node shows more than 100% and siblings never add up to more than their parent.
fn share_base(stacks: &[StackWeight], durations: &[u64]) -> u64 {
    let mut weights = vec![0u64; durations.len()];
    for s in stacks {
        if let Some(w) = weights.get_mut(s.request) {
            *w = w.saturating_add(s.weight_ns);
        }
    }
    durations
        .iter()
        .zip(&weights)
        .map(|(&d, &w)| d.max(w))
        .fold(0u64, u64::saturating_add)
}

/// One request's execution tree, in pre-order.
pub fn request_tree(stacks: &[StackWeight], duration_ns: u64) -> Vec<TreeNode> {
    flatten(&build(stacks, share_base(stacks, &[duration_ns]), None))
}

/// One row of a merged profile's flat table: a code line wherever it appears in the stacks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupedLine {
    pub frame: i64,
    /// Samples with this line on their stack (counted once per sample).
    pub hits: u64,
    pub total_ms: f64,
    /// Mean and standard deviation of its per-request time over the merged requests (absent = 0 ms).
    pub avg_ms: f64,
    pub std_ms: f64,
    /// `total_ms` over the merged requests' total duration.
    pub share: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupedProfile {
    pub requests: usize,
    pub total_ms: f64,
    /// In pre-order.
    pub tree: Vec<TreeNode>,
    pub lines: Vec<GroupedLine>,
}

/// The merged profile of `durations.len()` requests (`StackWeight::request` indexes `durations`).
pub fn grouped(stacks: &[StackWeight], durations: &[u64]) -> GroupedProfile {
    let total_ns: u64 = durations.iter().sum();
    let base_ns = share_base(stacks, durations);
    let n = durations.len();
    let mut lines: BTreeMap<i64, (u64, BTreeMap<usize, u64>)> = BTreeMap::new();
    for s in stacks {
        let mut seen: Vec<i64> = s.frames.clone();
        seen.sort_unstable();
        seen.dedup();
        for f in seen {
            let e = lines.entry(f).or_default();
            e.0 += s.samples;
            *e.1.entry(s.request).or_default() += s.weight_ns;
        }
    }
    let mut lines: Vec<GroupedLine> = lines
        .into_iter()
        .map(|(frame, (hits, per))| {
            let total: u64 = per.values().sum();
            let (avg_ms, std_ms) = mean_std(per.values().map(|&v| ns_to_ms(v)), n);
            GroupedLine {
                frame,
                hits,
                total_ms: ns_to_ms(total),
                avg_ms,
                std_ms,
                share: if base_ns == 0 {
                    0.0
                } else {
                    total as f64 / base_ns as f64
                },
            }
        })
        .collect();
    lines.sort_by(|a, b| {
        b.total_ms
            .total_cmp(&a.total_ms)
            .then(a.frame.cmp(&b.frame))
    });
    GroupedProfile {
        requests: n,
        total_ms: ns_to_ms(total_ns),
        tree: flatten(&build(stacks, base_ns, Some(n))),
        lines,
    }
}

/// Folded stacks (`a;b;c weight`), the input of flamegraph.pl, inferno and speedscope; weights in µs.
pub fn folded(stacks: &[StackWeight], label: impl Fn(i64) -> String) -> String {
    let mut merged: BTreeMap<String, u64> = BTreeMap::new();
    for s in stacks {
        let key = s
            .frames
            .iter()
            .map(|&f| label(f).replace(';', ":"))
            .collect::<Vec<_>>()
            .join(";");
        *merged.entry(key).or_default() += s.weight_ns / 1000;
    }
    merged
        .into_iter()
        .filter(|(_, w)| *w > 0)
        .map(|(k, w)| format!("{k} {w}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sw(request: usize, frames: &[i64], ms: u64, samples: u64) -> StackWeight {
        StackWeight {
            request,
            frames: frames.to_vec(),
            weight_ns: ms * 1_000_000,
            samples,
        }
    }

    /// The tree as (depth, frame, hits, time ms, share %) rows; parents must point at the right rows.
    fn check_tree(
        stacks: &[StackWeight],
        duration_ms: u64,
        expect: &[(usize, i64, u64, u64, u64)],
    ) {
        let tree = request_tree(stacks, duration_ms * 1_000_000);
        for (i, n) in tree.iter().enumerate() {
            match n.parent {
                None => assert_eq!(n.depth, 0),
                Some(p) => assert!(p < i && tree[p].depth + 1 == n.depth, "{tree:?}"),
            }
        }
        let got: Vec<_> = tree
            .iter()
            .map(|n| {
                (
                    n.depth,
                    n.frame,
                    n.hits,
                    n.time_ms.round() as u64,
                    (n.share * 100.0).round() as u64,
                )
            })
            .collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn request_trees() {
        // view (1) calls a (2) for 60 ms and b (3) for 30 ms, and runs its own line for 10 ms.
        check_tree(
            &[
                sw(0, &[1, 2], 60, 6),
                sw(0, &[1, 3], 30, 1),
                sw(0, &[1], 10, 1),
            ],
            100,
            &[(0, 1, 8, 100, 100), (1, 2, 6, 60, 60), (1, 3, 1, 30, 30)],
        );
        // Recursion: the same frame id at two depths is two nodes.
        check_tree(
            &[sw(0, &[5, 5, 5], 20, 2)],
            40,
            &[(0, 5, 2, 20, 50), (1, 5, 2, 20, 50), (2, 5, 2, 20, 50)],
        );
        check_tree(&[], 40, &[]);
        // Deeper than any JSON parser nests: a flat list.
        let deep: Vec<i64> = (0..1000).collect();
        assert_eq!(request_tree(&[sw(0, &deep, 1, 1)], 1).len(), 1000);
    }

    #[test]
    fn shares_never_pass_100_percent() {
        // Samples weighing 150 ms in a 100 ms request (the last tick ran past its end).
        check_tree(
            &[sw(0, &[1, 2], 90, 9), sw(0, &[1, 3], 60, 6)],
            100,
            &[(0, 1, 15, 150, 100), (1, 2, 9, 90, 60), (1, 3, 6, 60, 40)],
        );
        // Merged: one request over its duration, one under it.
        let g = grouped(
            &[sw(0, &[1], 150, 15), sw(1, &[1], 50, 5)],
            &[100_000_000, 100_000_000],
        );
        assert_eq!(g.total_ms.round() as u64, 200);
        let shares: Vec<u64> = g
            .tree
            .iter()
            .map(|n| (n.share * 100.0).round() as u64)
            .collect();
        assert_eq!(shares, [80]);
        assert!(g.lines.iter().all(|l| l.share <= 1.0), "{:?}", g.lines);
    }

    #[test]
    fn grouped_lines_average_over_all_requests() {
        // Three requests of 100 ms; line 2 takes 60, 30 and 0 ms.
        let g = grouped(
            &[
                sw(0, &[1, 2], 60, 6),
                sw(1, &[1, 2], 30, 3),
                sw(2, &[1, 4], 100, 10),
            ],
            &[100_000_000; 3],
        );
        let line2 = g.lines.iter().find(|l| l.frame == 2).expect("line 2");
        assert_eq!((line2.hits, line2.total_ms.round() as u64), (9, 90));
        assert!((line2.avg_ms - 30.0).abs() < 1e-9);
        assert!(
            (line2.std_ms - (600.0f64).sqrt()).abs() < 1e-9,
            "{}",
            line2.std_ms
        );
        assert!((line2.share - 0.3).abs() < 1e-9);
        let line1 = g.lines.iter().find(|l| l.frame == 1).expect("line 1");
        assert_eq!(
            (line1.hits, line1.total_ms.round() as u64, line1.std_ms),
            (19, 190, line1.std_ms)
        );
        assert_eq!(
            g.tree
                .iter()
                .map(|n| (n.depth, n.frame))
                .collect::<Vec<_>>(),
            vec![(0, 1), (1, 4), (1, 2)]
        );
        assert_eq!(g.requests, 3);
    }

    #[test]
    fn folded_output() {
        let text = folded(
            &[
                sw(0, &[1, 2], 3, 1),
                sw(1, &[1, 2], 1, 1),
                sw(0, &[1], 2, 1),
            ],
            |f| format!("f{f};x"),
        );
        assert_eq!(text, "f1:x 2000\nf1:x;f2:x 4000\n");
    }
}
