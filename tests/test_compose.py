"""docker-compose.yml, the Dockerfile and the load balancer's config, checked without a container engine.

None can run here, so the files are parsed and held to what the app needs: the services and their
start order, environment variables that are real settings (and validate as such), the nodes' command,
a balancer that passes websocket upgrades and keeps long-polling sessions on one node, and the same
settings the two-node test harness (tests/nodes.py) gives its nodes. ``nginx -t`` and
``docker compose config`` run too where those programs exist.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from core_api.settings import ENV_PREFIX, Settings, load_settings
from tests.nodes import NODE_SETTINGS

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
NGINX = ROOT / "deploy" / "nginx.conf"
DOCKERFILE = ROOT / "Dockerfile"
SERVE = ["studyhall", "serve", "--host", "0.0.0.0", "--port", "8080"]
# PyYAML comes with schemathesis (its stubs are not installed, hence no typed import).
yaml: Any = importlib.import_module("yaml")
VARIABLE = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?:(?P<op>:-|:\?|-|\?)(?P<arg>[^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"]
    return found


def app_nodes(services: dict[str, Any]) -> dict[str, Any]:
    return {name: svc for name, svc in services.items() if svc.get("command") == SERVE}


def depends_on(service: dict[str, Any]) -> dict[str, Any]:
    deps = service.get("depends_on", {})
    return {name: {"condition": "service_started"} for name in deps} if isinstance(deps, list) else dict(deps)


def interpolate(value: str, secret: str = "s" * 48) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}``, with every variable unset
    (required ones get ``secret``)."""

    def one(match: re.Match[str]) -> str:
        op, arg = match.group("op"), match.group("arg")
        if op in (":-", "-"):
            return arg
        return secret

    return VARIABLE.sub(one, value)


def major(image: str) -> int:
    tag = image.rpartition(":")[2]
    return int(tag.split(".")[0].split("-")[0])


def test_the_scaled_topology_is_there(services: dict[str, Any]) -> None:
    assert {"postgres", "redis", "lb"} <= set(services)
    assert sorted(app_nodes(services)) == ["app1", "app2"]
    assert major(services["postgres"]["image"]) >= 16
    assert services["redis"]["image"].startswith("redis:") and major(services["redis"]["image"]) == 7


def test_services_start_in_order_of_health(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        for dep, how in depends_on(svc).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            if how.get("condition") == "service_healthy":
                assert "test" in services[dep].get("healthcheck", {}), f"{name} waits for {dep}'s health: none"
    for name in app_nodes(services):
        deps = depends_on(services[name])
        for needed in ("postgres", "redis"):
            assert deps.get(needed, {}).get("condition") == "service_healthy", (name, needed)
    lb = depends_on(services["lb"])
    assert set(app_nodes(services)) <= set(lb)

    # No cycles: every service can be started after the ones it depends on.
    started: set[str] = set()
    while len(started) < len(services):
        ready = {n for n, s in services.items() if n not in started and set(depends_on(s)) <= started}
        assert ready, f"dependency cycle among {set(services) - started}"
        started |= ready


def test_app_nodes_share_valid_settings(services: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    nodes = app_nodes(services)
    envs = [svc["environment"] for svc in nodes.values()]
    assert all(env == envs[0] for env in envs), "the app nodes must run with the same settings"
    env: dict[str, str] = {k: str(v) for k, v in envs[0].items()}
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    assert set(env) <= known, f"not settings: {sorted(set(env) - known)}"
    assert set(NODE_SETTINGS) <= set(env), "the two-node test gives its nodes settings compose does not"
    # The token key comes from the operator's environment, never from this file.
    assert VARIABLE.fullmatch(env["STUDYHALL_JWT_SECRET"]), env["STUDYHALL_JWT_SECRET"]
    assert VARIABLE.fullmatch(env["STUDYHALL_JWT_SECRET"]).group("op") == ":?"  # type: ignore[union-attr]

    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, interpolate(value))
    settings = load_settings()  # what a node would start with: valid
    assert settings.redis_url is not None and settings.database_url is not None
    assert settings.trust_forwarded_for is True

    db = urlsplit(settings.database_url.get_secret_value())
    pg = services["postgres"]["environment"]
    assert (db.hostname, db.port or 5432) == ("postgres", 5432)
    assert (db.username, db.path.lstrip("/")) == (pg["POSTGRES_USER"], pg["POSTGRES_DB"])
    assert db.password == interpolate(str(pg["POSTGRES_PASSWORD"]))
    assert urlsplit(settings.redis_url.get_secret_value()).hostname == "redis"


def test_app_nodes_are_built_from_the_dockerfile(services: dict[str, Any]) -> None:
    for name, svc in app_nodes(services).items():
        assert svc["build"] in (".", {"context": "."}), name
        assert "test" in svc["healthcheck"] and "/readyz" in " ".join(svc["healthcheck"]["test"])
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"^RUN pip install \.", text, re.M)
    assert re.search(r"^EXPOSE 8080$", text, re.M)
    assert re.search(r'^CMD \["studyhall", "serve"', text, re.M)
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignored = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert {".git", ".venv", "**/node_modules"} <= set(ignored)
    assert not {"pyproject.toml", "README.md", "core_api", "realtime", "rooms"} & set(ignored)


