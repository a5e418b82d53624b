"""tus uploads, grade-sheet results and data exports in an S3 bucket (media/s3.py), against moto's S3 server
(tests/s3_helpers.py): two app nodes sharing Postgres and the bucket, and nothing else (each its own
STUDYHALL_MEDIA_DIR).

An upload interrupted on one node resumes on the other with the official client (tuspy) and the video becomes a
ladder; an upload of several parts completes with its bytes, also when the bucket holds more than was recorded
or less (the tail lost); DELETE and the expiry sweep abort the multipart upload; a grade sheet's results and a
data export are downloaded from the bucket (streamed, or a presigned redirect) through either node; a live
session's recording goes into the bucket when it ends, and the other node serves it and makes it a lecture; the
nodes' media directories hold none of it."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import uuid
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tusclient.client import TusClient

from core_api.context import CORE
from media.jobs import JOBS
from media.s3 import S3Storage
from media.uploads import UPLOADS
from realtime.app import create_app
from tests.conftest import Actor, ApiClient
from tests.s3_helpers import NEEDS_S3, PREFIX, Bucket, files_under, s3_settings
from tests.test_media_playback import local
from tests.test_media_uploads import URL, created, drop_mid_patch, offset_of, patch, tus_headers, writer_released
from tests.test_media_video import finished, lecture

pytestmark = NEEDS_S3

MiB = 1024 * 1024
PART = 5 * MiB  # S3's (and moto's) smallest part: the tests use it so that a few MiB make several parts


async def two_nodes(
    aiohttp_client: Any, database_url: str, tmp_path: Path, bucket: Bucket, **extra: Any
) -> list[ApiClient]:
    nodes = []
    for name in ("a", "b"):
        settings = s3_settings(
            database_url, tmp_path / name, bucket.url, bucket.name, s3_upload_part_bytes=PART, **extra
        )
        nodes.append(ApiClient(await aiohttp_client(create_app(settings))))
    return nodes


def media_files(*nodes: ApiClient) -> list[Path]:
    """What the nodes keep on their own disks (their STUDYHALL_MEDIA_DIR)."""
    return [f for node in nodes for f in files_under(node.app[JOBS].storage.root)]


async def in_progress(bucket: Bucket, upload_id: str) -> list[dict[str, Any]]:
    """The bucket's unfinished multipart uploads of the upload."""
    async with bucket.client() as s3:
        answer = await s3.list_multipart_uploads(Bucket=bucket.name, Prefix=f"{PREFIX}uploads/{upload_id}")
        return list(answer.get("Uploads", []))


async def parts_of(bucket: Bucket, upload_id: str) -> list[int]:
    """The sizes of the parts sent so far."""
    (started,) = await in_progress(bucket, upload_id)
    async with bucket.client() as s3:
        answer = await s3.list_parts(Bucket=bucket.name, Key=started["Key"], UploadId=started["UploadId"])
        return [int(p["Size"]) for p in answer.get("Parts", [])]


def noise_video(path: Path, seconds: int) -> Path:
    """A video of random pixels, losslessly coded: about 3 MiB a second (so that it takes several parts)."""
    import subprocess

    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
         f"nullsrc=s=320x240:r=25:d={seconds},geq=lum='random(1)*255':cb=128:cr=128",
         "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )  # fmt: skip
    return path


