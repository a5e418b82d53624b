"""Contest managers fix problems: edit a problem, and judge its submissions again.

A wrong expected output makes correct answers fail, so the contest's managers (platform admins, and the
organizing community's owner and admins: :meth:`~leaderboards.service.Contests.can_manage`) may change a
problem with ``PATCH /contests/{id}/problems/{pid}``, under the limits of creating one (the same field
sizes; ``cpu_ms`` and ``memory_kb`` at most the server's). Changing what judging depends on (``tests``,
``cpu_ms``, ``memory_kb``) judges every submission of the problem again, in the edit's transaction: the
tests and the verdicts never disagree for long, and an edit the rejudge limit refuses changes nothing.
Changing ``points`` moves the standings at once; a title, statement or samples change nothing else.

``POST /contests/{id}/problems/{pid}/rejudge`` judges them again without an edit. Either way:

- every counted (not disqualified) submission of the problem goes back to the judge: verdict cleared, its
  judging revision raised (only the newest judging's verdict is stored, so one judged with the old tests
  and arriving late changes nothing), standings and live pushes follow as the verdicts land;
- a whole rejudge takes one turn in the node's fair judging gate (:class:`sandbox.fair.FairGate`), so the
  contests' live submissions keep getting judged in between;
- a contest has at most ``STUDYHALL_CONTEST_REJUDGE_RATE_COUNT`` rejudges per
  ``STUDYHALL_CONTEST_REJUDGE_RATE_WINDOW_S`` (then 429 with ``retry_after_s``), counted in Postgres;
- **a finalised contest is never rejudged**, and its tests, limits and points no longer change (409): its
  results are recorded and its prizes paid, and coins already paid may have been spent, so a correction
  could not be taken back from everyone. Titles, statements and samples may still be fixed.

Both are audited (``contest.problem_edit`` with the fields changed, ``contest.rejudge``).
"""

from __future__ import annotations

import math
import uuid
from typing import Any

from pydantic import BaseModel, Field, model_validator

from core_api.context import Tx, audit, new_id
from core_api.errors import AppError, ErrorCode, conflict, forbidden, invalid, not_found
from core_api.executions import run_limits
from core_api.http import Api, Call, Input, Principal
from leaderboards import store
from leaderboards.handlers import CONTESTS
from leaderboards.schemas import MAX_CASES, ProblemOut, RejudgeOut, Sample, SubmissionIn
from leaderboards.service import Contests

JUDGED = ("tests", "cpu_ms", "memory_kb")  # a change to one of these judges every submission again
RESULTS = (*JUDGED, "points")  # what a finalised contest's results follow from
FINALISED = (
    "the contest is finalised: its results are recorded and its prizes paid, so its problems' tests, limits and "
    "points no longer change and its submissions are not judged again"
)


class ProblemPatch(Input):
    """The fields to change (the others stay); the same limits as creating a problem."""

    title: str | None = Field(None, min_length=1, max_length=200)
    statement: str | None = Field(None, max_length=20_000)
    samples: list[Sample] | None = Field(None, max_length=10, description="Shown to contestants.")
    tests: list[Sample] | None = Field(
        None, min_length=1, max_length=MAX_CASES, description="Hidden test cases (replaced as a whole)."
    )
    cpu_ms: int | None = Field(None, ge=10, le=10_000, description="CPU time limit per test case.")
    memory_kb: int | None = Field(None, ge=8 * 1024, le=1024 * 1024, description="Memory limit per test case.")
    points: int | None = Field(None, ge=0, le=10_000, description="What solving it scores under `points` scoring.")

    @model_validator(mode="after")
    def _something(self) -> ProblemPatch:
        if not self.changes():
            raise ValueError("name at least one field to change")
        return self

    def changes(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump(mode="json").items() if v is not None}


class ProblemEditOut(BaseModel):
    problem: ProblemOut
    rejudged: int = Field(description="How many submissions went back to the judge (tests or limits changed).")


async def _manager(contests: Contests, user: Principal, contest_id: uuid.UUID, doing: str) -> None:
    if not await contests.can_manage(user, await contests.contest(contest_id)):
        raise forbidden(f"only the contest's managers may {doing}")