def test_the_balancer_passes_websockets_and_keeps_polling_sessions_on_one_node(services: dict[str, Any]) -> None:
    lb = services["lb"]
    assert lb["image"].startswith("nginx:")
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in lb["volumes"]
    assert any(str(p).endswith(":8080") for p in lb["ports"])

    conf = re.sub(r"#.*", "", NGINX.read_text())
    upstream = re.search(r"upstream\s+(\w+)\s*\{(?P<body>[^}]*)\}", conf)
    assert upstream, "no upstream block"
    body = upstream.group("body")
    assert re.search(r"^\s*ip_hash;", body, re.M), "long-polling needs sticky sessions (ip_hash)"
    servers = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", body, re.M)
    assert sorted(servers) == sorted((name, "8080") for name in app_nodes(services))
    assert re.search(r"listen\s+8080;", conf)
    assert f"proxy_pass http://{upstream.group(1)};" in conf
    assert "proxy_http_version 1.1;" in conf
    assert "proxy_set_header Upgrade $http_upgrade;" in conf
    assert "proxy_set_header Connection $connection_upgrade;" in conf
    assert re.search(r"map \$http_upgrade \$connection_upgrade \{[^}]*default upgrade;", conf)
    timeout = re.search(r"proxy_read_timeout (\d+)s;", conf)
    assert timeout and int(timeout.group(1)) >= 60, "websockets idle longer than nginx's default 60 s"
    # The nodes trust the first X-Forwarded-For entry: the balancer must set it, not append to it.
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in conf
    assert "$proxy_add_x_forwarded_for" not in conf


def test_no_beat_service_the_cycle_runs_in_every_node() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert "beat" not in services
    assert all(svc.get("environment", {}).get("STUDYHALL_CONTEST_CYCLE_S", "30") != "0" for svc in services.values())


def test_the_sandbox_worker_runs_with_the_nodes_settings_and_may_sandbox(services: dict[str, Any]) -> None:
    worker = services["worker"]
    assert worker["command"] == ["studyhall", "worker"]
    node = next(iter(app_nodes(services).values()))
    assert worker["environment"] == node["environment"], "the worker must see the nodes' database, Redis and limits"
    deps = depends_on(worker)
    assert all(deps.get(name, {}).get("condition") == "service_healthy" for name in ("postgres", "redis"))
    # Root to make the sandbox user, cgroups and mounts; privileged for bubblewrap's namespaces.
    assert str(worker["user"]).split(":")[0] == "0" and worker["privileged"] is True
    assert worker["healthcheck"] == {"disable": True}
    assert re.search(r"apt-get install[^\n]*\bbubblewrap\b[^\n]*\bpython3\b", DOCKERFILE.read_text())


