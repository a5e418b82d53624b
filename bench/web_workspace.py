"""Web app benchmark, the workspace screen: typing latency between two browsers, and the editor's chunk on demand.

Usage::

    .venv/bin/python -m bench.web_workspace                 # starts its own `studyhall serve` (web/dist built)
    .venv/bin/python -m bench.web_workspace --url http://127.0.0.1:8080

Two users, each in a fresh Chromium context (Debian's, ``/usr/bin/chromium``), open one workspace at
``/workspaces/{id}``. The writer types ``KEYS`` times the letter ``Q`` into the editor, one key every
``GAP_S`` seconds; its page stamps each key's ``keydown`` and the reader's page stamps the moment its editor's DOM
first holds that many ``Q``s (a MutationObserver on CodeMirror's content). Both stamps are
``performance.timeOrigin + performance.now()`` of pages in one browser process, so they share a clock. The
latency is the difference: the key through CodeMirror and y-codemirror into Yjs, y-websocket to the server, the
server's forward to the other socket, and Yjs into the other editor. The target (issue 14) is p95 < 100 ms.

Also: the editor's chunks (CodeMirror, ``codemirror-*.js``; y-codemirror.next, ``editor-*.js``) and the workspace
route are not loaded by ``/login``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import urllib.request

from playwright.sync_api import sync_playwright

from bench.rest import Server
from bench.web import CHROMIUM, login, register, signed_in_context

KEYS = 60
GAP_S = 0.15
TARGET_MS = 100.0
STAMP_KEYS = """() => {
  window.__keys = [];
  document.addEventListener("keydown", (e) => {
    if (e.key === "Q") window.__keys.push(performance.timeOrigin + performance.now());
  }, true);
}"""
WATCH_TEXT = """() => {
  window.__seen = [];
  const el = document.querySelector(".cm-content");
  const count = () => (el.textContent.match(/Q/g) || []).length;
  const base = count();
  new MutationObserver(() => {
    const now = performance.timeOrigin + performance.now();
    while (window.__seen.length < count() - base) window.__seen.push(now);
  }).observe(el, { subtree: true, childList: true, characterData: true });
}"""


def _post(base: str, path: str, body: object, token: str, method: str = "POST") -> dict[str, object]:
    request = urllib.request.Request(
        base + "/api/v1" + path,
        data=json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        answer: dict[str, object] = json.loads(resp.read())
        return answer


def measure(base: str) -> tuple[list[float], list[str]]:
    writer, reader = register(base, "Bench Writer"), register(base, "Bench Reader")
    token = str(login(base, writer)["access_token"])
    workspace = _post(base, "/workspaces", {"name": "Bench typing", "language": "python"}, token)
    reader_token = str(login(base, reader)["access_token"])
    request = urllib.request.Request(base + "/api/v1/me", headers={"Authorization": f"Bearer {reader_token}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        reader_id = str(json.loads(resp.read())["id"])
    _post(base, f"/workspaces/{workspace['id']}/members/{reader_id}", {"access": "edit"}, token, method="PUT")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM))
        try:
            # /login's first load: which scripts it fetched (none of the editor's may be among them).
            visitor = browser.new_context(base_url=base)
            page = visitor.new_page()
            scripts: list[str] = []
            page.on("response", lambda r: scripts.append(r.url) if r.request.resource_type == "script" else None)
            page.goto("/login")
            page.get_by_role("button", name="Log in").wait_for()
            page.wait_for_load_state("networkidle")
            visitor.close()

            pages = []
            for email in (writer, reader):
                page = signed_in_context(browser, base, email).new_page()
                page.goto(f"/workspaces/{workspace['id']}")
                page.get_by_role("textbox", name="Editor").wait_for()
                pages.append(page)
            write, read = pages
            read.get_by_role("list", name="People in this workspace").get_by_text("Bench Writer").wait_for()
            write.evaluate(STAMP_KEYS)
            read.evaluate(WATCH_TEXT)
            write.get_by_role("textbox", name="Editor").click()
            write.keyboard.press("Control+End")
            write.keyboard.press("Enter")
            for _ in range(KEYS):
                write.keyboard.type("Q")
                time.sleep(GAP_S)
            read.wait_for_function(f"window.__seen.length >= {KEYS}", timeout=30_000)
            keys = write.evaluate("window.__keys")
            seen = read.evaluate("window.__seen")
        finally:
            browser.close()
    return [s - k for k, s in zip(keys, seen, strict=True)], scripts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="measure this running server instead of starting one")
    args = parser.parse_args()
    print(f"# studyhall web app: workspace typing latency — {platform.node()}, {time.strftime('%Y-%m-%d %H:%M')}")
    server: Server | None = None
    url = args.url
    if url is None:
        server = Server(os.environ.get("STUDYHALL_DATABASE_URL"))
        server.start()
        url = server.url
    try:
        latencies, login_scripts = measure(url)
    finally:
        if server is not None:
            server.stop()
    ms = sorted(latencies)
    p95 = ms[max(0, round(0.95 * len(ms)) - 1)]
    verdict = "within" if p95 < TARGET_MS else "OVER"
    print(
        f"# a key in one browser to the character in the other, {len(ms)} keys: median {statistics.median(ms):.1f} ms,"
        f" p95 {p95:.1f} ms, min {ms[0]:.1f} ms, max {ms[-1]:.1f} ms — target p95 < {TARGET_MS:.0f} ms: {verdict}"
    )
    editor = [u for u in login_scripts if any(f"/{name}-" in u for name in ("editor", "codemirror", "WorkspacePage"))]
    print(f"# /login's first load: {len(login_scripts)} scripts; the editor's chunks among them: {editor or 'none'}")
    if hasattr(os, "getloadavg"):
        print(f"# load average after the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
