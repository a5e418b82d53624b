import { mount } from "svelte";

import App from "./App.svelte";
import { match } from "./lib/router";
import { boot } from "./lib/session";
import { notFound, routes } from "./routes";
import "./app.css";

// What the first screen waits for starts before anything renders: the session (the refresh, with the websocket
// opening meanwhile) and the screen's own chunk, side by side.
void boot();
(match(routes, window.location.pathname)?.route ?? notFound).load().catch(() => {}); // App shows a failure

const target = document.getElementById("app");
if (target === null) throw new Error("index.html has no #app element");
export default mount(App, { target });
