"""Media jobs on Celery workers (media/distributed.py): a node with Redis sends jobs to ``studyhall worker -Q
media`` processes, which run the same job code as the in-process runner, against real Postgres, Redis and
ffmpeg. A worker killed with -9 mid-transcode: its ffmpeg dies with it, the job is retried on another worker
and the lecture ends up with one ladder."""

from __future__ import annotations

import asyncio
import math
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psutil

from core_api.context import CORE
from realtime.app import create_app
from tests.chat_helpers import server_url
from tests.conftest import ApiClient, make_settings
from tests.nodes import ROOT, User, WorkerProcess, connect, node_env, redis_url, stop_pid
from tests.test_media_video import ffprobe_heights, finished, lecture, make_video, upload

LEASE_S = 5


class MediaWorker(WorkerProcess):
    """One ``studyhall worker -Q media`` process running one job at a time."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        super().__init__(["-Q", "media", "--concurrency", "1"], env, log)

    @property
    def runner_id(self) -> str:
        return self.ready_line.rsplit("runner ", 1)[1].strip()


def ffmpeg_writing(out_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if proc.info.get("name") == "ffmpeg" and any(str(out_dir) in part for part in cmdline):
            found.append(proc)
    return found


async def test_a_worker_killed_mid_transcode_is_retried_on_another_with_one_ladder(
    aiohttp_client: Any, database_url: str, tmp_path: Path
) -> None:
    with redis_url() as broker:
        media = tmp_path / "media"
        settings = make_settings(
            database_url, tmp_path / "node", redis_url=broker, media_executor="celery", media_dir=media,
            media_job_lease_s=LEASE_S, media_sweep_s=1,
        )  # fmt: skip
        api = ApiClient(await aiohttp_client(create_app(settings)))
        teacher = await api.user("instructor")
        lecture_id = await lecture(api, teacher)
        seconds = 24
        upload_id = await upload(api, teacher, make_video(tmp_path / "in.mp4", 1280, 720, seconds=seconds))
        status, job = await api.call("POST", f"/lectures/{lecture_id}/media", teacher, json={"upload_id": upload_id})
        assert status == 202, job
        # No worker yet: the node runs nothing itself, the job waits (its task on the broker).
        await asyncio.sleep(1.5)
        assert (await api.call("GET", f"/jobs/{job['id']}", teacher))[1]["state"] == "queued"

        env = node_env(database_url, broker, tmp_path / "workers")
        env.update(STUDYHALL_MEDIA_DIR=str(media), STUDYHALL_MEDIA_JOB_LEASE_S=str(LEASE_S),
                   STUDYHALL_MEDIA_FFMPEG_THREADS="1")  # fmt: skip
        first = MediaWorker(env, tmp_path / "worker-1.log")
        second: MediaWorker | None = None
        try:
            await asyncio.to_thread(first.wait_ready)
            # The first worker takes it; once it is well into the transcode, kill -9.
            out_dir = media / "outputs" / job["id"]
            for _ in range(600):
                _, seen = await api.call("GET", f"/jobs/{job['id']}", teacher)
                if seen["stage"] == "transcode" and seen["progress"] >= 0.1:
                    break
                assert seen["state"] in ("queued", "running"), seen
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"the transcode did not get going: {seen}")
            pool = api.app[CORE].pool
            claimed = await pool.fetchval("SELECT claimed_by::text FROM jobs WHERE id = $1::uuid", job["id"])
            assert claimed == first.runner_id
            assert ffmpeg_writing(out_dir), "no ffmpeg of the first worker's"
            stop_pid(first.proc, signal.SIGKILL)
            # Its ffmpeg died with it (no orphan writing into the directory the retry fills).
            for _ in range(50):
                if not ffmpeg_writing(out_dir):
                    break
                await asyncio.sleep(0.1)
            assert not ffmpeg_writing(out_dir)
            _, seen = await api.call("GET", f"/jobs/{job['id']}", teacher)
            assert seen["state"] == "running" and seen["attempts"] == 1  # its lease has not run out yet

            second = MediaWorker(env, tmp_path / "worker-2.log")
            await asyncio.to_thread(second.wait_ready)
            done = await finished(api, teacher, job["id"], within_s=300)
            assert done["state"] == "succeeded", done
            assert done["attempts"] == 2  # retried once, by the other worker
            claimed = await pool.fetchval("SELECT claimed_by::text FROM jobs WHERE id = $1::uuid", job["id"])
            assert claimed == second.runner_id
        finally:
            for worker in (first, second):
                if worker is not None:
                    stop_pid(worker.proc, signal.SIGTERM)

        # One ladder: exactly the rungs no higher than the source, each with its own segments, nothing else.
        result = done["result"]
        rungs = sorted(p.name for p in out_dir.iterdir() if p.is_dir())
        assert rungs == ["360p", "480p", "720p"]
        assert sorted(p.name for p in out_dir.iterdir() if p.is_file()) == ["master.m3u8", "poster.jpg"]
        for rung in rungs:
            playlist = (out_dir / rung / "index.m3u8").read_text()
            named = [line for line in playlist.splitlines() if line.endswith(".ts")]
            on_disk = sorted(p.name for p in (out_dir / rung).glob("*.ts"))
            assert sorted(named) == on_disk and len(on_disk) == math.ceil(seconds / 6), rung
            assert ffprobe_heights(out_dir / rung / "index.m3u8") == int(rung[:-1])
        assert sorted(p.name for p in (media / "outputs").iterdir()) == [job["id"]]
        row = await api.app[CORE].pool.fetchrow(
            "SELECT media_kind, media_url FROM lectures WHERE id = $1", uuid.UUID(lecture_id)
        )
        assert row["media_kind"] == "hls" and row["media_url"] == result["master_url"]


def test_the_worker_command_needs_redis(tmp_path: Path) -> None:
    env = node_env("postgresql://127.0.0.1:1/none", "redis://127.0.0.1:1/0", tmp_path)
    del env["STUDYHALL_REDIS_URL"]
    out = subprocess.run(
        [sys.executable, "-m", "realtime.cli", "worker", "-Q", "media"], env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2 and "needs STUDYHALL_REDIS_URL" in out.stderr


async def test_a_grade_sheet_runs_on_a_worker_and_pushes_progress_and_notifications(
    aiohttp_client: Any, database_url: str, tmp_path: Path
) -> None:
    """The same grade-sheet job as in-process, on a Celery worker: rows applied, the owner sees `job:progress`,
    the graded learner `notification:new`, both pushed by the worker through Redis to the node they are on."""
    with redis_url() as broker:
        media = tmp_path / "media"
        settings = make_settings(
            database_url, tmp_path / "node", redis_url=broker, media_executor="celery", media_dir=media
        )
        api = ApiClient(await aiohttp_client(create_app(settings)))
        teacher, learner = await api.user("instructor"), await api.user("student")
        _, course = await api.call("POST", "/courses", teacher, json={"title": "Graded by a worker"})
        body = {"title": "Essay", "description": "", "due_at": "2099-01-01T00:00:00Z", "max_points": 10.0}
        assert (await api.call("POST", f"/courses/{course['id']}/assignments", teacher, json=body))[0] == 201
        await api.app[CORE].pool.execute(
            "INSERT INTO enrollments (id, user_id, course_id) VALUES ($1, $2::uuid, $3::uuid)",
            uuid.uuid4(), learner.id, course["id"],
        )  # fmt: skip
        sheet = tmp_path / "sheet.csv"
        sheet.write_text(f"email,assignment,grade\n{learner.email},Essay,9\nnobody@example.com,Essay,3\n")
        upload_id = await upload(api, teacher, sheet)

        env = node_env(database_url, broker, tmp_path / "workers")
        env.update(STUDYHALL_MEDIA_DIR=str(media))
        worker = MediaWorker(env, tmp_path / "worker.log")
        owner_tab = await connect(server_url(api), User(teacher.id, teacher.email, "t", teacher.token))
        learner_tab = await connect(server_url(api), User(learner.id, learner.email, "l", learner.token))
        try:
            await asyncio.to_thread(worker.wait_ready)
            status, job = await api.call(
                "POST", f"/courses/{course['id']}/grade-uploads", teacher,
                json={"upload_id": upload_id, "mode": "valid_rows"},
            )  # fmt: skip
            assert status == 202, job
            done = await owner_tab.inbox.wait_for(
                "job:progress", lambda e: e["id"] == job["id"] and e["state"] == "succeeded", within=60
            )
            note = await learner_tab.inbox.wait_for("notification:new", lambda n: n["kind"] == "grades_posted")
        finally:
            await owner_tab.disconnect()
            await learner_tab.disconnect()
            stop_pid(worker.proc, signal.SIGTERM)
        assert (done["result"]["valid"], done["result"]["errors"], done["result"]["applied"]) == (1, 1, 1)
        assert note["payload"]["grades"] == 1
        claimed = await api.app[CORE].pool.fetchval("SELECT claimed_by::text FROM jobs WHERE id = $1::uuid", job["id"])
        assert claimed == worker.runner_id  # run by the worker, not the node
        resp = await api.http.get(done["result"]["results"], headers=teacher.headers)
        assert "applied" in await resp.text()


async def test_cancelling_a_job_running_on_a_worker_stops_its_ffmpeg(
    aiohttp_client: Any, database_url: str, tmp_path: Path
) -> None:
    """DELETE /jobs/{id} on the node: the worker running it notices at its next progress report, kills ffmpeg and
    removes the partial output; the worker goes on to take the next job."""
    with redis_url() as broker:
        media = tmp_path / "media"
        settings = make_settings(
            database_url, tmp_path / "node", redis_url=broker, media_executor="celery", media_dir=media
        )
        api = ApiClient(await aiohttp_client(create_app(settings)))
        teacher = await api.user("instructor")
        lecture_id = await lecture(api, teacher)
        upload_id = await upload(api, teacher, make_video(tmp_path / "long.mp4", 1280, 720, seconds=30))
        env = node_env(database_url, broker, tmp_path / "workers")
        env.update(STUDYHALL_MEDIA_DIR=str(media), STUDYHALL_MEDIA_FFMPEG_THREADS="1")
        worker = MediaWorker(env, tmp_path / "worker.log")
        try:
            await asyncio.to_thread(worker.wait_ready)
            _, job = await api.call("POST", f"/lectures/{lecture_id}/media", teacher, json={"upload_id": upload_id})
            out_dir = media / "outputs" / job["id"]
            for _ in range(600):
                _, seen = await api.call("GET", f"/jobs/{job['id']}", teacher)
                # Past 0.01: ffmpeg has reported some output (the worker says "transcode" at 0.01 just before
                # it starts ffmpeg, so at 0.01 there may be no ffmpeg yet).
                if seen["stage"] == "transcode" and seen["progress"] > 0.01:
                    break
                await asyncio.sleep(0.1)
            assert ffmpeg_writing(out_dir)
            status, cancelled = await api.call("DELETE", f"/jobs/{job['id']}", teacher)
            assert status == 200 and cancelled["state"] == "cancelled"
            for _ in range(100):
                if not ffmpeg_writing(out_dir) and not out_dir.exists():
                    break
                await asyncio.sleep(0.1)
            assert not ffmpeg_writing(out_dir) and not out_dir.exists()
            # The worker is free again: a short video goes through.
            short = await upload(api, teacher, make_video(tmp_path / "short.mp4", 320, 240, seconds=2))
            _, again = await api.call("POST", f"/lectures/{lecture_id}/media", teacher, json={"upload_id": short})
            done = await finished(api, teacher, again["id"], within_s=120)
            assert done["state"] == "succeeded", done
        finally:
            stop_pid(worker.proc, signal.SIGTERM)
        _, seen = await api.call("GET", f"/jobs/{job['id']}", teacher)
        assert seen["state"] == "cancelled"
