"""Serving the built web app at / (realtime/webapp.py): caching, precompressed variants, client routes, and
the paths the app must never take over. A small build is written by the test (no Node needed)."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pytest

from core_api.settings import Settings
from realtime.app import create_app
from tests.conftest import make_settings

INDEX = b"<!doctype html><html><head><title>studyhall</title></head><body><div id=app></div></body></html>"
SCRIPT = b"console.log('studyhall web app');" * 40
# The server sends a variant's bytes as they are (the build compressed them), so any bytes do here.
BROTLI = b"brotli variant of the script"


def write_build(root: Path) -> None:
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_bytes(INDEX)
    (root / "index.html.gz").write_bytes(gzip.compress(INDEX, mtime=0))
    (root / "assets" / "index-1a2b3c.js").write_bytes(SCRIPT)
    (root / "assets" / "index-1a2b3c.js.gz").write_bytes(gzip.compress(SCRIPT, mtime=0))
    (root / "assets" / "index-1a2b3c.js.br").write_bytes(BROTLI)
    (root / "assets" / "logo-9f8e7d.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    (root / "favicon.svg").write_bytes(b"<svg xmlns='http://www.w3.org/2000/svg'/>")
    (root.parent / "secret.txt").write_text("not for the web")


@pytest.fixture
def built(tmp_path: Path, database_url: str) -> Settings:
    write_build(tmp_path / "dist")
    return make_settings(database_url, tmp_path / "data", web_dir=tmp_path / "dist")


@pytest.fixture
async def client(aiohttp_client: Any, built: Settings) -> Any:
    return await aiohttp_client(create_app(built), auto_decompress=False)


@pytest.mark.parametrize("path", ["/", "/login", "/register", "/rooms/0b4c", "/courses/abc/lectures/7", "/index.html"])
async def test_pages_and_client_routes_answer_index_html_revalidated(client: Any, path: str) -> None:
    resp = await client.get(path, headers={"Accept-Encoding": "identity"})
    assert resp.status == 200
    assert resp.content_type == "text/html"
    assert await resp.read() == INDEX
    assert resp.headers["Cache-Control"] == "no-cache"
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


async def test_hashed_assets_are_immutable_and_sent_precompressed_by_accept_encoding(client: Any) -> None:
    url = "/assets/index-1a2b3c.js"
    cases = {
        "gzip, deflate, br, zstd": ("br", BROTLI),
        "gzip": ("gzip", gzip.compress(SCRIPT, mtime=0)),
        "br;q=0, gzip": ("gzip", gzip.compress(SCRIPT, mtime=0)),
        "gzip;q=0.5, br;q=0.2": ("gzip", gzip.compress(SCRIPT, mtime=0)),
        "*": ("br", BROTLI),
        "identity": (None, SCRIPT),
        "": (None, SCRIPT),
    }
    etags = set()
    for accept, (encoding, body) in cases.items():
        resp = await client.get(url, headers={"Accept-Encoding": accept})
        assert resp.status == 200, accept
        assert resp.headers.get("Content-Encoding") == encoding, accept
        assert await resp.read() == body, accept
        assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert resp.headers["Vary"] == "Accept-Encoding"
        assert resp.content_type == "text/javascript"
        etags.add((encoding, resp.headers["ETag"]))
    assert len({etag for _, etag in etags}) == 3  # one validator per variant

    # A cached copy is revalidated without a body.
    first = await client.get(url, headers={"Accept-Encoding": "br"})
    again = await client.get(url, headers={"Accept-Encoding": "br", "If-None-Match": first.headers["ETag"]})
    assert again.status == 304
    assert await again.read() == b""


async def test_html_is_sent_gzipped_when_only_gzip_exists(client: Any) -> None:
    resp = await client.get("/rooms/1", headers={"Accept-Encoding": "br, gzip"})
    assert resp.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(await resp.read()) == INDEX
    assert resp.headers["Vary"] == "Accept-Encoding"


async def test_binary_and_public_files(client: Any) -> None:
    png = await client.get("/assets/logo-9f8e7d.png")
    assert png.status == 200 and png.content_type == "image/png"
    assert "Content-Encoding" not in png.headers and "Vary" not in png.headers
    icon = await client.get("/favicon.svg")
    assert icon.status == 200 and icon.headers["Cache-Control"] == "no-cache"  # not hashed: revalidated
    head = await client.head("/login")
    assert head.status == 200 and await head.read() == b""


@pytest.mark.parametrize("path", ["/assets/index-000000.js", "/assets/", "/assets/nested/missing.css", "/favicon.ico",
                                  "/rooms/1/file.txt", "/%2e%2e/secret.txt", "/assets/..%2f..%2fsecret.txt",
                                  "/.env"])  # fmt: skip
async def test_a_missing_asset_is_404_never_index_html_or_a_file_outside(client: Any, path: str) -> None:
    resp = await client.get(path)
    assert resp.status == 404, path
    body = await resp.json()
    assert body["error"]["code"] == "not_found"


async def test_the_api_and_transports_keep_their_meaning(client: Any) -> None:
    resp = await client.get("/api/v1/no-such-endpoint")
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
    resp = await client.get("/api")
    assert resp.status == 404 and resp.content_type == "application/json"
    resp = await client.put("/api/v1/courses")  # a real endpoint, a wrong method: still 405, not a page
    assert resp.status == 405
    resp = await client.get("/healthz")
    assert (await resp.json()) == {"status": "ok"}
    resp = await client.get("/metrics")  # no metrics token configured: 404, as before
    assert resp.status == 404 and resp.content_type == "application/json"
    resp = await client.get("/socket.io/")  # Engine.IO's answer (no transport given), not the app
    assert resp.status == 400
    resp = await client.get("/yjs/00000000-0000-0000-0000-000000000000")  # a websocket endpoint
    assert resp.content_type != "text/html"
    resp = await client.get("/api/v1/openapi.json")
    assert resp.status == 200 and "paths" in await resp.json()


async def test_pages_outside_the_app_are_not_served_for_other_methods(client: Any) -> None:
    resp = await client.post("/login")
    assert resp.status == 405


async def test_without_a_build_pages_say_how_to_build_it(
    aiohttp_client: Any, database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(database_url, tmp_path / "data", web_dir=tmp_path / "nowhere")
    client = await aiohttp_client(create_app(settings))
    resp = await client.get("/")
    assert resp.status == 503
    text = await resp.text()
    assert "not built" in text and "scripts/setup" in text and "Traceback" not in text
    resp = await client.get("/rooms/1")
    assert resp.status == 503
    resp = await client.get("/assets/index-1a2b3c.js")
    assert resp.status == 404
    resp = await client.get("/healthz")
    assert resp.status == 200