async def test_an_upload_interrupted_on_one_node_resumes_on_the_other_and_becomes_a_ladder(
    aiohttp_client: Any, database_url: str, tmp_path: Path, bucket: Bucket
) -> None:
    a, b = await two_nodes(aiohttp_client, database_url, tmp_path, bucket)
    assert isinstance(a.app[JOBS].storage, S3Storage)
    teacher = await a.user("instructor")
    source = await asyncio.to_thread(noise_video, tmp_path / "lecture.mp4", 4)
    data = source.read_bytes()
    assert len(data) > 2 * PART + MiB  # three parts, the last a short one

    # tuspy sends the first 6 MiB to node A, in 1 MiB PATCHes: one part, and 1 MiB kept as the tail object.
    client_a = TusClient(str(a.http.make_url(URL)), headers=teacher.headers)
    first = client_a.uploader(str(source), chunk_size=MiB, metadata={"filename": "lecture.mp4"})
    await asyncio.to_thread(first.upload, stop_at=6 * MiB)
    assert first.url is not None
    upload_id = first.url.rsplit("/", 1)[1]
    path = f"{URL}/{upload_id}"
    assert await offset_of(b, teacher, path) == 6 * MiB  # the other node knows it
    assert await parts_of(bucket, upload_id) == [PART]
    assert await bucket.keys(f"uploads/{upload_id}") == [f"{PREFIX}uploads/{upload_id}.tail"]

    # The next PATCH goes to node B and its connection dies 4.5 MiB into a 5 MiB body: what arrived is kept (a
    # second part, the rest as the tail), and both nodes' HEAD say where to resume.
    await drop_mid_patch(b, path, teacher.token, 6 * MiB, data[6 * MiB : 11 * MiB], 4 * MiB + MiB // 2)
    await writer_released(b, upload_id, 6 * MiB)
    resumed_at = await offset_of(a, teacher, path)
    assert 6 * MiB < resumed_at <= 10 * MiB + MiB // 2
    assert await offset_of(b, teacher, path) == resumed_at
    if resumed_at >= 2 * PART:
        assert await parts_of(bucket, upload_id) == [PART, PART]

    # A fresh client on node A (the page reloaded) resumes from the server's offset and completes.
    second = await asyncio.to_thread(client_a.uploader, str(source), chunk_size=2 * MiB, url=str(a.http.make_url(path)))
    assert second.offset == resumed_at
    await asyncio.to_thread(second.upload)
    assert await offset_of(b, teacher, path) == len(data)
    assert (await bucket.get(f"uploads/{upload_id}"))[0] == data  # one object, the file's bytes
    assert await bucket.keys(f"uploads/{upload_id}") == [f"{PREFIX}uploads/{upload_id}"]  # no tail left
    assert await in_progress(bucket, upload_id) == []
    assert media_files(a, b) == []  # neither node kept any of it

    # Node B makes it a lecture's ladder: the job reads the upload from the bucket (a scratch copy, removed).
    lecture_id = await lecture(b, teacher)
    status, job = await b.call("POST", f"/lectures/{lecture_id}/media", teacher, json={"upload_id": upload_id})
    assert status == 202, job
    done = await finished(b, teacher, job["id"])
    assert done["state"] == "succeeded", done
    assert "240p" in done["result"]["renditions"]
    assert f"{PREFIX}outputs/{job['id']}/master.m3u8" in await bucket.keys(f"outputs/{job['id']}/")
    resp = await a.http.get(local(done["result"]["master_url"]), headers=teacher.headers)  # from the other node
    assert resp.status == 200 and "#EXTM3U" in await resp.text()
    assert await bucket.keys("uploads/") == []  # consumed
    assert media_files(a, b) == []


async def test_an_upload_of_several_parts_completes_with_its_bytes_whatever_the_bucket_kept(
    aiohttp_client: Any, database_url: str, tmp_path: Path, bucket: Bucket
) -> None:
    a, b = await two_nodes(aiohttp_client, database_url, tmp_path, bucket)
    teacher = await a.user("instructor")
    data = os.urandom(2 * PART + MiB + 17)
    location = await created(a, teacher, len(data))
    upload_id = uuid.UUID(location.rsplit("/", 1)[1])
    pool = a.app[CORE].pool

    # 3 MiB PATCHes, to the nodes in turn: parts of 5 MiB are sent as they fill up.
    offset = 0
    for n, node in enumerate((a, b)):
        resp = await patch(node, teacher, location, offset, data[offset : offset + 3 * MiB])
        assert resp.status == 204, await resp.text()
        offset = int(resp.headers["Upload-Offset"])
        assert offset == 3 * MiB * (n + 1)
    assert await parts_of(bucket, str(upload_id)) == [PART]

    # The bucket holds more than was recorded (a node died after sending bytes, before recording them): the
    # client resends from the recorded offset, and the bytes the bucket has are not taken twice.
    await pool.execute("UPDATE uploads SET received = $2 WHERE id = $1", upload_id, 4 * MiB)
    assert await offset_of(b, teacher, location) == 4 * MiB
    resp = await patch(b, teacher, location, 4 * MiB, data[4 * MiB : 8 * MiB])
    assert resp.status == 204 and int(resp.headers["Upload-Offset"]) == 8 * MiB

    # The bucket holds less (the tail object was lost): 409 with the offset it has, and HEAD says so too.
    await bucket.delete(f"uploads/{upload_id}.tail")
    resp = await patch(a, teacher, location, 8 * MiB, data[8 * MiB : 9 * MiB])
    assert resp.status == 409
    assert (await resp.json())["error"]["details"]["offset"] == PART
    assert await offset_of(a, teacher, location) == PART

    # The client resumes from there and sends the rest (two more parts, the last a short one), in a chunked body
    # that goes on past Upload-Length: 413, and the upload is complete with its bytes, the extra ones dropped.
    async def past_the_end() -> AsyncIterator[bytes]:
        rest = data[PART:] + b"and more"
        for at in range(0, len(rest), MiB):
            yield rest[at : at + MiB]

    headers = tus_headers(teacher, **{"Upload-Offset": str(PART), "Content-Type": "application/offset+octet-stream"})
    resp = await a.http.patch(location, headers=headers, data=past_the_end())
    assert resp.status == 413, await resp.text()
    assert await offset_of(b, teacher, location) == len(data)
    assert (await bucket.get(f"uploads/{upload_id}"))[0] == data
    assert await in_progress(bucket, str(upload_id)) == []
    # A PATCH past the end changes nothing.
    assert (await patch(b, teacher, location, len(data), b"x")).status == 413
    assert (await bucket.get(f"uploads/{upload_id}"))[0] == data
    assert media_files(a, b) == []


async def test_termination_and_expiry_abort_the_multipart_upload(
    aiohttp_client: Any, database_url: str, tmp_path: Path, bucket: Bucket
) -> None:
    a, b = await two_nodes(aiohttp_client, database_url, tmp_path, bucket)
    teacher = await a.user("instructor")
    data = os.urandom(PART + MiB)
    ids = []
    for _ in range(2):
        location = await created(a, teacher, 2 * len(data))
        assert (await patch(b, teacher, location, 0, data)).status == 204  # one part and a tail
        ids.append(location.rsplit("/", 1)[1])
        assert await parts_of(bucket, ids[-1]) == [PART]
    deleted, expired = ids

    # DELETE (on the other node): no object, no tail, no unfinished multipart upload left.
    assert (await a.http.delete(f"{URL}/{deleted}", headers=tus_headers(teacher))).status == 204
    assert await bucket.keys(f"uploads/{deleted}") == []
    assert await in_progress(bucket, deleted) == []
    assert (await b.http.head(f"{URL}/{deleted}", headers=tus_headers(teacher))).status == 404

    # An unfinished upload past its expiry: the sweep aborts it the same way.
    await a.app[CORE].pool.execute(
        "UPDATE uploads SET expires_at = now() - interval '1 second' WHERE id = $1", uuid.UUID(expired)
    )
    assert await b.app[UPLOADS].sweep() == 1
    assert await bucket.keys("uploads/") == []
    assert await in_progress(bucket, expired) == []


async def grade_sheet(node: ApiClient, teacher: Actor) -> tuple[str, bytes]:
    """A course with two learners and a sheet grading them (and one row for a stranger): its id, the sheet."""
    course = await ok(node, "POST", "/courses", teacher, json={"title": "Graded"})
    lecture = {"title": "L", "media_kind": "video", "media_url": "https://example.com/v.mp4", "duration_s": 60.0}
    await ok(node, "POST", f"/courses/{course['id']}/lectures", teacher, json=lecture)
    await ok(node, "POST", f"/courses/{course['id']}/publish", teacher)
    homework = {"title": "Homework", "description": "", "due_at": "2099-01-01T00:00:00Z", "max_points": 10.0}
    await ok(node, "POST", f"/courses/{course['id']}/assignments", teacher, json=homework)
    rows = [["email", "assignment", "grade"]]
    for n in range(2):
        learner = await node.user("student")
        await ok(node, "POST", f"/courses/{course['id']}/enroll", learner)
        rows.append([learner.email, "Homework", str(5 + n)])
    rows.append(["nobody@example.com", "Homework", "3"])
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return course["id"], buf.getvalue().encode()


async def ok(api: ApiClient, method: str, path: str, actor: Actor, **kw: Any) -> Any:
    status, body = await api.call(method, path, actor, **kw)
    assert status < 300, (method, path, status, body)
    return body


@pytest.mark.parametrize("serve", ["stream", "redirect"])
async def test_grade_sheet_results_and_data_exports_are_downloaded_from_the_bucket(
    aiohttp_client: Any, database_url: str, tmp_path: Path, bucket: Bucket, serve: str
) -> None:
    a, b = await two_nodes(aiohttp_client, database_url, tmp_path, bucket, s3_serve=serve)
    teacher = await a.user("instructor")
    course_id, sheet = await grade_sheet(a, teacher)
    location = await created(a, teacher, len(sheet))
    assert (await patch(a, teacher, location, 0, sheet)).status == 204
    status, job = await a.call("POST", f"/courses/{course_id}/grade-uploads", teacher,
                               json={"upload_id": location.rsplit("/", 1)[1], "mode": "valid_rows"})  # fmt: skip
    assert status == 202, job
    done = await finished(a, teacher, job["id"])
    assert done["state"] == "succeeded" and done["result"]["applied"] == 2, done
    stored, content_type = await bucket.get(f"outputs/{job['id']}/results.csv")
    assert content_type == "text/csv" and b"nobody@example.com" in stored

    async def download(node: ApiClient, url: str, actor: Actor) -> tuple[bytes, str, str]:
        resp = await node.http.get(url, headers=actor.headers, allow_redirects=False)
        if serve == "redirect":  # 302 to a presigned URL of the bucket, which serves studyhall's headers
            assert resp.status == 302, await resp.text()
            assert resp.headers["Location"].startswith(f"{bucket.url}/{bucket.name}/{PREFIX}outputs/")
            async with aiohttp.ClientSession() as http, http.get(resp.headers["Location"]) as direct:
                assert direct.status == 200
                return await direct.read(), direct.content_type, direct.headers["Content-Disposition"]
        assert resp.status == 200, await resp.text()
        return await resp.read(), resp.content_type, resp.headers["Content-Disposition"]

    # The results, from the other node (it never had them on its disk).
    body, got_type, disposition = await download(b, done["result"]["results"], teacher)
    assert body == stored and got_type == "text/csv"
    assert disposition == f'attachment; filename="grade-sheet-results-{job["id"]}.csv"'
    # Nobody else gets them: another instructor 403 (the course is not theirs), no credentials 401; no redirect.
    other = await b.user("instructor")
    refused = await b.http.get(done["result"]["results"], headers=other.headers, allow_redirects=False)
    assert refused.status == 403 and "Location" not in refused.headers
    assert (await b.http.get(done["result"]["results"], allow_redirects=False)).status == 401

    # A data export, made on node A, downloaded from node B.
    status, export = await a.call("POST", "/me/exports", teacher)
    assert status == 202, export
    made = await finished(a, teacher, export["id"])
    assert made["state"] == "succeeded", made
    archive_bytes, got_type, disposition = await download(b, made["result"]["download"], teacher)
    assert got_type == "application/zip" and disposition.startswith('attachment; filename="studyhall-data-')
    assert archive_bytes == (await bucket.get(f"outputs/{export['id']}/export.zip"))[0]
    archive = zipfile.ZipFile(io.BytesIO(archive_bytes))
    assert json.loads(archive.read("manifest.json"))["user_id"] == teacher.id
    assert (await b.http.get(made["result"]["download"], headers=other.headers, allow_redirects=False)).status == 404
    # Neither node keeps the sheet, the results, the export or a scratch copy.
    assert media_files(a, b) == []


async def test_a_live_recording_goes_into_the_bucket_and_the_other_node_makes_it_a_lecture(
    aiohttp_client: Any, database_url: str, tmp_path: Path, bucket: Bucket
) -> None:
    from tests.live_helpers import live_room, record_briefly

    a, b = await two_nodes(aiohttp_client, database_url, tmp_path, bucket)
    host, member = await a.user("instructor"), await a.user()
    _, session_id = await live_room(a, host, member)
    recording = await record_briefly(a, host, session_id)
    upload_id = recording["upload_id"]
    stored, _ = await bucket.get(f"uploads/{upload_id}")
    assert len(stored) == recording["bytes"] and stored[:4] == b"\x1a\x45\xdf\xa3"  # WebM (EBML)
    assert media_files(a, b) == []  # not left on the recording node's disk

    # Its recorder downloads it through the other node; a member of the room does not.
    url = f"/api/v1/live-sessions/{session_id}/recordings/{upload_id}"
    resp = await b.http.get(url, headers=host.headers)
    assert resp.status == 200 and resp.content_type == "video/webm" and await resp.read() == stored
    assert (await b.http.get(url, headers=member.headers)).status == 404

    # The other node makes it a lecture's ladder (the job reads it from the bucket).
    lecture_id = await lecture(b, host)
    status, job = await b.call("POST", f"/lectures/{lecture_id}/media", host, json={"upload_id": upload_id})
    assert status == 202, job
    done = await finished(b, host, job["id"])
    assert done["state"] == "succeeded", done
    assert abs(done["result"]["duration_s"] - recording["duration_s"]) <= 1
    assert await bucket.keys("uploads/") == []  # consumed
    assert media_files(a, b) == []
