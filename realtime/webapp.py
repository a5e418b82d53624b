"""The web app: the built ``web/dist`` served at ``/`` on the same origin as the API.

What a browser gets (docs/web.md, "Serving"):

- ``/assets/*`` — Vite's content-hashed files: ``Cache-Control: public, max-age=31536000, immutable``.
- Every file is sent in the best encoding the client accepts of those the build left beside it
  (``app-1a2b.js.br``, ``app-1a2b.js.gz``; web/scripts/compress.mjs writes them), with
  ``Vary: Accept-Encoding``; nothing is compressed per request.
- ``index.html`` with ``Cache-Control: no-cache`` (revalidated by ETag), for ``/`` and for every client
  route (``/login``, ``/rooms/…``, any path whose last segment has no dot), so a reload or a shared link
  opens the right screen. A missing asset (under ``/assets/`` or with a dot in its name) is a 404.
- ``/api/v1/docs``: the API reference for people, Swagger UI on ``/api/v1/openapi.json`` (the build's
  ``api-docs/``, copied from the ``swagger-ui-dist`` package by web/scripts/apidocs.mjs: no CDN).
- ``/api``, ``/socket.io``, ``/yjs``, ``/healthz``, ``/readyz`` and ``/metrics`` are never answered here
  (the route's pattern leaves them out), so they keep their meaning, their 404s and their 405s.
- Without a built app, pages answer 503 with how to build it.

The files are read into memory (the app is a few hundred KB with its variants) off the event loop, and
read again when ``index.html`` changes, so a rebuild while the server runs is served at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import mimetypes
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from core_api.errors import AppError, ErrorCode
from core_api.settings import Settings

log = logging.getLogger(__name__)

# Paths the web app never answers: the API and the transports keep their own 404s and 405s.
RESERVED = ("api", "socket.io", "yjs", "healthz", "readyz", "metrics")
ROUTE = r"/{path:(?!(?:" + "|".join(p.replace(".", r"\.") for p in RESERVED) + r")(?:/|$)).*}"

IMMUTABLE = "public, max-age=31536000, immutable"
API_DOCS = "api-docs/index.html"
REVALIDATE = "no-cache"
# The app loads nothing from elsewhere (no CDN); media and HLS playlists may live on other https hosts.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob: data: https:",
        "connect-src 'self' https:",
        "worker-src 'self' blob:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
# The types a build holds, fixed here: mimetypes alone would read them from the machine's /etc/mime.types.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml; charset=utf-8",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".wasm": "application/wasm",
    ".txt": "text/plain; charset=utf-8",
}
# Preference when a client accepts several encodings equally: brotli is the smaller.
ENCODINGS = {"br": ".br", "gzip": ".gz"}
RELOAD_CHECK_S = 1.0

NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>studyhall: the web app is not built</title></head>
<body><main>
<h1>The web app is not built</h1>
<p>This server has no built web app to serve at <code>/</code> (looked in <code>{root}</code>).</p>
<p>Build it with <code>scripts/setup</code> (it runs <code>npm ci</code> and <code>npm run build</code> in
<code>web/</code>; Node.js 20.19 or newer), or point <code>STUDYHALL_WEB_DIR</code> at a built copy.
The API at <code>/api/v1</code> works without it.</p>
</main></body></html>
"""


def default_web_dir() -> Path:
    """``web/dist`` of the source checkout this package runs from."""
    return Path(__file__).resolve().parents[1] / "web" / "dist"


@dataclass(frozen=True)
class Variant:
    body: bytes
    etag: str


@dataclass(frozen=True)
class Asset:
    """One file of the build and its precompressed variants (``None`` is the identity encoding)."""

    content_type: str
    cache_control: str
    variants: dict[str | None, Variant] = field(default_factory=dict)

    def pick(self, accept_encoding: str) -> str | None:
        """The encoding to send: the client's most preferred one we have, else identity."""
        accepted = parse_accept_encoding(accept_encoding)
        best: tuple[float, int, str | None] = (0.0, 0, None)
        for rank, encoding in enumerate(ENCODINGS):
            if encoding not in self.variants:
                continue
            q = accepted.get(encoding, accepted.get("*", 0.0))
            if q > 0 and (q, -rank) > best[:2]:
                best = (q, -rank, encoding)
        return best[2]


def parse_accept_encoding(header: str) -> dict[str, float]:
    """``{coding: q}`` from an Accept-Encoding header; malformed q-values count as 0."""
    out: dict[str, float] = {}
    for item in header.split(","):
        name, _, params = item.strip().partition(";")
        name = name.strip().lower()
        if not name:
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    q = 0.0
        out[name] = q
    return out


def _etag(body: bytes, encoding: str | None) -> str:
    return f'"{hashlib.sha256(body).hexdigest()[:20]}{"-" + encoding if encoding else ""}"'


