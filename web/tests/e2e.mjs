// Browser tests of the dashboard, driven by tests/tests/web.rs after it captured real traffic: opens every
// view in Debian's headless Chromium (playwright-core, no browser download), checks that each chart drew
// the series and points the captured data calls for, opens a request's profile, checks that the time
// range in the URL survives a reload, and saves a screenshot of every view.
//
// Environment: FMD_URL (the dashboard, with its base path, ending in /), FMD_EXPECT (JSON file of
// expectations written by the harness), FMD_SCREENSHOTS (directory), CHROMIUM (browser binary),
// FMD_USER / FMD_PASSWORD (when the daemon has accounts).

import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const base = process.env.FMD_URL;
const expect = JSON.parse(readFileSync(process.env.FMD_EXPECT, "utf8"));
const shots = process.env.FMD_SCREENSHOTS;
mkdirSync(shots, { recursive: true });

const failures = [];
function check(ok, what) {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
  if (!ok) failures.push(what);
}

/** Logs in when the app sent us to its login page (per the auth contract); a no-op without accounts. */
async function login(page) {
  if (!new URL(page.url()).pathname.endsWith("/login")) return;
  const user = process.env.FMD_USER;
  const password = process.env.FMD_PASSWORD;
  if (!user || !password) throw new Error("the dashboard asks for a login but the harness created no user");
  await page.fill('input[name="username"]', user);
  await page.fill('input[name="password"]', password);
  await Promise.all([page.waitForURL((url) => !url.pathname.endsWith("/login")), page.click('button[type="submit"]')]);
}

/** Opens `path` (relative to the base) with the time range of the test, logging in if asked. */
async function open(page, path, extra = "") {
  const sep = path.includes("?") ? "&" : "?";
  const url = `${base}${path}${sep}from=${encodeURIComponent(expect.from)}${extra}`;
  await page.goto(url);
  // Without a session the app shell asks /api/session and moves itself to its login page: wait for that.
  await page.waitForLoadState("networkidle");
  if (new URL(page.url()).pathname.endsWith("/login")) {
    await login(page);
    await page.goto(url);
    await page.waitForLoadState("networkidle");
  }
}

/** The series and points a chart drew, once it drew something (or the timeout passed). */
async function chart(page, name, timeout = 15000) {
  const sel = `[data-chart="${name}"]`;
  try {
    await page.waitForSelector(`${sel}:not([data-points="0"])`, { timeout });
  } catch {
    // Reported below with what it did draw.
  }
  const el = await page.$(sel);
  if (!el) return null;
  return {
    series: Number(await el.getAttribute("data-series")),
    points: Number(await el.getAttribute("data-points")),
  };
}

async function rows(page, name, timeout = 15000) {
  const sel = `[data-table="${name}"]`;
  try {
    await page.waitForSelector(`${sel}:not([data-rows="0"])`, { timeout });
  } catch {
    // Reported by the caller.
  }
  const el = await page.$(sel);
  return el ? Number(await el.getAttribute("data-rows")) : null;
}

async function shot(page, name) {
  await page.waitForTimeout(300);
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: false });
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, timezoneId: "UTC" });
const page = await context.newPage();
const errors = [];
page.on("pageerror", (e) => errors.push(String(e)));
// Expected in the console: 404s of optional data and the 401 of the app shell's session check before logging in.
page.on("console", (m) => m.type() === "error" && !/status of (404|401)/.test(m.text()) && errors.push(m.text()));

