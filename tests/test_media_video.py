"""Lecture video as a background job: an uploaded video becomes an HLS ladder no higher than its source,
with progress over REST and ``job:progress``; a corrupt or audio-only file fails saying why; jobs are
cancelled, claimed once, and are their owner's alone. Videos are made by ffmpeg (lavfi test sources, a few
seconds, small sizes)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from core_api.context import CORE
from media.jobs import JOBS, run_job
from media.video import remove_unused_ladders
from tests.chat_helpers import server_url
from tests.conftest import Actor, ApiClient
from tests.nodes import User, connect

pytestmark = pytest.mark.skipif(
    shutil.which("ffmpeg") is None, reason="ffmpeg is not installed (scripts/setup installs it)"
)

TUS = {"Tus-Resumable": "1.0.0"}


def make_video(path: Path, width: int, height: int, seconds: float = 3, audio: bool = True) -> Path:
    cmd = [
        "ffmpeg",
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"testsrc=size={width}x{height}:rate=25:duration={seconds}",
    ]
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-c:a", "aac"]
    cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-shortest", str(path)]
    subprocess.run(cmd, check=True)
    return path


async def upload(api: ApiClient, actor: Actor, path: Path) -> str:
    data = await asyncio.to_thread(path.read_bytes)
    resp = await api.http.post("/api/v1/uploads", headers={**TUS, **actor.headers, "Upload-Length": str(len(data))})
    assert resp.status == 201
    location = resp.headers["Location"]
    headers = {**TUS, **actor.headers, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
    assert (await api.http.patch(location, headers=headers, data=data)).status == 204
    return location.rsplit("/", 1)[1]


async def lecture(api: ApiClient, teacher: Actor) -> str:
    status, course = await api.call("POST", "/courses", teacher, json={"title": "Video course"})
    assert status == 201, course
    body = {"title": "Intro", "media_kind": "video", "media_url": "https://cdn.example.com/x.mp4", "duration_s": 1.0}
    status, made = await api.call("POST", f"/courses/{course['id']}/lectures", teacher, json=body)
    assert status == 201, made
    return str(made["id"])


async def finished(api: ApiClient, actor: Actor, job_id: str, within_s: float = 120) -> dict[str, Any]:
    for _ in range(int(within_s / 0.1)):
        status, job = await api.call("GET", f"/jobs/{job_id}", actor)
        assert status == 200, job
        if job["state"] not in ("queued", "running"):
            return dict(job)
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job['state']} after {within_s} s")


def ffprobe_heights(playlist: Path) -> int:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=height", "-of", "json",
         str(playlist)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return int(json.loads(out.stdout)["streams"][0]["height"])


async def test_a_video_becomes_the_lectures_hls_ladder_with_live_progress(api: ApiClient, tmp_path: Path) -> None:
    teacher = await api.user("instructor")
    lecture_id = await lecture(api, teacher)
    upload_id = await upload(api, teacher, make_video(tmp_path / "in.mp4", 640, 480, seconds=8))
    client = await connect(server_url(api), User(teacher.id, teacher.email, "t", teacher.token))
    try:
        status, job = await api.call("POST", f"/lectures/{lecture_id}/media", teacher, json={"upload_id": upload_id})
        assert status == 202, job
        assert job["kind"] == "lecture_video" and job["state"] in ("queued", "running")
        done = await client.inbox.wait_for(
            "job:progress", lambda e: e["id"] == job["id"] and e["state"] == "succeeded", within=120
        )
    finally:
        await client.disconnect()
    assert done["progress"] == 1 and done["error"] is None
    result = done["result"]
    assert result["renditions"] == ["480p", "360p"]  # no higher than the source
    assert abs(result["duration_s"] - 8) < 0.5
    # The files: a master playlist naming both rungs, each rung's height as ffprobe reads it, a poster.
    out = api.app[JOBS].storage.output_dir(uuid.UUID(job["id"]))
    master = (out / "master.m3u8").read_text()
    assert "480p/index.m3u8" in master and "360p/index.m3u8" in master and "CODECS=" in master
    assert ffprobe_heights(out / "480p" / "index.m3u8") == 480
    assert ffprobe_heights(out / "360p" / "index.m3u8") == 360
    rung = (out / "360p" / "index.m3u8").read_text()
    assert "#EXTINF:6.000000," in rung and rung.count("#EXTINF") == 2  # 6 s segments: 6 + 2
    assert (out / "poster.jpg").stat().st_size > 0
    # The lecture now points at the master playlist (signed for whoever reads it); the upload is consumed.
    status, lec = await api.call("GET", f"/lectures/{lecture_id}", teacher)
    assert lec["media_kind"] == "hls" and lec["media_url"].startswith(result["master_url"] + "?token=")
    assert abs(lec["duration_s"] - 8) < 0.5
    head = await api.http.head(f"/api/v1/uploads/{upload_id}", headers={**TUS, **teacher.headers})
    assert head.status == 404


async def test_a_corrupt_file_fails_with_a_clear_reason(api: ApiClient, tmp_path: Path) -> None:
    teacher = await api.user("instructor")
    lecture_id = await lecture(api, teacher)
    good = make_video(tmp_path / "good.mp4", 320, 240).read_bytes()
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18notavideo" + good[len(good) // 2 :])
    upload_id = await upload(api, teacher, corrupt)
    status, job = await api.call("POST", f"/lectures/{lecture_id}/media", teacher, json={"upload_id": upload_id})
    assert status == 202
    done = await finished(api, teacher, job["id"])
    assert done["state"] == "failed"
    assert done["error"].startswith("not a video ffmpeg can read")
    status, lec = await api.call("GET", f"/lectures/{lecture_id}", teacher)
    assert lec["media_kind"] == "video"  # untouched


async def test_an_audio_only_file_is_not_a_video(api: ApiClient, tmp_path: Path) -> None:
    teacher = await api.user("instructor")
    lecture_id = await lecture(api, teacher)
    audio = tmp_path / "talk.m4a"
    cmd = ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=duration=2", "-c:a", "aac", str(audio)]
    await asyncio.to_thread(subprocess.run, cmd, check=True)
    upload_id = await upload(api, teacher, audio)
    _, job = await api.call("POST", f"/lectures/{lecture_id}/media", teacher, json={"upload_id": upload_id})
    done = await finished(api, teacher, job["id"])
    assert (done["state"], done["error"]) == ("failed", "not a video: the file has no video stream (it has audio)")


async def test_jobs_are_their_owners_and_the_lectures_owners(api: ApiClient, tmp_path: Path) -> None:
    teacher, other, learner = await api.user("instructor"), await api.user("instructor"), await api.user()
    lecture_id = await lecture(api, teacher)
    theirs = await upload(api, other, make_video(tmp_path / "a.mp4", 160, 120, seconds=1))
    # Another instructor may not put their video on this lecture; a learner may not start jobs at all.
    status, _ = await api.call("POST", f"/lectures/{lecture_id}/media", other, json={"upload_id": theirs})
    assert status in (403, 404)
    status, _ = await api.call("POST", f"/lectures/{lecture_id}/media", learner, json={"upload_id": theirs})
    assert status == 403
    # Someone else's upload is not found; garbage is 400.
    status, _ = await api.call("POST", f"/lectures/{lecture_id}/media", teacher, json={"upload_id": theirs})
    assert status == 404
    status, _ = await api.call("POST", f"/lectures/{lecture_id}/media", teacher, json={"upload_id": "nope"})
    assert status == 400
    mine = await upload(api, teacher, make_video(tmp_path / "b.mp4", 160, 120, seconds=1))
    status, job = await api.call("POST", f"/lectures/{lecture_id}/media", teacher, json={"upload_id": mine})
    assert status == 202
    assert (await api.call("GET", f"/jobs/{job['id']}", other))[0] == 404
    assert (await api.call("DELETE", f"/jobs/{job['id']}", other))[0] == 404
    done = await finished(api, teacher, job["id"])
    assert done["state"] == "succeeded" and done["result"]["renditions"] == ["120p"]
    assert (await api.call("DELETE", f"/jobs/{job['id']}", teacher))[0] == 409


async def test_a_cancelled_job_stops_and_leaves_no_output(api: ApiClient, tmp_path: Path) -> None:
    teacher = await api.user("instructor")
    lecture_id = await lecture(api, teacher)
    upload_id = await upload(api, teacher, make_video(tmp_path / "c.mp4", 320, 240, seconds=2))
    # Queue it without running it (as if every worker were busy), then cancel.
    core = api.app[CORE]
    job_id = await core.pool.fetchval(
        "INSERT INTO jobs (id, kind, owner_id, params) VALUES ($1, 'lecture_video', $2, $3) RETURNING id",
        uuid.uuid4(), uuid.UUID(teacher.id), {"lecture_id": lecture_id, "upload_id": upload_id},
    )  # fmt: skip
    status, cancelled = await api.call("DELETE", f"/jobs/{job_id}", teacher)
    assert (status, cancelled["state"]) == (200, "cancelled")
    runner = api.app[JOBS]
    await run_job(core, runner.storage, runner.kinds, job_id, uuid.uuid4())  # a runner that comes late
    status, job = await api.call("GET", f"/jobs/{job_id}", teacher)
    assert job["state"] == "cancelled" and job["attempts"] == 0
    assert not runner.storage.output_dir(job_id).exists()


async def test_a_job_is_claimed_once_and_retried_after_its_runner_dies(api: ApiClient, tmp_path: Path) -> None:
    teacher = await api.user("instructor")
    lecture_id = await lecture(api, teacher)
    upload_id = await upload(api, teacher, make_video(tmp_path / "d.mp4", 160, 120, seconds=1))
    core, runner = api.app[CORE], api.app[JOBS]
    dead = uuid.uuid4()
    # A runner claimed it and died mid-transcode (its lease is still valid): nobody else may take it ...
    job_id = await core.pool.fetchval(
        """INSERT INTO jobs (id, kind, owner_id, params, state, claimed_by, lease_until, attempts)
           VALUES ($1, 'lecture_video', $2, $3, 'running', $4, now() + interval '1 hour', 1) RETURNING id""",
        uuid.uuid4(), uuid.UUID(teacher.id), {"lecture_id": lecture_id, "upload_id": upload_id}, dead,
    )  # fmt: skip
    stale = runner.storage.output_dir(job_id)
    stale.mkdir(parents=True)
    (stale / "half-written.ts").write_bytes(b"x")
    await run_job(core, runner.storage, runner.kinds, job_id, uuid.uuid4())
    assert (await api.call("GET", f"/jobs/{job_id}", teacher))[1]["state"] == "running"
    # ... until its lease runs out: then the next runner takes it, and the output is one clean ladder.
    await core.pool.execute("UPDATE jobs SET lease_until = now() - interval '1 second' WHERE id = $1", job_id)
    await run_job(core, runner.storage, runner.kinds, job_id, uuid.uuid4())
    job = (await api.call("GET", f"/jobs/{job_id}", teacher))[1]
    assert (job["state"], job["attempts"]) == ("succeeded", 2)
    assert not (stale / "half-written.ts").exists()
    assert sorted(p.name for p in stale.iterdir()) == ["120p", "master.m3u8", "poster.jpg"]


async def test_the_ladder_plays_only_for_those_allowed_to_watch_the_lecture(api: ApiClient, tmp_path: Path) -> None:
    from tests.test_paywall import give_coins

    teacher, buyer, stranger = await api.user("instructor"), await api.user(), await api.user()
    lecture_id = await lecture(api, teacher)
    upload_id = await upload(api, teacher, make_video(tmp_path / "p.mp4", 320, 240, seconds=7))
    _, job = await api.call("POST", f"/lectures/{lecture_id}/media", teacher, json={"upload_id": upload_id})
    done = await finished(api, teacher, job["id"])
    _, lec = await api.call("GET", f"/lectures/{lecture_id}", teacher)
    course_id = lec["course_id"]
    assert (await api.call("POST", f"/courses/{course_id}/publish", teacher))[0] == 200
    assert (await api.call("PUT", f"/courses/{course_id}/price", teacher, json={"coins": 10}))[0] == 200
    await give_coins(api, buyer, 10)
    assert (await api.call("POST", f"/courses/{course_id}/buy", buyer))[0] == 201

    base = f"/api/v1/media/{job['id']}"
    out = api.app[JOBS].storage.output_dir(uuid.UUID(job["id"]))
    files = ["master.m3u8", "poster.jpg", "240p/index.m3u8"] + [f"240p/{p.name}" for p in (out / "240p").glob("*.ts")]
    assert len(files) == 5  # two 6 s segments of a 7 s video
    types = {"m3u8": "application/vnd.apple.mpegurl", "ts": "video/mp2t", "jpg": "image/jpeg"}
    for who in (teacher, buyer):
        for name in files:
            resp = await api.http.get(f"{base}/{name}", headers=who.headers)
            assert resp.status == 200, (who.role, name)
            assert resp.content_type == types[name.rsplit(".", 1)[1]]
    # A learner who has not bought the course: no playlist, no segment, and no URL from REST either.
    for name in files:
        resp = await api.http.get(f"{base}/{name}", headers=stranger.headers)
        assert resp.status == 403, name
        assert (await api.http.get(f"{base}/{name}")).status == 401
    _, seen = await api.call("GET", f"/lectures/{lecture_id}", stranger)
    assert seen["media_url"] is None and seen["locked"] is True
    assert done["result"]["master_url"].endswith(f"{base}/master.m3u8")
    # Range requests (players seek within segments); paths outside the ladder are not found.
    first = files[3]
    part = await api.http.get(f"{base}/{first}", headers={**buyer.headers, "Range": "bytes=0-187"})
    assert part.status == 206 and len(await part.read()) == 188
    for bad in ("secret.txt", "240p/segment_1.ts", "240p/index.m3u8.bak", "in.mp4"):
        assert (await api.http.get(f"{base}/{bad}", headers=teacher.headers)).status == 404, bad


async def slow_transcode(
    aiohttp_client: Any, database_url: str, tmp_path: Path
) -> tuple[ApiClient, Actor, str, str, int]:
    """An app whose "ffmpeg" reports a little progress, then works for ten minutes (it would outlive the test),
    and a lecture video job of it caught transcoding: (api, owner, lecture id, job id, ffmpeg's pid)."""
    from realtime.app import create_app
    from tests.conftest import make_settings

    pidfile = tmp_path / "ffmpeg.pid"
    fake = tmp_path / "slow-ffmpeg"
    fake.write_text(
        f'#!/bin/sh\necho $$ > "{pidfile}"\necho out_time_us=500000\necho progress=continue\nexec sleep 600\n'
    )
    fake.chmod(0o755)
    settings = make_settings(database_url, tmp_path / "data", media_ffmpeg=str(fake))
    api = ApiClient(await aiohttp_client(create_app(settings)))
    teacher = await api.user("instructor")
    lecture_id = await lecture(api, teacher)
    upload_id = await upload(api, teacher, make_video(tmp_path / "e.mp4", 160, 120, seconds=2))
    _, job = await api.call("POST", f"/lectures/{lecture_id}/media", teacher, json={"upload_id": upload_id})
    for _ in range(300):
        _, seen = await api.call("GET", f"/jobs/{job['id']}", teacher)
        if seen["stage"] == "transcode" and await asyncio.to_thread(pidfile.exists):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"the transcode never started: {seen}")
    return api, teacher, lecture_id, job["id"], int(pidfile.read_text())


