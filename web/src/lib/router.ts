/**
 * Client-side routing with real URLs (History API): `/rooms/abc` is a URL the server answers with
 * index.html (realtime/webapp.py) and this module maps to a screen.
 *
 * Routes are declared in src/routes/index.ts as `{path: "/rooms/:id", load: () => import(...)}`: each
 * screen is its own chunk, loaded when first visited. Plain `<a href="/rooms">` links work: a click on a
 * same-origin link is turned into `navigate` (modified clicks, downloads and other targets are left to the
 * browser).
 */
import type { Component } from "svelte";
import { writable, type Readable } from "svelte/store";

export interface RouteDef {
  /** `/rooms/:id` — `:name` matches one path segment. */
  path: string;
  /** The page's title (document.title); may use params. */
  title: string | ((params: Record<string, string>) => string);
  /** The screen: a component that may take the URL's `params` (`{id}` for `/rooms/:id`). */
  load: () => Promise<{ default: Component<never> }>;
  /** Who may open it: signed-in users only (default), guests only (login), or anyone. */
  access?: "user" | "guest" | "anyone";
}

export interface Match {
  route: RouteDef;
  params: Record<string, string>;
}

export function match(routes: readonly RouteDef[], pathname: string): Match | null {
  const parts = split(pathname);
  for (const route of routes) {
    const pattern = split(route.path);
    if (pattern.length !== parts.length) continue;
    const params: Record<string, string> = {};
    let ok = true;
    for (let i = 0; i < pattern.length && ok; i++) {
      const want = pattern[i] as string;
      const got = parts[i] as string;
      if (want.startsWith(":")) {
        try {
          params[want.slice(1)] = decodeURIComponent(got);
        } catch {
          ok = false; // a malformed escape: no route, so the 404 page
        }
      } else {
        ok = want === got;
      }
    }
    if (ok) return { route, params };
  }
  return null;
}

function split(path: string): string[] {
  return path.split("/").filter((part) => part !== "");
}

export interface Location {
  pathname: string;
  search: string;
}

const current = writable<Location>(readLocation());

function readLocation(): Location {
  if (typeof window === "undefined") return { pathname: "/", search: "" };
  return { pathname: window.location.pathname, search: window.location.search };
}

/** The current URL; views re-render when it changes. */
export const location: Readable<Location> = current;

/** Goes to `to` (a path with optional query) without reloading the page. */
export function navigate(to: string, options: { replace?: boolean } = {}): void {
  const url = new URL(to, window.location.href);
  if (url.origin !== window.location.origin) {
    window.location.assign(url.href);
    return;
  }
  const target = url.pathname + url.search + url.hash;
  if (options.replace) history.replaceState(null, "", target);
  else history.pushState(null, "", target);
  current.set(readLocation());
}

/** Starts listening to Back/Forward and to link clicks; returns a stop function. */
export function startRouter(): () => void {
  const onPop = (): void => current.set(readLocation());
  const onClick = (event: MouseEvent): void => {
    if (event.defaultPrevented || event.button !== 0) return;
    if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    const anchor = (event.target as Element | null)?.closest?.("a");
    if (!anchor || anchor.hasAttribute("download") || (anchor.target && anchor.target !== "_self")) return;
    const href = anchor.getAttribute("href");
    if (!href || href.startsWith("#")) return;
    const url = new URL(anchor.href, window.location.href);
    if (url.origin !== window.location.origin) return;
    if (/^\/(api|socket\.io|yjs)(\/|$)/.test(url.pathname)) return; // not a screen
    event.preventDefault();
    navigate(url.pathname + url.search + url.hash);
  };
  window.addEventListener("popstate", onPop);
  document.addEventListener("click", onClick);
  return () => {
    window.removeEventListener("popstate", onPop);
    document.removeEventListener("click", onClick);
  };
}

/** A same-origin path from a `?next=` parameter (never another site), else `fallback`. */
export function safeNext(search: string, fallback = "/"): string {
  const next = new URLSearchParams(search).get("next");
  if (!next || !next.startsWith("/") || next.startsWith("//") || next.startsWith("/\\")) return fallback;
  return next;
}
