"""Bulk grades: an instructor uploads a grade sheet (CSV or XLSX: ``email, assignment, grade, feedback``) and a
job checks every row, then applies the valid ones in one transaction — or none, if the instructor chose
``all_or_nothing`` and any row is wrong — reporting progress and a per-row result file.

A row is wrong when its email is not a learner enrolled in the course, its assignment (the assignment's id,
or its exact title) is not one of the course's, its grade is not a number from 0 to the assignment's
``max_points``, its feedback is longer than 10,000 characters, or it repeats an earlier row's (email,
assignment) pair (the first one counts). A valid row grades the learner's latest submission of the
assignment, or records a grade without a submission when there is none. Graded learners are notified once
each (``grades_posted``, with how many). The job runs with the other background jobs (:mod:`media.jobs`:
``GET /jobs/{id}``, ``job:progress``), so the API stays free; the sheet is read as a stream, never whole.

An XLSX workbook (told from a CSV by its first bytes, a zip's) is read with openpyxl in read-only (streaming)
mode, its first worksheet only, after its zip directory is checked: at most
``STUDYHALL_GRADE_SHEET_XLSX_MAX_UNPACKED_BYTES`` unpacked in all and ``STUDYHALL_GRADE_SHEET_XLSX_MAX_RATIO``
per member (a zip bomb fails the job before anything is unpacked; Python's zipfile never inflates a member past
the size its directory declares). A sheet bigger than ``STUDYHALL_GRADE_SHEET_MAX_BYTES`` is refused at once (413).
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import io
import math
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, Literal

import openpyxl
from aiohttp import web
from openpyxl.utils.exceptions import InvalidFileException
from pydantic import Field

from core_api.context import Tx, audit, core_of
from core_api.courses import owned_course
from core_api.errors import AppError, ErrorCode, conflict, not_found
from core_api.http import Api, Call, Input, Reply
from core_api.settings import Settings
from media.jobs import JOBS, Finish, JobContext, JobFailed, JobOut, enqueue, job_out, send_output
from media.uploads import UPLOADS

KIND = "grade_sheet"
RESULTS = "results.csv"
REQUIRED = ("email", "assignment", "grade")
FEEDBACK_MAX = 10_000
api = Api()
TAG = "assignments"


class GradeUploadIn(Input):
    upload_id: uuid.UUID = Field(
        description="A finished upload of yours (tus, `/api/v1/uploads`): the sheet, CSV or XLSX."
    )
    mode: Literal["all_or_nothing", "valid_rows"] = Field(
        description="`all_or_nothing`: apply no row if any is wrong; `valid_rows`: apply the valid ones."
    )


@dataclass
class Checked:
    rows: int = 0
    valid: list[tuple[uuid.UUID, uuid.UUID, float, str | None]] = field(default_factory=list)  # user, assignment
    results: list[tuple[int, str, str, str, str]] = field(default_factory=list)  # row, email, assignment, status, why

    @property
    def errors(self) -> int:
        return sum(1 for r in self.results if r[3] == "error")


ZIP_MAGIC = b"PK\x03\x04"
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # the old binary .xls (and other OLE files)
XLSX_MAX_MEMBERS = 10_000


@dataclass(frozen=True)
class SheetLimits:
    max_rows: int
    xlsx_max_unpacked: int
    xlsx_max_ratio: float

    @classmethod
    def of(cls, settings: Settings) -> SheetLimits:
        return cls(
            settings.grade_sheet_max_rows,
            settings.grade_sheet_xlsx_max_unpacked_bytes,
            settings.grade_sheet_xlsx_max_ratio,
        )


def sheet_format(path: Path) -> Literal["csv", "xlsx"]:
    with path.open("rb") as f:
        head = f.read(8)
    if head.startswith(ZIP_MAGIC):
        return "xlsx"
    if head == OLE_MAGIC:
        raise JobFailed("the sheet is an old binary Excel file (.xls): save it as .xlsx or CSV")
    return "csv"


def _csv_rows(path: Path) -> Iterator[list[str]]:
    with path.open("rb") as raw:
        text = codecs.getreader("utf-8-sig")(raw, "strict")
        try:
            yield from csv.reader(text)
        except (UnicodeDecodeError, csv.Error) as exc:
            raise JobFailed(f"the sheet is not a well-formed UTF-8 CSV file ({exc})") from None


def check_zip(path: Path, limits: SheetLimits) -> None:
    """Refuse a zip bomb from the zip's directory alone, before anything is unpacked."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise JobFailed(f"the sheet is not a readable XLSX workbook ({exc})") from None
    if len(members) > XLSX_MAX_MEMBERS:
        raise JobFailed(f"the workbook has {len(members)} files inside (at most {XLSX_MAX_MEMBERS})")
    total = sum(m.file_size for m in members)
    if total > limits.xlsx_max_unpacked:
        raise JobFailed(
            f"the workbook unpacks to {total} bytes, more than the {limits.xlsx_max_unpacked} allowed "
            "(a zip bomb, or a sheet too big: split it)"
        )
    for m in members:
        if m.file_size > 1 << 20 and m.file_size > limits.xlsx_max_ratio * max(m.compress_size, 1):
            raise JobFailed(
                f"the workbook's {m.filename} is compressed {m.file_size / max(m.compress_size, 1):.0f} to 1, more "
                f"than the {limits.xlsx_max_ratio:g} to 1 allowed (a zip bomb?)"
            )


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return str(value)