try {
  // Overview: one row per endpoint of the app's route table.
  await open(page, "");
  const endpoints = await rows(page, "endpoints");
  check(endpoints === expect.endpoints, `overview lists ${expect.endpoints} endpoints (got ${endpoints})`);
  await shot(page, "overview");
  // Sorting by a number column orders the rows by that number (the first click on the sorted column
  // reverses it: ascending).
  await page.click('th:has-text("All")');
  const firstHits = await page.$$eval('[data-table="endpoints"] tbody tr td:nth-child(6)', (tds) =>
    tds.map((td) => Number(td.textContent.replace(/[^0-9]/g, ""))),
  );
  const sorted = [...firstHits].sort((a, b) => a - b);
  check(
    firstHits.length > 2 && JSON.stringify(firstHits) === JSON.stringify(sorted),
    `overview sorts by hits, as numbers (${firstHits.join(",")})`,
  );

  await open(page, "hourly");
  const hourly = await chart(page, "hourly-load");
  check(hourly?.points === expect.hour_cells, `hourly load has ${expect.hour_cells} cells (got ${hourly?.points})`);
  await shot(page, "hourly-load");

  await open(page, "daily");
  const daily = await chart(page, "daily");
  check(
    daily?.series === expect.endpoints_hit && daily?.points === expect.endpoints_hit * expect.days,
    `daily utilization has ${expect.endpoints_hit} series x ${expect.days} days (got ${JSON.stringify(daily)})`,
  );
  await shot(page, "daily");

  await open(page, "versions");
  await page.waitForSelector("[data-empty], [data-chart=versions]", { timeout: 15000 });
  check(true, "multi-version view renders (empty state or chart)");
  await shot(page, "versions");

  await open(page, "performance");
  const perf = await chart(page, "performance");
  check(perf?.points === expect.endpoints_hit, `API performance has ${expect.endpoints_hit} boxes (got ${perf?.points})`);
  await shot(page, "performance");

  await open(page, "reporting");
  const report = await rows(page, "reporting");
  check(report === expect.endpoints_hit, `reporting compares ${expect.endpoints_hit} endpoints (got ${report})`);
  await shot(page, "reporting");

  // Endpoint page of the slow, profiled endpoint.
  const ep = encodeURIComponent(expect.profiled_endpoint);
  await open(page, `endpoint/${ep}`);
  const status = await chart(page, "status");
  check(status?.series === expect.profiled_status_classes, `status chart has ${expect.profiled_status_classes} series (got ${status?.series})`);
  const duration = await chart(page, "duration");
  check(duration?.series === 2, `duration chart has median and p90 (got ${duration?.series})`);
  const byIp = await chart(page, "by-ip");
  check(byIp?.points === 1, `per-IP box plot has one client (got ${byIp?.points})`);
  await shot(page, "endpoint");

  // The flaky endpoint answered both 2xx and 5xx.
  await open(page, `endpoint/${encodeURIComponent(expect.flaky_endpoint)}`);
  const flaky = await chart(page, "status");
  check(flaky?.series === expect.flaky_status_classes, `flaky status chart has ${expect.flaky_status_classes} series (got ${flaky?.series})`);

  // Profiler: the profiled requests, and one request's execution tree.
  await open(page, `endpoint/${ep}`, "&tab=profiler");
  const profiled = await rows(page, "profiled");
  check(profiled > 0, `profiler lists profiled requests (got ${profiled})`);
  await page.click('[data-table="profiled"] tbody tr:first-child');
  const tree = await rows(page, "request-profile");
  check(tree > 0, `a request's execution tree has lines (got ${tree})`);
  const treeText = await page.textContent('[data-table="request-profile"]');
  check(treeText.includes(expect.profiled_function), `the execution tree names ${expect.profiled_function}`);
  await shot(page, "profiler");

  // Grouped profile: flame graph, sunburst, lines and the sandwich view.
  await open(page, `endpoint/${ep}`, "&tab=grouped");
  const flame = await chart(page, "grouped-flame");
  check(flame?.points > 1, `grouped flame graph has frames (got ${flame?.points})`);
  await page.fill('input[type="search"]', expect.profiled_function);
  await shot(page, "grouped-profile");
  await open(page, `endpoint/${ep}`, "&tab=grouped&view=sunburst");
  const sun = await chart(page, "sunburst");
  check(sun?.points > 0, `sunburst has a root (got ${sun?.points})`);
  await open(page, `endpoint/${ep}`, "&tab=grouped&view=table");
  const lines = await rows(page, "grouped-lines");
  check(lines > 0, `grouped lines table has rows (got ${lines})`);
  await page.click('[data-table="grouped-lines"] tbody tr:first-child button');
  const callers = await chart(page, "sandwich-callers");
  check(callers?.points > 0, `sandwich view shows callers (got ${callers?.points})`);
  await shot(page, "sandwich");

  await open(page, `endpoint/${ep}`, "&tab=diff");
  await page.waitForSelector('[data-table="profile-diff"], [data-empty]', { timeout: 15000 });
  check(true, "profile diff renders");

  await open(page, "requests");
  const requests = await rows(page, "requests");
  check(requests === expect.requests, `requests list has ${expect.requests} rows (got ${requests})`);
  await shot(page, "requests");

  for (const view of ["exceptions", "database", "health"]) {
    await open(page, view);
    await page.waitForSelector("section.panel", { timeout: 15000 });
    await page.waitForTimeout(500);
    await shot(page, view);
  }
  const dbRows = await rows(page, "stats");
  check(dbRows > 0, `health shows the capture counters (got ${dbRows})`);
  await open(page, "database");
  const tables = await rows(page, "database");
  check(tables > 0, `database lists its tables (got ${tables})`);

  // The time range lives in the URL: an absolute range survives a reload and drives the views.
  const from = "2026-01-01T00:00:00.000Z";
  const to = "2026-01-02T00:00:00.000Z";
  await page.goto(`${base}performance?from=${from}&to=${to}`);
  await login(page);
  await page.reload();
  const kept = new URL(page.url());
  check(kept.searchParams.get("from") === from && kept.searchParams.get("to") === to, "the time range survives a reload");
  await page.waitForSelector("[data-empty]", { timeout: 15000 });
  check(true, "a range without data shows the empty state");
  const label = await page.textContent('[data-testid="time-range"]');
  check(label.includes("Jan"), `the picker shows the absolute range (${label.trim()})`);

  // Dark theme.
  await open(page, "");
  await page.click('button[title="Light or dark theme"]');
  await rows(page, "endpoints");
  await shot(page, "overview-dark");

  check(errors.length === 0, `no JavaScript errors (${errors.join(" | ")})`);
} finally {
  await browser.close();
}

if (failures.length) {
  console.error(`${failures.length} browser check(s) failed`);
  process.exit(1);
}
console.log("all browser checks passed");
