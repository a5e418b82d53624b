"""Media storage in an S3-compatible bucket (MinIO, AWS S3, ...), chosen by ``STUDYHALL_S3_BUCKET``.

:class:`S3Storage` is a :class:`~media.storage.LocalStorage` whose directory (``STUDYHALL_MEDIA_DIR``) is only
the working area: tus uploads are received there (appends at any offset, which objects do not take), ffmpeg
reads the upload and writes a job's ladder there, and grade-sheet results and data exports stay there. What is
finished and served goes to the bucket, under ``STUDYHALL_S3_PREFIX``:

- ``outputs/<job id>/...``: a lecture video job's ladder (playlists, segments, poster), uploaded by
  :meth:`S3Storage.publish_output` before the job commits; the local copy is then removed. Keys are the job's,
  so a retried job overwrites them (and removes any an earlier attempt left that this one did not make).
  Removing objects is best effort (logged): what a failure leaves is unreachable, since studyhall serves only
  what its rows point at.
- ``files/<file id>``: a submission's file, spooled to the working area (size limits, a body cut short) and
  then uploaded whole (multipart for large files); the spool is removed.

Serving (:meth:`S3Storage.send`, after studyhall's access checks) streams the object (``GetObject`` with the
request's ``Range``: 206 and ``Content-Range`` as the store answers) or, with ``STUDYHALL_S3_SERVE=redirect``,
answers 302 to a presigned URL valid ``STUDYHALL_S3_PRESIGN_S`` that carries the response's content type,
disposition and cache headers.

One client per event loop (the app's, or a Celery media worker's), opened on first use and closed by
:meth:`S3Storage.close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterable
from pathlib import Path
from typing import Any

import aioboto3
from aiohttp import web
from botocore.config import Config
from botocore.exceptions import ClientError

from core_api.settings import Settings
from media.storage import LocalStorage, Progress

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
MULTIPART_AT = 16 * 1024 * 1024
_TYPES = {".m3u8": "application/vnd.apple.mpegurl", ".ts": "video/mp2t", ".jpg": "image/jpeg"}
_MISSING = ("NoSuchKey", "404", "NotFound")


class S3Storage(LocalStorage):
    """Finished media in a bucket, the working area in ``root`` (see the module docstring)."""

    def __init__(self, root: Path, settings: Settings) -> None:
        super().__init__(root)
        assert settings.s3_bucket is not None
        self.bucket = settings.s3_bucket
        self.prefix = settings.s3_prefix
        self.serve = settings.s3_serve
        self.presign_s = settings.s3_presign_s
        self.concurrency = settings.s3_concurrency
        secret = settings.s3_secret_access_key
        self._client_args: dict[str, Any] = {
            "region_name": settings.s3_region,
            "endpoint_url": settings.s3_endpoint_url,
            "aws_access_key_id": settings.s3_access_key_id,
            "aws_secret_access_key": None if secret is None else secret.get_secret_value(),
            "config": Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"} if settings.s3_endpoint_url else {},
                retries={"max_attempts": 4, "mode": "standard"},
                max_pool_connections=max(10, 2 * settings.s3_concurrency),
            ),
        }
        self._public_url = settings.s3_public_url
        self._session = aioboto3.Session()
        self._clients: dict[asyncio.AbstractEventLoop, tuple[contextlib.AsyncExitStack, Any, Any]] = {}
        self._opening: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}

    def key(self, name: str) -> str:
        return self.prefix + name

    async def _open(self) -> tuple[Any, Any]:
        """This loop's client (and the one that presigns, for STUDYHALL_S3_PUBLIC_URL)."""
        loop = asyncio.get_running_loop()
        opened = self._clients.get(loop)
        if opened is not None:
            return opened[1], opened[2]
        lock = self._opening.setdefault(loop, asyncio.Lock())
        async with lock:
            opened = self._clients.get(loop)
            if opened is None:
                stack = contextlib.AsyncExitStack()
                client = await stack.enter_async_context(self._session.client("s3", **self._client_args))
                signer = client
                if self._public_url is not None:
                    args = {**self._client_args, "endpoint_url": self._public_url}
                    signer = await stack.enter_async_context(self._session.client("s3", **args))
                opened = (stack, client, signer)
                self._clients[loop] = opened
        return opened[1], opened[2]

    async def client(self) -> Any:
        return (await self._open())[0]

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        opened = self._clients.pop(loop, None)
        self._opening.pop(loop, None)
        if opened is not None:
            await opened[0].aclose()

    # --- objects ---------------------------------------------------------------------------------------

    async def keys_under(self, name: str) -> list[str]:
        """Every key under ``<prefix><name>`` (``name`` ends with ``/``)."""
        client = await self.client()
        keys: list[str] = []
        paginator = client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.key(name)):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return keys

    async def _delete(self, keys: list[str]) -> None:
        client = await self.client()
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            answer = await client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            errors = answer.get("Errors") or []
            if errors:
                raise RuntimeError(f"the store kept {len(errors)} objects: {errors[0].get('Message')}")

    async def _put_path(self, path: Path, key: str, content_type: str) -> None:
        client = await self.client()
        size = (await asyncio.to_thread(path.stat)).st_size
        if size >= MULTIPART_AT:
            await client.upload_file(str(path), self.bucket, key, ExtraArgs={"ContentType": content_type})
        else:
            body = await asyncio.to_thread(path.read_bytes)
            await client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)

    # --- job outputs -----------------------------------------------------------------------------------

    async def publish_output(self, job_id: uuid.UUID, progress: Progress | None = None) -> None:
        local = self.output_dir(job_id)
        files = await asyncio.to_thread(lambda: sorted(p for p in local.rglob("*") if p.is_file()))
        base = f"outputs/{job_id}/"
        earlier = set(await self.keys_under(base))
        made: set[str] = set()
        limit = asyncio.Semaphore(self.concurrency)
        done = 0

        async def put(path: Path) -> None:
            nonlocal done
            key = self.key(base + path.relative_to(local).as_posix())
            async with limit:
                await self._put_path(path, key, _TYPES.get(path.suffix, "application/octet-stream"))
            made.add(key)
            done += 1

        tasks = [asyncio.create_task(put(p)) for p in files]
        try:
            pending = set(tasks)
            while pending:
                _, pending = await asyncio.wait(pending, timeout=1.0, return_when=asyncio.FIRST_EXCEPTION)
                for task in tasks:
                    failed = task.exception() if task.done() and not task.cancelled() else None
                    if failed is not None:
                        raise failed
                if progress is not None:
                    await progress(done / max(len(files), 1))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._delete(sorted(earlier - made))  # what an earlier attempt made and this one did not
        await asyncio.to_thread(_rmtree, local)

    async def remove_output(self, job_id: uuid.UUID) -> None:
        await super().remove_output(job_id)
        try:
            await self._delete(await self.keys_under(f"outputs/{job_id}/"))
        except Exception:  # the job still ends (failed, cancelled); what is left is unreachable
            log.exception("media: could not remove the objects of job %s from the bucket", job_id)

    async def read_output(self, job_id: uuid.UUID, name: str) -> bytes:
        client = await self.client()
        try:
            answer = await client.get_object(Bucket=self.bucket, Key=self.key(f"outputs/{job_id}/{name}"))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                raise FileNotFoundError(name) from None
            raise
        body = answer["Body"]
        try:
            data: bytes = await body.read()
        finally:
            body.close()
        return data

    # --- files -----------------------------------------------------------------------------------------

    async def put_file(self, file_id: uuid.UUID, chunks: AsyncIterable[bytes], limit: int) -> int:
        size = await super().put_file(file_id, chunks, limit)  # the spool: limits and a body cut short
        spool = self.file_path(file_id)
        try:
            await self._put_path(spool, self.key(f"files/{file_id}"), "application/octet-stream")
        finally:  # (an upload cut short leaves no object: a multipart upload is aborted, a put is whole or not)
            await asyncio.to_thread(_unlink, spool)
        return size

    async def remove_file(self, file_id: uuid.UUID) -> None:
        await self._unlink_file(file_id)
        try:
            client = await self.client()
            await client.delete_object(Bucket=self.bucket, Key=self.key(f"files/{file_id}"))
        except Exception:  # its row is gone: the object is unreachable
            log.exception("media: could not remove the file %s from the bucket", file_id)

    async def local_file(self, file_id: uuid.UUID, scratch: Path) -> Path:
        client = await self.client()
        path = scratch / str(file_id)
        await asyncio.to_thread(scratch.mkdir, 0o700, True, True)
        try:
            await client.download_file(self.bucket, self.key(f"files/{file_id}"), str(path))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                raise FileNotFoundError(str(file_id)) from None
            raise
        return path

    # --- serving ---------------------------------------------------------------------------------------

    async def send(self, request: web.Request, key: str, headers: dict[str, str]) -> web.StreamResponse:
        client, signer = await self._open()
        if self.serve == "redirect":
            return await self._redirect(client, signer, key, headers)
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key(key)}
        wanted = request.headers.get("Range")
        if wanted is not None:
            args["Range"] = wanted
        elif "If-None-Match" in request.headers:  # a player's cache revalidating: 304 from the store
            args["IfNoneMatch"] = request.headers["If-None-Match"]
        try:
            answer = await client.get_object(**args)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _MISSING:
                raise FileNotFoundError(key) from None
            if code == "InvalidRange" or status == 416:
                return await self._unsatisfiable(client, key, headers)
            if status == 304:
                return web.Response(status=304, headers={"Cache-Control": headers.get("Cache-Control", "private")})
            raise
        out = web.StreamResponse(status=206 if answer.get("ContentRange") else 200, headers=headers)
        out.headers["Accept-Ranges"] = "bytes"
        out.content_length = int(answer["ContentLength"])
        if answer.get("ContentRange"):
            out.headers["Content-Range"] = answer["ContentRange"]
        if answer.get("ETag"):
            out.headers["ETag"] = answer["ETag"]
        if answer.get("LastModified") is not None:
            out.last_modified = answer["LastModified"]
        body = answer["Body"]
        try:
            await out.prepare(request)
            if request.method != "HEAD":
                async for chunk in body.iter_chunks(CHUNK):
                    await out.write(chunk)
        finally:
            body.close()
        await out.write_eof()
        return out

    async def _unsatisfiable(self, client: Any, key: str, headers: dict[str, str]) -> web.Response:
        try:
            head = await client.head_object(Bucket=self.bucket, Key=self.key(key))
        except ClientError:
            raise FileNotFoundError(key) from None
        size = int(head["ContentLength"])
        return web.Response(status=416, headers={"Content-Range": f"bytes */{size}", "Cache-Control": "no-store"})

    async def _redirect(self, client: Any, signer: Any, key: str, headers: dict[str, str]) -> web.Response:
        try:  # a missing object is studyhall's 404, not the store's error page
            await client.head_object(Bucket=self.bucket, Key=self.key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                raise FileNotFoundError(key) from None
            raise
        params = {"Bucket": self.bucket, "Key": self.key(key)}
        for header, param in (
            ("Content-Type", "ResponseContentType"),
            ("Content-Disposition", "ResponseContentDisposition"),
            ("Cache-Control", "ResponseCacheControl"),
        ):
            if header in headers:
                params[param] = headers[header]
        url = await signer.generate_presigned_url("get_object", Params=params, ExpiresIn=self.presign_s)
        return web.Response(status=302, headers={"Location": url, "Cache-Control": "private, no-store"})


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