def _xlsx_rows(path: Path, limits: SheetLimits) -> Iterator[list[str]]:
    check_zip(path, limits)
    raw = path.open("rb")  # a file, not a path: openpyxl would judge a path by its extension (uploads have none)
    try:
        book = openpyxl.load_workbook(raw, read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raw.close()
        raise JobFailed(f"the sheet is not a readable XLSX workbook ({exc or type(exc).__name__})") from None
    try:
        if not book.worksheets:
            raise JobFailed("the workbook has no worksheet")
        try:
            for row in book.worksheets[0].iter_rows(values_only=True):
                yield [_cell_text(v) for v in row]
        except (zipfile.BadZipFile, KeyError, ValueError, TypeError, OSError, SyntaxError) as exc:
            raise JobFailed(f"the workbook's first sheet cannot be read ({exc or type(exc).__name__})") from None
    finally:
        book.close()
        raw.close()


def check_sheet(
    path: Path,
    learners: dict[str, uuid.UUID],
    assignments: dict[str, tuple[uuid.UUID, float]],
    limits: SheetLimits,
    progress: Any = None,
) -> Checked:
    """Read and check the sheet, CSV or XLSX (in a thread: plain Python, streamed row by row)."""
    out = Checked()
    seen: set[tuple[uuid.UUID, uuid.UUID]] = set()
    rows = _xlsx_rows(path, limits) if sheet_format(path) == "xlsx" else _csv_rows(path)
    try:
        first = next(rows, None)
        header = [h.strip().lower() for h in (first or [])]
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise JobFailed(
                f"the sheet needs the columns email, assignment, grade (and optionally feedback); missing: "
                f"{', '.join(missing)}"
            )
        column = {name: header.index(name) for name in (*REQUIRED, "feedback") if name in header}

        def cell(values: list[str], name: str) -> str:
            i = column.get(name)
            return values[i].strip() if i is not None and i < len(values) else ""

        for number, values in enumerate(rows, start=2):  # row 1 is the header
            if not any(v.strip() for v in values):
                continue  # a blank line (CSV) or an empty row (XLSX)
            out.rows += 1
            if out.rows > limits.max_rows:
                raise JobFailed(f"the sheet has more than {limits.max_rows} rows")
            email = cell(values, "email")
            name = cell(values, "assignment")
            raw_grade = cell(values, "grade")
            feedback = cell(values, "feedback") or None

            def wrong(why: str, number: int = number, email: str = email, name: str = name) -> None:
                out.results.append((number, email, name, "error", why))

            user_id = learners.get(email.lower())
            assignment = assignments.get(name) or assignments.get(name.lower())
            if user_id is None:
                wrong("no learner enrolled in this course has this email")
                continue
            if assignment is None:
                wrong("no assignment of this course has this id or title")
                continue
            assignment_id, max_points = assignment
            try:
                grade = float(raw_grade)
            except ValueError:
                wrong(f"the grade {raw_grade!r} is not a number")
                continue
            if not math.isfinite(grade) or not 0 <= grade <= max_points:
                wrong(f"the grade must be from 0 to {max_points:g}")
                continue
            if feedback is not None and len(feedback) > FEEDBACK_MAX:
                wrong(f"feedback longer than {FEEDBACK_MAX} characters")
                continue
            if (user_id, assignment_id) in seen:
                wrong("a duplicate of an earlier row for this learner and assignment (the first one counts)")
                continue
            seen.add((user_id, assignment_id))
            out.valid.append((user_id, assignment_id, grade, feedback))
            out.results.append((number, email, name, "ok", ""))
            if progress is not None and out.rows % 1000 == 0:
                progress(out.rows)
    except JobFailed as exc:
        if out.rows and str(exc).startswith("the sheet is not a well-formed"):
            raise JobFailed(f"row {out.rows + 2}: {exc}") from None
        raise
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()
    return out


def write_results(path: Path, checked: Checked, applied: bool) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["row", "email", "assignment", "status", "message"])
    for number, email, name, status, why in checked.results:
        if status == "ok":
            status, why = ("applied", "") if applied else ("not applied", "another row is wrong (all or nothing)")
        writer.writerow([number, email, name, status, why])
    path.write_text(buf.getvalue(), encoding="utf-8")


