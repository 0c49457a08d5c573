// Every call to the daemon's JSON API: URLs relative to the page's <base> (so --base-path works), the
// session cookie, the CSRF header on state-changing calls, and a redirect to the login page on 401.

import { navigate } from "./router.svelte";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

let csrfToken: string | null = null;

export function setCsrf(token: string | null): void {
  csrfToken = token;
}

/** `path` without a leading slash ("api/endpoints"), resolved against the <base>. */
export function apiUrl(path: string, params: Record<string, string | number | undefined> = {}): string {
  const url = new URL(path.replace(/^\//, ""), document.baseURI);
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== "") url.searchParams.set(k, String(v));
  }
  return url.toString();
}

async function call<T>(method: string, path: string, body?: unknown, params = {}): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrfToken) headers["X-CSRF-Token"] = csrfToken;
  const res = await fetch(apiUrl(path, params), {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status === 401 && !/api\/(login|session|setup)/.test(path)) {
    navigate("login", { next: location.pathname + location.search }, true);
    throw new ApiError(401, "not logged in");
  }
  const text = await res.text();
  let data: unknown = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!res.ok) {
    const message =
      data && typeof data === "object" && "error" in data ? String((data as { error: unknown }).error) : res.statusText;
    throw new ApiError(res.status, message || `HTTP ${res.status}`);
  }
  return data as T;
}

export const api = {
  get: <T>(path: string, params: Record<string, string | number | undefined> = {}) =>
    call<T>("GET", path, undefined, params),
  post: <T>(path: string, body: unknown) => call<T>("POST", path, body),
  put: <T>(path: string, body: unknown) => call<T>("PUT", path, body),
  del: <T>(path: string) => call<T>("DELETE", path),
};

/** A GET that answers `null` when the route does not exist (yet) in this daemon, so a view can say so. */
export async function optional<T>(path: string, params: Record<string, string | number | undefined> = {}) {
  try {
    return await api.get<T>(path, params);
  } catch (e) {
    if (e instanceof ApiError && (e.status === 404 || e.status === 405)) return null;
    throw e;
  }
}
