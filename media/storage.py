"""Where media bytes live: one small interface, :class:`Storage`, with two implementations.

- :class:`LocalStorage` (the default): everything in a local directory, ``STUDYHALL_MEDIA_DIR``.
- :class:`media.s3.S3Storage` (``STUDYHALL_S3_BUCKET`` set): everything that outlives a request or a job is in an
  S3-compatible bucket, so nodes and media workers on different machines share only the bucket (and Postgres):
  tus uploads (received straight into a multipart upload, see media/s3.py), a job's output once it is made (an
  HLS ladder, a grade sheet's results, a data export: :meth:`Storage.publish_output`), a submission's file
  (:meth:`Storage.put_file`). The local directory is only scratch space: a job's output while it is made, and
  the copies a job reads (:meth:`Storage.local_upload`, :meth:`Storage.local_file`, removed after the job).

ffmpeg and the sheet reader read and write local files, so a job asks for a local copy of its upload
(:meth:`Storage.local_upload` into :meth:`Storage.scratch_dir`; the local store hands over its own file) and
writes into :meth:`Storage.output_dir`. What is served goes through :meth:`Storage.send` and
:meth:`Storage.read_output`, which read wherever the artifact lives.

Layout under the root (and of the keys, under ``STUDYHALL_S3_PREFIX``)::

    uploads/<upload id>          the bytes of an upload (tus), appended in order (S3: the object made when the
                                 multipart upload completes; uploads/<upload id>.tail: the bytes received past
                                 the last whole part, until there is a part's worth)
    outputs/<job id>/...         what a job made (an HLS ladder, a poster, results.csv, export.zip); replaced
                                 whole on a retry
    files/<file id>              a file attached to an assignment submission, written once
    scratch/<job id>/            (local only) copies a job reads, removed when it ends
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Protocol

from aiohttp import web

WRITE_BATCH = 1 << 20
"""Bytes gathered before one write to the file."""

SLOW_WRITE_S = 0.002
"""An upload's write is made in the event loop (into the page cache: a fraction of a millisecond a MiB, and a
thread hop per write cost a third of the throughput, bench/RESULTS.md); one that took longer than this means
the disk is holding writes back, and then every upload writes from a thread for :data:`SLOW_DISK_HOLD_S`, so the
loop (and the chat, the editors on this node) is never held up more than once in that time."""
SLOW_DISK_HOLD_S = 30.0


LEFTOVER_AFTER_S = 86400.0
"""Scratch copies and part spools untouched this long belong to a process that died (a job touches its copy when
it starts, and nothing runs a day): the media sweep removes them."""


class _Disk:
    slow_until = 0.0  # monotonic time until which uploads write from a thread


async def write_at(fd: int, at: int, chunks: Sequence[bytes | memoryview]) -> int:
    """Write ``chunks`` at ``at``: in the event loop while the disk keeps up, else from a thread."""
    now = time.monotonic()
    if now < _Disk.slow_until:
        # A write handed to a thread runs to its end even when the caller is cancelled (its connection dropped):
        # the caller waits for it, so that nothing reads, settles or closes the file while it is being written.
        write = asyncio.ensure_future(asyncio.to_thread(_write_all, fd, at, chunks))
        try:
            return await asyncio.shield(write)
        except asyncio.CancelledError:
            await asyncio.wait({write})
            raise
    written = _write_all(fd, at, chunks)
    if time.monotonic() - now > SLOW_WRITE_S:
        _Disk.slow_until = time.monotonic() + SLOW_DISK_HOLD_S
    return written


Progress = Callable[[float], Awaitable[None]]
"""Called with 0 to 1 while a job's output is published (renews the job's claim)."""


class Storage(Protocol):
    """Upload bytes and job outputs (see the module docstring for the layout)."""

    async def start_upload(self, upload_id: uuid.UUID, length: int) -> str | None:
        """Prepare for an upload of ``length`` bytes; what the caller keeps with the upload and passes back as
        ``ref`` (S3: the multipart upload's id; the local store needs nothing: None)."""
        ...

    async def upload_size(self, upload_id: uuid.UUID, ref: str | None = None, limit: int | None = None) -> int:
        """Bytes stored so far for the upload (0 if none); below ``limit`` unless the upload is whole."""
        ...

    async def append(
        self, upload_id: uuid.UUID, offset: int, chunks: AsyncIterable[bytes], limit: int, ref: str | None = None
    ) -> int:
        """Write ``chunks`` at ``offset`` (the recorded size), at most ``limit`` bytes; return the new size (what is
        stored for good). Once the size reaches ``limit`` the upload is whole (S3: the object is made).

        Raises :class:`TooMuchData` once the chunks go past ``limit`` (what came before stays), :class:`Rewound`
        when the store holds less than ``offset`` (nothing is written)."""
        ...

    async def remove_upload(self, upload_id: uuid.UUID) -> None:
        """Remove the upload's bytes, finished or not (S3: the object, the tail, an unfinished multipart upload)."""
        ...

    def scratch_dir(self, job_id: uuid.UUID) -> Path:
        """A local directory for the copies a job reads (the job removes it when it ends)."""
        ...

    async def adopt_upload(self, upload_id: uuid.UUID, path: Path) -> bool:
        """A finished upload written whole at ``path`` by studyhall itself (a live session's recording, at
        ``LocalStorage.upload_path``): a remote store puts it where uploads live and removes ``path``. Whether it
        moved (False: it stays at ``path``, which is where the local store keeps it)."""
        ...

    async def local_upload(self, upload_id: uuid.UUID, scratch: Path) -> Path:
        """A local path holding a finished upload's bytes (a remote store downloads it into ``scratch``);
        FileNotFoundError if there are none."""
        ...

    async def fresh_output_dir(self, job_id: uuid.UUID) -> Path:
        """An empty directory for a job's output (anything an earlier attempt left is removed)."""
        ...

    def output_dir(self, job_id: uuid.UUID) -> Path: ...

    async def remove_output(self, job_id: uuid.UUID) -> None: ...

    async def put_file(self, file_id: uuid.UUID, chunks: AsyncIterable[bytes], limit: int) -> int:
        """Store a whole file (an assignment's attachment) from ``chunks``, at most ``limit`` bytes; its size.

        Raises :class:`TooMuchData` past ``limit``; whatever goes wrong, nothing is left behind."""
        ...

    def file_path(self, file_id: uuid.UUID) -> Path:
        """A local path to a stored file (to serve it with range requests)."""
        ...

    async def remove_file(self, file_id: uuid.UUID) -> None: ...

    async def publish_output(self, job_id: uuid.UUID, progress: Progress | None = None) -> None:
        """Make the job's finished output directory what :meth:`send` serves (a remote store uploads it under
        ``outputs/<job id>/``, replacing whatever an earlier attempt published, and frees the local copy)."""
        ...

    async def read_output(self, job_id: uuid.UUID, name: str) -> bytes:
        """A published output file's bytes (a playlist); FileNotFoundError if there is none."""
        ...

    async def local_file(self, file_id: uuid.UUID, scratch: Path) -> Path:
        """A local path holding a stored file's bytes (a remote store downloads it into ``scratch``)."""
        ...

    async def send(self, request: web.Request, key: str, headers: dict[str, str]) -> web.StreamResponse:
        """Answer ``request`` with the artifact at ``key`` (``outputs/<job id>/<name>``, ``files/<file id>``)
        and ``headers``, range requests included; FileNotFoundError if there is none. Called after the access
        check."""
        ...

    async def remove_leftovers(self, older_than_s: float = LEFTOVER_AFTER_S) -> int:
        """Remove the scratch copies and part spools a process that died left; how many went."""
        ...

    async def close(self) -> None:
        """Release connections (at shutdown)."""
        ...


def accel_response(location: str, headers: dict[str, str]) -> web.Response:
    """The answer nginx turns into the file (an empty body; nginx keeps these headers)."""
    return web.Response(status=200, headers={**headers, "X-Accel-Redirect": location})


class TooMuchData(Exception):
    """More bytes arrived than the upload may hold."""

    def __init__(self, size: int) -> None:
        super().__init__(f"the body goes past the upload's length (kept the first {size} bytes)")
        self.size = size


class Rewound(Exception):
    """The store holds fewer bytes of the upload than were recorded (they were lost): resume from ``size``."""

    def __init__(self, size: int) -> None:
        super().__init__(f"the store holds {size} bytes of the upload, fewer than recorded")
        self.size = size


class LocalStorage:
    """:class:`Storage` in a local directory (created on first use, mode 0700).

    With ``accel_prefix`` (``STUDYHALL_MEDIA_ACCEL_PREFIX``, behind nginx) :meth:`send` answers with an empty
    body and ``X-Accel-Redirect: <prefix><key>``, and nginx sends the file."""

    def __init__(self, root: Path, accel_prefix: str | None = None) -> None:
        self.root = root
        self.accel_prefix = accel_prefix

    def _dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path

    def upload_path(self, upload_id: uuid.UUID) -> Path:
        return self.root / "uploads" / str(upload_id)

    def output_dir(self, job_id: uuid.UUID) -> Path:
        return self.root / "outputs" / str(job_id)

    def scratch_dir(self, job_id: uuid.UUID) -> Path:
        return self.root / "scratch" / str(job_id)

    async def remove_leftovers(self, older_than_s: float = LEFTOVER_AFTER_S) -> int:
        """Remove what a process that died left in the scratch space (a job's copies, a PATCH's part spool):
        entries of ``scratch/`` and ``spool/`` untouched for ``older_than_s``; how many went."""

        def remove() -> int:
            gone, before = 0, time.time() - older_than_s
            for name in ("scratch", "spool"):
                with contextlib.suppress(FileNotFoundError):
                    for entry in (self.root / name).iterdir():
                        with contextlib.suppress(FileNotFoundError):
                            if entry.lstat().st_mtime >= before:
                                continue
                            if entry.is_dir() and not entry.is_symlink():
                                shutil.rmtree(entry, ignore_errors=True)
                            else:
                                entry.unlink()
                            gone += 1
            return gone

        return await asyncio.to_thread(remove)

    async def start_upload(self, upload_id: uuid.UUID, length: int) -> str | None:
        return None

    async def adopt_upload(self, upload_id: uuid.UUID, path: Path) -> bool:
        return False  # (recordings are written at upload_path already)

    async def local_upload(self, upload_id: uuid.UUID, scratch: Path) -> Path:
        path = self.upload_path(upload_id)  # the upload itself, no copy
        if not await asyncio.to_thread(path.is_file):
            raise FileNotFoundError(str(upload_id))
        return path

    async def upload_size(self, upload_id: uuid.UUID, ref: str | None = None, limit: int | None = None) -> int:
        try:
            return (await asyncio.to_thread(self.upload_path(upload_id).stat)).st_size
        except FileNotFoundError:
            return 0

    async def append(
        self, upload_id: uuid.UUID, offset: int, chunks: AsyncIterable[bytes], limit: int, ref: str | None = None
    ) -> int:
        await asyncio.to_thread(self._dir, "uploads")
        path = self.upload_path(upload_id)
        fd = await asyncio.to_thread(os.open, path, os.O_WRONLY | os.O_CREAT, 0o600)
        size = offset
        try:
            # Cut what a dropped request half-wrote past the recorded offset: the client resends it. Only when
            # there is something to cut: on ext4 a truncation (even to the length the file has) marks the file
            # for its data to be written out at close (auto_da_alloc), which halved the upload throughput.
            await asyncio.to_thread(_cut_to, fd, offset)
            pending: list[bytes] = []
            pending_len = 0
            try:
                async for chunk in chunks:
                    if size + pending_len + len(chunk) > limit:
                        pending.append(chunk[: limit - size - pending_len])
                        raise TooMuchData(limit)
                    pending.append(chunk)
                    pending_len += len(chunk)
                    if pending_len >= WRITE_BATCH:
                        size += await write_at(fd, size, pending)
                        pending, pending_len = [], 0
            finally:  # what arrived is kept, even when the connection dropped mid-body
                if pending:
                    size += await write_at(fd, size, pending)
        finally:
            await asyncio.to_thread(os.close, fd)
        return size

    async def remove_upload(self, upload_id: uuid.UUID) -> None:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(self.upload_path(upload_id).unlink)

    async def fresh_output_dir(self, job_id: uuid.UUID) -> Path:
        await self.remove_output(job_id)
        path = self.output_dir(job_id)
        await asyncio.to_thread(path.mkdir, 0o700, True, False)
        return path

    async def remove_output(self, job_id: uuid.UUID) -> None:
        await asyncio.to_thread(shutil.rmtree, self.output_dir(job_id), True)

    def file_path(self, file_id: uuid.UUID) -> Path:
        return self.root / "files" / str(file_id)

    async def put_file(self, file_id: uuid.UUID, chunks: AsyncIterable[bytes], limit: int) -> int:
        await asyncio.to_thread(self._dir, "files")
        path = self.file_path(file_id)
        fd = await asyncio.to_thread(os.open, path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        size = 0
        done = False
        try:
            pending: list[bytes] = []
            pending_len = 0
            async for chunk in chunks:
                if size + pending_len + len(chunk) > limit:
                    raise TooMuchData(limit)
                pending.append(chunk)
                pending_len += len(chunk)
                if pending_len >= WRITE_BATCH:
                    size += await asyncio.to_thread(_write_all, fd, size, pending)
                    pending, pending_len = [], 0
            if pending:
                size += await asyncio.to_thread(_write_all, fd, size, pending)
            done = True
        finally:
            await asyncio.to_thread(os.close, fd)
            if not done:
                await asyncio.shield(self._unlink_file(file_id))
        return size

    async def remove_file(self, file_id: uuid.UUID) -> None:
        await self._unlink_file(file_id)

    async def _unlink_file(self, file_id: uuid.UUID) -> None:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(self.file_path(file_id).unlink)

    async def publish_output(self, job_id: uuid.UUID, progress: Progress | None = None) -> None:
        return None  # served from where the job wrote it

    async def read_output(self, job_id: uuid.UUID, name: str) -> bytes:
        return await asyncio.to_thread((self.output_dir(job_id) / name).read_bytes)

    async def local_file(self, file_id: uuid.UUID, scratch: Path) -> Path:
        return self.file_path(file_id)

    async def send(self, request: web.Request, key: str, headers: dict[str, str]) -> web.StreamResponse:
        if self.accel_prefix is not None:
            return accel_response(self.accel_prefix + key, headers)
        path = self.root / key
        if not await asyncio.to_thread(path.is_file):
            raise FileNotFoundError(key)
        return web.FileResponse(path, headers=headers)

    async def close(self) -> None:
        return None


def _cut_to(fd: int, length: int) -> None:
    if os.fstat(fd).st_size > length:
        os.ftruncate(fd, length)


def _write_all(fd: int, at: int, chunks: Sequence[bytes | memoryview]) -> int:
    written = 0
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            n = os.pwrite(fd, view, at + written)
            written += n
            view = view[n:]
    return written