async def run_sheet(ctx: JobContext) -> Finish:
    params = ctx.params
    course_id, upload_id = uuid.UUID(params["course_id"]), uuid.UUID(params["upload_id"])
    owner = uuid.UUID(str(ctx.job["owner_id"]))
    core = ctx.core
    await ctx.report(0.0, "read")
    learners = {
        r["email"].lower(): r["user_id"]
        for r in await core.pool.fetch(
            "SELECT e.user_id, u.email FROM enrollments e JOIN users u ON u.id = e.user_id"
            " WHERE e.course_id = $1 AND u.deleted_at IS NULL",
            course_id,
        )
    }
    assignments: dict[str, tuple[uuid.UUID, float]] = {}
    for r in await core.pool.fetch("SELECT id, title, max_points FROM assignments WHERE course_id = $1", course_id):
        assignments[str(r["id"])] = (r["id"], r["max_points"])
        assignments.setdefault(r["title"].strip().lower(), (r["id"], r["max_points"]))
    loop = asyncio.get_running_loop()
    reported: list[int] = []

    def progress(rows: int) -> None:
        reported.append(rows)

    async with ctx.upload_copy(upload_id) as path:  # removed when the block ends (an S3 bucket's copy)
        checking = loop.run_in_executor(
            None, check_sheet, path, learners, assignments, SheetLimits.of(core.settings), progress
        )
        while not checking.done():  # report the reading's progress (the sheet's size is unknown: rows so far)
            await asyncio.wait({checking}, timeout=0.5)
            if reported:
                await ctx.report(0.5 * (1 - 1 / (1 + reported[-1] / 5000)), f"check ({reported[-1]} rows)")
        checked = await checking
    apply_rows = not (params["mode"] == "all_or_nothing" and checked.errors)
    out = await ctx.storage.fresh_output_dir(ctx.id)
    await asyncio.to_thread(write_results, out / RESULTS, checked, apply_rows)
    await ctx.storage.publish_output(ctx.id)  # to the S3 bucket when there is one
    await ctx.report(0.9, "apply")
    tx_events: list[Tx] = []

    async def apply(conn: Any) -> None:
        if not apply_rows or not checked.valid:
            return
        tx = Tx(conn)
        users = [v[0] for v in checked.valid]
        items = [v[1] for v in checked.valid]
        grades = [v[2] for v in checked.valid]
        feedback = [v[3] for v in checked.valid]
        # A grade without a submission is recorded as one (empty), so the gradebook shows it.
        await conn.execute(
            """INSERT INTO submissions (id, assignment_id, user_id, body, late)
               SELECT gen_random_uuid(), v.a, v.u, '', false FROM unnest($1::uuid[], $2::uuid[]) AS v(u, a)
                WHERE NOT EXISTS (SELECT 1 FROM submissions s WHERE s.assignment_id = v.a AND s.user_id = v.u)""",
            users, items,
        )  # fmt: skip
        await conn.execute(
            """WITH v AS (SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::float8[], $4::text[]) AS v(u, a, g, f)),
                    latest AS (SELECT DISTINCT ON (s.assignment_id, s.user_id) s.id, s.assignment_id, s.user_id
                                 FROM submissions s JOIN v ON v.a = s.assignment_id AND v.u = s.user_id
                                ORDER BY s.assignment_id, s.user_id, s.submitted_at DESC, s.id DESC)
               UPDATE submissions s SET grade = v.g, feedback = v.f, graded_at = now(), graded_by = $5
                 FROM latest JOIN v ON v.a = latest.assignment_id AND v.u = latest.user_id
                WHERE s.id = latest.id""",
            users, items, grades, feedback, owner,
        )  # fmt: skip
        counts: dict[uuid.UUID, int] = {}
        for user_id in users:
            counts[user_id] = counts.get(user_id, 0) + 1
        rows = await conn.fetch(
            """INSERT INTO notifications (id, user_id, kind, payload)
               SELECT gen_random_uuid(), v.u, 'grades_posted',
                      jsonb_build_object('course_id', $3::text, 'grades', v.n)
                 FROM unnest($1::uuid[], $2::int[]) AS v(u, n) RETURNING id, user_id, payload, created_at""",
            list(counts), list(counts.values()), str(course_id),
        )  # fmt: skip
        for row in rows:
            note = {"id": str(row["id"]), "kind": "grades_posted", "payload": row["payload"],
                    "created_at": row["created_at"].isoformat(), "read_at": None}  # fmt: skip
            tx.publish(f"user:{row['user_id']}", {"type": "notification", "notification": note})
        await audit(tx, owner, "grades.bulk_applied", "course", course_id, job_id=str(ctx.id), rows=len(users))
        tx_events.append(tx)

    async def after() -> None:
        for tx in tx_events:
            for topic, payload, every_node in tx.events:
                await core.bus.publish(topic, payload, every_node=every_node)

    applied = len(checked.valid) if apply_rows else 0
    return Finish(
        result={
            "rows": checked.rows,
            "valid": len(checked.valid),
            "errors": checked.errors,
            "applied": applied,
            "mode": params["mode"],
            "results": f"/api/v1/courses/{course_id}/grade-uploads/{ctx.id}/results",
        },
        apply=apply,
        after=after,
    )


