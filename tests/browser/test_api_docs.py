"""The API reference for people: Swagger UI at /api/v1/docs, on the served OpenAPI document, from this server."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Request, expect

from tests.browser.conftest import OpenPage, WebServer


def test_the_api_reference_renders_the_served_document_with_local_assets(
    open_page: OpenPage, web_server: WebServer, screenshots: Path
) -> None:
    page = open_page()
    requests: list[Request] = []
    problems: list[str] = []
    page.on("request", lambda request: requests.append(request))
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.goto("/api/v1/docs")
    expect(page.get_by_role("heading", name="studyhall", exact=False).first).to_be_visible()
    # Operations of the document are listed by their path, grouped by tag.
    expect(page.get_by_text("/api/v1/me/sessions", exact=True).first).to_be_visible()
    expect(page.get_by_text("/api/v1/auth/password-reset", exact=True).first).to_be_visible()
    page.screenshot(path=screenshots / "api-docs.png")
    origins = {r.url.split("/")[2] for r in requests if r.url.startswith("http")}
    assert origins == {f"127.0.0.1:{web_server.port}"}  # nothing from a CDN
    assert not [p for p in problems if "Content Security Policy" in p], problems
