import { describe, expect, it } from "vitest";
import { colorFor, hash, statusColor } from "./colors";

describe("endpoint colours", () => {
  it("are stable and depend on the name", () => {
    expect(colorFor("api.get_user")).toBe(colorFor("api.get_user"));
    expect(hash("a")).not.toBe(hash("b"));
    const names = ["index", "api.get_user", "api.list", "slow", "cpu", "io", "login", "logout"];
    expect(new Set(names.map(colorFor)).size).toBeGreaterThan(4);
  });
  it("follow the status class", () => {
    expect(statusColor(200)).toBe(statusColor("2xx"));
    expect(statusColor(503)).not.toBe(statusColor(200));
  });
});
