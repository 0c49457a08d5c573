// The URL is the state: the page (path below the <base>) and its query (time range, tab, filters...).
// Views read `route` and change it through navigate()/setParams(), which keep history in step.

export interface Route {
  /** Path below the base, without leading or trailing slash ("", "endpoint/api.get", "login"). */
  path: string;
  params: URLSearchParams;
}

function basePath(): string {
  return new URL(document.baseURI).pathname.replace(/\/?$/, "/");
}

function current(): Route {
  const base = basePath();
  let path = location.pathname;
  if (path.startsWith(base)) path = path.slice(base.length);
  else if (path + "/" === base) path = "";
  return { path: decodeURIComponent(path.replace(/\/$/, "")), params: new URLSearchParams(location.search) };
}

export const route: Route = $state(current());

function apply(): void {
  const next = current();
  route.path = next.path;
  route.params = next.params;
}

window.addEventListener("popstate", apply);

function href(path: string, params: URLSearchParams): string {
  const query = params.toString();
  return basePath() + path.split("/").map(encodeURIComponent).join("/") + (query ? `?${query}` : "");
}

/** Keys kept when moving between pages: the dashboard-wide state. */
const GLOBAL = ["from", "to", "refresh"];

/** A link to `path` carrying the global state (time range, refresh) plus `extra`. */
export function link(path: string, extra: Record<string, string> = {}): string {
  const params = new URLSearchParams();
  for (const key of GLOBAL) {
    const v = route.params.get(key);
    if (v) params.set(key, v);
  }
  for (const [k, v] of Object.entries(extra)) params.set(k, v);
  return href(path, params);
}

export function navigate(path: string, extra: Record<string, string> = {}, replace = false): void {
  const url = link(path, extra);
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  apply();
}

/** Changes query keys of the current page (`undefined`/"" removes one). */
export function setParams(changes: Record<string, string | undefined>, replace = false): void {
  const params = new URLSearchParams(location.search);
  for (const [k, v] of Object.entries(changes)) {
    if (v === undefined || v === "") params.delete(k);
    else params.set(k, v);
  }
  const url = href(current().path, params);
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  apply();
}

/** Handles clicks on in-app links without reloading the page. */
export function interceptLinks(event: MouseEvent): void {
  if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
  const a = (event.target as Element | null)?.closest?.("a");
  if (!a || a.target || a.hasAttribute("download")) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || !url.pathname.startsWith(basePath())) return;
  event.preventDefault();
  history.pushState(null, "", url.pathname + url.search);
  apply();
}
