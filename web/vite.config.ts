// Builds the dashboard into dist/, which fmd-daemon embeds (fmd-daemon/src/api/assets.rs).
import { brotliCompressSync, gzipSync, constants } from "node:zlib";
import { readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Plugin } from "vite";
import { defineConfig } from "vitest/config";
import { svelte } from "@sveltejs/vite-plugin-svelte";

// Precompresses every text asset once at build time (gzip -9 and brotli 11) so the daemon serves the
// smallest encoding the browser accepts without compressing on each request.
function precompress(): Plugin {
  return {
    name: "fmd-precompress",
    apply: "build",
    closeBundle() {
      const walk = (dir: string): string[] =>
        readdirSync(dir).flatMap((name) => {
          const path = join(dir, name);
          return statSync(path).isDirectory() ? walk(path) : [path];
        });
      for (const file of walk("dist")) {
        if (!/\.(js|css|html|svg|json|map|txt)$/.test(file)) continue;
        const data = readFileSync(file);
        if (data.length < 512) continue;
        writeFileSync(`${file}.gz`, gzipSync(data, { level: 9 }));
        writeFileSync(
          `${file}.br`,
          brotliCompressSync(data, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } }),
        );
      }
    },
  };
}

export default defineConfig({
  // Relative asset URLs resolved against the <base href> the daemon writes into index.html, so the same
  // build works at / and under any --base-path.
  base: "./",
  plugins: [svelte(), precompress()],
  build: {
    outDir: "dist",
    emptyOutDir: true,
    chunkSizeWarningLimit: 1200,
    reportCompressedSize: false,
  },
  server: {
    proxy: { "/api": "http://127.0.0.1:9876" },
  },
  test: {
    include: ["src/**/*.test.ts"],
  },
});
