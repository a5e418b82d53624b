"""Contest use cases: create, submit (judged by the sandbox), standings, boards, finalise, live pushes.

Postgres holds every contest, problem and submission with its verdict; standings are always computed
from it (:mod:`leaderboards.core`). After each change the contest is marked dirty; the
:class:`~leaderboards.live.Coalescer` then recomputes its standings, rewrites its boards (Redis sorted
sets or in-process, :mod:`leaderboards.board`) and pushes ``leaderboard:update`` to ``contest:<id>``
(public view) and ``contest:<id>:jury`` (managers), at most once per 500 ms per contest.

A submission is judged by the node that took it: it holds the judge's answer (from its own sandbox pool,
or from a Celery worker over Redis when scaled), stores the verdict, and its coalescer pushes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from core_api.communities import ADMIN, acting_rank, visible_community
from core_api.context import Core, audit, new_id
from core_api.db import Connection, Record
from core_api.errors import AppError, ErrorCode, conflict, forbidden, invalid, not_found
from core_api.events import Transport
from core_api.executions import Executions, run_limits
from core_api.http import Principal
from leaderboards import consent, prizes, store
from leaderboards import core as scoring
from leaderboards.board import Board
from leaderboards.live import Coalescer, Gate, Ready
from leaderboards.schemas import (
    BoardOut,
    ContestIn,
    ContestOut,
    MyRankOut,
    ProblemIn,
    StandingsOut,
    SubmissionIn,
    SubmissionOut,
)
from leaderboards.standings import Computed, LiveStandings, board_entry, board_key, push_payload
from sandbox.core import InvalidRequest
from sandbox.fair import FairGate
from sandbox.models import JudgeRequest, Limits, LimitsIn, TestCase
from sandbox.runner import QueueFull, SandboxUnavailable

log = logging.getLogger(__name__)

UPDATE_EVENT = "leaderboard:update"
ALLTIME_KEY = "alltime:communities"
Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def contest_room(contest_id: uuid.UUID, view: str = "public") -> str:
    return f"contest:{contest_id}" + (":jury" if view == "jury" else "")


async def require_organizer(conn: Connection, user: Principal, organizer_id: uuid.UUID | None, doing: str) -> None:
    """The caller may ``doing`` for the organizing community (its admin or owner, or a platform admin);
    without an organizing community, only a platform admin may. A private community the caller cannot see
    is not found, as one that does not exist."""
    if organizer_id is None:
        if not user.is_admin:
            raise forbidden("name the organizing community you administer (organizer_id)")
        return
    community = await visible_community(conn, user, organizer_id)
    if acting_rank(user, community["my_role"]) < ADMIN:
        raise forbidden(f"only the organizing community's admins (or a platform admin) may {doing}")


def check_problem_limits(problems: list[ProblemIn], maximum: Limits) -> None:
    """invalid_input unless every problem's limits fit the server's (else every submission would be refused)."""
    for i, problem in enumerate(problems):
        for name in ("cpu_ms", "memory_kb"):
            asked, most = getattr(problem, name), getattr(maximum, name)
            if asked > most:
                raise invalid(
                    f"problems[{i}].{name} may be at most {most} on this server (asked for {asked})",
                    field=f"problems.{i}.{name}",
                    maximum=most,
                )


class Contests:
    """The group wars of one app.

    Args:
        core: pool, settings, bus.
        executions: the app's executions service (its ``runner`` judges).
        board: where ranks and top-N are served from.
        transport: Socket.IO, for ``leaderboard:update``.
        gate: with several nodes, the cluster-wide push limit (Redis); ``None`` in one process.
        interval_s: least time between two pushes of one contest (0.5 s).
        clock: the time submissions are stamped with (tests pass their own).
    """

    def __init__(
        self,
        core: Core,
        executions: Executions | None,
        board: Board,
        transport: Transport,
        *,
        gate: Gate | None = None,
        interval_s: float = 0.5,
        clock: Clock = utcnow,
    ) -> None:
        self.core = core
        self.executions = executions
        self.board = board
        self.transport = transport
        self.clock = clock
        self.live = Coalescer(self.refresh, interval_s, gate)
        # This node's standings of the contests it pushes, updated from the submissions changed since.
        self.standings_live = LiveStandings(
            core.pool, board, recheck_s=core.settings.contest_standings_recheck_s,
            keep=core.settings.contest_standings_contests,
        )  # fmt: skip
        self._judging: set[asyncio.Task[None]] = set()
        self._pending: set[uuid.UUID] = set()  # submissions this node is judging
        # At most this many of the node's submissions are with the judge at once (the rest of the runner's
        # queue stays for executions); waiting ones go in by turns between their authors (sandbox.fair).
        self._gate = FairGate(max(1, core.settings.sandbox_workers))
        if executions is not None:  # submissions waiting for the judge count against the per-user limit
            executions.count_in_flight(store.submissions_in_flight)

    # --- contests ----------------------------------------------------------------------------------

    async def can_manage(self, user: Principal, contest: Record) -> bool:
        if user.is_admin:
            return True
        if contest["organizer_id"] is None:
            return False
        role = await self.core.pool.fetchval(
            "SELECT role FROM community_members WHERE community_id = $1 AND user_id = $2",
            contest["organizer_id"],
            user.id,
        )
        return role in ("admin", "owner")

    def state_of(self, contest: Record) -> Literal["scheduled", "running", "frozen", "ended", "finalised"]:
        now = self.clock()
        if contest["finalised_at"] is not None:
            return "finalised"
        if now < contest["starts_at"]:
            return "scheduled"
        if now >= contest["ends_at"]:
            return "ended"
        if contest["freeze_at"] is not None and now >= contest["freeze_at"]:
            return "frozen"
        return "running"

    async def _out(self, user: Principal, contest: Record) -> ContestOut:
        manage = await self.can_manage(user, contest)
        started = self.clock() >= contest["starts_at"]
        problems = await store.problems_of(self.core.pool, contest["id"]) if started or manage else []
        target = consent.Target("contest", contest["id"], contest["title"])
        return ContestOut(
            id=contest["id"],
            title=contest["title"],
            description=contest["description"],
            organizer_id=contest["organizer_id"],
            starts_at=contest["starts_at"],
            ends_at=contest["ends_at"],
            freeze_at=contest["freeze_at"],
            scoring=contest["scoring"],
            penalty_minutes=contest["penalty_minutes"],
            finalised_at=contest["finalised_at"],
            state=self.state_of(contest),
            communities=await store.communities_of(self.core.pool, contest["id"]),
            problems=[store.problem_out(p) for p in problems],
            can_manage=manage,
            prizes=list(contest["prizes"]),
            approval=prizes.approval_out(contest),
            payout=prizes.payout_out(contest),
            invitations=await consent.invitations_of(self.core.pool, user, target) if manage else [],
        )

    async def contest(self, contest_id: uuid.UUID) -> Record:
        row = await store.contest_row(self.core.pool, contest_id)
        if row is None:
            raise not_found("contest")
        return row

    async def create(self, user: Principal, body: ContestIn) -> ContestOut:
        """A new contest: communities the caller administers take part, others are invited
        (:mod:`leaderboards.consent`); prizes wait for a platform admin's approval (:mod:`leaderboards.prizes`)."""
        check_problem_limits(body.problems, run_limits(self.core.settings))
        contest_id = new_id()
        approval, approved_by = prizes.initial_approval(user, body.prizes)
        async with self.core.transaction() as tx:
            await require_organizer(tx.conn, user, body.organizer_id, "create a contest")
            await tx.conn.execute(
                "INSERT INTO contests (id, title, description, organizer_id, created_by, starts_at, ends_at, freeze_at,"
                " scoring, penalty_minutes, prizes, approval, approved_by, approval_decided_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,"
                " CASE WHEN $13::uuid IS NULL THEN NULL ELSE now() END)",
                contest_id, body.title, body.description, body.organizer_id, user.id, body.starts_at, body.ends_at,
                body.freeze_at, body.scoring, body.penalty_minutes, body.prizes, approval, approved_by,
            )  # fmt: skip
            await consent.enlist(tx, user, consent.Target("contest", contest_id, body.title), body.communities)
            await tx.conn.executemany(
                "INSERT INTO contest_problems (id, contest_id, ordinal, label, title, statement, samples, tests,"
                " cpu_ms, memory_kb, points) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                [
                    (new_id(), contest_id, i, chr(ord("A") + i), p.title, p.statement,
                     [s.model_dump() for s in p.samples], [t.model_dump() for t in p.tests], p.cpu_ms, p.memory_kb,
                     p.points)
                    for i, p in enumerate(body.problems)
                ],
            )  # fmt: skip
            await audit(tx, user.id, "contest.create", "contest", contest_id, title=body.title, prizes=body.prizes,
                        approval=approval)  # fmt: skip
        return await self._out(user, await self.contest(contest_id))

    async def get(self, user: Principal, contest_id: uuid.UUID) -> ContestOut:
        return await self._out(user, await self.contest(contest_id))

    async def recent(
        self, user: Principal, limit: int, approval: str | None = None, *, mine: bool = False
    ) -> list[ContestOut]:
        rows = await self.core.pool.fetch(
            # Running contests first (what a learner opens the list for), then the rest, latest start first;
            # ``mine``: only those one of the user's communities takes part in.
            f"SELECT {store.CONTEST_COLUMNS} FROM contests WHERE ($2::text IS NULL OR approval = $2)"
            " AND (NOT $4 OR EXISTS (SELECT 1 FROM contest_communities cc JOIN community_members m"
            " ON m.community_id = cc.community_id AND m.user_id = $5"
            " WHERE cc.contest_id = contests.id AND cc.state = 'accepted'))"
            " ORDER BY (starts_at <= $3 AND ends_at > $3) DESC, starts_at DESC, id LIMIT $1",
            limit,
            approval,
            self.clock(),
            mine,
            user.id,
        )
        return [await self._out(user, r) for r in rows]

    # --- submissions -------------------------------------------------------------------------------

    async def submit(
        self, user: Principal, contest_id: uuid.UUID, problem_id: uuid.UUID, body: SubmissionIn, wait: bool
    ) -> SubmissionOut:
        contest = await self.contest(contest_id)
        problem = await self.core.pool.fetchrow(
            "SELECT id, tests, cpu_ms, memory_kb FROM contest_problems WHERE id = $1 AND contest_id = $2",
            problem_id,
            contest_id,
        )
        if problem is None:
            raise not_found("problem")
        now = self.clock()
        if contest["finalised_at"] is not None or not (contest["starts_at"] <= now < contest["ends_at"]):
            raise conflict("the contest is not running: submissions count only inside its time window")
        waiting = prizes.refused_while_unapproved(contest)
        if waiting is not None:
            raise conflict(waiting, approval=contest["approval"])
        mine = await self.core.pool.fetch(
            "SELECT cc.community_id FROM contest_communities cc JOIN community_members m"
            " ON m.community_id = cc.community_id AND m.user_id = $2 WHERE cc.contest_id = $1"
            " AND cc.state = 'accepted' ORDER BY m.joined_at",
            contest_id,
            user.id,
        )
        options = [r["community_id"] for r in mine]
        if not options:
            raise forbidden("you are not a member of a community taking part in this contest")
        if body.community_id is not None and body.community_id not in options:
            raise forbidden("you are not a member of that community, or it is not taking part")
        community_id = body.community_id or options[0]
        request = self._judge_request(body, problem)
        runner = self._runner()
        submission_id = new_id()
        async with self.core.transaction() as tx:
            await self._admit(tx.conn, user)
            # Judged with the tests stored when it is: an edit waits for this insert (and then judges it again),
            # or this reads the edit's tests.
            now_stored = await tx.conn.fetchrow(
                "SELECT id, tests, cpu_ms, memory_kb FROM contest_problems WHERE id = $1 FOR SHARE", problem_id
            )
            if now_stored is not None and now_stored != problem:
                request = self._judge_request(body, now_stored)
            await tx.conn.execute(
                "INSERT INTO contest_submissions (id, contest_id, problem_id, user_id, community_id, language, source,"
                " submitted_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                submission_id, contest_id, problem_id, user.id, community_id, body.language, body.source, now,
            )  # fmt: skip
        self.live.touch(contest_id)
        task = self._spawn(submission_id, contest_id, user.id, request, runner)
        if wait:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.core.settings.sandbox_wait_timeout_s):
                    await asyncio.shield(task)
        return await self.submission(user, contest_id, submission_id)

    async def _admit(self, conn: Connection, user: Principal) -> None:
        """In the transaction storing a submission: the per-user limits (429 ``rate_limited``). Programs
        waiting or running, executions and submissions together, are capped by ``sandbox_per_user``
        (the executions' check, under the user's lock), and submissions by the rate limit."""
        assert self.executions is not None  # _runner() made sure
        await self.executions.admit(conn, user.id)
        settings = self.core.settings
        made, wait = await store.submissions_since(conn, user.id, settings.contest_submit_rate_window_s)
        if made >= settings.contest_submit_rate_count:
            raise AppError(
                ErrorCode.RATE_LIMITED,
                f"you made {made} submissions in the last {settings.contest_submit_rate_window_s:g} s; "
                f"try again in {max(1, math.ceil(wait))} s",
                {"retry_after_s": max(1, math.ceil(wait))},
            )

    def _spawn(
        self,
        submission_id: uuid.UUID,
        contest_id: uuid.UUID,
        user_id: uuid.UUID,
        request: JudgeRequest,
        runner: Any,
        *,
        rev: int = 0,
        turn: str | None = None,
    ) -> asyncio.Task[None]:
        """Judge a submission in a task of its own; ``rev`` is its judging revision (only that one's verdict
        is stored), ``turn`` whose turn it takes in the fair gate (its author's, or a whole rejudge's)."""
        task = asyncio.create_task(self._judge(submission_id, contest_id, user_id, request, runner, rev, turn))
        self._judging.add(task)
        self._pending.add(submission_id)

        def done(finished: asyncio.Task[None]) -> None:
            self._judging.discard(finished)
            self._pending.discard(submission_id)

        task.add_done_callback(done)
        return task

    def _runner(self) -> Any:
        if self.executions is None or self.executions.runner.unavailable is not None:
            why = "not started" if self.executions is None else self.executions.runner.unavailable
            raise AppError(ErrorCode.UNAVAILABLE, f"judging is unavailable: {why}", {"retry_after_s": 60})
        return self.executions.runner

    def _judge_request(self, body: SubmissionIn, problem: Record) -> JudgeRequest:
        try:
            request = JudgeRequest(
                language=body.language,
                source=body.source,
                tests=[TestCase(**t) for t in problem["tests"]],
                limits=LimitsIn(cpu_ms=problem["cpu_ms"], memory_kb=problem["memory_kb"]),
                stop_at_first_failure=True,
            )
            if self.executions is not None:
                self.executions.runner.validate(request)
        except (InvalidRequest, ValueError) as exc:
            raise invalid(str(exc).splitlines()[0]) from None
        return request

    async def _judge(
        self,
        submission_id: uuid.UUID,
        contest_id: uuid.UUID,
        user_id: uuid.UUID,
        request: JudgeRequest,
        runner: Any,
        rev: int = 0,
        turn: str | None = None,
    ) -> None:
        verdict, passed, total = "internal_error", 0, len(request.tests)
        # The job's user decides its turn here and in the runner's own queue: one author's submissions
        # never keep other authors' (in any contest) waiting behind them.
        context = {"user_id": str(user_id), "contest_id": str(contest_id), "submission_id": str(submission_id)}
        async with self._gate.place(turn or context["user_id"]):
            for attempt in range(1200):
                try:
                    result = await (await runner.submit(request, context)).result
                    verdict, passed, total = str(result.verdict), result.passed, result.total
                    break
                except QueueFull:
                    await asyncio.sleep(min(0.5, 0.02 * (attempt + 1)))  # the pool is shared with executions
                except (SandboxUnavailable, InvalidRequest) as exc:
                    log.warning("submission %s could not be judged: %s", submission_id, exc)
                    break
                except Exception:
                    log.exception("judging submission %s failed", submission_id)
                    break
        await store.record_verdict(self.core.pool, submission_id, verdict, passed, total, rev)
        self.live.touch(contest_id)

    async def submission(self, user: Principal, contest_id: uuid.UUID, submission_id: uuid.UUID) -> SubmissionOut:
        contest = await self.contest(contest_id)
        row = await self.core.pool.fetchrow(
            f"SELECT {store.SUBMISSION_COLUMNS} FROM contest_submissions s WHERE s.id = $1 AND s.contest_id = $2",
            submission_id,
            contest_id,
        )
        if row is None or (row["user_id"] != user.id and not await self.can_manage(user, contest)):
            raise not_found("submission")
        return store.submission_out(row, contest)

    async def submissions(self, user: Principal, contest_id: uuid.UUID, everyone: bool) -> list[SubmissionOut]:
        """The caller's own submissions (with verdicts, even during the freeze); managers may ask for all."""
        contest = await self.contest(contest_id)
        if everyone and not await self.can_manage(user, contest):
            raise forbidden("only the contest's managers see everyone's submissions")
        rows = await self.core.pool.fetch(
            f"SELECT {store.SUBMISSION_COLUMNS} FROM contest_submissions s WHERE s.contest_id = $1"
            " AND ($2 OR s.user_id = $3) ORDER BY s.submitted_at DESC, s.id LIMIT 1000",
            contest_id,
            everyone,
            user.id,
        )
        return [store.submission_out(r, contest) for r in rows]

    async def judge_stale(self, older_than: datetime, stale_s: float = 300.0) -> int:
        """Judge again submissions still without a verdict since before ``older_than`` whose judging this node
        does not hold (their node stopped mid-judging); one sent back by a rejudge, ``stale_s`` seconds after it
        was (server clock). Judging one twice is harmless: same program, same verdict, and only the latest
        judging revision's is stored. Returns how many went back to the judge."""
        if self.executions is None or self.executions.runner.unavailable is not None:
            return 0
        rows = await self.core.pool.fetch(
            "SELECT s.id, s.contest_id, s.user_id, s.language, s.source, s.judge_rev, p.tests, p.cpu_ms, p.memory_kb"
            " FROM contest_submissions s JOIN contest_problems p ON p.id = s.problem_id"
            " JOIN contests c ON c.id = s.contest_id"
            " WHERE s.verdict IS NULL AND NOT s.disqualified AND s.submitted_at < $1 AND c.finalised_at IS NULL"
            " AND (s.queued_at IS NULL OR s.queued_at < now() - make_interval(secs => $2))"
            " ORDER BY s.submitted_at LIMIT 500",
            older_than,
            stale_s,
        )
        count = 0
        for row in rows:
            if row["id"] in self._pending:
                continue
            try:
                request = self._judge_request(SubmissionIn(language=row["language"], source=row["source"]), row)
            except AppError:
                await store.record_verdict(
                    self.core.pool, row["id"], "internal_error", 0, len(row["tests"]), row["judge_rev"]
                )
                continue
            self._spawn(row["id"], row["contest_id"], row["user_id"], request, self.executions.runner,
                        rev=row["judge_rev"])  # fmt: skip
            count += 1
        return count

    async def wait_judged(self) -> None:
        """Wait for every submission this node is judging, then for the pushes they caused (tests)."""
        while self._judging:
            await asyncio.gather(*list(self._judging), return_exceptions=True)
        await self.live.idle()

    # --- admin actions ----------------------------------------------------------------------------

    async def disqualify(
        self, user: Principal, contest_id: uuid.UUID, submission_id: uuid.UUID, reason: str
    ) -> SubmissionOut:
        """Take a submission out of every standing (it stays stored, marked), with an audit entry."""
        contest = await self.contest(contest_id)
        if not await self.can_manage(user, contest):
            raise forbidden("only the contest's managers may disqualify a submission")
        async with self.core.transaction() as tx:
            row = await tx.conn.fetchrow(
                f"UPDATE contest_submissions s SET disqualified = true WHERE s.id = $1 AND s.contest_id = $2"
                f" RETURNING {store.SUBMISSION_COLUMNS}",
                submission_id,
                contest_id,
            )
            if row is None:
                raise not_found("submission")
            await audit(tx, user.id, "contest.disqualify", "contest_submission", submission_id, reason=reason)
        self.live.touch(contest_id)
        return store.submission_out(row, contest)

    # --- standings and boards ---------------------------------------------------------------------

    async def compute(self, contest: Record, view: scoring.View) -> StandingsOut:
        return (await self.compute_views(contest, (view,)))[0].out()

    async def compute_views(self, contest: Record, views: tuple[scoring.View, ...]) -> list[Computed]:
        """The standings in each of ``views``, from one read of Postgres."""
        compute = await self._reader(contest)
        return [compute(view) for view in views]

    async def _reader(self, contest: Record) -> Callable[[scoring.View], Computed]:
        """Read the contest's problems, attempts and communities once; compute any view of them on call."""
        problems = await store.problems_of(self.core.pool, contest["id"])
        attempts, names = await store.attempts_of(self.core.pool, contest)
        communities = {str(c.id): c.name for c in await store.communities_of(self.core.pool, contest["id"])}
        rules = store.rules_of(contest, problems)
        order = [str(p["id"]) for p in problems]

        def compute(view: scoring.View) -> Computed:
            people = scoring.standings(rules, view, attempts, names)
            frozen = view == "public" and rules.freeze_at is not None and not rules.finalised
            return Computed(
                contest_id=contest["id"], view=view, rules=rules, order=order, people=people,
                groups=scoring.community_standings(people, communities),
                frozen=frozen and rules.freeze_at is not None and self.clock() >= rules.freeze_at,
            )  # fmt: skip

        return compute

    async def standings(self, user: Principal, contest_id: uuid.UUID, view: scoring.View) -> StandingsOut:
        contest = await self.contest(contest_id)
        if view == "jury" and not await self.can_manage(user, contest):
            raise forbidden("only the contest's managers see the jury view")
        return await self.compute(contest, view)

    async def refresh(self, contest_id: uuid.UUID, ready: Ready | None = None) -> None:
        """Bring this node's standings of the contest up to date (:class:`LiveStandings`: the submissions
        changed since its last read), push each view (public first, once ``ready`` allows: the coalescer's
        interval), then write what changed to the boards."""
        state = await self.standings_live.current(contest_id, self.clock())
        for view in ("public", "jury"):
            payload = push_payload(state.computed(view))  # before ready(): the interval is kept between the emits
            if ready is not None and view == "public":
                await ready()
            await self.transport.emit(UPDATE_EVENT, payload, to=contest_room(contest_id, view))
            if ready is not None and view == "public":
                self.live.pushed(contest_id)
        await self.standings_live.write_boards(contest_id)

    async def snapshot(self, contest: Record, view: scoring.View) -> dict[str, Any]:
        """What ``leaderboard:update`` carries, now (the answer to ``contest:subscribe``)."""
        return push_payload((await self.standings_live.current(contest["id"], self.clock())).computed(view))

    async def _ensure_board(self, contest_id: uuid.UUID, key: str) -> None:
        if not await self.board.exists(key):  # after a restart, or a Redis flush: rebuild from Postgres
            await self.standings_live.current(contest_id, self.clock())
            await self.standings_live.write_boards(contest_id, whole=True)

    async def _names(self, contest_id: uuid.UUID, kind: str, ids: list[str]) -> dict[str, str]:
        """Display names of people, or names of the communities that accepted to take part."""
        if kind == "users":
            return await store.user_names(self.core.pool, ids)
        return await store.accepted_names(self.core.pool, contest_id, ids)

    async def top(self, user: Principal, contest_id: uuid.UUID, kind: str, limit: int) -> BoardOut:
        await self.contest(contest_id)
        key = board_key(contest_id, kind, "public")
        await self._ensure_board(contest_id, key)
        entries = await self.board.top(key, limit)
        names = await self._names(contest_id, kind, [e.member.partition(":")[0] for e in entries])
        return BoardOut(items=[board_entry(e, names) for e in entries])

    async def my_rank(self, user: Principal, contest_id: uuid.UUID) -> MyRankOut:
        """The caller's rows (one per community they submitted for), best first, and their best row's community."""
        await self.contest(contest_id)
        key = board_key(contest_id, "users", "public")
        await self._ensure_board(contest_id, key)
        communities = await self.core.pool.fetch(
            "SELECT DISTINCT community_id FROM contest_submissions WHERE contest_id = $1 AND user_id = $2"
            " AND NOT disqualified",
            contest_id,
            user.id,
        )
        rows = [await self.board.rank(key, f"{user.id}:{r['community_id']}") for r in communities]
        mine = sorted((e for e in rows if e is not None), key=lambda e: (e.rank, e.member))
        community = None
        if mine:
            best = mine[0].member.partition(":")[2]
            community = await self.board.rank(board_key(contest_id, "communities", "public"), best)
        people = await self._names(contest_id, "users", [str(user.id)] if mine else [])
        groups = await self._names(contest_id, "communities", [community.member] if community else [])
        return MyRankOut(
            me=board_entry(mine[0], people) if mine else None,
            community=board_entry(community, groups) if community else None,
            rows=[board_entry(e, people) for e in mine],
        )

    # --- finalising and the all-time ranking ------------------------------------------------------

    async def finalise(self, user: Principal, contest_id: uuid.UUID) -> ContestOut:
        """End the contest for good: unfreeze, record each community's result once, pay its prizes (in the
        same transaction), update all-time."""
        contest = await self.contest(contest_id)
        if not await self.can_manage(user, contest):
            raise forbidden("only the contest's managers may finalise it")
        if self.clock() < contest["ends_at"]:
            raise conflict("the contest has not ended yet")
        await self.finalise_contest(contest_id, user.id)
        return await self.get(user, contest_id)

    async def finalise_contest(self, contest_id: uuid.UUID, actor_id: uuid.UUID | None) -> bool:
        """Idempotent: a second call (another node, a retried job) changes nothing; ``True`` if this one did."""
        async with self.core.transaction() as tx:
            contest = await tx.conn.fetchrow(
                f"SELECT {store.CONTEST_COLUMNS} FROM contests WHERE id = $1 FOR UPDATE", contest_id
            )
            if contest is None or contest["finalised_at"] is not None:
                return False
            pending = await tx.conn.fetchval(
                "SELECT count(*) FROM contest_submissions WHERE contest_id = $1 AND verdict IS NULL"
                " AND NOT disqualified",
                contest_id,
            )
            if pending:
                raise conflict(f"{pending} submissions are still waiting for the judge", pending=pending)
            out = await self.compute(contest, "jury")
            await tx.conn.executemany(
                "INSERT INTO contest_results (contest_id, community_id, score, penalty, rank)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                [(contest_id, c.community_id, c.score, c.penalty, c.rank) for c in out.communities],
            )
            await tx.conn.execute("UPDATE contests SET finalised_at = now() WHERE id = $1", contest_id)
            await audit(tx, actor_id, "contest.finalise", "contest", contest_id)
            # Prizes are paid with the results they follow from, or the payout is blocked (the cycle retries).
            await prizes.award_in(tx, contest_id)
        await self.refresh_alltime()
        self.live.touch(contest_id)
        return True

    async def refresh_alltime(self) -> None:
        rows = await self.core.pool.fetch(
            "SELECT community_id, sum(score) AS score, sum(penalty) AS penalty"
            " FROM contest_results GROUP BY community_id"
        )
        await self.board.replace(
            ALLTIME_KEY, {str(r["community_id"]): scoring.board_score(r["score"], r["penalty"]) for r in rows}
        )

    async def alltime(self, user: Principal, limit: int) -> BoardOut:
        if not await self.board.exists(ALLTIME_KEY):
            await self.refresh_alltime()
        entries = await self.board.top(ALLTIME_KEY, limit)
        names = await store.shown_community_names(self.core.pool, user.id, user.is_admin, [e.member for e in entries])
        return BoardOut(items=[board_entry(e, names) for e in entries])

    async def close(self) -> None:
        """Stop judging (unjudged submissions stay pending in Postgres) and pushing."""
        for task in list(self._judging):
            task.cancel()
        await asyncio.gather(*self._judging, return_exceptions=True)
        await self.live.close()
