import { describe, expect, it } from "vitest";
import { boxes, daily, heatmap, versions } from "./charts";
import { measure } from "./echarts";

describe("chart options", () => {
  it("draw one heatmap cell per (day, hour) with requests", () => {
    const opt = heatmap([
      { day: "2026-11-30", hour: 23, hits: 5 },
      { day: "2026-12-01", hour: 0, hits: 2 },
    ]);
    expect(measure(opt)).toEqual({ series: 1, points: 2 });
    const s = (opt.series as { data: number[][] }[])[0];
    expect(s?.data[1]).toEqual([0, 1, 2]);
  });
  it("stack one bar series per endpoint", () => {
    const opt = daily({ days: ["d1", "d2"], series: [{ endpoint: "a", hits: [1, 2] }, { endpoint: "b", hits: [0, 3] }] });
    expect(measure(opt)).toEqual({ series: 2, points: 4 });
  });
  it("put version shares in percent", () => {
    const opt = versions({ column: "version", versions: ["1", "2"], rows: [{ endpoint: "a", hits: [1, 3] }] });
    expect((opt.series as { data: number[][] }[])[0]?.data).toEqual([
      [0, 0, 25],
      [1, 0, 75],
    ]);
  });
  it("draw one box per key", () => {
    const b = { key: "a", hits: 3, min_ms: 1, p25_ms: 2, median_ms: 3, p75_ms: 4, p90_ms: 5, p99_ms: 6, max_ms: 7 };
    expect(measure(boxes([b, { ...b, key: "b" }], "x"))).toEqual({ series: 1, points: 2 });
  });
});
