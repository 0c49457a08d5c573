import { describe, expect, it } from "vitest";
import { ago, blueprint, bytes, count, ms, percent } from "./format";

describe("formatting", () => {
  it("formats durations with sensible precision", () => {
    expect(ms(1.234)).toBe("1.23 ms");
    expect(ms(12.34)).toBe("12.3 ms");
    expect(ms(250)).toBe("250 ms");
    expect(ms(12_500)).toBe("12.5 s");
    expect(ms(null)).toBe("–");
  });
  it("formats counts, shares and sizes", () => {
    expect(count(1234567)).toBe("1,234,567");
    expect(percent(0.0512)).toBe("5.1%");
    expect(bytes(1536)).toBe("1.5 KiB");
  });
  it("finds blueprints", () => {
    expect(blueprint("api.get_user")).toBe("api");
    expect(blueprint("admin.users.edit")).toBe("admin.users");
    expect(blueprint("index")).toBe("");
    expect(blueprint("GET /orders/<int>")).toBe("");
  });
  it("says how long ago", () => {
    expect(ago("2026-12-01T11:58:00Z", Date.parse("2026-12-01T12:00:00Z"))).toBe("2 min ago");
    expect(ago(null)).toBe("never");
  });
});
