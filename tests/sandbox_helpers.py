"""What the sandbox tests need: a machine that can sandbox (installed if possible), and a runner.

``sandbox_machine`` (session) makes sure bubblewrap is there: when it is missing and the tests run as
root with apt-get, it is installed (``apt-get install -y bubblewrap``, as ``scripts/setup`` does);
otherwise the tests that need it skip, saying why. With ``STUDYHALL_TEST_REQUIRE_SANDBOX=1`` (set by
``.ci/run``) they fail instead, so CI can never pass by skipping them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.host import probe
from sandbox.runner import RUN_LIMITS, LocalRunner, SandboxConfig

# Small limits keep the attack tests quick; each test may lower them further per request.
TEST_RUN_LIMITS = RUN_LIMITS.model_copy(update={"cpu_ms": 3000, "wall_ms": 6000, "memory_kb": 128 * 1024})


def _unavailable_reason() -> str | None:
    return probe("bwrap", Path("/sys/fs/cgroup")).reason


@pytest.fixture(scope="session")
def sandbox_machine() -> None:
    """Skip (or, on CI, fail) unless this machine can run sandboxes; install bubblewrap if allowed."""
    reason = _unavailable_reason()
    if reason is not None and "bubblewrap" in reason and os.geteuid() == 0 and shutil.which("apt-get"):
        install = subprocess.run(
            ["apt-get", "install", "-y", "-qq", "bubblewrap"], capture_output=True, text=True, check=False
        )
        if install.returncode != 0:
            reason += f" (and apt-get install bubblewrap failed: {install.stderr.strip()[-300:]})"
        else:
            reason = _unavailable_reason()
    if reason is not None:
        if os.environ.get("STUDYHALL_TEST_REQUIRE_SANDBOX") == "1":
            pytest.fail(f"the sandbox cannot run here and STUDYHALL_TEST_REQUIRE_SANDBOX=1: {reason}")
        pytest.skip(f"the sandbox cannot run here: {reason}")


def pool_config(**overrides: Any) -> SandboxConfig:
    values: dict[str, Any] = {"workers": 2, "spare_slots": 1, "queue": 8, "run_limits": TEST_RUN_LIMITS}
    values.update(overrides)
    return SandboxConfig(**values)


def processes_of(pool: str) -> list[str]:
    """Command lines of the processes still working for a pool (its slot paths are in bubblewrap's)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes() if entry.name.isdigit() else b""
        except OSError:
            continue
        if f"/{pool}/slot-".encode() in cmdline:
            found.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


@pytest.fixture
async def runner(sandbox_machine: None) -> AsyncIterator[LocalRunner]:
    """An open in-process pool with two workers; once closed, none of its processes may be left."""
    pool = LocalRunner(pool_config())
    await pool.open()
    try:
        yield pool
    finally:
        await pool.close()
    assert pool.name is not None
    assert await asyncio.to_thread(processes_of, pool.name) == []
