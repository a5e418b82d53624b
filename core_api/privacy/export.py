"""``POST /me/exports``: everything the server holds about the caller, as a zip of JSON files, made by a job.

The job (kind ``data_export``, run by the jobs of :mod:`media.jobs`, progress as ``job:progress``) reads,
for each table of :data:`~core_api.privacy.registry.REGISTRY` marked for export, the caller's rows (at most
``STUDYHALL_DATA_EXPORT_MAX_ROWS`` per table; ``manifest.json`` says when a table was cut), leaving out
secrets (password and token hashes), and writes ``<table>.json`` files and a ``manifest.json`` into
``export.zip`` under the job's output directory, with the files the caller attached to assignment submissions
under ``submission_files/<file id>/<name>``; with an S3 bucket the zip is then put there (``outputs/<job id>/``)
and the download streams it from there (or redirects, ``STUDYHALL_S3_SERVE``).
``GET /me/exports/{job_id}/download`` gives it to the job's owner only. Asking is audited
(``user.data_export``) and limited (one at a time, ``STUDYHALL_DATA_EXPORTS_PER_DAY`` a day).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import decimal
import json
import shutil
import uuid
import zipfile
from pathlib import Path
from typing import Any

from aiohttp import web

from core_api.context import Core, audit, core_of
from core_api.db import Record
from core_api.errors import conflict, not_found, refuse_past_limit
from core_api.http import Api, Call, Reply
from core_api.privacy.registry import REGISTRY, SECRET_COLUMNS
from media.jobs import JOBS, Finish, JobContext, JobOut, enqueue, job_out, send_output

KIND = "data_export"
FILE = "export.zip"
TAG = "privacy"
api = Api()


def _plain(value: Any) -> Any:
    if isinstance(value, uuid.UUID | dt.datetime | dt.date | dt.timedelta):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


def _row(record: Record) -> dict[str, Any]:
    return {k: _plain(v) for k, v in record.items() if k not in SECRET_COLUMNS}


def _write(
    path: Path,
    files: dict[str, list[dict[str, Any]]],
    manifest: dict[str, Any],
    attachments: list[tuple[str, Path]] = [],  # noqa: B006 (never changed)
) -> int:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False))
        for name, rows in files.items():
            archive.writestr(f"{name}.json", json.dumps(rows, indent=2, ensure_ascii=False))
        for name, source in attachments:
            if source.exists():
                archive.write(source, name)
    return path.stat().st_size


async def build_export(ctx: JobContext) -> Finish:
    """The job's work: read the owner's rows of every exported table, then write the zip."""
    user_id = uuid.UUID(str(ctx.job["owner_id"]))
    limit = ctx.core.settings.data_export_max_rows
    entries = [p for p in REGISTRY if p.export]
    files: dict[str, list[dict[str, Any]]] = {}
    tables: dict[str, dict[str, Any]] = {}
    for i, entry in enumerate(entries):
        await ctx.report(i / (len(entries) + 1), f"collect {entry.table}")
        rows = await ctx.core.pool.fetch(
            f'SELECT * FROM "{entry.table}" WHERE "{entry.column}" = $1 LIMIT $2', user_id, limit + 1
        )
        name = entry.table if entry.table not in files else f"{entry.table}.{entry.column}"
        files[name] = [_row(r) for r in rows[:limit]]
        tables[name] = {
            "rows": len(files[name]),
            "cut": len(rows) > limit,
            "by": entry.column,
            "on_account_deletion": entry.on_delete,
            "why": entry.why,
        }
    await ctx.report(len(entries) / (len(entries) + 1), "zip")
    manifest = {
        "what": "Everything studyhall holds about this account, one JSON file per table (secrets left out).",
        "user_id": str(user_id),
        "made_at": dt.datetime.now(dt.UTC).isoformat(),
        "tables": tables,
    }
    out = await ctx.storage.fresh_output_dir(ctx.id)
    scratch = ctx.storage.scratch_dir(ctx.id)  # files kept in an S3 bucket are downloaded here, then removed
    attachments = []
    for r in files.get("submission_files", []):
        try:
            path = await ctx.storage.local_file(uuid.UUID(r["id"]), scratch)
        except FileNotFoundError:
            path = ctx.storage.file_path(uuid.UUID(r["id"]))  # (gone: _write skips what it cannot find)
        attachments.append((f"submission_files/{r['id']}/{r['filename']}", path))
    try:
        size = await asyncio.to_thread(_write, out / FILE, files, manifest, attachments)
    finally:
        await asyncio.to_thread(shutil.rmtree, scratch, True)
    await ctx.storage.publish_output(ctx.id)  # to the S3 bucket when there is one
    return Finish(
        result={
            "file": FILE,
            "bytes": size,
            "tables": {k: v["rows"] for k, v in tables.items()},
            "download": f"/api/v1/me/exports/{ctx.id}/download",
        }
    )


async def request_export(core: Core, call: Call) -> Record:
    user = call.me
    async with core.transaction() as tx:
        # One user's requests one at a time: two cannot both pass the checks below.
        await tx.conn.execute("SELECT pg_advisory_xact_lock(hashtext('data_export:' || $1::uuid::text))", user.id)
        if await tx.conn.fetchval(
            "SELECT true FROM jobs WHERE owner_id = $1 AND kind = $2 AND state IN ('queued', 'running')",
            user.id,
            KIND,
        ):
            raise conflict("an export of your data is already being made; wait for it to finish")
        recent = await tx.conn.fetch(
            "SELECT created_at FROM jobs WHERE owner_id = $1 AND kind = $2 AND created_at > now() - interval '1 day'"
            " ORDER BY created_at",
            user.id,
            KIND,
        )
        per_day = core.settings.data_exports_per_day
        refuse_past_limit(
            [r["created_at"] for r in recent], per_day, dt.timedelta(days=1),
            f"you can export your data {per_day} times a day; try again later",
        )  # fmt: skip
        job = await enqueue(tx.conn, KIND, user.id, {})
        await audit(tx, user.id, "user.data_export", "job", job["id"])
    runner = call.request.app.get(JOBS)
    if runner is not None:
        runner.submit(job["id"])
    return job


@api.route(
    "POST",
    "/me/exports",
    summary="Export all your data (a background job making a zip of JSON files)",
    description="202 with the job (`GET /jobs/{id}`, live `job:progress`); when it has succeeded, its `result` "
    "has `download`: `GET /me/exports/{job_id}/download`. One export at a time (409), "
    "`STUDYHALL_DATA_EXPORTS_PER_DAY` a day (429 with `Retry-After`). Audited (`user.data_export`).",
    tag=TAG,
    response=JobOut,
    status=202,
    errors=[409, 429],
)
async def post_export(call: Call) -> Reply:
    return Reply(job_out(await request_export(core_of(call), call)), status=202)


@api.route(
    "GET",
    "/me/exports/{job_id}/download",
    summary="Download your data export (a zip: manifest.json and one JSON file per table)",
    description="Only the export's owner; 404 for anyone else, and until the job has succeeded.",
    tag=TAG,
    produces="application/zip",
    errors=[404],
)
async def get_export(call: Call) -> web.StreamResponse:
    core = core_of(call)
    job_id = call.params["job_id"]
    row = await core.pool.fetchrow(
        "SELECT state FROM jobs WHERE id = $1 AND owner_id = $2 AND kind = $3", job_id, call.me.id, KIND
    )
    if row is None or row["state"] != "succeeded":
        raise not_found("export")
    name = f"studyhall-data-{dt.date.today().isoformat()}.zip"
    headers = {
        "Content-Type": "application/zip",
        "Content-Disposition": f'attachment; filename="{name}"',
        "Cache-Control": "private, no-store",
    }
    return await send_output(call.request, job_id, FILE, headers, "export")
