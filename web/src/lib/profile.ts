// Profiles as the API sends them (a pre-order tree with parent indexes over a frame table) and the pure
// transforms the views draw from them: flame-graph layout, sandwich (callers/callees of one line),
// search, and the nested form the sunburst wants.

export interface FrameInfo {
  id: number;
  file: string;
  line: number;
  function: string;
  first_line: number;
  source: string | null;
}

export interface TreeNode {
  parent: number | null;
  depth: number;
  frame: number;
  hits: number;
  time_ms: number;
  share: number;
  avg_ms?: number | null;
  std_ms?: number | null;
}

export interface Profile {
  frames: FrameInfo[];
  tree: TreeNode[];
}

export interface Rect {
  node: number;
  depth: number;
  /** Share of the width, 0 to 1. */
  x0: number;
  x1: number;
}

export function frameLabel(frame: FrameInfo | undefined): string {
  if (!frame) return "<unknown>";
  const file = frame.file.split("/").slice(-2).join("/");
  return `${frame.function} (${file}:${frame.line})`;
}

/** Children of every node, from the parent indexes. */
export function childrenOf(tree: TreeNode[]): number[][] {
  const children: number[][] = tree.map(() => []);
  tree.forEach((n, i) => {
    if (n.parent !== null && n.parent !== undefined) children[n.parent]?.push(i);
  });
  return children;
}

/**
 * The flame graph's rectangles with `focus` spanning the whole width (its ancestors too, as in every
 * flame graph's zoom); `focus` null shows all roots side by side.
 */
export function layout(tree: TreeNode[], focus: number | null = null): Rect[] {
  const children = childrenOf(tree);
  const rects: Rect[] = [];
  const place = (node: number, x0: number, x1: number) => {
    const n = tree[node];
    if (!n) return;
    rects.push({ node, depth: n.depth, x0, x1 });
    const kids = children[node] ?? [];
    const total = n.time_ms > 0 ? n.time_ms : kids.reduce((s, k) => s + (tree[k]?.time_ms ?? 0), 0);
    let x = x0;
    for (const k of kids) {
      const w = total > 0 ? ((tree[k]?.time_ms ?? 0) / total) * (x1 - x0) : 0;
      place(k, x, x + w);
      x += w;
    }
  };
  if (focus !== null && tree[focus]) {
    let up = tree[focus].parent;
    for (let n = up === null ? undefined : tree[up]; up !== null && n; n = up === null ? undefined : tree[up]) {
      rects.push({ node: up, depth: n.depth, x0: 0, x1: 1 });
      up = n.parent;
    }
    place(focus, 0, 1);
    return rects;
  }
  const roots = tree.map((n, i) => (n.parent === null || n.parent === undefined ? i : -1)).filter((i) => i >= 0);
  const total = roots.reduce((s, r) => s + (tree[r]?.time_ms ?? 0), 0);
  let x = 0;
  for (const r of roots) {
    const w = total > 0 ? (tree[r]?.time_ms ?? 0) / total : 1 / roots.length;
    place(r, x, x + w);
    x += w;
  }
  return rects;
}

/** Nodes whose frame matches `query` (function, file or source text; case-insensitive). */
export function search(profile: Profile, query: string): Set<number> {
  const q = query.trim().toLowerCase();
  const hits = new Set<number>();
  if (!q) return hits;
  const byId = new Map(profile.frames.map((f) => [f.id, f]));
  profile.tree.forEach((n, i) => {
    const f = byId.get(n.frame);
    const text = f ? `${f.function} ${f.file}:${f.line} ${f.source ?? ""}`.toLowerCase() : "";
    if (text.includes(q)) hits.add(i);
  });
  return hits;
}

interface Builder {
  frame: number;
  time_ms: number;
  hits: number;
  children: Map<number, Builder>;
}

function flatten(root: Builder, total: number): TreeNode[] {
  const out: TreeNode[] = [];
  const walk = (b: Builder, parent: number | null, depth: number) => {
    const index = out.length;
    out.push({ parent, depth, frame: b.frame, hits: b.hits, time_ms: b.time_ms, share: total > 0 ? b.time_ms / total : 0 });
    [...b.children.values()].sort((a, c) => c.time_ms - a.time_ms).forEach((c) => walk(c, index, depth + 1));
  };
  walk(root, null, 0);
  return out;
}

function add(into: Map<number, Builder>, frame: number, time_ms: number, hits: number): Builder {
  let b = into.get(frame);
  if (!b) {
    b = { frame, time_ms: 0, hits: 0, children: new Map() };
    into.set(frame, b);
  }
  b.time_ms += time_ms;
  b.hits += hits;
  return b;
}

/**
 * The sandwich view of one code line: its callers (an inverted tree rooted at the line, its callers
 * below it) and its callees (every call of the line merged). Recursive calls count once, at the
 * outermost occurrence, so times never exceed the profile's.
 */
export function sandwich(tree: TreeNode[], frame: number): { callers: TreeNode[]; callees: TreeNode[] } {
  const children = childrenOf(tree);
  const outermost: number[] = [];
  tree.forEach((n, i) => {
    if (n.frame !== frame) return;
    let up = n.parent;
    while (up !== null && up !== undefined) {
      if (tree[up]?.frame === frame) return;
      up = tree[up]?.parent ?? null;
    }
    outermost.push(i);
  });
  const calleeRoot: Builder = { frame, time_ms: 0, hits: 0, children: new Map() };
  const callerRoot: Builder = { frame, time_ms: 0, hits: 0, children: new Map() };
  const merge = (into: Builder, node: number) => {
    for (const k of children[node] ?? []) {
      const n = tree[k];
      if (!n) continue;
      merge(add(into.children, n.frame, n.time_ms, n.hits), k);
    }
  };
  for (const i of outermost) {
    const n = tree[i];
    if (!n) continue;
    calleeRoot.time_ms += n.time_ms;
    calleeRoot.hits += n.hits;
    callerRoot.time_ms += n.time_ms;
    callerRoot.hits += n.hits;
    merge(calleeRoot, i);
    let at = callerRoot;
    let up = n.parent;
    for (let caller = up === null ? undefined : tree[up]; up !== null && caller; caller = up === null ? undefined : tree[up]) {
      at = add(at.children, caller.frame, n.time_ms, n.hits);
      up = caller.parent;
    }
  }
  const total = calleeRoot.time_ms;
  return { callers: flatten(callerRoot, total), callees: flatten(calleeRoot, total) };
}

export interface SunburstDatum {
  name: string;
  value: number;
  children?: SunburstDatum[];
}

/** The nested {name, value, children} form of ECharts' sunburst, nodes under `minShare` dropped. */
export function nested(profile: Profile, minShare = 0.002): SunburstDatum[] {
  const byId = new Map(profile.frames.map((f) => [f.id, f]));
  const children = childrenOf(profile.tree);
  const total = profile.tree.reduce((s, n) => s + (n.parent === null ? n.time_ms : 0), 0);
  const build = (i: number): SunburstDatum | null => {
    const n = profile.tree[i];
    if (!n || (total > 0 && n.time_ms / total < minShare)) return null;
    const kids = (children[i] ?? []).map(build).filter((d): d is SunburstDatum => d !== null);
    const datum: SunburstDatum = { name: frameLabel(byId.get(n.frame)), value: n.time_ms };
    if (kids.length) datum.children = kids;
    return datum;
  };
  return profile.tree
    .map((n, i) => (n.parent === null ? build(i) : null))
    .filter((d): d is SunburstDatum => d !== null);
}
