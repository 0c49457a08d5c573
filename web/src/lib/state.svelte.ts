// Dashboard-wide state derived from the URL: the time range (and its resolved bounds), live refresh,
// and the session of the logged-in user.

import { route, setParams } from "./router.svelte";
import { DEFAULT_RANGE, bounds, isRelative, tzOffsetMinutes, type TimeRange } from "./timerange";

export const clock = $state({ now: Date.now(), tick: 0 });

// Strings, so a change of another URL key (tab, search) does not reload the views that read the range.
const fromParam = $derived(route.params.get("from") ?? DEFAULT_RANGE.from);
const toParam = $derived(route.params.get("to") ?? DEFAULT_RANGE.to);

export function currentRange(): TimeRange {
  return { from: fromParam, to: toParam };
}

export function setRange(range: TimeRange): void {
  clock.now = Date.now();
  setParams({ from: range.from, to: range.to });
}

/** The API's `since`/`until`/`tz` for the current range. */
export function rangeParams(): { since: string; until: string; tz: number } {
  const [from, to] = bounds(currentRange(), clock.now);
  return { since: new Date(from).toISOString(), until: new Date(to).toISOString(), tz: tzOffsetMinutes() };
}

/** Seconds between refreshes; 0 is off. Live refresh only moves relative ranges. */
export function refreshSeconds(): number {
  const v = Number(route.params.get("refresh") ?? "0");
  return Number.isFinite(v) && v > 0 ? v : 0;
}

let timer: ReturnType<typeof setInterval> | null = null;

export function startRefresh(): void {
  if (timer) clearInterval(timer);
  const seconds = refreshSeconds();
  if (!seconds) return;
  timer = setInterval(() => {
    if (document.hidden || !isRelative(currentRange())) return;
    clock.now = Date.now();
    clock.tick++;
  }, seconds * 1000);
}

export interface Session {
  username: string;
  admin: boolean;
  csrf_token: string;
}

export const session: { user: Session | null; checked: boolean; auth: boolean } = $state({
  user: null,
  checked: false,
  auth: true,
});
