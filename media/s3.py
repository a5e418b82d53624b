"""Media storage in an S3-compatible bucket (MinIO, AWS S3, ...), chosen by ``STUDYHALL_S3_BUCKET``.

:class:`S3Storage` keeps everything that outlives a request or a job in the bucket, under
``STUDYHALL_S3_PREFIX``, so two nodes and a Celery media worker on different machines share only the bucket
and Postgres. Its local directory (``STUDYHALL_MEDIA_DIR``, inherited from :class:`~media.storage.LocalStorage`)
is scratch space only: a job's output while it is made, and the copies a job reads.

- ``uploads/<upload id>``: a tus upload, received into an S3 multipart upload started when the upload is created
  (its id is kept in the ``uploads`` row, ``store_ref``, so any node continues what another began). A PATCH
  gathers its bytes in a spool file (:class:`_Spool`, not in memory) and sends each
  ``STUDYHALL_S3_UPLOAD_PART_BYTES`` as a part (S3 takes parts of 5 MiB or more but for the last); when the
  PATCH ends, however it ends, the bytes past the last whole part
  are put as the object ``uploads/<upload id>.tail`` (its metadata says at which offset it starts), and the
  next PATCH, on whichever node, reads the parts (``ListParts``) and the tail back and goes on. So the offset
  recorded (and answered to HEAD) is always durable: whole parts plus the tail. With the last byte the last
  part is sent and the multipart upload completed: the object ``uploads/<upload id>``. Termination, expiry
  and a consumed upload remove the object and the tail and abort the multipart upload. Should the store hold
  more than was recorded (a node died after a part went up), the bytes the client resends up to there are
  skipped (they are the same bytes of the same file); should it hold less, the PATCH gets 409 with the offset
  the store has. A live session's recording is written on the recording node's disk and put here whole when it
  ends (:meth:`S3Storage.adopt_upload`). An upload whose row has no ``store_ref`` and whose bytes are on this
  node's disk (received before the bucket was configured, or a recording that could not be put here) is
  appended to and read from there as before.
- ``outputs/<job id>/...``: what a job made (a lecture video's ladder; a grade sheet's ``results.csv``; a data
  export's ``export.zip``), uploaded by :meth:`S3Storage.publish_output` before the job commits; the local copy
  is then removed. Keys are the job's, so a retried job overwrites them (and removes any an earlier attempt
  left that this one did not make). Removing objects is best effort (logged): what a failure leaves is
  unreachable, since studyhall serves only what its rows point at.
- ``files/<file id>``: a submission's file, spooled to the scratch space (size limits, a body cut short) and
  then uploaded whole (multipart for large files); the spool is removed.

Jobs read an upload or a file from a copy downloaded into :meth:`~media.storage.LocalStorage.scratch_dir`
(:meth:`S3Storage.local_upload`, :meth:`S3Storage.local_file`), removed when the job ends.

Serving (:meth:`S3Storage.send`, after studyhall's access checks) streams the object (``GetObject`` with the
request's ``Range``: 206 and ``Content-Range`` as the store answers) or, with ``STUDYHALL_S3_SERVE=redirect``,
answers 302 to a presigned URL valid ``STUDYHALL_S3_PRESIGN_S`` that carries the response's content type,
disposition and cache headers.

A bucket lifecycle rule aborting incomplete multipart uploads after a few days is still wise: a multipart
upload started by a node that died before it wrote the upload's row is not known to studyhall.

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
from typing import Any, BinaryIO

import aioboto3
from aiohttp import web
from botocore.config import Config
from botocore.exceptions import ClientError

from core_api.settings import Settings
from media.storage import LocalStorage, Progress, Rewound, TooMuchData, write_at

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
MULTIPART_AT = 16 * 1024 * 1024
_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl", ".ts": "video/mp2t", ".jpg": "image/jpeg", ".csv": "text/csv",
    ".zip": "application/zip",
}  # fmt: skip
_MISSING = ("NoSuchKey", "404", "NotFound")
_NO_UPLOAD = ("NoSuchUpload", "404")


def _code(exc: ClientError) -> str | None:
    code: str | None = exc.response.get("Error", {}).get("Code")
    return code


class _Spool:
    """The bytes of the part a PATCH is gathering, in a file of the local scratch space rather than in memory
    (as tusd's s3store does): a node's memory stays flat however many uploads run. A fresh file for each part
    (the last one unlinked), so the disk is never asked to write back what is thrown away."""

    def __init__(self, directory: Path, upload_id: uuid.UUID) -> None:
        self._directory, self._upload_id = directory, upload_id
        self.path = Path()
        self.fd = -1
        self.size = 0
        self.renew()

    def renew(self) -> None:
        """Start an empty part (after the last one was sent)."""
        self.close()
        self.path = self._directory / f"{self._upload_id}-{uuid.uuid4().hex}"
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        self.size = 0

    async def add(self, data: bytes | memoryview) -> None:
        try:
            self.size += await write_at(self.fd, self.size, [data])
        except asyncio.CancelledError:
            # The PATCH was cancelled (its connection dropped) while the write ran in a thread; write_at saw the
            # write through first. The spool is settled next (sent as a part or the tail): count what the file
            # holds.
            self.size = os.fstat(self.fd).st_size
            raise

    def reader(self) -> BinaryIO:
        return self.path.open("rb")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            self.path.unlink(missing_ok=True)


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
        self.part_bytes = settings.s3_upload_part_bytes
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

    # --- uploads (tus) ---------------------------------------------------------------------------------

    async def start_upload(self, upload_id: uuid.UUID, length: int) -> str | None:
        client = await self.client()
        key = self.key(f"uploads/{upload_id}")
        if length == 0:  # whole already (S3 has no multipart upload without parts)
            await client.put_object(Bucket=self.bucket, Key=key, Body=b"")
            return None
        answer = await client.create_multipart_upload(Bucket=self.bucket, Key=key)
        return str(answer["UploadId"])

    async def _parts(self, upload_id: uuid.UUID, ref: str) -> list[dict[str, Any]] | None:
        """The parts sent so far (``PartNumber``, ``ETag``, ``Size``), in order; None once completed/aborted."""
        client = await self.client()
        parts: list[dict[str, Any]] = []
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key(f"uploads/{upload_id}"), "UploadId": ref}
        while True:
            try:
                answer = await client.list_parts(**args)
            except ClientError as exc:
                if _code(exc) in _NO_UPLOAD:
                    return None
                raise
            parts.extend(answer.get("Parts", []))
            if not answer.get("IsTruncated"):
                break
            args["PartNumberMarker"] = answer["NextPartNumberMarker"]
        parts.sort(key=lambda p: int(p["PartNumber"]))
        return parts

    async def _head(self, name: str) -> dict[str, Any] | None:
        """``HeadObject`` of ``name`` (None if there is no such object)."""
        client = await self.client()
        try:
            head: dict[str, Any] = await client.head_object(Bucket=self.bucket, Key=self.key(name))
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return None
            raise
        return head

    async def _tail_size(self, upload_id: uuid.UUID, start: int) -> int:
        """The tail object's length if it starts at ``start`` (else it is stale: 0)."""
        head = await self._head(f"uploads/{upload_id}.tail")
        if head is None or head.get("Metadata", {}).get("start") != str(start):
            return 0
        return int(head["ContentLength"])

    async def _tail_into(self, upload_id: uuid.UUID, start: int, spool: _Spool) -> None:
        """The tail object's bytes into ``spool`` if it starts at ``start`` (else it is stale: nothing)."""
        client = await self.client()
        try:
            answer = await client.get_object(Bucket=self.bucket, Key=self.key(f"uploads/{upload_id}.tail"))
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return
            raise
        body = answer["Body"]
        try:
            if answer.get("Metadata", {}).get("start") != str(start):
                return
            while chunk := await body.read(CHUNK):
                await spool.add(chunk)
        finally:
            body.close()

    async def _whole_size(self, upload_id: uuid.UUID) -> int:
        """The finished upload's size (0 if there is no object)."""
        head = await self._head(f"uploads/{upload_id}")
        return 0 if head is None else int(head["ContentLength"])

    async def upload_size(self, upload_id: uuid.UUID, ref: str | None = None, limit: int | None = None) -> int:
        if ref is None:
            return await super().upload_size(upload_id)
        parts = await self._parts(upload_id, ref)
        if parts is None:
            return await self._whole_size(upload_id)
        done = sum(int(p["Size"]) for p in parts)
        size = done + await self._tail_size(upload_id, done)
        # Not completed: not whole, whatever the parts add up to (the next PATCH completes it).
        return size if limit is None else min(size, limit - 1)

    async def append(
        self, upload_id: uuid.UUID, offset: int, chunks: AsyncIterable[bytes], limit: int, ref: str | None = None
    ) -> int:
        if ref is None:  # received on the local disk (before the bucket, or a recording)
            return await super().append(upload_id, offset, chunks, limit)
        client = await self.client()
        key = self.key(f"uploads/{upload_id}")
        parts = await self._parts(upload_id, ref)
        if parts is None:  # completed already (by a PATCH whose end was not recorded)
            whole = await self._whole_size(upload_id)
            if whole < offset:
                raise Rewound(whole)
            return whole
        done = sum(int(p["Size"]) for p in parts)
        spool = await asyncio.to_thread(lambda: _Spool(self._dir("spool"), upload_id))
        try:
            await self._tail_into(upload_id, done, spool)
            stored = done + spool.size
            if stored < offset:
                raise Rewound(stored)
            at = offset  # the offset of the next byte the client sends; up to ``stored`` they are skipped
            too_much = False
            try:
                async for chunk in chunks:
                    if at + len(chunk) > limit:
                        chunk, too_much = chunk[: limit - at], True
                    skip = min(len(chunk), max(0, stored - at))
                    at += len(chunk)
                    data = memoryview(chunk)[skip:]
                    while data:
                        room = self.part_bytes - spool.size
                        await spool.add(data[:room])
                        data = data[room:]
                        if spool.size < self.part_bytes:
                            continue
                        # A part once begun is seen through, even when the connection drops meanwhile (the handler
                        # is cancelled): then it counts, and what the spool gathers next becomes the tail.
                        sending = asyncio.ensure_future(self._send_part(client, key, ref, len(parts) + 1, spool))
                        try:
                            await asyncio.shield(sending)
                        finally:
                            if not sending.done():
                                await asyncio.wait({sending})
                            if sending.done() and not sending.cancelled() and sending.exception() is None:
                                parts.append(sending.result())
                                done += spool.size
                                await asyncio.to_thread(spool.renew)
                    stored = max(stored, done + spool.size)
                    if too_much:
                        raise TooMuchData(limit)
            finally:  # what arrived is kept, even when the connection dropped mid-body
                await asyncio.shield(self._settle(upload_id, ref, parts, spool, done, limit))
            return done + spool.size
        finally:
            await asyncio.to_thread(spool.close)

    async def _send_part(self, client: Any, key: str, ref: str, number: int, spool: _Spool) -> dict[str, Any]:
        size = spool.size
        with await asyncio.to_thread(spool.reader) as body:
            answer = await client.upload_part(Bucket=self.bucket, Key=key, UploadId=ref, PartNumber=number, Body=body)
        return {"PartNumber": number, "ETag": answer["ETag"], "Size": size}

    async def _settle(
        self, upload_id: uuid.UUID, ref: str, parts: list[dict[str, Any]], spool: _Spool, done: int, limit: int
    ) -> None:
        """At a PATCH's end: the last part and the completion once whole, else the spool as the tail object."""
        client = await self.client()
        key = self.key(f"uploads/{upload_id}")
        tail = self.key(f"uploads/{upload_id}.tail")
        if done + spool.size >= limit:
            if spool.size:
                parts.append(await self._send_part(client, key, ref, len(parts) + 1, spool))
            listed = [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in parts]
            await client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=ref, MultipartUpload={"Parts": listed}
            )
            await client.delete_object(Bucket=self.bucket, Key=tail)
        elif spool.size >= self.part_bytes:
            # The connection dropped just as a part filled up, before it was sent: it is sent now, as that part,
            # so the tail stays shorter than a part (a tail object left is stale, told by its start).
            parts.append(await self._send_part(client, key, ref, len(parts) + 1, spool))
        elif spool.size:
            with await asyncio.to_thread(spool.reader) as body:
                await client.put_object(Bucket=self.bucket, Key=tail, Body=body, Metadata={"start": str(done)})
        # (nothing gathered: a tail object left is stale, told by its start; it goes with the upload)

    async def remove_upload(self, upload_id: uuid.UUID) -> None:
        await super().remove_upload(upload_id)
        key = self.key(f"uploads/{upload_id}")
        try:
            client = await self.client()
            await self._delete([key, key + ".tail"])
            answer = await client.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
            for started in answer.get("Uploads", []):
                if started["Key"] == key:
                    with contextlib.suppress(ClientError):  # (gone meanwhile)
                        await client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=started["UploadId"])
        except Exception:  # its row is gone: what is left is unreachable (and a lifecycle rule takes the parts)
            log.exception("media: could not remove the upload %s from the bucket", upload_id)

    async def adopt_upload(self, upload_id: uuid.UUID, path: Path) -> bool:
        await self._put_path(path, self.key(f"uploads/{upload_id}"), "application/octet-stream")
        await asyncio.to_thread(_unlink, path)
        return True

    async def local_upload(self, upload_id: uuid.UUID, scratch: Path) -> Path:
        if await asyncio.to_thread(self.upload_path(upload_id).is_file):
            return self.upload_path(upload_id)  # received on the local disk (see the module docstring)
        return await self._download(f"uploads/{upload_id}", scratch / f"upload-{upload_id}", scratch)

    async def _download(self, name: str, path: Path, scratch: Path) -> Path:
        client = await self.client()
        await asyncio.to_thread(scratch.mkdir, 0o700, True, True)
        try:
            await client.download_file(self.bucket, self.key(name), str(path))
        except ClientError as exc:
            if _code(exc) in _MISSING:
                raise FileNotFoundError(name) from None
            raise
        return path

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
        try:
            return await self._download(f"files/{file_id}", scratch / str(file_id), scratch)
        except FileNotFoundError:
            raise FileNotFoundError(str(file_id)) from None

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
        if await self._head(key) is None:  # a missing object is studyhall's 404, not the store's error page
            raise FileNotFoundError(key)
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
