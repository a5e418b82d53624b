"""Resumable uploads (tus 1.0) at /api/v1/uploads: the official Python client (tuspy) uploads, drops,
resumes and completes; the protocol's errors (offset mismatch 409, too large 413, wrong role 403, another
user's upload 404, garbage headers 400, wrong version 412) are answered as tus says."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from tusclient.client import TusClient

from core_api.context import CORE
from media.uploads import UPLOADS
from tests.conftest import Actor, ApiClient, make_settings

TUS = {"Tus-Resumable": "1.0.0"}
URL = "/api/v1/uploads"


def tus_headers(actor: Actor, **extra: str) -> dict[str, str]:
    return {**TUS, **actor.headers, **extra}


async def create(api: ApiClient, actor: Actor, length: int, **extra: str) -> Any:
    return await api.http.post(URL, headers=tus_headers(actor, **{"Upload-Length": str(length), **extra}))


async def created(api: ApiClient, actor: Actor, length: int) -> str:
    resp = await create(api, actor, length)
    assert resp.status == 201, await resp.text()
    return str(resp.headers["Location"])


async def offset_of(api: ApiClient, actor: Actor, location: str) -> int:
    resp = await api.http.head(location, headers=tus_headers(actor))
    assert resp.status == 200
    return int(resp.headers["Upload-Offset"])


async def patch(api: ApiClient, actor: Actor, location: str, offset: int, body: bytes) -> Any:
    headers = tus_headers(actor, **{"Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"})
    return await api.http.patch(location, headers=headers, data=body)


async def until(api: ApiClient, query: str, *args: Any, within_s: float = 10) -> None:
    """Wait (polling the database, bounded) until ``query`` answers true."""
    for _ in range(int(within_s / 0.02)):
        if await api.app[CORE].pool.fetchval(query, *args):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"still false after {within_s} s: {query}")


async def drop_mid_patch(api: ApiClient, path: str, token: str, offset: int, body: bytes, sent: int) -> None:
    """A PATCH whose connection dies after ``sent`` of the body's bytes (a phone going into a tunnel):
    the connection closes once the server is writing the body."""
    host, port = api.http.host, api.http.port
    _, writer = await asyncio.open_connection(host, port)
    head = (
        f"PATCH {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nTus-Resumable: 1.0.0\r\n"
        f"Upload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body[:sent])
    await writer.drain()
    upload_id = uuid.UUID(path.rsplit("/", 1)[1])

    await until(api, "SELECT writer IS NOT NULL FROM uploads WHERE id = $1", upload_id)
    writer.close()
    await writer.wait_closed()


async def writer_released(api: ApiClient, upload_id: str, past: int) -> None:
    """Wait until the server has finished with the dropped PATCH: bytes past ``past`` recorded, and its hold
    on the upload released."""
    query = "SELECT received > $2 AND writer IS NULL FROM uploads WHERE id = $1"
    await until(api, query, uuid.UUID(upload_id), past)


async def test_an_upload_interrupted_halfway_resumes_and_completes_with_the_official_client(
    api: ApiClient, tmp_path: Path
) -> None:
    teacher = await api.user("instructor")
    source = tmp_path / "lecture.bin"
    data = os.urandom(3 * 1024 * 1024 + 12345)
    source.write_bytes(data)
    endpoint = str(api.http.make_url(URL))
    client = TusClient(endpoint, headers=teacher.headers)

    # tuspy (sync, in a thread: the server runs on this loop) sends the first part, in 256 KiB chunks.
    first = client.uploader(str(source), chunk_size=256 * 1024, metadata={"filename": "lecture.bin"})
    await asyncio.to_thread(first.upload, stop_at=1024 * 1024)
    location = first.url
    assert location is not None and location.startswith(endpoint + "/")
    path = location.removeprefix(str(api.http.make_url("")).rstrip("/"))
    assert await offset_of(api, teacher, path) == 1024 * 1024

    # The next PATCH dies halfway through its body: what arrived is kept, and HEAD says where to resume.
    upload_id = path.rsplit("/", 1)[1]
    chunk = data[1024 * 1024 : 2 * 1024 * 1024]
    await drop_mid_patch(api, path, teacher.token, 1024 * 1024, chunk, 300_000)
    await writer_released(api, upload_id, 1024 * 1024)
    resumed_at = await offset_of(api, teacher, path)
    assert 1024 * 1024 < resumed_at <= 1024 * 1024 + 300_000

    # A fresh client (the page reloaded) resumes from the server's offset and completes.
    second = await asyncio.to_thread(client.uploader, str(source), chunk_size=512 * 1024, url=location)
    assert second.offset == resumed_at
    await asyncio.to_thread(second.upload)
    assert await offset_of(api, teacher, path) == len(data)
    stored = api.app[UPLOADS].storage.upload_path(uuid.UUID(upload_id))
    assert stored.read_bytes() == data
    head = await api.http.head(path, headers=tus_headers(teacher))
    assert "Upload-Expires" not in head.headers  # finished uploads do not expire
    assert head.headers["Upload-Metadata"].startswith("filename ")


async def test_options_describes_the_server(api: ApiClient) -> None:
    resp = await api.http.options(URL)
    assert resp.status == 204
    assert resp.headers["Tus-Version"] == "1.0.0"
    assert set(resp.headers["Tus-Extension"].split(",")) == {"creation", "termination", "expiration"}
    assert int(resp.headers["Tus-Max-Size"]) == 2 * 1024**3


async def test_a_patch_at_the_wrong_offset_is_refused_with_409_and_the_right_offset(api: ApiClient) -> None:
    teacher = await api.user("instructor")
    location = await created(api, teacher, 100)
    assert (await patch(api, teacher, location, 0, b"x" * 40)).status == 204
    stale = await patch(api, teacher, location, 0, b"y" * 40)
    assert stale.status == 409
    assert (await stale.json())["error"]["details"]["offset"] == 40
    assert await offset_of(api, teacher, location) == 40


async def test_too_large_is_413_at_creation_and_past_the_length(
    aiohttp_client: Any, database_url: str, tmp_path: Path
) -> None:
    from realtime.app import create_app

    settings = make_settings(database_url, tmp_path, media_upload_max_bytes=10_000, media_quota_bytes=15_000)
    api = ApiClient(await aiohttp_client(create_app(settings)))
    teacher = await api.user("instructor")
    assert (await create(api, teacher, 10_001)).status == 413
    location = await created(api, teacher, 10_000)
    # A body longer than what is left: 413, nothing past the length is stored.
    assert (await patch(api, teacher, location, 0, b"z" * 10_001)).status == 413
    assert await offset_of(api, teacher, location) == 0
    # The quota counts every upload the user holds: 10,000 + 6,000 > 15,000.
    over = await create(api, teacher, 6_000)
    assert over.status == 413
    assert "quota" in (await over.json())["error"]["message"]


async def test_a_user_holds_a_bounded_number_of_uploads(aiohttp_client: Any, database_url: str, tmp_path: Path) -> None:
    from realtime.app import create_app

    api = ApiClient(await aiohttp_client(create_app(make_settings(database_url, tmp_path, media_uploads_per_user=2))))
    teacher = await api.user("instructor")
    first = await created(api, teacher, 0)  # empty uploads take no quota, but still count
    await created(api, teacher, 0)
    over = await create(api, teacher, 0)
    assert over.status == 429
    assert (await api.http.delete(first, headers=tus_headers(teacher))).status == 204
    await created(api, teacher, 0)


async def test_a_body_larger_than_the_request_limit_streams_in(api: ApiClient) -> None:
    teacher = await api.user("instructor")
    size = 3 * 1024 * 1024  # three times STUDYHALL_MAX_BODY_BYTES
    location = await created(api, teacher, size)
    resp = await patch(api, teacher, location, 0, b"\x00" * size)
    assert resp.status == 204, await resp.text()
    assert int(resp.headers["Upload-Offset"]) == size


async def test_learners_may_not_upload(api: ApiClient) -> None:
    learner = await api.user()
    resp = await create(api, learner, 100)
    assert resp.status == 403
    assert "instructors" in (await resp.json())["error"]["message"]


async def test_another_users_upload_is_not_found(api: ApiClient) -> None:
    owner, other, admin = await api.user("instructor"), await api.user("instructor"), await api.user("admin")
    location = await created(api, owner, 100)
    for someone in (other, admin):
        assert (await api.http.head(location, headers=tus_headers(someone))).status == 404
        assert (await patch(api, someone, location, 0, b"x")).status == 404
        assert (await api.http.delete(location, headers=tus_headers(someone))).status == 404
    assert await offset_of(api, owner, location) == 0


async def test_termination_deletes_the_upload_and_its_bytes(api: ApiClient) -> None:
    teacher = await api.user("instructor")
    location = await created(api, teacher, 10)
    assert (await patch(api, teacher, location, 0, b"12345")).status == 204
    stored = api.app[UPLOADS].storage.upload_path(uuid.UUID(location.rsplit("/", 1)[1]))
    assert stored.exists()
    assert (await api.http.delete(location, headers=tus_headers(teacher))).status == 204
    assert not stored.exists()
    assert (await api.http.head(location, headers=tus_headers(teacher))).status == 404


@pytest.mark.parametrize(
    "headers",
    [
        {"Upload-Length": "-1"},
        {"Upload-Length": "lots"},
        {"Upload-Length": "1e9"},
        {"Upload-Length": "99999999999999999999999"},
        {},  # no Upload-Length
        {"Upload-Length": "10", "Upload-Metadata": "filename !!notbase64"},
        {"Upload-Length": "10", "Upload-Metadata": "bad key aGVsbG8="},
        {"Upload-Length": "10", "Upload-Metadata": "a aGk=,a aGk="},
        {"Upload-Length": "10", "Upload-Defer-Length": "1"},
    ],
)
async def test_garbage_creation_headers_are_400(api: ApiClient, headers: dict[str, str]) -> None:
    teacher = await api.user("instructor")
    resp = await api.http.post(URL, headers=tus_headers(teacher, **headers))
    assert resp.status == 400, headers
    assert (await resp.json())["error"]["code"] == "invalid_input"


async def test_garbage_patch_headers_are_refused(api: ApiClient) -> None:
    teacher = await api.user("instructor")
    location = await created(api, teacher, 10)
    bad_offset = await api.http.patch(
        location, data=b"x",
        headers=tus_headers(teacher, **{"Upload-Offset": "zero", "Content-Type": "application/offset+octet-stream"}),
    )  # fmt: skip
    assert bad_offset.status == 400
    wrong_type = await api.http.patch(
        location, data=b"x", headers=tus_headers(teacher, **{"Upload-Offset": "0", "Content-Type": "text/plain"})
    )
    assert wrong_type.status == 415
    no_version = await api.http.head(location, headers=teacher.headers)
    assert (no_version.status, no_version.headers["Tus-Version"]) == (412, "1.0.0")
    not_an_id = await api.http.head(URL + "/not-an-id", headers=tus_headers(teacher))
    assert not_an_id.status == 404
    anonymous = await api.http.post(URL, headers={**TUS, "Upload-Length": "10"})
    assert anonymous.status == 401


async def test_unfinished_uploads_expire(api: ApiClient) -> None:
    teacher = await api.user("instructor")
    location = await created(api, teacher, 10)
    assert (await patch(api, teacher, location, 0, b"123")).status == 204
    upload_id = uuid.UUID(location.rsplit("/", 1)[1])
    await api.app[CORE].pool.execute(
        "UPDATE uploads SET expires_at = now() - interval '1 second' WHERE id = $1", upload_id
    )
    assert (await api.http.head(location, headers=tus_headers(teacher))).status == 404
    assert await api.app[UPLOADS].sweep() >= 1
    assert not api.app[UPLOADS].storage.upload_path(upload_id).exists()


async def test_writes_leave_the_event_loop_once_the_disk_holds_them_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Upload bytes are written in the event loop while the disk keeps up; a write slower than SLOW_WRITE_S sends
    every upload's writes to a thread for a while. Either way the file holds exactly the bytes sent, and bytes a
    dropped request left past the recorded offset are cut before the resend."""
    from media import storage as media_storage

    store = media_storage.LocalStorage(tmp_path)
    parts = [os.urandom(700_000) for _ in range(4)]

    async def body(items: list[bytes]) -> Any:
        for item in items:
            yield item

    monkeypatch.setattr(media_storage._Disk, "slow_until", 0.0)
    # A quick disk: no write counts as held back (on a busy machine a real write can take more than 2 ms).
    monkeypatch.setattr(media_storage, "SLOW_WRITE_S", 60.0)
    upload = uuid.uuid4()
    assert await store.append(upload, 0, body(parts[:2]), 10**9) == 1_400_000
    assert media_storage._Disk.slow_until == 0.0  # nothing moved to a thread

    monkeypatch.setattr(media_storage, "SLOW_WRITE_S", 0.0)  # every write now counts as held back
    assert await store.append(upload, 1_400_000, body(parts[2:]), 10**9) == 2_800_000
    assert media_storage._Disk.slow_until > 0.0
    assert store.upload_path(upload).read_bytes() == b"".join(parts)

    # A resend from an earlier offset (the recorded one) replaces what a dropped request wrote past it.
    assert await store.append(upload, 700_000, body([b"x" * 10]), 10**9) == 700_010
    assert store.upload_path(upload).read_bytes() == parts[0] + b"x" * 10


async def test_the_sweep_removes_what_a_dead_process_left_in_the_scratch_space(tmp_path: Path) -> None:
    """A job's scratch copy and a PATCH's part spool outlive a process killed mid-way; untouched for a day, the
    media sweep removes them, and leaves alone what a running job or upload is using."""
    from media import storage as media_storage

    store = media_storage.LocalStorage(tmp_path)
    old_job, new_job = store.scratch_dir(uuid.uuid4()), store.scratch_dir(uuid.uuid4())
    for job in (old_job, new_job):
        job.mkdir(parents=True)
        (job / "upload").write_bytes(b"video")
    (tmp_path / "spool").mkdir()
    old_spool, new_spool = tmp_path / "spool" / "old-part", tmp_path / "spool" / "new-part"
    old_spool.write_bytes(b"part")
    new_spool.write_bytes(b"part")
    two_days_ago = time.time() - 2 * 86400
    for path in (old_job, old_spool):
        os.utime(path, (two_days_ago, two_days_ago))

    assert await store.remove_leftovers() == 2
    assert not old_job.exists() and not old_spool.exists()
    assert (new_job / "upload").read_bytes() == b"video" and new_spool.read_bytes() == b"part"
    assert await store.remove_leftovers() == 0
