// A view's data: fetched again whenever what the fetcher reads (time range, params, live tick) changes;
// an older answer never overwrites a newer one.

import { clock } from "./state.svelte";

export interface Loaded<T> {
  data: T | null;
  error: string | null;
  loading: boolean;
}

/** Call during component initialisation. `fetcher` must read its reactive inputs before its first await. */
export function load<T>(fetcher: () => Promise<T>): Loaded<T> {
  const state: Loaded<T> = $state({ data: null, error: null, loading: true });
  let seq = 0;
  $effect(() => {
    void clock.tick;
    const mine = ++seq;
    state.loading = true;
    fetcher().then(
      (data) => {
        if (mine !== seq) return;
        state.data = data;
        state.error = null;
        state.loading = false;
      },
      (e: unknown) => {
        if (mine !== seq) return;
        state.error = e instanceof Error ? e.message : String(e);
        state.loading = false;
      },
    );
  });
  return state;
}
