/**
 * The entry: small on purpose. What the first screen waits for starts before the app's own code has even
 * arrived — the session (the refresh token exchanged, with the websocket opening meanwhile), the screen's
 * chunk and the app's chunk (Svelte and the shell), all side by side (docs/web.md, "The first load").
 */
import { match } from "./lib/router";
import { boot } from "./lib/session";
import { notFound, routes } from "./routes";
import "./app.css";

void boot();
(match(routes, window.location.pathname)?.route ?? notFound).load().catch(() => {}); // App shows a failure

const target = document.getElementById("app");
if (target === null) throw new Error("index.html has no #app element");
void import("./app").then(({ start }) => start(target));