async def gone(path: Path) -> bool:
    for _ in range(200):
        if not await asyncio.to_thread(path.exists):
            return True
        await asyncio.sleep(0.05)
    return False


async def test_cancelling_a_running_transcode_stops_ffmpeg_and_removes_its_output(
    aiohttp_client: Any, database_url: str, tmp_path: Path
) -> None:
    api, teacher, lecture_id, job_id, pid = await slow_transcode(aiohttp_client, database_url, tmp_path)
    status, cancelled = await api.call("DELETE", f"/jobs/{job_id}", teacher)
    assert (status, cancelled["state"]) == (200, "cancelled")
    assert await gone(Path(f"/proc/{pid}")), "ffmpeg still runs after the job was cancelled"
    assert await gone(api.app[JOBS].storage.output_dir(uuid.UUID(job_id))), "the partial output is still there"
    _, lec = await api.call("GET", f"/lectures/{lecture_id}", teacher)
    assert lec["media_kind"] == "video"
    # The runner goes on with the next job.
    assert api.app[JOBS]._tasks and not any(t.done() for t in api.app[JOBS]._tasks)


async def test_a_node_stopping_mid_transcode_stops_ffmpeg_and_requeues_the_job(
    aiohttp_client: Any, database_url: str, tmp_path: Path
) -> None:
    import asyncpg

    api, _, _, job_id, pid = await slow_transcode(aiohttp_client, database_url, tmp_path)
    await api.http.close()  # the app shuts down (SIGTERM)
    assert not await asyncio.to_thread(Path(f"/proc/{pid}").exists), "ffmpeg outlived its node"
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow("SELECT state, claimed_by FROM jobs WHERE id = $1", uuid.UUID(job_id))
    finally:
        await conn.close()
    assert (row["state"], row["claimed_by"]) == ("queued", None)  # another node (or this one restarted) takes it


