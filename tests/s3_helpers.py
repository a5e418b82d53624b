"""The S3 side of the media tests: moto's server (``moto_server`` from ``.venv-s3``, installed by scripts/setup;
MinIO cannot be installed here) on 127.0.0.1, started once per test module that uses :func:`s3_url` and
stopped by its PID; a fresh bucket per test (:func:`bucket`), read directly (:class:`Bucket`); the settings of
an app storing into it (:func:`s3_settings`).

A pytest plugin of tests/conftest.py (its fixtures are there for every test module); a module of such tests
sets ``pytestmark = NEEDS_S3``."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aioboto3
import pytest

from core_api.settings import Settings
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parent.parent
MOTO = ROOT / ".venv-s3" / "bin" / "moto_server"
PREFIX = "t/"

NEEDS_S3 = [
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed (scripts/setup installs it)"),
    pytest.mark.skipif(
        not MOTO.exists(), reason=f"no S3 server to test against: {MOTO} is missing (scripts/setup installs moto)"
    ),
]
"""The marks of a module whose tests need moto (and ffmpeg): ``pytestmark = NEEDS_S3``."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    proc = subprocess.Popen([str(MOTO), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"moto_server exited with {proc.returncode}: see {log.name}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("moto_server did not start within 30 s")
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def s3_settings(database_url: str, data_dir: Path, url: str, bucket: str, **overrides: Any) -> Settings:
    return make_settings(
        database_url, data_dir, s3_bucket=bucket, s3_endpoint_url=url, s3_access_key_id="test",
        s3_secret_access_key="test-secret", s3_prefix=PREFIX, **overrides,
    )  # fmt: skip


def files_under(root: Path) -> list[Path]:
    """The files (not directories) under ``root``: what a node keeps on its own disk."""
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


class Bucket:
    """The test's bucket, read directly (not through studyhall)."""

    def __init__(self, url: str, name: str) -> None:
        self.url, self.name = url, name
        self.session = aioboto3.Session()

    def client(self) -> Any:
        return self.session.client(
            "s3", endpoint_url=self.url, region_name="us-east-1", aws_access_key_id="test",
            aws_secret_access_key="test-secret",
        )  # fmt: skip

    async def create(self) -> None:
        async with self.client() as s3:
            await s3.create_bucket(Bucket=self.name)

    async def keys(self, under: str = "") -> list[str]:
        async with self.client() as s3:
            answer = await s3.list_objects_v2(Bucket=self.name, Prefix=PREFIX + under)
            return sorted(item["Key"] for item in answer.get("Contents", []))

    async def delete(self, key: str) -> None:
        async with self.client() as s3:
            await s3.delete_object(Bucket=self.name, Key=PREFIX + key)

    async def get(self, key: str) -> tuple[bytes, str]:
        async with self.client() as s3:
            answer = await s3.get_object(Bucket=self.name, Key=PREFIX + key)
            async with answer["Body"] as body:
                return await body.read(), answer["ContentType"]


@pytest.fixture
async def bucket(s3_url: str) -> Bucket:
    made = Bucket(s3_url, f"studyhall-test-{uuid.uuid4().hex[:12]}")
    await made.create()
    return made
