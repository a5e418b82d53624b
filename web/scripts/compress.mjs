// Writes precompressed variants beside each text file of the build (name.js.br, name.js.gz), so the server
// sends them as they are (realtime/webapp.py) instead of compressing per request. Node's own zlib: no
// dependency. Usage: node scripts/compress.mjs dist
import { readdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { brotliCompressSync, constants, gzipSync } from "node:zlib";

const COMPRESSIBLE = /\.(js|mjs|css|html|svg|json|txt|map|webmanifest|wasm)$/;
const MIN_BYTES = 256; // below this the headers cost more than the bytes saved

/** @param {string} dir @returns {AsyncGenerator<string>} */
async function* files(dir) {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) yield* files(path);
    else if (entry.isFile()) yield path;
  }
}

const root = process.argv[2] ?? "dist";
let count = 0;
for await (const path of files(root)) {
  if (!COMPRESSIBLE.test(path) || (await stat(path)).size < MIN_BYTES) continue;
  const body = await readFile(path);
  const br = brotliCompressSync(body, {
    params: {
      [constants.BROTLI_PARAM_QUALITY]: constants.BROTLI_MAX_QUALITY,
      [constants.BROTLI_PARAM_SIZE_HINT]: body.length,
    },
  });
  const gz = gzipSync(body, { level: 9 });
  // A variant no smaller than the file itself is left out: the server then sends the file.
  if (br.length < body.length) await writeFile(path + ".br", br);
  if (gz.length < body.length) await writeFile(path + ".gz", gz);
  count += 1;
}
console.log(`compressed ${count} files in ${root} (gzip and brotli)`);
