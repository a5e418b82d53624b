"""Media in an S3-compatible bucket (STUDYHALL_S3_*, media/s3.py), against a real S3 API: moto's server
(``moto_server``, installed by scripts/setup into ``.venv-s3``; MinIO cannot be installed here), started on
127.0.0.1 for this module and stopped by its PID. Real ffmpeg makes the videos.

An uploaded video's ladder lands in the bucket and plays through studyhall's playlist and segment URLs (the
bytes are the objects', ranges work, streamed or redirected to a presigned URL), the paywall still holds,
deleting the lecture removes the objects (with the media sweep); a retried publish leaves exactly its own
keys; a submission's file round-trips through the bucket and only its learner and the staff download it."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import uuid
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from core_api.context import CORE
from core_api.settings import ConfigError
from media.jobs import JOBS
from media.s3 import S3Storage
from media.wiring import open_storage
from realtime.app import create_app
from tests.conftest import ApiClient, make_settings
from tests.s3_helpers import NEEDS_S3, PREFIX, Bucket, files_under, s3_settings
from tests.test_media_playback import local, priced_ladder, uris
from tests.test_submission_files import PDF, attach, course_of, course_with_submission, ok

pytestmark = NEEDS_S3


@pytest.fixture
async def s3_api(aiohttp_client: Any, database_url: str, tmp_path: Path, bucket: Bucket) -> ApiClient:
    settings = s3_settings(database_url, tmp_path / "data", bucket.url, bucket.name)
    return ApiClient(await aiohttp_client(create_app(settings)))


async def test_a_ladder_is_published_to_the_bucket_and_plays_from_it(
    s3_api: ApiClient, bucket: Bucket, tmp_path: Path
) -> None:
    api = s3_api
    storage = api.app[JOBS].storage
    assert isinstance(storage, S3Storage)
    teacher, buyer, stranger, lecture_id, job = await priced_ladder(api, tmp_path)
    job_id = job["id"]
    base_key = f"outputs/{job_id}/"
    assert await bucket.keys(base_key) == [
        f"{PREFIX}{base_key}{name}"
        for name in ("240p/index.m3u8", "240p/segment_00000.ts", "240p/segment_00001.ts", "master.m3u8", "poster.jpg")
    ]
    assert not storage.output_dir(uuid.UUID(job_id)).exists()  # the working copy is gone
    # The upload went into the bucket and is consumed as before; the local disk holds nothing.
    assert await bucket.keys("uploads/") == []
    assert files_under(storage.root) == []

    # The buyer plays it through studyhall: master -> variant -> segments, the bytes are the objects'.
    _, lec = await api.call("GET", f"/lectures/{lecture_id}", buyer)
    url = lec["media_url"]
    token = parse_qs(urlsplit(url).query)["token"][0]
    master = await api.http.get(local(url))
    assert master.status == 200 and master.content_type == "application/vnd.apple.mpegurl"
    assert uris(await master.text()) == [f"240p/index.m3u8?token={token}"]
    base = local(job["result"]["master_url"]).rsplit("/", 1)[0]
    rung = await api.http.get(f"{base}/240p/index.m3u8?token={token}")
    assert rung.status == 200
    segments = uris(await rung.text())
    assert segments == [f"segment_0000{i}.ts?token={token}" for i in range(2)]
    for i, segment in enumerate(segments):
        resp = await api.http.get(f"{base}/240p/{segment}")
        assert resp.status == 200 and resp.content_type == "video/mp2t"
        assert resp.headers["Cache-Control"] == "private, max-age=86400, immutable"
        stored, _ = await bucket.get(f"{base_key}240p/segment_0000{i}.ts")
        assert await resp.read() == stored and len(stored) % 188 == 0
    # A range request: 206 with the store's Content-Range.
    whole, content_type = await bucket.get(f"{base_key}240p/segment_00000.ts")
    assert content_type == "video/mp2t"
    part = await api.http.get(f"{base}/240p/{segments[0]}", headers={"Range": "bytes=188-375"})
    assert part.status == 206 and await part.read() == whole[188:376]
    assert part.headers["Content-Range"] == f"bytes 188-375/{len(whole)}"
    assert (await api.http.get(f"{base}/240p/{segments[0]}", headers={"Range": "bytes=-188"})).status == 206
    beyond = await api.http.get(f"{base}/240p/{segments[0]}", headers={"Range": "bytes=99999999-"})
    assert beyond.status == 416 and beyond.headers["Content-Range"] == f"bytes */{len(whole)}"
    # A cache revalidating with the ETag: 304, no body.
    etag = part.headers["ETag"]
    again = await api.http.get(f"{base}/240p/{segments[0]}", headers={"If-None-Match": etag})
    assert again.status == 304 and await again.read() == b""
    # With a Bearer header the playlist comes from the bucket as it is.
    plain = await api.http.get(f"{base}/master.m3u8", headers=buyer.headers)
    assert plain.status == 200 and (await plain.read()) == (await bucket.get(f"{base_key}master.m3u8"))[0]
    poster = await api.http.get(f"{base}/poster.jpg?token={token}")
    assert poster.status == 200 and poster.content_type == "image/jpeg" and (await poster.read())[:2] == b"\xff\xd8"
    # A file the ladder does not have: 404, not the store's error.
    assert (await api.http.get(f"{base}/720p/segment_00000.ts?token={token}")).status == 404

    # The paywall holds: an unenrolled learner gets 403 on every file, with no bytes; no credentials, 401.
    for name in ("master.m3u8", "240p/index.m3u8", "240p/segment_00000.ts", "poster.jpg"):
        resp = await api.http.get(f"{base}/{name}", headers=stranger.headers)
        assert resp.status == 403, name
        assert (await resp.json())["error"]["code"]  # studyhall's refusal, not the object
    assert (await api.http.get(f"{base}/240p/segment_00000.ts")).status == 401
    # Another user's token is refused too (the stranger replaying the buyer's URL with a forged user).
    forged = token.replace(buyer.id.replace("-", ""), stranger.id.replace("-", ""))
    assert (await api.http.get(f"{base}/240p/segment_00000.ts?token={forged}")).status == 403

    # Deleting the lecture (the course keeps another): its ladder stops playing at once and leaves the bucket with
    # the media sweep once unused for STUDYHALL_MEDIA_LADDER_KEEP_S (0 here).
    from tests.test_media_video import sweep_ladders

    lecture = {"title": "Two", "media_kind": "video", "media_url": "https://example.com/v.mp4", "duration_s": 1.0}
    await ok(api, "POST", f"/courses/{lec['course_id']}/lectures", teacher, json=lecture)
    assert (await api.call("DELETE", f"/lectures/{lecture_id}", teacher))[0] == 204
    assert (await api.http.get(f"{base}/240p/segment_00000.ts", headers=teacher.headers)).status == 404
    await sweep_ladders(api, keep_s=0)
    assert await bucket.keys(base_key) == []
    assert (await api.http.get(f"{base}/240p/segment_00000.ts", headers=teacher.headers)).status == 404


async def test_a_new_video_replaces_the_old_ladder_in_the_bucket(
    s3_api: ApiClient, bucket: Bucket, tmp_path: Path
) -> None:
    from tests.test_media_video import finished, lecture, make_video, sweep_ladders, upload

    api = s3_api
    teacher = await api.user("instructor")
    lecture_id = await lecture(api, teacher)
    jobs = []
    for n in range(2):
        upload_id = await upload(api, teacher, make_video(tmp_path / f"{n}.mp4", 320, 240, seconds=2))
        _, job = await api.call("POST", f"/lectures/{lecture_id}/media", teacher, json={"upload_id": upload_id})
        done = await finished(api, teacher, job["id"])
        assert done["state"] == "succeeded", done
        jobs.append(done["id"])
    assert len(await bucket.keys(f"outputs/{jobs[0]}/")) == 4  # replaced: kept for an undo at first
    await sweep_ladders(api, keep_s=0)
    assert await bucket.keys(f"outputs/{jobs[0]}/") == []  # then removed
    assert len(await bucket.keys(f"outputs/{jobs[1]}/")) == 4  # master, rung, one segment, poster


async def test_streaming_or_a_presigned_redirect(
    aiohttp_client: Any, database_url: str, tmp_path: Path, bucket: Bucket
) -> None:
    settings = s3_settings(database_url, tmp_path / "data", bucket.url, bucket.name, s3_serve="redirect")
    api = ApiClient(await aiohttp_client(create_app(settings)))
    _teacher, buyer, stranger, lecture_id, job = await priced_ladder(api, tmp_path)
    _, lec = await api.call("GET", f"/lectures/{lecture_id}", buyer)
    token = parse_qs(urlsplit(lec["media_url"]).query)["token"][0]
    base = local(job["result"]["master_url"]).rsplit("/", 1)[0]
    # Playlists with a token are still rewritten and sent by studyhall.
    rung = await api.http.get(f"{base}/240p/index.m3u8?token={token}")
    assert rung.status == 200 and uris(await rung.text())[0] == f"segment_00000.ts?token={token}"
    # A segment: 302 to a presigned URL of the store, which serves the bytes with studyhall's headers.
    resp = await api.http.get(f"{base}/240p/segment_00000.ts?token={token}", allow_redirects=False)
    assert resp.status == 302 and resp.headers["Cache-Control"] == "private, no-store"
    location = resp.headers["Location"]
    assert location.startswith(f"{bucket.url}/{bucket.name}/{PREFIX}outputs/{job['id']}/240p/segment_00000.ts?")
    assert "X-Amz-Expires=300" in location
    async with aiohttp.ClientSession() as http, http.get(location, headers={"Range": "bytes=0-187"}) as direct:
        assert direct.status == 206 and direct.headers["Content-Type"] == "video/mp2t"
        assert direct.headers["Cache-Control"] == "private, max-age=86400, immutable"
        stored, _ = await bucket.get(f"outputs/{job['id']}/240p/segment_00000.ts")
        assert await direct.read() == stored[:188]
    # The paywall first: no redirect for the unenrolled learner, 404 for what is not there.
    refused = await api.http.get(f"{base}/240p/segment_00000.ts", headers=stranger.headers, allow_redirects=False)
    assert refused.status == 403 and "Location" not in refused.headers
    missing = await api.http.get(f"{base}/240p/segment_00007.ts?token={token}", allow_redirects=False)
    assert missing.status == 404


async def test_a_retried_publish_leaves_exactly_its_own_keys(database_url: str, tmp_path: Path, bucket: Bucket) -> None:
    storage = open_storage(s3_settings(database_url, tmp_path / "data", bucket.url, bucket.name))
    assert isinstance(storage, S3Storage)
    job_id = uuid.uuid4()
    reported: list[float] = []

    async def progress(fraction: float) -> None:
        reported.append(fraction)

    try:
        out = await storage.fresh_output_dir(job_id)
        (out / "720p").mkdir()
        for name in ("master.m3u8", "720p/index.m3u8", "720p/segment_00000.ts", "720p/segment_00001.ts"):
            (out / name).write_bytes(f"first {name}".encode())
        await storage.publish_output(job_id, progress)
        assert reported and reported[-1] == 1.0
        assert len(await bucket.keys(f"outputs/{job_id}/")) == 4
        # The retry (same job id) makes fewer files: the same keys are overwritten, the extra one goes.
        out = await storage.fresh_output_dir(job_id)
        (out / "720p").mkdir()
        for name in ("master.m3u8", "720p/index.m3u8", "720p/segment_00000.ts"):
            (out / name).write_bytes(f"second {name}".encode())
        await storage.publish_output(job_id)
        assert await bucket.keys(f"outputs/{job_id}/") == [
            f"{PREFIX}outputs/{job_id}/{n}" for n in ("720p/index.m3u8", "720p/segment_00000.ts", "master.m3u8")
        ]
        assert await storage.read_output(job_id, "master.m3u8") == b"second master.m3u8"
        with pytest.raises(FileNotFoundError):
            await storage.read_output(job_id, "720p/segment_00001.ts")
        await storage.remove_output(job_id)
        assert await bucket.keys(f"outputs/{job_id}/") == []
    finally:
        await storage.close()


async def test_a_submission_file_round_trips_through_the_bucket(s3_api: ApiClient, bucket: Bucket) -> None:
    api = s3_api
    storage = api.app[JOBS].storage
    owner, learner, _, sub = await course_with_submission(api)
    status, file = await attach(api, learner, sub, "essay.pdf", PDF)
    assert status == 201, file
    key = f"files/{file['id']}"
    assert await bucket.keys(key) == [PREFIX + key]
    assert (await bucket.get(key))[0] == PDF
    assert not storage.file_path(uuid.UUID(file["id"])).exists()  # the spool is gone
    admin = await api.user("admin")
    for actor in (learner, owner, admin):
        resp = await api.http.get(file["url"], headers=actor.headers)
        assert resp.status == 200 and await resp.read() == PDF
        assert resp.headers["Content-Type"] == "application/pdf"
        assert resp.headers["Content-Disposition"].startswith('attachment; filename="essay.pdf"')
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    resp = await api.http.get(file["url"], headers={**learner.headers, "Range": "bytes=100-199"})
    assert resp.status == 206 and await resp.read() == PDF[100:200]
    assert resp.headers["Content-Range"] == f"bytes 100-199/{len(PDF)}"
    # Nobody else: a classmate, another instructor, a stranger get 404; no credentials 401.
    classmate = await api.user("student")
    await ok(api, "POST", f"/courses/{await course_of(api, sub)}/enroll", classmate)
    for actor in (classmate, await api.user("instructor"), await api.user("student")):
        assert (await api.http.get(file["url"], headers=actor.headers)).status == 404, actor.role
    assert (await api.http.get(file["url"])).status == 401
    # The learner's data export holds the file (downloaded from the bucket for the archive).
    from tests.test_media_video import finished

    _, job = await api.call("POST", "/me/exports", learner)
    done = await finished(api, learner, job["id"])
    assert done["state"] == "succeeded", done
    archive_resp = await api.http.get(done["result"]["download"], headers=learner.headers)
    archive = zipfile.ZipFile(io.BytesIO(await archive_resp.read()))
    assert archive.read(f"submission_files/{file['id']}/essay.pdf") == PDF
    assert [r["id"] for r in json.loads(archive.read("submission_files.json"))] == [file["id"]]
    assert not (storage.output_dir(uuid.UUID(job["id"])) / "attachments").exists()

    # The author deletes it: gone from the bucket.
    assert (await api.http.delete(file["url"], headers=learner.headers)).status == 204
    assert await bucket.keys(key) == []
    assert (await api.http.get(file["url"], headers=learner.headers)).status == 404


def test_the_local_default_needs_nothing(database_url: str, tmp_path: Path) -> None:
    from media.storage import LocalStorage

    assert type(open_storage(make_settings(database_url, tmp_path))) is LocalStorage
    with pytest.raises(ConfigError, match="together"):
        make_settings(database_url, tmp_path, s3_bucket="b-1", s3_access_key_id="only-the-id")
    # S3 takes at most 10,000 parts: the largest upload must fit in them.
    with pytest.raises(ConfigError, match="10,000 parts"):
        make_settings(database_url, tmp_path, s3_bucket="b-1", media_upload_max_bytes=60 * 1024**3,
                      s3_upload_part_bytes=5 * 1024**2)  # fmt: skip
    with pytest.raises(ConfigError):  # below S3's smallest part
        make_settings(database_url, tmp_path, s3_bucket="b-1", s3_upload_part_bytes=1024**2)
    assert make_settings(database_url, tmp_path, media_upload_max_bytes=60 * 1024**3).s3_bucket is None  # no bucket


async def test_a_celery_media_worker_publishes_to_the_same_bucket(
    aiohttp_client: Any, database_url: str, tmp_path: Path, bucket: Bucket
) -> None:
    """`studyhall worker -Q media` with the nodes' STUDYHALL_S3_* settings: the ladder it makes lands in the bucket
    and the node serves it from there."""
    from tests.nodes import WorkerProcess, node_env, redis_url, stop_pid
    from tests.test_media_video import finished, lecture, make_video, upload

    with redis_url() as broker:
        media = tmp_path / "media"
        settings = s3_settings(
            database_url, tmp_path / "node", bucket.url, bucket.name, redis_url=broker, media_executor="celery",
            media_dir=media,
        )  # fmt: skip
        api = ApiClient(await aiohttp_client(create_app(settings)))
        teacher = await api.user("instructor")
        lecture_id = await lecture(api, teacher)
        upload_id = await upload(api, teacher, make_video(tmp_path / "in.mp4", 320, 240, seconds=2))
        env = node_env(database_url, broker, tmp_path / "workers")
        env.update(
            STUDYHALL_MEDIA_DIR=str(media), STUDYHALL_S3_BUCKET=bucket.name, STUDYHALL_S3_ENDPOINT_URL=bucket.url,
            STUDYHALL_S3_ACCESS_KEY_ID="test", STUDYHALL_S3_SECRET_ACCESS_KEY="test-secret", STUDYHALL_S3_PREFIX=PREFIX,
        )  # fmt: skip
        worker = WorkerProcess(["-Q", "media", "--concurrency", "1"], env, tmp_path / "worker.log")
        try:
            await asyncio.to_thread(worker.wait_ready)
            status, job = await api.call(
                "POST", f"/lectures/{lecture_id}/media", teacher, json={"upload_id": upload_id}
            )
            assert status == 202, job
            done = await finished(api, teacher, job["id"])
        finally:
            stop_pid(worker.proc, signal.SIGTERM)
        assert done["state"] == "succeeded", (done, worker.log.read_text()[-2000:])
        runner = worker.ready_line.rsplit("runner ", 1)[1].strip()
        claimed = await api.app[CORE].pool.fetchval("SELECT claimed_by::text FROM jobs WHERE id = $1::uuid", job["id"])
        assert claimed == runner  # the worker made it
        assert len(await bucket.keys(f"outputs/{job['id']}/")) == 4
        assert not (media / "outputs" / job["id"]).exists()
        segment = f"{local(done['result']['master_url']).rsplit('/', 1)[0]}/240p/segment_00000.ts"
        resp = await api.http.get(segment, headers=teacher.headers)
        assert resp.status == 200
        assert await resp.read() == (await bucket.get(f"outputs/{job['id']}/240p/segment_00000.ts"))[0]


async def test_large_files_go_up_in_parts_and_too_much_leaves_nothing(
    database_url: str, tmp_path: Path, bucket: Bucket
) -> None:
    from media.s3 import MULTIPART_AT
    from media.storage import TooMuchData

    storage = open_storage(s3_settings(database_url, tmp_path / "data", bucket.url, bucket.name))
    assert isinstance(storage, S3Storage)
    data = bytes(range(256)) * ((MULTIPART_AT + 3 * 1024 * 1024) // 256)

    async def chunks(of: bytes) -> AsyncIterator[bytes]:
        for at in range(0, len(of), 1 << 20):
            yield of[at : at + (1 << 20)]

    try:
        file_id = uuid.uuid4()
        assert await storage.put_file(file_id, chunks(data), len(data)) == len(data)
        assert (await bucket.get(f"files/{file_id}"))[0] == data
        copy = await storage.local_file(file_id, tmp_path / "scratch")
        assert copy.read_bytes() == data
        assert not storage.file_path(file_id).exists()
        # Past the limit: TooMuchData, no object and no spool left.
        other = uuid.uuid4()
        with pytest.raises(TooMuchData):
            await storage.put_file(other, chunks(data), len(data) - 1)
        assert await bucket.keys(f"files/{other}") == [] and not storage.file_path(other).exists()
        await storage.remove_file(file_id)
        assert await bucket.keys("files/") == []
        with pytest.raises(FileNotFoundError):
            await storage.local_file(file_id, tmp_path / "scratch")
    finally:
        await storage.close()
