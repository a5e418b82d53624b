// Copies Swagger UI (swagger-ui-dist, from npm) into the build as dist/api-docs/, with a page and a start
// script of our own: the server answers /api/v1/docs with that page, which renders /api/v1/openapi.json.
// Everything is served by studyhall itself (no CDN), under the app's Content-Security-Policy (no inline
// script). Usage: node scripts/apidocs.mjs dist
import { copyFile, mkdir, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

const root = process.argv[2] ?? "dist";
const out = join(root, "api-docs");
const source = dirname(createRequire(import.meta.url).resolve("swagger-ui-dist/package.json"));
await mkdir(out, { recursive: true });
for (const name of ["swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"]) {
  await copyFile(join(source, name), join(out, name));
}
await writeFile(
  join(out, "index.html"),
  `<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8" />
    <meta name="viewport" content="width=device-width, initial-scale=1" />
    <title>studyhall API</title>
    <link rel="icon" type="image/png" href="/api-docs/favicon-32x32.png" />
    <link rel="stylesheet" href="/api-docs/swagger-ui.css" />
  </head>
  <body>
    <main id="swagger-ui" aria-label="API reference"></main>
    <script src="/api-docs/swagger-ui-bundle.js"></script>
    <script src="/api-docs/start.js"></script>
  </body>
</html>
`,
);
await writeFile(
  join(out, "start.js"),
  `// Renders the server's own OpenAPI document; "Try it out" calls go to this server.
window.ui = SwaggerUIBundle({
  url: "/api/v1/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  tryItOutEnabled: false,
  persistAuthorization: false,
});
`,
);
console.log(`API docs: Swagger UI copied into ${out}`);
