"""Health, readiness, metrics, the OpenAPI document, unknown routes, and settings validation."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from core_api.settings import ConfigError, load_settings
from realtime.app import create_app
from tests.conftest import ApiClient, make_settings


async def test_health_ready_and_metrics(aiohttp_client: Any, database_url: str, tmp_path: Path) -> None:
    token = "metrics-token-" + "p" * 20  # /metrics is served on the public port only with one
    api = ApiClient(await aiohttp_client(create_app(make_settings(database_url, tmp_path, metrics_token=token))))
    resp = await api.http.get("/healthz")
    assert resp.status == 200
    resp = await api.http.get("/readyz")
    assert resp.status == 200
    assert (await resp.json())["checks"]["database"] == "ok"
    await api.call("GET", "/me")  # a 401, which metrics must count too
    resp = await api.http.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    text = await resp.text()
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    assert 'studyhall_http_requests_total{method="GET",route="/api/v1/me",status="401"}' in text
    assert "studyhall_http_request_duration_seconds_bucket" in text
    assert "studyhall_db_pool_connections" in text


async def test_readyz_reports_an_unreachable_database(api: ApiClient) -> None:
    from core_api.context import CORE

    await api.app[CORE].pool.close()  # the database is gone as far as this node can tell
    resp = await api.http.get("/readyz")
    assert resp.status == 503
    assert (await resp.json())["status"] == "not_ready"


async def test_openapi_document_describes_the_api(api: ApiClient) -> None:
    resp = await api.http.get("/api/v1/openapi.json")
    spec = await resp.json()
    assert spec["openapi"].startswith("3.")
    login = spec["paths"]["/api/v1/auth/login"]["post"]
    assert login["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/LoginIn"}
    assert set(login["responses"]) >= {"200", "400", "401", "429"}
    assert spec["components"]["schemas"]["ErrorEnvelope"]["properties"]["error"]
    assert spec["paths"]["/api/v1/courses"]["post"]["security"] == [{"bearer": []}]


async def test_unknown_routes_and_methods_answer_json_errors(api: ApiClient) -> None:
    status, body = await api.call("GET", "/no/such/thing")
    assert status == 404
    assert body["error"]["code"] == "not_found"
    resp = await api.http.delete("/api/v1/auth/login")
    assert resp.status == 405
    assert (await resp.json())["error"]["code"] == "invalid_input"
    assert "POST" in resp.headers["Allow"]
    status, body = await api.call("GET", "/courses/not-a-uuid", await api.user())
    assert status == 404


def test_bad_settings_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUDYHALL_PORT", "eighty")
    with pytest.raises(ConfigError, match="STUDYHALL_PORT"):
        load_settings()
    monkeypatch.setenv("STUDYHALL_PORT", "8080")
    monkeypatch.setenv("STUDYHALL_DATABASE_URL", "mysql://nope")
    with pytest.raises(ConfigError, match="STUDYHALL_DATABASE_URL"):
        load_settings()
    monkeypatch.delenv("STUDYHALL_DATABASE_URL")
    monkeypatch.setenv("STUDYHALL_REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.delenv("STUDYHALL_JWT_SECRET", raising=False)
    with pytest.raises(ConfigError, match="STUDYHALL_JWT_SECRET is required"):
        load_settings()


def test_jwt_secret_is_generated_once_and_kept_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STUDYHALL_REDIS_URL", raising=False)  # scaled mode requires a configured secret
    monkeypatch.delenv("STUDYHALL_JWT_SECRET", raising=False)
    settings = load_settings(data_dir=tmp_path / "data")
    key = settings.jwt_key()
    assert len(key) >= 32
    assert load_settings(data_dir=tmp_path / "data", redis_url=None).jwt_key() == key
    mode = stat.S_IMODE((tmp_path / "data" / "jwt_secret").stat().st_mode)
    assert mode == 0o600
    assert "********" in load_settings(data_dir=tmp_path, jwt_secret="s" * 40).masked().values()