async def _lock_contest(tx: Tx, contest_id: uuid.UUID) -> Any:
    """The contest's row, locked against finalising (which refuses while submissions wait for the judge) and
    other edits. Not ``FOR UPDATE``: a submission being stored holds the problem's row and needs the
    contest's for its foreign key (``FOR KEY SHARE``), which ``FOR NO KEY UPDATE`` lets through."""
    row = await tx.conn.fetchrow("SELECT id, finalised_at FROM contests WHERE id = $1 FOR NO KEY UPDATE", contest_id)
    if row is None:
        raise not_found("contest")
    return row


async def _check_rate(tx: Tx, contests: Contests, contest_id: uuid.UUID) -> None:
    settings = contests.core.settings
    window = settings.contest_rejudge_rate_window_s
    row = await tx.conn.fetchrow(
        "SELECT count(*) AS n, extract(epoch FROM min(created_at) + make_interval(secs => $2) - clock_timestamp())"
        " AS wait FROM contest_rejudges WHERE contest_id = $1 AND created_at > clock_timestamp()"
        " - make_interval(secs => $2)",
        contest_id,
        window,
    )
    assert row is not None
    if row["n"] >= settings.contest_rejudge_rate_count:
        wait = max(1, math.ceil(float(row["wait"] or 0)))
        raise AppError(
            ErrorCode.RATE_LIMITED,
            f"this contest had {row['n']} rejudges in the last {window:g} s; try again in {wait} s",
            {"retry_after_s": wait},
        )


async def _send_back(
    tx: Tx, contests: Contests, user: Principal, contest_id: uuid.UUID, problem_id: uuid.UUID, cause: str
) -> list[Any]:
    """In ``tx``: clear the verdicts of the problem's counted submissions and raise their judging revision.
    A problem without submissions has nothing to judge again: that is not a rejudge, and not counted."""
    rows = await tx.conn.fetch(
        "UPDATE contest_submissions SET verdict = NULL, passed = NULL, total = NULL, judged_at = NULL,"
        " judge_rev = judge_rev + 1, queued_at = clock_timestamp() WHERE problem_id = $1 AND NOT disqualified"
        " RETURNING id, user_id, language, source, judge_rev",
        problem_id,
    )
    if not rows:
        return []
    await _check_rate(tx, contests, contest_id)  # refused: the transaction, and so the edit, is rolled back
    await tx.conn.execute(
        "INSERT INTO contest_rejudges (id, contest_id, problem_id, actor_id, cause, submissions)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        new_id(), contest_id, problem_id, user.id, cause, len(rows),
    )  # fmt: skip
    await audit(tx, user.id, "contest.rejudge", "contest_problem", problem_id, submissions=len(rows), cause=cause)
    return list(rows)


async def _judge_all(contests: Contests, contest_id: uuid.UUID, problem: Any, rows: list[Any], runner: Any) -> None:
    """After commit: the submissions go to the judge, the whole rejudge taking one turn in the fair gate."""
    contests.live.touch(contest_id)
    turn = f"rejudge:{contest_id}"
    for row in rows:
        try:
            request = contests._judge_request(SubmissionIn(language=row["language"], source=row["source"]), problem)
        except AppError:  # a language this server no longer runs: the judge's fault, free (as the cycle does)
            pool, tests = contests.core.pool, len(problem["tests"])
            await store.record_verdict(pool, row["id"], "internal_error", 0, tests, row["judge_rev"])
            continue
        contests._spawn(row["id"], contest_id, row["user_id"], request, runner, rev=row["judge_rev"], turn=turn)


async def rejudge(contests: Contests, user: Principal, contest_id: uuid.UUID, problem_id: uuid.UUID) -> RejudgeOut:
    """Judge every counted submission of a problem again (managers; not once finalised; rate-limited)."""
    await _manager(contests, user, contest_id, "rejudge")
    runner = contests._runner()
    async with contests.core.transaction() as tx:
        if (await _lock_contest(tx, contest_id))["finalised_at"] is not None:
            raise conflict(FINALISED)
        problem = await tx.conn.fetchrow(
            "SELECT id, tests, cpu_ms, memory_kb FROM contest_problems WHERE id = $1 AND contest_id = $2",
            problem_id,
            contest_id,
        )
        if problem is None:
            raise not_found("problem")
        rows = await _send_back(tx, contests, user, contest_id, problem_id, "rejudge")
    await _judge_all(contests, contest_id, problem, rows, runner)
    return RejudgeOut(submissions=len(rows))