def load_bundle(root: Path) -> dict[str, Asset]:
    """Every file under ``root`` by its URL path (``"assets/index-1a2b.js"``), with its variants."""
    assets: dict[str, Asset] = {}
    files = sorted(p for p in root.rglob("*") if p.is_file())
    present = set(files)
    compressed = {p for p in files if p.suffix in ENCODINGS.values() and p.with_suffix("") in present}
    for path in files:
        if path in compressed:
            continue  # a variant: read with its original below
        key = path.relative_to(root).as_posix()
        if any(part.startswith(".") for part in key.split("/")):
            continue
        content_type = CONTENT_TYPES.get(path.suffix.lower()) or (
            mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        )
        cache = IMMUTABLE if key.startswith("assets/") else REVALIDATE
        body = path.read_bytes()
        variants: dict[str | None, Variant] = {None: Variant(body, _etag(body, None))}
        for encoding, suffix in ENCODINGS.items():
            sibling = path.with_name(path.name + suffix)
            if sibling in compressed:
                packed = sibling.read_bytes()
                variants[encoding] = Variant(packed, _etag(body, encoding))
        assets[key] = Asset(content_type, cache, variants)
    return assets


class WebApp:
    """Serves one build directory; re-reads it when its ``index.html`` changes.

    Args:
        root: the build (``web/dist``): ``index.html``, ``assets/``, and the ``.br``/``.gz`` variants.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._assets: dict[str, Asset] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked = -RELOAD_CHECK_S
        self._lock = asyncio.Lock()

    def built(self) -> bool:
        """Whether the build directory has an ``index.html``."""
        return self._index_stamp() is not None

    def _index_stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.root / "index.html")
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def _reload(self) -> None:
        stamp = self._index_stamp()
        if stamp != self._stamp:
            self._assets = load_bundle(self.root) if stamp is not None else {}
            self._stamp = stamp

    async def assets(self) -> dict[str, Asset]:
        """The current build (empty when there is none), checked for a rebuild at most once a second."""
        now = time.monotonic()
        if now - self._checked >= RELOAD_CHECK_S:
            async with self._lock:
                if now - self._checked >= RELOAD_CHECK_S:
                    await asyncio.to_thread(self._reload)
                    self._checked = time.monotonic()
        return self._assets

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        parts = [p for p in path.split("/") if p]
        assets = await self.assets()
        key = "/".join(parts)
        is_file = path.startswith("assets/") or (bool(parts) and "." in parts[-1])
        if any(p in ("..", ".") or p.startswith(".") for p in parts):
            raise AppError(ErrorCode.NOT_FOUND, f"no such file: /{path}")
        if "index.html" not in assets:
            if is_file:
                raise AppError(ErrorCode.NOT_FOUND, f"no such file: /{path}")
            return web.Response(
                text=NOT_BUILT.format(root=self.root),
                status=503,
                content_type="text/html",
                headers={"Cache-Control": "no-store", **PAGE_HEADERS},
            )
        asset = assets.get(key) if is_file else None
        if is_file and asset is None:
            raise AppError(ErrorCode.NOT_FOUND, f"no such file: /{path}")
        page = asset is None or key == "index.html"
        return self._send(request, asset or assets["index.html"], page)

    async def api_docs(self, request: web.Request) -> web.StreamResponse:
        """``/api/v1/docs``: Swagger UI (the build's ``api-docs/``, web/scripts/apidocs.mjs) on the served
        OpenAPI document."""
        asset = (await self.assets()).get(API_DOCS)
        if asset is None:
            return web.Response(
                text=NOT_BUILT.format(root=self.root),
                status=503,
                content_type="text/html",
                headers={"Cache-Control": "no-store", **PAGE_HEADERS},
            )
        return self._send(request, asset, page=True)

    def _send(self, request: web.Request, asset: Asset, page: bool) -> web.Response:
        encoding = asset.pick(request.headers.get("Accept-Encoding", ""))
        variant = asset.variants[encoding]
        headers = {"Cache-Control": REVALIDATE if page else asset.cache_control, "ETag": variant.etag}
        if len(asset.variants) > 1:
            headers["Vary"] = "Accept-Encoding"
        if encoding is not None:
            headers["Content-Encoding"] = encoding
        if page:
            headers.update(PAGE_HEADERS)
        if variant.etag in {t.strip() for t in request.headers.get("If-None-Match", "").split(",")}:
            return web.Response(status=304, headers=headers)
        headers["Content-Type"] = asset.content_type
        return web.Response(body=variant.body, headers=headers)


WEBAPP = web.AppKey("webapp", WebApp)


def mount(app: web.Application, settings: Settings) -> WebApp:
    """Serve the built web app at ``/``; call after every other route is added (it takes what they leave)."""
    webapp = WebApp(settings.web_dir or default_web_dir())
    app[WEBAPP] = webapp
    app.router.add_get("/api/v1/docs", webapp.api_docs)
    app.router.add_get(ROUTE, webapp.handle)
    if not webapp.built():
        log.warning("the web app is not built (no %s): / explains how to build it", webapp.root / "index.html")
    return webapp