@api.route(
    "POST",
    "/courses/{course_id}/grade-uploads",
    summary="Grade many submissions from an uploaded CSV or XLSX sheet (a background job)",
    description="The course's owner or an admin, with a finished upload of their own (tus, `/api/v1/uploads`) "
    "holding a UTF-8 CSV or an XLSX workbook (its first sheet) with the columns `email, assignment, grade` and "
    "optionally `feedback` (`assignment`: the assignment's id or exact title). 202 with the job "
    "(`GET /jobs/{id}`, `job:progress`). Its result says how many rows were valid, wrong and applied, and where "
    "the per-row result file is. At most "
    "`STUDYHALL_GRADE_SHEET_MAX_ROWS` rows and `STUDYHALL_GRADE_SHEET_MAX_BYTES` bytes (413); an XLSX unpacking "
    "past `STUDYHALL_GRADE_SHEET_XLSX_MAX_UNPACKED_BYTES` (a zip bomb) fails its job; "
    "`STUDYHALL_MEDIA_JOBS_PER_USER` jobs of a user at once (429).",
    tag=TAG,
    body=GradeUploadIn,
    response=JobOut,
    status=202,
    errors=[403, 409, 413, 429],
)
async def post_grade_upload(call: Call) -> Reply:
    core = core_of(call)
    user, course_id = call.me, call.params["course_id"]
    upload = await call.request.app[UPLOADS].finished(user, call.body.upload_id)
    async with core.transaction() as tx:
        await owned_course(tx.conn, user, course_id)
        if upload.length > core.settings.grade_sheet_max_bytes:
            raise AppError(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"the sheet has {upload.length} bytes; a grade sheet may have at most "
                f"{core.settings.grade_sheet_max_bytes} (split it)",
            )
        await tx.conn.execute("SELECT pg_advisory_xact_lock(hashtext('media-jobs:' || $1::uuid::text))", user.id)
        active = await tx.conn.fetchval(
            "SELECT count(*) FROM jobs WHERE owner_id = $1 AND state IN ('queued', 'running')", user.id
        )
        if active >= core.settings.media_jobs_per_user:
            raise AppError(ErrorCode.RATE_LIMITED, "too many of your jobs are running; wait for one to finish",
                           {"retry_after_s": 10})  # fmt: skip
        if await tx.conn.fetchval(
            "SELECT true FROM jobs WHERE kind = $1 AND state IN ('queued', 'running') AND params->>'upload_id' = $2",
            KIND, str(upload.id),
        ):  # fmt: skip
            raise conflict("this sheet is already being processed")
        params = {"course_id": str(course_id), "upload_id": str(upload.id), "mode": call.body.mode}
        row = await enqueue(tx.conn, KIND, user.id, params)
    runner = call.request.app.get(JOBS)
    if runner is not None:
        runner.submit(row["id"])
    return Reply(job_out(row), status=202)


@api.route(
    "GET",
    "/courses/{course_id}/grade-uploads/{job_id}/results",
    summary="The per-row result file of a grade sheet (CSV: row, email, assignment, status, message)",
    tag=TAG,
    produces="text/csv",
    errors=[404],
)
async def get_grade_results(call: Call) -> web.StreamResponse:
    core = core_of(call)
    course_id, job_id = call.params["course_id"], call.params["job_id"]
    async with core.pool.acquire() as conn:
        await owned_course(conn, call.me, course_id)
        job = await conn.fetchrow(
            "SELECT owner_id, state FROM jobs WHERE id = $1 AND kind = $2 AND params->>'course_id' = $3",
            job_id, KIND, str(course_id),
        )  # fmt: skip
    if job is None or job["state"] != "succeeded":
        raise not_found("results")
    headers = {
        "Content-Type": "text/csv",
        "Content-Disposition": f'attachment; filename="grade-sheet-results-{job_id}.csv"',
        "Cache-Control": "private, no-store",
    }
    return await send_output(call.request, job_id, RESULTS, headers, "results")
