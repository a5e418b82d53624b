/**
 * The app's screens: mounted by main.ts once this chunk (Svelte, the shell, the router) has loaded, which it
 * does while the session is already being restored.
 */
import { mount } from "svelte";

import App from "./App.svelte";

export function start(target: HTMLElement): ReturnType<typeof mount> {
  return mount(App, { target });
}
