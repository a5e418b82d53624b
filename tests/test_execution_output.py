"""What a program writes always ends up stored: NUL bytes, and a result the database will not take.

Postgres refuses ``\\u0000`` in text (``jsonb`` included), so a program that printed a NUL byte used to
leave its execution ``running`` for ever, and four of them locked their author out of executions for
ten minutes. Its output is now stored with each NUL shown as U+FFFD and ``nul_replaced: true``, and an
execution whose result cannot be stored at all still finishes (``internal_error``, saying why).
Every place output goes is covered: executions, judged cases (C), a workspace's streamed ``run:output``
and ``run:finished``.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from core_api.context import CORE
from realtime.app import create_app
from tests.chat_helpers import WAIT_S, open_tab
from tests.conftest import ApiClient, make_settings

REPLACEMENT = "\ufffd"
NUL_PROGRAM = {"language": "python", "source": "import sys\nsys.stdout.write('a\\0b\\n')\nsys.stderr.write('\\0')\n"}


@pytest.fixture
async def sapi(aiohttp_client: Any, database_url: str, tmp_path: Path, sandbox_machine: None) -> ApiClient:
    """An app with its own pool; ``?wait=true`` gives up after 15 s, so a stuck execution fails quickly."""
    settings = make_settings(
        database_url, tmp_path, sandbox_workers=2, sandbox_wall_ms=6000, sandbox_cpu_ms=3000,
        sandbox_wait_timeout_s=15, sandbox_per_user=2,
    )  # fmt: skip
    return ApiClient(await aiohttp_client(create_app(settings)))


async def test_a_program_printing_nul_bytes_finishes_and_never_locks_its_author_out(sapi: ApiClient) -> None:
    me = await sapi.user()
    # More than STUDYHALL_SANDBOX_PER_USER of them, one after the other: none may stay unfinished.
    for _ in range(3):
        status, done = await sapi.call("POST", "/executions?wait=true", me, json=NUL_PROGRAM)
        assert status == 200, done
        assert (done["state"], done["status"]) == ("finished", "ok"), done
        assert done["stdout"] == f"a{REPLACEMENT}b\n" and done["stderr"] == REPLACEMENT
        assert done["nul_replaced"] is True
        assert (await sapi.call("GET", f"/executions/{done['id']}", me)) == (200, done)
    status, clean = await sapi.call("POST", "/executions?wait=true", me, json={"language": "python", "source": "1"})
    assert status == 200 and clean["status"] == "ok" and clean["nul_replaced"] is False


async def test_judged_cases_are_judged_on_the_real_output_and_stored_safely(sapi: ApiClient) -> None:
    me = await sapi.user()
    source = """#include <stdio.h>
#include <string.h>
int main(void) {
    char word[16] = {0};
    if (scanf("%15s", word) == 1 && strcmp(word, "nul") == 0) fwrite("o\\0k\\n", 1, 4, stdout);
    else puts("ok");
    return 0;
}
"""
    cases = [{"stdin": "plain", "expected_output": "ok"}, {"stdin": "nul", "expected_output": "ok"}]
    status, done = await sapi.call(
        "POST", "/executions?wait=true", me, json={"language": "c", "source": source, "tests": cases}
    )
    assert status == 200, done
    assert done["state"] == "finished" and done["nul_replaced"] is True
    judged = done["judge"]["cases"]
    assert [c["verdict"] for c in judged] == ["accepted", "wrong_answer"]
    assert [c["stdout"] for c in judged] == ["ok\n", f"o{REPLACEMENT}k\n"]
    assert done["stdout"] == f"o{REPLACEMENT}k\n"  # the deciding run


async def test_a_workspace_run_printing_nul_bytes_reaches_the_room_and_finishes(sapi: ApiClient) -> None:
    owner = await sapi.user()
    source = "import sys\nprint('one\\0two', flush=True)\n"
    body = {"name": "W", "language": "python", "files": {"main.py": source}, "entry": "main.py"}
    status, ws = await sapi.call("POST", "/workspaces", owner, json=body)
    assert status == 201, ws
    tab = await open_tab(sapi, owner)  # a workspace outside any room: its runs go to their author
    outputs: asyncio.Queue[Any] = asyncio.Queue()
    finished: asyncio.Queue[Any] = asyncio.Queue()
    tab.sio.on("run:output", outputs.put)
    tab.sio.on("run:finished", finished.put)
    try:
        status, run = await sapi.call("POST", f"/workspaces/{ws['id']}/runs?wait=true", owner, json={})
        assert status == 200, run
        assert run["execution"]["stdout"] == f"one{REPLACEMENT}two\n" and run["execution"]["nul_replaced"]
        out = await asyncio.wait_for(outputs.get(), WAIT_S)
        assert (out["stream"], out["text"]) == ("stdout", f"one{REPLACEMENT}two\n")
        done = await asyncio.wait_for(finished.get(), WAIT_S)
        assert done["run_id"] == run["id"] and done["execution"]["state"] == "finished"
    finally:
        await tab.close()


async def test_an_execution_whose_result_cannot_be_stored_still_finishes_saying_why(
    sapi: ApiClient, database_url: str
) -> None:
    """The database refusing the result (here a trigger standing in for any such failure)."""
    marker = f"unstorable-{uuid.uuid4().hex}"
    conn = await asyncpg.connect(database_url)
    await conn.execute(
        f"""CREATE FUNCTION refuse_{marker[-8:]}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF NEW.result::text LIKE '%{marker}%' THEN RAISE EXCEPTION 'refused for the test'; END IF;
              RETURN NEW;
            END $$;
            CREATE TRIGGER refuse_{marker[-8:]} BEFORE UPDATE ON executions
              FOR EACH ROW EXECUTE FUNCTION refuse_{marker[-8:]}();"""
    )
    try:
        me = await sapi.user()
        status, done = await sapi.call(
            "POST", "/executions?wait=true", me, json={"language": "python", "source": f"print({marker!r})"}
        )
        assert status == 200, done
        assert (done["state"], done["status"]) == ("finished", "internal_error")
        assert "could not be stored" in done["message"] and done["stdout"] == ""
        # Its author is not held up by it.
        rows = await sapi.app[CORE].pool.fetchval(
            "SELECT count(*) FROM executions WHERE user_id = $1 AND state <> 'finished'", uuid.UUID(me.id)
        )
        assert rows == 0
    finally:
        await conn.execute(f"DROP TRIGGER refuse_{marker[-8:]} ON executions; DROP FUNCTION refuse_{marker[-8:]}()")
        await conn.close()
