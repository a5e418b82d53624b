"""Schemathesis over the served OpenAPI document: no 5xx and no response that breaks the schema.

All of schemathesis' default checks run except ``positive_data_acceptance``: the document cannot express
every rule a handler enforces (a display name must be printable, text must not contain NUL, a grade
must not exceed the assignment's points), so a schema-valid request may rightly get a 4xx.

Random and boundary inputs go to every operation as an admin (who may reach every endpoint), against a
real server and Postgres, with a small course, community and submission in place so that generated
requests also hit existing resources some of the time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import positive_data_acceptance

from core_api.auth import AUTH, RegisterIn, register
from core_api.context import CORE
from tests.conftest import make_settings
from tests.live import LiveServer


@pytest.fixture(scope="module")
def live(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir: Path = tmp_path_factory.mktemp("fuzz")
    server = LiveServer(make_settings(database_url, data_dir, db_pool_max=10)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def admin_headers(live: LiveServer) -> dict[str, str]:
    async def make() -> str:
        core, auth = live.app[CORE], live.app[AUTH]
        row = await register(
            core,
            auth,
            RegisterIn(email="fuzz-admin@example.com", password="fuzz-password", display_name="Fuzz"),
            role="admin",
        )
        return str(auth.tokens.issue(row["id"], "admin"))

    return {"Authorization": f"Bearer {live.run(make())}"}


def test_no_server_errors_and_responses_match_schema(live: LiveServer, admin_headers: dict[str, str]) -> None:
    # The operations are driven one by one from here rather than through schemathesis' pytest plugin,
    # whose lazy-fixture support breaks on pytest 9.2; every failure is collected and reported together.
    schema = schemathesis.openapi.from_url(f"{live.url}/api/v1/openapi.json")
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            failures.append(f"the document holds an operation schemathesis cannot read: {result.err()}")
            continue
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
        )
        def exercise(case: Any) -> None:
            case.call_and_validate(headers=admin_headers, excluded_checks=[positive_data_acceptance])

        try:
            exercise()
        except (Exception, ExceptionGroup) as exc:  # one operation's failure must not hide the others'
            failures.append(f"{operation.label}: {exc}")
    assert operations > 30, "the OpenAPI document lists fewer operations than the API has"
    assert not failures, "\n\n".join(failures)
