"""Web app benchmark: the JavaScript a first load of each route transfers, against the 200 KB (gzip) budget.

Usage::

    .venv/bin/python -m bench.web                           # starts its own `studyhall serve` (web/dist built)
    .venv/bin/python -m bench.web --url http://127.0.0.1:8080

For each route, a fresh Chromium context (Debian's, ``/usr/bin/chromium``; no cache) opens the URL — signed-out
routes as a visitor, the others with a stored session, as after a reload — and waits for the page's heading.
Every script the page loaded (the entry and the route's lazy chunks) is then fetched again three times with
``Accept-Encoding`` ``identity``, ``gzip`` and ``br``, and the bodies' sizes are added up; the browser's own
transfer (``br``, what Chromium asks for) is shown beside them as a check. The budget (issue 14) is 200 KB of
gzip'd JavaScript before login; the table compares every route against it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from playwright.sync_api import Response, sync_playwright

from bench.rest import Server

BUDGET_GZIP_BYTES = 200 * 1024
CHROMIUM = Path(os.environ.get("STUDYHALL_BENCH_CHROMIUM", "/usr/bin/chromium"))
# (path, needs a session): the routes the app has so far.
ROUTES = [
    ("/login", False),
    ("/register", False),
    ("/", True),
    ("/courses", True),
    ("/rooms", True),
    ("/workspaces", True),
    ("/contests", True),
    ("/profile", True),
    ("/certificates", True),
    ("/certificates/no-such-code", False),
    ("/no-such-page", False),
]
PASSWORD = "bench web password"
WEB_ASSETS = Path(__file__).resolve().parents[1] / "web" / "dist" / "assets"
# Chunks that must never be part of a first load: the lecture player's route and hls.js (web/src/routes/courses).
ON_DEMAND = ("LecturePage", "hls.light")


@dataclass
class Row:
    route: str
    scripts: int
    identity: int
    gzip: int
    brotli: int
    browser: int
    urls: tuple[str, ...] = ()


def body_size(url: str, encoding: str) -> int:
    request = urllib.request.Request(url, headers={"Accept-Encoding": encoding})
    with urllib.request.urlopen(request, timeout=10) as resp:  # urllib never decompresses
        served = resp.headers.get("Content-Encoding") or "identity"
        body = resp.read()
    if encoding != "identity" and served != encoding:
        raise SystemExit(f"{url}: asked for {encoding}, served {served} (is web/dist built with its variants?)")
    return len(body)


def rest(base: str, path: str, body: object) -> dict[str, object]:
    data = json.dumps(body).encode()
    request = urllib.request.Request(base + "/api/v1" + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        answer: dict[str, object] = json.loads(resp.read())
        return answer


def measure(base: str) -> list[Row]:
    email = f"bench-web-{uuid.uuid4().hex[:8]}@example.com"
    rest(base, "/auth/register", {"email": email, "password": PASSWORD, "display_name": "Bench Reader"})
    rows = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM))
        try:
            for path, signed_in in ROUTES:
                context = browser.new_context(base_url=base)
                if signed_in:  # a stored session, as the app keeps it (web/src/lib/tokens.ts)
                    token = rest(base, "/auth/login", {"email": email, "password": PASSWORD})["refresh_token"]
                    context.add_init_script(f"localStorage.setItem('studyhall.refresh_token', {json.dumps(token)})")
                page = context.new_page()
                scripts: dict[str, int] = {}

                def on_response(response: Response, scripts: dict[str, int] = scripts) -> None:
                    if response.request.resource_type == "script":
                        scripts[response.url] = response.request.sizes()["responseBodySize"]

                page.on("response", on_response)
                page.goto(path)
                page.locator("h1").first.wait_for()
                page.wait_for_load_state("load")
                context.close()
                rows.append(
                    Row(
                        path,
                        len(scripts),
                        sum(body_size(url, "identity") for url in scripts),
                        sum(body_size(url, "gzip") for url in scripts),
                        sum(body_size(url, "br") for url in scripts),
                        sum(scripts.values()),
                        tuple(scripts),
                    )
                )
        finally:
            browser.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="measure this running server instead of starting one")
    args = parser.parse_args()
    print(f"# studyhall web app: JavaScript per first load — {platform.node()}, {time.strftime('%Y-%m-%d %H:%M')}")
    server: Server | None = None
    url = args.url
    if url is None:
        server = Server(os.environ.get("STUDYHALL_DATABASE_URL"))
        server.start()
        url = server.url
    try:
        rows = measure(url)
    finally:
        if server is not None:
            server.stop()
    kb = 1024
    print(f"{'route':<28}{'scripts':>8}{'raw KB':>9}{'gzip KB':>9}{'br KB':>8}{'browser KB':>11}  budget (gzip 200 KB)")
    for r in rows:
        share = r.gzip / BUDGET_GZIP_BYTES
        verdict = "within" if r.gzip <= BUDGET_GZIP_BYTES else "OVER"
        print(
            f"{r.route:<28}{r.scripts:>8}{r.identity / kb:>9.1f}{r.gzip / kb:>9.1f}{r.brotli / kb:>8.1f}"
            f"{r.browser / kb:>11.1f}  {verdict} ({share:.0%})"
        )
    login = next(r for r in rows if r.route == "/login")
    print(f"# /login before signing in: {login.gzip / kb:.1f} KB gzip of the 200 KB budget")
    # The lecture player and hls.js load only when a lecture is opened (an HLS one, for hls.js): their sizes,
    # from the build's own variants, and a check that no route above loaded them.
    print(f"{'on demand':<26}{'raw KB':>9}{'gzip KB':>9}{'br KB':>8}  in a first load above?")
    for name in ON_DEMAND:
        for path in sorted(WEB_ASSETS.glob(f"{name}-*.js")):
            sizes = [path.stat().st_size, *(path.with_name(path.name + s).stat().st_size for s in (".gz", ".br"))]
            seen = [r.route for r in rows if any(u.endswith("/" + path.name) for u in r.urls)]
            print(f"{path.name:<26}{sizes[0] / kb:>9.1f}{sizes[1] / kb:>9.1f}{sizes[2] / kb:>8.1f}  {seen or 'no'}")


if __name__ == "__main__":
    main()
