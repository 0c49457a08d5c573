// Stable colours: an endpoint gets the same colour in every chart and on every visit, from a hash of its
// name, so "the orange one" means the same endpoint everywhere.

const PALETTE = [
  "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
  "#9c755f", "#bab0ac", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#17becf",
];

/** FNV-1a over the UTF-16 code units: small, fast and well spread for short names. */
export function hash(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

export function colorFor(name: string): string {
  return PALETTE[hash(name) % PALETTE.length] as string;
}

/** Colour of an HTTP status class. */
export function statusColor(status: number | string): string {
  const s = String(status)[0];
  return s === "2" ? "#59a14f" : s === "3" ? "#4e79a7" : s === "4" ? "#edc948" : s === "5" ? "#e15759" : "#bab0ac";
}
