import { describe, expect, it } from "vitest";
import { absolute, bounds, label, resolve, shift, zoomOut } from "./timerange";

const NOW = Date.parse("2026-12-01T12:00:00Z");

describe("time ranges", () => {
  it("resolves relative and absolute expressions", () => {
    expect(resolve("now", NOW)).toBe(NOW);
    expect(resolve("now-15m", NOW)).toBe(NOW - 15 * 60_000);
    expect(resolve("now-2d", NOW)).toBe(NOW - 2 * 86_400_000);
    expect(resolve("2026-12-01T10:00:00Z", NOW)).toBe(Date.parse("2026-12-01T10:00:00Z"));
    expect(resolve("yesterday", NOW)).toBeNull();
    expect(resolve("now-5x", NOW)).toBeNull();
  });

  it("falls back to the default range and orders the bounds", () => {
    expect(bounds({ from: "garbage", to: "now" }, NOW)).toEqual([NOW - 86_400_000, NOW]);
    expect(bounds({ from: "now", to: "now-1h" }, NOW)).toEqual([NOW - 3_600_000, NOW]);
  });

  it("shifts and zooms out", () => {
    const hour = { from: "now-1h", to: "now" };
    expect(shift(hour, -1, NOW)).toEqual(absolute(NOW - 7_200_000, NOW - 3_600_000));
    expect(zoomOut(hour, NOW)).toEqual(absolute(NOW - 5_400_000, NOW));
  });

  it("labels presets by name", () => {
    expect(label({ from: "now-7d", to: "now" }, NOW)).toBe("Last 7 days");
  });
});