async def test_a_lecture_deleted_mid_job_fails_the_job_and_leaves_no_output(api: ApiClient, tmp_path: Path) -> None:
    teacher = await api.user("instructor")
    lecture_id = await lecture(api, teacher)
    await lecture(api, teacher)  # (so that the course keeps one)
    upload_id = await upload(api, teacher, make_video(tmp_path / "f.mp4", 160, 120, seconds=1))
    core, runner = api.app[CORE], api.app[JOBS]
    job_id = await core.pool.fetchval(
        "INSERT INTO jobs (id, kind, owner_id, params) VALUES ($1, 'lecture_video', $2, $3) RETURNING id",
        uuid.uuid4(), uuid.UUID(teacher.id), {"lecture_id": lecture_id, "upload_id": upload_id},
    )  # fmt: skip
    assert (await api.call("DELETE", f"/lectures/{lecture_id}", teacher))[0] == 204
    await run_job(core, runner.storage, runner.kinds, job_id, uuid.uuid4())
    _, job = await api.call("GET", f"/jobs/{job_id}", teacher)
    assert (job["state"], job["error"]) == ("failed", "the lecture was deleted while its video was being processed")
    assert not runner.storage.output_dir(job_id).exists()


async def sweep_ladders(api: ApiClient, keep_s: float) -> None:
    """The media sweep's ladder part, run until nothing more is due (the suite's database holds other ladders)."""
    core, runner = api.app[CORE], api.app[JOBS]
    while await remove_unused_ladders(core, runner.storage, keep_s, batch=500) == 500:
        pass


