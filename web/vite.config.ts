import { svelte } from "@sveltejs/vite-plugin-svelte";
import { defineConfig } from "vitest/config";

// The app is served by studyhall at / (realtime/webapp.py): hashed files under assets/ are cached forever,
// index.html is revalidated. `npm run dev` proxies the API and the transports to a local `studyhall serve`.
const backend = process.env.STUDYHALL_URL ?? "http://127.0.0.1:8080";

// A chunk shared by lazy chunks is named after its package (`lezer-lr-*.js`), not its file (`dist-*.js`); the one
// with CodeMirror's core (shared by the editor and the per-language chunks) is `codemirror-*.js`.
function sharedChunkName(chunk: { name: string; moduleIds: readonly string[] }): string {
  // Svelte's component runtime, shared by the app's chunk and the screens' (named after its first file otherwise).
  if (chunk.moduleIds.some((id) => id.includes("/node_modules/svelte/src/internal/client/render"))) return "svelte";
  // A package's browser build (`tus-js-client/lib.esm/browser/index.js`) is named after the package too.
  if (!["dist", "index", "browser"].includes(chunk.name)) return chunk.name;
  if (chunk.moduleIds.some((id) => id.includes("/node_modules/@codemirror/view/"))) return "codemirror";
  const match = chunk.moduleIds
    .map((id) => /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(id)?.[1])
    .find((name) => name !== undefined);
  return match ? match.replace(/^@/, "").replace(/\//g, "-") : chunk.name;
}

export default defineConfig({
  plugins: [svelte()],
  build: {
    target: "es2022",
    outDir: "dist",
    assetsDir: "assets",
    sourcemap: false,
    emptyOutDir: true,
    rolldownOptions: {
      output: {
        chunkFileNames: (chunk) => `assets/${sharedChunkName(chunk)}-[hash].js`,
      },
    },
  },
  server: {
    proxy: {
      "/api": backend,
      "/socket.io": { target: backend, ws: true },
      "/yjs": { target: backend, ws: true },
    },
  },
  test: {
    include: ["tests/**/*.test.ts"],
    environment: "node",
  },
});
