// The JSON the daemon answers, as the views use it (field names are the API's contract).

export interface EndpointRow {
  endpoint: string;
  rule: string;
  methods: string[];
  hits: number;
  hits_today: number;
  hits_7d: number;
  median_ms: number | null;
  p90_ms: number | null;
  error_rate: number | null;
  last_requested: string | null;
  monitor_level: number;
}

export interface EndpointList {
  mode: string;
  rules: number;
  unmatched: number;
  endpoints: EndpointRow[];
}

export interface RequestRow {
  id: number;
  ts: string;
  method: string;
  path: string;
  query: string | null;
  status: number;
  duration_ms: number;
  remote_ip: string | null;
  worker_pid: number;
  endpoint: string | null;
  rule: string | null;
  version?: string | null;
  user?: string | null;
  exception?: string | null;
  profiled?: boolean;
}

export interface HourCell {
  day: string;
  hour: number;
  hits: number;
}

export interface Box {
  key: string;
  hits: number;
  min_ms: number;
  p25_ms: number;
  median_ms: number;
  p75_ms: number;
  p90_ms: number;
  p99_ms: number;
  max_ms: number;
}

export interface Daily {
  days: string[];
  series: { endpoint: string; hits: number[] }[];
}

export interface VersionUse {
  column: string | null;
  versions: string[];
  rows: { endpoint: string; hits: number[] }[];
}

export interface EndpointView {
  hourly: HourCell[];
  step_s: number;
  times: string[];
  status: { class: string; hits: number[] }[];
  median_ms: (number | null)[];
  p90_ms: (number | null)[];
  hits: number[];
  by_ip: Box[];
  by_version: Box[] | null;
  by_user: Box[] | null;
}

export interface Side {
  hits: number;
  median_ms: number | null;
  p90_ms: number | null;
  error_rate: number | null;
}

export interface ReportRow {
  endpoint: string;
  a: Side;
  b: Side;
  u: number | null;
  p_value: number | null;
  significant: boolean;
  change: "slower" | "faster" | null;
}

export interface DiffLine {
  frame: import("./profile").FrameInfo;
  a_ms: number;
  b_ms: number;
  delta_ms: number;
}

export interface ProfileDiff {
  a_requests: number;
  b_requests: number;
  lines: DiffLine[];
}

export interface DatabaseSize {
  total_bytes: number;
  tables: { kind: string; table: string; rows: number; bytes: number }[];
}

export interface Stats {
  [key: string]: unknown;
}
