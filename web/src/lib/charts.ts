// ECharts options built from API answers: pure functions, so the browser tests' expected series and
// point counts follow from the data and are unit-tested here.

import { colorFor, statusColor } from "./colors";
import { ms } from "./format";
import type { Box, Daily, EndpointView, HourCell, VersionUse } from "./types";

type Option = Record<string, unknown>;

const HOURS = Array.from({ length: 24 }, (_, h) => `${String(h).padStart(2, "0")}:00`);

/** Day x hour heatmap: one point per (day, hour) with requests. */
export function heatmap(cells: HourCell[]): Option {
  const days = [...new Set(cells.map((c) => c.day))].sort();
  const max = cells.reduce((m, c) => Math.max(m, c.hits), 0);
  return {
    tooltip: {
      position: "top",
      formatter: (p: { value: [number, number, number] }) =>
        `${days[p.value[1]]} ${HOURS[p.value[0]]}<br/><b>${p.value[2]}</b> requests`,
    },
    grid: { left: 90, right: 20, top: 10, bottom: 90 },
    xAxis: { type: "category", data: HOURS, splitArea: { show: true } },
    yAxis: { type: "category", data: days, splitArea: { show: true } },
    visualMap: {
      min: 0,
      max: Math.max(1, max),
      calculable: true,
      itemHeight: 160,
      itemWidth: 12,
      orient: "horizontal",
      left: "center",
      bottom: 0,
      inRange: { color: ["#e8f0fe", "#6c9cff", "#1f3f99"] },
    },
    series: [
      {
        name: "requests",
        type: "heatmap",
        data: cells.map((c) => [c.hour, days.indexOf(c.day), c.hits]),
        emphasis: { itemStyle: { borderColor: "#333", borderWidth: 1 } },
      },
    ],
  };
}

/** Requests per endpoint per day, stacked: one series per endpoint. */
export function daily(d: Daily): Option {
  return {
    tooltip: { trigger: "axis", axisPointer: { type: "shadow" } },
    legend: { type: "scroll", bottom: 0 },
    grid: { left: 60, right: 20, top: 10, bottom: 50 },
    xAxis: { type: "category", data: d.days },
    yAxis: { type: "value", name: "requests" },
    series: d.series.map((s) => ({
      name: s.endpoint,
      type: "bar",
      stack: "hits",
      itemStyle: { color: colorFor(s.endpoint) },
      data: s.hits,
    })),
  };
}

/** Each endpoint's share of hits per version: a heatmap endpoint x version. */
export function versions(v: VersionUse): Option {
  const points: [number, number, number][] = [];
  v.rows.forEach((r, y) => {
    const total = r.hits.reduce((a, b) => a + b, 0);
    r.hits.forEach((h, x) => {
      if (h > 0) points.push([x, y, total ? Math.round((h / total) * 1000) / 10 : 0]);
    });
  });
  return {
    tooltip: {
      formatter: (p: { value: [number, number, number] }) =>
        `${v.rows[p.value[1]]?.endpoint}<br/>version ${v.versions[p.value[0]]}: <b>${p.value[2]}%</b> of its requests`,
    },
    grid: { left: 160, right: 20, top: 10, bottom: 70 },
    xAxis: { type: "category", data: v.versions, name: v.column ?? "version" },
    yAxis: { type: "category", data: v.rows.map((r) => r.endpoint) },
    visualMap: { min: 0, max: 100, orient: "horizontal", left: "center", bottom: 0, text: ["100%", "0%"] },
    series: [{ name: "share", type: "heatmap", data: points, label: { show: true, formatter: "{@[2]}%" } }],
  };
}

/**
 * Box plots from quantiles the store computed: whiskers at p10-like min/max are misleading for
 * latencies, so the whiskers are min and p99 and the max is a separate point.
 */
export function boxes(list: Box[], name: string, horizontal = true): Option {
  const keys = list.map((b) => b.key);
  const catAxis = { type: "category", data: keys, axisLabel: { width: 150, overflow: "truncate" } };
  // Log scale from the power of ten below the fastest request, so the axis labels stay round.
  const valAxis = {
    type: "log",
    name: "ms",
    min: (v: { min: number }) => 10 ** Math.floor(Math.log10(Math.max(v.min, 0.001))),
  };
  return {
    tooltip: {
      trigger: "item",
      formatter: (p: { dataIndex: number; seriesName: string }) => {
        const b = list[p.dataIndex];
        if (!b) return "";
        return `<b>${b.key}</b> (${b.hits} requests)<br/>min ${ms(b.min_ms)}<br/>p25 ${ms(b.p25_ms)}<br/>median ${ms(b.median_ms)}<br/>p75 ${ms(b.p75_ms)}<br/>p90 ${ms(b.p90_ms)}<br/>p99 ${ms(b.p99_ms)}<br/>max ${ms(b.max_ms)}`;
      },
    },
    grid: { left: horizontal ? 170 : 60, right: 30, top: 10, bottom: 40 },
    xAxis: horizontal ? valAxis : catAxis,
    yAxis: horizontal ? { ...catAxis, inverse: true } : valAxis,
    series: [
      {
        name,
        type: "boxplot",
        itemStyle: { borderColor: "#4e79a7" },
        data: list.map((b) => ({
          value: [b.min_ms, b.p25_ms, b.median_ms, b.p75_ms, b.p99_ms],
          itemStyle: { color: `${colorFor(b.key)}55`, borderColor: colorFor(b.key) },
        })),
      },
    ],
  };
}

function timeAxis(times: string[]): number[] {
  return times.map((t) => Date.parse(t));
}

/** Requests per status class over time, stacked. */
export function statusOverTime(v: EndpointView): Option {
  const t = timeAxis(v.times);
  return {
    tooltip: { trigger: "axis" },
    legend: { bottom: 0 },
    grid: { left: 50, right: 20, top: 10, bottom: 50 },
    xAxis: { type: "time", axisLabel: { hideOverlap: true } },
    yAxis: { type: "value", name: "requests" },
    series: v.status.map((s) => ({
      name: s.class,
      type: "bar",
      stack: "status",
      barMaxWidth: 24,
      itemStyle: { color: statusColor(s.class) },
      data: s.hits.map((h, i) => [t[i], h]),
    })),
  };
}

/** Median and p90 duration over time. */
export function durationOverTime(v: EndpointView): Option {
  const t = timeAxis(v.times);
  // Few points (a short or sparse range) are drawn as dots too, or a lone value would be invisible.
  const sparse = v.hits.filter((h) => h > 0).length < 30;
  const line = (name: string, data: (number | null)[], color: string) => ({
    name,
    type: "line",
    showSymbol: sparse,
    symbolSize: 6,
    connectNulls: false,
    itemStyle: { color },
    data: data.map((d, i) => [t[i], d]),
  });
  return {
    tooltip: { trigger: "axis", valueFormatter: (x: number) => ms(x) },
    legend: { bottom: 0 },
    grid: { left: 60, right: 20, top: 10, bottom: 50 },
    xAxis: { type: "time", axisLabel: { hideOverlap: true } },
    yAxis: { type: "value", name: "ms" },
    series: [line("median", v.median_ms, "#4e79a7"), line("p90", v.p90_ms, "#f28e2b")],
  };
}
