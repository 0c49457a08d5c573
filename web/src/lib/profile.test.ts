import { describe, expect, it } from "vitest";
import { layout, nested, sandwich, search, type Profile, type TreeNode } from "./profile";

// main(10) -> a(6) -> c(4) ; main -> b(4) -> c(3) -> c(1, recursive)
const node = (parent: number | null, depth: number, frame: number, time_ms: number): TreeNode => ({
  parent,
  depth,
  frame,
  hits: 1,
  time_ms,
  share: time_ms / 10,
});
const tree: TreeNode[] = [
  node(null, 0, 1, 10),
  node(0, 1, 2, 6),
  node(1, 2, 4, 4),
  node(0, 1, 3, 4),
  node(3, 2, 4, 3),
  node(4, 3, 4, 1),
];
const frames = [1, 2, 3, 4].map((id) => ({
  id,
  file: `/app/m${id}.py`,
  line: id * 10,
  function: ["main", "a", "b", "c"][id - 1] as string,
  first_line: 1,
  source: id === 4 ? "time.sleep(0.1)" : null,
}));
const profile: Profile = { frames, tree };

describe("flame graph layout", () => {
  it("splits each parent's width by its children's time", () => {
    const rects = layout(tree);
    const at = (i: number) => rects.find((r) => r.node === i);
    expect(at(0)).toMatchObject({ x0: 0, x1: 1, depth: 0 });
    expect(at(1)?.x1).toBeCloseTo(0.6);
    expect(at(3)?.x0).toBeCloseTo(0.6);
    expect(at(2)?.x1).toBeCloseTo(0.4);
    expect(rects).toHaveLength(6);
  });
  it("zooms on a node with its ancestors full width", () => {
    const rects = layout(tree, 3);
    expect(rects.map((r) => r.node).sort()).toEqual([0, 3, 4, 5]);
    expect(rects.find((r) => r.node === 3)).toMatchObject({ x0: 0, x1: 1 });
    expect(rects.find((r) => r.node === 4)?.x1).toBeCloseTo(0.75);
  });
});

describe("sandwich", () => {
  it("merges callers and callees, counting recursion once", () => {
    const { callers, callees } = sandwich(tree, 4);
    expect(callees[0]).toMatchObject({ frame: 4, time_ms: 7 });
    expect(callees).toHaveLength(2); // c and its recursive call
    expect(callers[0]).toMatchObject({ frame: 4, time_ms: 7 });
    const direct = callers.filter((n) => n.depth === 1).map((n) => [n.frame, n.time_ms]);
    expect(direct).toEqual([
      [2, 4],
      [3, 3],
    ]);
    expect(callers.filter((n) => n.depth === 2).every((n) => n.frame === 1)).toBe(true);
  });
});

describe("search and sunburst", () => {
  it("finds frames by function, file and source", () => {
    expect([...search(profile, "sleep")].sort()).toEqual([2, 4, 5]);
    expect([...search(profile, "m2.py")]).toEqual([1]);
    expect(search(profile, " ").size).toBe(0);
  });
  it("nests the tree for the sunburst", () => {
    const data = nested(profile);
    expect(data).toHaveLength(1);
    expect(data[0]?.children).toHaveLength(2);
    expect(data[0]?.value).toBe(10);
  });
});
