"""Executions over REST and Socket.IO on the in-process pool: run, wait, push, judge, limits, refusals."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from core_api.context import CORE
from core_api.settings import Settings
from realtime.app import create_app
from tests.chat_helpers import server_url
from tests.conftest import ApiClient, make_settings
from tests.nodes import User, connect

SLOW = {"language": "python", "source": "import time\ntime.sleep(30)", "limits": {"wall_ms": 5000}}


def sandbox_settings(database_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"sandbox_workers": 2, "sandbox_wall_ms": 6000, "sandbox_cpu_ms": 3000}
    values.update(overrides)
    return make_settings(database_url, tmp_path, **values)


@pytest.fixture
async def sapi(aiohttp_client: Any, database_url: str, tmp_path: Path, sandbox_machine: None) -> ApiClient:
    """An app whose executions run in its own pool (two workers)."""
    return ApiClient(await aiohttp_client(create_app(sandbox_settings(database_url, tmp_path))))


async def test_run_and_wait_for_the_result(sapi: ApiClient) -> None:
    me = await sapi.user()
    body = {"language": "python", "source": "import sys\nprint(input()[::-1])\nsys.exit(3)", "stdin": "olleh\n"}
    status, done = await sapi.call("POST", "/executions?wait=true", me, json=body)
    assert status == 200, done
    assert done["state"] == "finished" and done["kind"] == "run"
    assert (done["status"], done["stdout"], done["exit_code"], done["signal"]) == ("runtime_error", "hello\n", 3, None)
    assert done["cpu_ms"] >= 0 and done["wall_ms"] >= 0 and done["memory_kb"] > 0
    assert done["truncated"] is False and done["compile"] is None and done["judge"] is None
    assert done["started_at"] and done["finished_at"]
    status, again = await sapi.call("GET", f"/executions/{done['id']}", me)
    assert status == 200 and again == done


async def test_results_are_pushed_to_the_requester(sapi: ApiClient) -> None:
    me = await sapi.user()
    client = await connect(server_url(sapi), User(me.id, me.email, "me", me.token))
    try:
        body = {"language": "c", "source": '#include <stdio.h>\nint main(void){puts("compiled");}'}
        status, queued = await sapi.call("POST", "/executions", me, json=body)
        assert status == 202, queued
        assert queued["state"] in ("queued", "running") and queued["status"] is None
        pushed = await client.inbox.wait_for("execution:finished", lambda e: e["id"] == queued["id"], within=30)
        assert pushed["status"] == "ok" and pushed["stdout"] == "compiled\n"
        assert pushed["compile"]["status"] == "ok"
        status, stored = await sapi.call("GET", f"/executions/{queued['id']}", me)
        assert stored == pushed
    finally:
        await client.disconnect()


async def test_an_execution_is_only_its_owners(sapi: ApiClient) -> None:
    owner, other, admin = await sapi.user(), await sapi.user(), await sapi.user("admin")
    _, done = await sapi.call("POST", "/executions?wait=true", owner, json={"language": "python", "source": "pass"})
    assert (await sapi.call("GET", f"/executions/{done['id']}", other))[0] == 404
    assert (await sapi.call("GET", f"/executions/{done['id']}", admin))[0] == 200
    assert (await sapi.call("GET", f"/executions/{done['id']}"))[0] == 401
    assert (await sapi.call("GET", f"/executions/{uuid.uuid4()}", owner))[0] == 404


async def test_judging_over_rest(sapi: ApiClient) -> None:
    me = await sapi.user()
    body = {
        "language": "javascript",
        "source": "const [a, b] = require('fs').readFileSync(0, 'utf8').split(' ').map(Number); console.log(a * b)",
        "tests": [
            {"stdin": "2 3", "expected_output": "6"},
            {"stdin": "4 5", "expected_output": "21"},
            {"stdin": "1 1", "expected_output": "1"},
        ],
        "stop_at_first_failure": True,
    }
    status, done = await sapi.call("POST", "/executions?wait=true", me, json=body)
    assert status == 200, done
    judge = done["judge"]
    assert (judge["verdict"], judge["passed"], judge["total"]) == ("wrong_answer", 1, 3)
    assert [c["verdict"] for c in judge["cases"]] == ["accepted", "wrong_answer", "skipped"]
    assert judge["cases"][1]["stdout"] == "20\n"
    assert done["kind"] == "judge" and done["stdout"] == "20\n"  # the deciding run


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"language": "python"}, "exactly one of source or files"),
        ({"language": "python", "source": "", "files": [{"path": "a.py", "content": ""}]}, "exactly one"),
        ({"language": "brainfuck", "source": "+"}, "unknown language"),
        ({"language": "python", "source": "", "limits": {"memory_kb": 10**9}}, "memory_kb may be at most"),
        ({"language": "python", "source": "", "files": None, "tests": []}, "invalid"),
        ({"language": "python", "files": [{"path": "../escape.py", "content": ""}]}, "invalid"),
        ({"language": "python", "source": "", "stdin": "x", "tests": [{"expected_output": ""}]}, "stdin"),
    ],
)
async def test_invalid_requests_are_refused(sapi: ApiClient, body: dict[str, Any], fragment: str) -> None:
    status, answer = await sapi.call("POST", "/executions", await sapi.user(), json=body)
    assert status == 400, answer
    assert fragment in answer["error"]["message"] or fragment in str(answer["error"]["details"])


async def test_languages_are_listed_for_everyone(sapi: ApiClient) -> None:
    status, answer = await sapi.call("GET", "/languages")
    assert status == 200
    assert {lang["id"] for lang in answer["items"]} == {"python", "javascript", "c", "cpp"}
    assert all(lang["version"] for lang in answer["items"])


async def test_a_full_queue_answers_rate_limited(
    aiohttp_client: Any, database_url: str, tmp_path: Path, sandbox_machine: None
) -> None:
    settings = sandbox_settings(database_url, tmp_path, sandbox_workers=1, sandbox_queue=0)
    api = ApiClient(await aiohttp_client(create_app(settings)))
    first, second = await api.user(), await api.user()
    status, running = await api.call("POST", "/executions", first, json=SLOW)
    assert status == 202, running
    status, refused = await api.call("POST", "/executions", second, json=SLOW)
    assert status == 429 and refused["error"]["code"] == "rate_limited"
    status, _ = await api.call("GET", "/healthz")  # nothing else is held up
    rows = await api.app[CORE].pool.fetchval("SELECT count(*) FROM executions WHERE user_id = $1", uuid.UUID(second.id))
    assert rows == 0  # a refused execution leaves nothing behind


async def test_one_user_cannot_fill_the_queue(
    aiohttp_client: Any, database_url: str, tmp_path: Path, sandbox_machine: None
) -> None:
    settings = sandbox_settings(database_url, tmp_path, sandbox_per_user=2)
    api = ApiClient(await aiohttp_client(create_app(settings)))
    me, other = await api.user(), await api.user()
    for _ in range(2):
        assert (await api.call("POST", "/executions", me, json=SLOW))[0] == 202
    status, refused = await api.call("POST", "/executions", me, json=SLOW)
    assert status == 429 and "already have 2" in refused["error"]["message"]
    assert (await api.call("POST", "/executions?wait=true", other, json={"language": "python", "source": ""}))[0] == 200


async def test_shutting_down_finishes_running_executions_as_internal_errors(
    aiohttp_client: Any, database_url: str, tmp_path: Path, sandbox_machine: None
) -> None:
    client: TestClient = await aiohttp_client(create_app(sandbox_settings(database_url, tmp_path)))  # type: ignore[type-arg]
    api = ApiClient(client)
    me = await api.user()
    _, queued = await api.call("POST", "/executions", me, json=SLOW)
    await client.close()  # the app shuts down while the program still sleeps
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow("SELECT state, result FROM executions WHERE id = $1", uuid.UUID(queued["id"]))
    finally:
        await conn.close()
    assert row["state"] == "finished"
    assert '"internal_error"' in row["result"] and "shut down" in row["result"]


async def test_an_unavailable_sandbox_is_reported_and_runs_nothing(
    aiohttp_client: Any, database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="realtime.jobs")
    settings = make_settings(database_url, tmp_path, sandbox_bwrap="/nonexistent/bwrap")
    api = ApiClient(await aiohttp_client(create_app(settings)))
    assert any(
        "code execution is disabled" in r.getMessage() and "bubblewrap" in r.getMessage() for r in caplog.records
    )
    resp = await api.http.get("/readyz")
    body = await resp.json()
    assert resp.status == 200  # not required: the node still serves everything else
    assert body["checks"]["sandbox"].startswith("unavailable: bubblewrap")
    status, answer = await api.call("POST", "/executions", await api.user(), json={"language": "python", "source": ""})
    assert status == 503 and answer["error"]["code"] == "unavailable"
    assert "bubblewrap" in answer["error"]["message"]


async def test_missing_cgroups_make_a_required_sandbox_not_ready(
    aiohttp_client: Any, database_url: str, tmp_path: Path, sandbox_machine: None
) -> None:
    settings = make_settings(database_url, tmp_path, sandbox_cgroup_root=tmp_path / "no-cgroups", sandbox_required=True)
    api = ApiClient(await aiohttp_client(create_app(settings)))
    resp = await api.http.get("/readyz")
    body = await resp.json()
    assert resp.status == 503 and body["status"] == "not_ready"
    assert "cgroups are missing" in body["checks"]["sandbox"]


@pytest.mark.parametrize(
    ("language", "source", "status"),
    [
        ("python", "print('start')\nwhile True: pass\n", "time_limit_exceeded"),
        ("python", "print('start')\nhog = []\nwhile True: hog.append(bytearray(1 << 20))\n", "memory_limit_exceeded"),
        ("c", '#include <stdio.h>\nint main(void){ printf("start\\n"); for (;;); }\n', "time_limit_exceeded"),
        ("cpp", '#include <iostream>\nint main(){ std::cout << "start" << "\\n"; for (;;); }\n', "time_limit_exceeded"),
        ("javascript", "console.log('start');\nfor (;;);\n", "time_limit_exceeded"),
    ],
)
async def test_output_printed_before_a_limit_kill_is_kept(
    sapi: ApiClient, language: str, source: str, status: str
) -> None:
    me = await sapi.user()
    body = {"language": language, "source": source, "limits": {"cpu_ms": 1000, "memory_kb": 65536}}
    got, done = await sapi.call("POST", "/executions?wait=true", me, json=body)
    assert got == 200, done
    assert (done["status"], done["stdout"]) == (status, "start\n"), done


@pytest.mark.parametrize(
    ("language", "files", "where"),
    [
        ("python", {"main.py": "import util\nprint('never')\n", "util.py": "def f(:\n    pass\n"}, "util.py"),
        ("javascript", {"main.js": "console.log('never');\nfunction (\n"}, "main.js"),
    ],
)
async def test_a_syntax_error_is_a_compile_error(
    sapi: ApiClient, language: str, files: dict[str, str], where: str
) -> None:
    me = await sapi.user()
    program = {"language": language, "files": [{"path": p, "content": c} for p, c in files.items()]}
    got, done = await sapi.call("POST", "/executions?wait=true", me, json=program)
    assert got == 200, done
    assert done["status"] == "compile_error" and done["stdout"] == "", done
    assert done["message"].startswith("compilation failed") and where in done["compile"]["stderr"], done
    judged = {**program, "tests": [{"stdin": "", "expected_output": "never"}]}
    got, done = await sapi.call("POST", "/executions?wait=true", me, json=judged)
    assert got == 200, done
    assert (done["judge"]["verdict"], done["judge"]["cases"]) == ("compile_error", []), done
    # A program that runs is not checked; one that only says "SyntaxError" (or raises it from eval) and
    # fails is checked and stays a runtime error.
    ok_source = "console.log('ok')" if language == "javascript" else "print('ok')"
    got, done = await sapi.call("POST", "/executions?wait=true", me, json={"language": language, "source": ok_source})
    assert (done["status"], done["stdout"], done["compile"]) == ("ok", "ok\n", None), done
    fake = "eval('(')"
    got, done = await sapi.call("POST", "/executions?wait=true", me, json={"language": language, "source": fake})
    assert done["status"] == "runtime_error" and "SyntaxError" in done["stderr"], done