def test_the_media_worker_runs_with_the_nodes_settings_and_media(services: dict[str, Any]) -> None:
    worker = services["worker-media"]
    assert worker["command"] == ["studyhall", "worker", "-Q", "media"]
    node = next(iter(app_nodes(services).values()))
    assert worker["environment"] == node["environment"], "the media worker must see the nodes' database and Redis"
    assert "STUDYHALL_REDIS_URL" in worker["environment"]  # so the nodes send media jobs to it (auto: celery)
    assert worker["volumes"] == node["volumes"], "the media worker must share the nodes' media volume"
    assert set(depends_on(worker)) >= {"postgres", "redis"}


def test_nginx_sends_media_files_from_the_shared_volume(services: dict[str, Any]) -> None:
    """The nodes' X-Accel-Redirect prefix is an internal nginx location aliasing the media volume, which the
    balancer mounts read-only where the nodes keep it."""
    node = next(iter(app_nodes(services).values()))
    prefix = node["environment"]["STUDYHALL_MEDIA_ACCEL_PREFIX"]
    media_dir = node["environment"]["STUDYHALL_MEDIA_DIR"]
    conf = NGINX.read_text()
    block = re.search(r"location " + re.escape(prefix) + r" \{(?P<body>[^}]*)\}", conf)
    assert block is not None, f"no nginx location {prefix}"
    body = block.group("body")
    assert re.search(r"^\s*internal;", body, re.M), "the media location must be internal (no direct access)"
    alias = re.search(r"alias\s+(\S+);", body)
    assert alias is not None and alias.group(1).rstrip("/") == media_dir.rstrip("/")
    assert "X-Content-Type-Options nosniff" in body  # not carried over from the node's answer by nginx
    volume = next(v for v in node["volumes"] if v.split(":")[1] == media_dir).split(":")[0]
    assert f"{volume}:{media_dir}:ro" in services["lb"]["volumes"]


def test_minio_holds_the_finished_media(services: dict[str, Any]) -> None:
    """The nodes' S3 settings name the minio service, the bucket and key minio-init creates; every app service
    (nodes and workers) starts only after minio-init has made them."""
    node = next(iter(app_nodes(services).values()))
    env = node["environment"]
    assert urlsplit(env["STUDYHALL_S3_ENDPOINT_URL"]).hostname == "minio" and "minio" in services
    assert services["minio"]["image"].startswith("minio/minio:")
    assert any(v.split(":")[1] == "/data" for v in services["minio"]["volumes"])  # objects outlive the container
    init = services["minio-init"]
    assert init["image"].startswith("minio/mc:") and init["restart"] == "no"
    assert set(depends_on(init)) == {"minio"}
    assert init["environment"]["BUCKET"] == env["STUDYHALL_S3_BUCKET"]
    assert init["environment"]["APP_KEY_ID"] == env["STUDYHALL_S3_ACCESS_KEY_ID"]
    assert interpolate(init["environment"]["APP_SECRET"]) == interpolate(env["STUDYHALL_S3_SECRET_ACCESS_KEY"])
    assert VARIABLE.fullmatch(env["STUDYHALL_S3_SECRET_ACCESS_KEY"]).group("op") == ":?"  # type: ignore[union-attr]
    script = init["command"][0]
    assert 'mc mb --ignore-existing "local/$$BUCKET"' in script and "mc admin user add" in script
    for name in (*app_nodes(services), "worker", "worker-media"):
        assert depends_on(services[name]).get("minio-init") == {"condition": "service_completed_successfully"}, name
        assert services[name]["environment"] == env, name


def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
    if nginx is None:
        pytest.skip("nginx is not installed (optional check: apt-get install nginx)")
    # The app hosts resolve only inside compose's network: point them at this machine for the check.
    conf = re.sub(r"server app\d+:8080", "server 127.0.0.1:8080", NGINX.read_text())
    (tmp_path / "logs").mkdir()
    (tmp_path / "nginx.conf").write_text(conf)
    result = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", str(tmp_path / "error.log"),
         "-g", f"pid {tmp_path / 'nginx.pid'};"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_docker_compose_accepts_the_file() -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("docker compose is not installed (optional check)")
    env = {"PATH": "/usr/bin:/bin", "STUDYHALL_JWT_SECRET": "s" * 48}
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