async def test_a_replaced_ladder_is_kept_for_an_undo_then_removed(api: ApiClient, tmp_path: Path) -> None:
    """A new video replaces the lecture's ladder: the old one is kept while the lecture could be pointed back at
    it, then its files go; pointing a lecture at removed files is refused; a deleted lecture's ladder goes too."""
    teacher = await api.user("instructor")
    lecture_id = await lecture(api, teacher)
    await lecture(api, teacher)  # (so that the course keeps one when this one is deleted)
    storage, core = api.app[JOBS].storage, api.app[CORE]
    ladders = []
    for name in ("first", "second"):
        upload_id = await upload(api, teacher, make_video(tmp_path / f"{name}.mp4", 160, 120, seconds=1))
        _, job = await api.call("POST", f"/lectures/{lecture_id}/media", teacher, json={"upload_id": upload_id})
        done = await finished(api, teacher, job["id"])
        assert done["state"] == "succeeded", done
        ladders.append(done)
    first, second = ladders
    first_dir, second_dir = (storage.output_dir(uuid.UUID(j["id"])) for j in ladders)

    # Kept a while: the lecture can go back to its first video (an editor sends back the URL it was shown).
    await sweep_ladders(api, keep_s=3600)
    assert (first_dir / "master.m3u8").exists()
    patch = {"media_kind": "hls", "media_url": first["result"]["master_url"] + "?token=whatever"}
    status, lec = await api.call("PATCH", f"/lectures/{lecture_id}", teacher, json=patch)
    assert status == 200, lec
    status, lec = await api.call("GET", f"/lectures/{lecture_id}", teacher)
    assert lec["media_url"].startswith(first["result"]["master_url"] + "?token=")
    media = await api.http.get("/" + lec["media_url"].split("://", 1)[1].split("/", 1)[1])  # (the test port)
    assert media.status == 200 and "#EXTM3U" in await media.text()
    await sweep_ladders(api, keep_s=3600)  # the first is in use again: unmarked; the second is now unused
    marks = {r["id"]: r["ladder_unused_since"] for r in await core.pool.fetch(
        "SELECT id, ladder_unused_since FROM jobs WHERE id = ANY($1::uuid[])", [j["id"] for j in ladders])}  # fmt: skip
    assert marks[uuid.UUID(first["id"])] is None and marks[uuid.UUID(second["id"])] is not None

    # Past the keep time the unused one goes; the one playing stays.
    await sweep_ladders(api, keep_s=0)
    assert not second_dir.exists() and (first_dir / "master.m3u8").exists()
    patch = {"media_kind": "hls", "media_url": second["result"]["master_url"]}
    status, refused = await api.call("PATCH", f"/lectures/{lecture_id}", teacher, json=patch)
    assert status == 409 and "removed" in refused["error"]["message"], refused
    status, refused = await api.call("POST", f"/courses/{lec['course_id']}/lectures", teacher,
                                     json={"title": "Again", "duration_s": 1.0, **patch})  # fmt: skip
    assert status == 409, refused

    # A deleted lecture's ladder goes the same way.
    assert (await api.call("DELETE", f"/lectures/{lecture_id}", teacher))[0] == 204
    await sweep_ladders(api, keep_s=0)
    assert not first_dir.exists()
