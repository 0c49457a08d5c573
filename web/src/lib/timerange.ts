// The dashboard's one time range: relative ("now-24h" .. "now") or absolute (ISO times), kept in the URL
// as `from` and `to` so a link reproduces what was seen.

export interface TimeRange {
  from: string;
  to: string;
}

export const DEFAULT_RANGE: TimeRange = { from: "now-24h", to: "now" };

export const PRESETS: { label: string; from: string }[] = [
  { label: "Last 15 minutes", from: "now-15m" },
  { label: "Last hour", from: "now-1h" },
  { label: "Last 6 hours", from: "now-6h" },
  { label: "Last 24 hours", from: "now-24h" },
  { label: "Last 7 days", from: "now-7d" },
  { label: "Last 30 days", from: "now-30d" },
  { label: "Last 90 days", from: "now-90d" },
];

const UNIT_MS: Record<string, number> = {
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 7 * 86_400_000,
};

/** Milliseconds since the epoch for `expr` ("now", "now-15m", an ISO time); `null` when malformed. */
export function resolve(expr: string, now: number): number | null {
  const text = expr.trim();
  if (text === "now") return now;
  const rel = /^now-(\d+)([smhdw])$/.exec(text);
  if (rel) {
    const [, n, unit] = rel;
    return now - Number(n) * (UNIT_MS[unit ?? "s"] ?? 1000);
  }
  if (!/^\d{4}-\d{2}-\d{2}/.test(text)) return null;
  const ms = Date.parse(text);
  return Number.isNaN(ms) ? null : ms;
}

/** The range as [from, to] milliseconds, falling back to the default for malformed parts. */
export function bounds(range: TimeRange, now: number): [number, number] {
  const from = resolve(range.from, now) ?? (resolve(DEFAULT_RANGE.from, now) as number);
  const to = resolve(range.to, now) ?? now;
  return from <= to ? [from, to] : [to, from];
}

export function isRelative(range: TimeRange): boolean {
  return range.to === "now" && range.from.startsWith("now");
}

/** An absolute range for a brushed interval. */
export function absolute(fromMs: number, toMs: number): TimeRange {
  return { from: new Date(fromMs).toISOString(), to: new Date(toMs).toISOString() };
}

/** The same length, moved one length back (-1) or forward (+1). */
export function shift(range: TimeRange, direction: -1 | 1, now: number): TimeRange {
  const [from, to] = bounds(range, now);
  const len = to - from;
  return absolute(from + direction * len, to + direction * len);
}

/** Twice as long around the same middle, never past now. */
export function zoomOut(range: TimeRange, now: number): TimeRange {
  const [from, to] = bounds(range, now);
  const len = to - from;
  return absolute(from - len / 2, Math.min(now, to + len / 2));
}

export function label(range: TimeRange, now: number): string {
  const preset = PRESETS.find((p) => p.from === range.from && range.to === "now");
  if (preset) return preset.label;
  const [from, to] = bounds(range, now);
  const fmt = (ms: number) =>
    new Date(ms).toLocaleString(undefined, {
      month: "short",
      day: "numeric",
      hour: "2-digit",
      minute: "2-digit",
    });
  return `${fmt(from)} – ${range.to === "now" ? "now" : fmt(to)}`;
}

/** The browser's offset from UTC in minutes (east positive), for the server's hour bucketing. */
export function tzOffsetMinutes(date = new Date()): number {
  return -date.getTimezoneOffset();
}