def _check_limits(contests: Contests, changes: dict[str, Any]) -> None:
    most = run_limits(contests.core.settings)
    for name in ("cpu_ms", "memory_kb"):
        asked, maximum = changes.get(name), getattr(most, name)
        if asked is not None and asked > maximum:
            raise invalid(f"{name} may be at most {maximum} on this server (asked for {asked})", field=name,
                          maximum=maximum)  # fmt: skip


async def edit_problem(
    contests: Contests, user: Principal, contest_id: uuid.UUID, problem_id: uuid.UUID, body: ProblemPatch
) -> ProblemEditOut:
    """Change a problem (managers); a change of tests or limits judges its submissions again."""
    await _manager(contests, user, contest_id, "edit its problems")
    asked = body.changes()
    _check_limits(contests, asked)
    async with contests.core.transaction() as tx:
        contest = await _lock_contest(tx, contest_id)
        current = await tx.conn.fetchrow(
            "SELECT * FROM contest_problems WHERE id = $1 AND contest_id = $2 FOR UPDATE", problem_id, contest_id
        )
        if current is None:
            raise not_found("problem")
        changes = {k: v for k, v in asked.items() if v != current[k]}
        judged = any(k in changes for k in JUDGED)
        if contest["finalised_at"] is not None and any(k in changes for k in RESULTS):
            raise conflict(FINALISED, fields=sorted(k for k in changes if k in RESULTS))
        runner = contests._runner() if judged else None  # 503 before anything changes
        row = current
        if changes:
            columns = ", ".join(f"{k} = ${i}" for i, k in enumerate(changes, start=3))
            row = await tx.conn.fetchrow(
                f"UPDATE contest_problems SET {columns} WHERE id = $1 AND contest_id = $2 RETURNING *",
                problem_id,
                contest_id,
                *changes.values(),
            )
            # What changed, not the hidden tests themselves (only their count).
            told = {k: (len(v) if k in ("tests", "samples") else v) for k, v in changes.items() if k != "statement"}
            await audit(tx, user.id, "contest.problem_edit", "contest_problem", problem_id, fields=sorted(changes),
                        changed=told)  # fmt: skip
        rows = await _send_back(tx, contests, user, contest_id, problem_id, "edit") if judged else []
    if judged:
        await _judge_all(contests, contest_id, row, rows, runner)
    elif "points" in changes:
        contests.live.touch(contest_id)
    return ProblemEditOut(problem=store.problem_out(row), rejudged=len(rows))


# --- REST ---------------------------------------------------------------------------------------------------

api = Api()
TAG = "contests"


@api.route("PATCH", "/contests/{contest_id}/problems/{problem_id}",
           summary="Edit a problem (managers); new tests or limits judge its submissions again", tag=TAG,
           description="The fields given replace the stored ones, under the limits of creating a problem. A "
           "change of `tests`, `cpu_ms` or `memory_kb` sends every counted submission of the problem back to "
           "the judge (`rejudged`), rate-limited per contest like `POST .../rejudge` (429, nothing changed). Once "
           "the contest is finalised, `tests`, limits and `points` are refused (409): its results and prizes are "
           "settled; title, statement and samples may still change.",
           body=ProblemPatch, response=ProblemEditOut, errors=[400, 403, 404, 409, 429, 503])  # fmt: skip
async def patch_contest_problem(call: Call) -> ProblemEditOut:
    contests: Contests = call.request.app[CONTESTS]
    return await edit_problem(contests, call.me, call.params["contest_id"], call.params["problem_id"], call.body)


@api.route("POST", "/contests/{contest_id}/problems/{problem_id}/rejudge",
           summary="Judge every submission of a problem again (managers)", tag=TAG,
           description="Every counted submission of the problem goes back to the judge; standings and pushes "
           "follow as verdicts land. At most `STUDYHALL_CONTEST_REJUDGE_RATE_COUNT` rejudges per contest per "
           "`STUDYHALL_CONTEST_REJUDGE_RATE_WINDOW_S` (429 with `retry_after_s`). A finalised contest is not "
           "rejudged (409): its results are recorded and its prizes paid.",
           response=RejudgeOut, status=202, errors=[403, 404, 409, 429, 503])  # fmt: skip
async def post_contest_rejudge(call: Call) -> RejudgeOut:
    contests: Contests = call.request.app[CONTESTS]
    return await rejudge(contests, call.me, call.params["contest_id"], call.params["problem_id"])
