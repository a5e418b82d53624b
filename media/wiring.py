"""The app's media services for as long as it runs: storage, uploads (and the sweep that expires
unfinished ones), and the job runner: in this process, or sending jobs to Celery workers when scaled
(:mod:`media.distributed`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from core_api.context import CORE
from core_api.grading import bulk as grade_sheet
from core_api.privacy import export as data_export
from core_api.settings import Settings
from media import video
from media.distributed import QUEUE as MEDIA_QUEUE
from media.distributed import CeleryJobs
from media.jobs import JOBS, JobRunner, Work
from media.storage import LocalStorage, Storage
from media.uploads import UPLOADS, Uploads

log = logging.getLogger(__name__)

STORAGE = web.AppKey("media_storage", LocalStorage)


def open_storage(settings: Settings) -> Storage:
    """The configured store: the local directory, with finished media in an S3-compatible bucket when
    ``STUDYHALL_S3_BUCKET`` is set (media/s3.py)."""
    if settings.s3_bucket is not None:
        from media.s3 import S3Storage  # (aioboto3 is imported only when used)

        return S3Storage(settings.media_root, settings)
    return LocalStorage(settings.media_root, settings.media_accel_prefix)


def job_kinds() -> dict[str, Work]:
    """Every kind of job and its work: the same table for the in-process runner and the Celery worker."""
    return {
        video.KIND: video.transcode_lecture,
        data_export.KIND: data_export.build_export,
        grade_sheet.KIND: grade_sheet.run_sheet,
    }


async def _sweep(uploads: Uploads, settings: Settings) -> None:
    while True:
        try:
            gone = await uploads.sweep()
            if gone:
                log.info("media: removed %d expired unfinished uploads", gone)
            gone = await video.remove_unused_ladders(uploads.core, uploads.storage, settings.media_ladder_keep_s)
            if gone:
                log.info("media: removed %d lecture ladders no lecture plays any more", gone)
            gone = await uploads.storage.remove_leftovers()
            if gone:
                log.info("media: removed %d scratch copies and part spools a dead process left", gone)
        except Exception:
            log.exception("media: the upload sweep failed; trying again later")
        await asyncio.sleep(settings.media_sweep_s)


async def run_media(settings: Settings, app: web.Application) -> AsyncIterator[None]:
    """A ``cleanup_ctx``: the uploads service and its sweep, and the in-process job runner."""
    storage = open_storage(settings)
    uploads = Uploads(app[CORE], storage)
    app[UPLOADS] = uploads
    runner: JobRunner
    if settings.media_on_celery:
        assert settings.redis_url is not None
        runner = CeleryJobs(app[CORE], storage, job_kinds(), settings.redis_url.get_secret_value())
        log.info("media: jobs run on Celery workers (`studyhall worker -Q media`, queue %s)", MEDIA_QUEUE)
    else:
        runner = JobRunner(app[CORE], storage, job_kinds())
    app[JOBS] = runner
    sweeper = asyncio.create_task(_sweep(uploads, settings))
    runner.start()
    try:
        yield
    finally:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        await runner.close()
        await storage.close()
