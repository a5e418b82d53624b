"""Media benchmark (issue 16): the lecture-video job against ffmpeg run by hand, tus uploads against a plain
streaming POST, the server's memory during parallel uploads, and HLS segment serving with the access check.

Usage::

    STUDYHALL_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test .venv/bin/python -m bench.media
    ... -m bench.media --video-seconds 10 --upload-mb 64 --seconds 5      # a quicker run

Starts its own ``studyhall serve`` (not pinned to a core: a transcode uses every core, as in production; the
load generator shares them) on a fresh database, with media jobs in-process. Then:

1. **Transcode.** ffmpeg makes a ``--video-seconds`` 1080p H.264/AAC test video (lavfi ``testsrc2`` and a
   sine). The same ffmpeg command the job runs (``media.video.transcode_command``: the full ladder, 6 s
   segments) is timed by hand, then the video is uploaded (tus) and made a lecture's video by ``POST
   /lectures/{id}/media``; the job's own time (``started_at`` to ``finished_at``, which includes the probe and
   the poster) is compared. Target: ratio <= 1.1x. Jobs at once per node: ``STUDYHALL_MEDIA_WORKERS``.
2. **Upload throughput.** A file of ``--upload-mb`` random bytes sent with tus (one creation ``POST`` and one
   streaming ``PATCH``, as tus-js-client sends by default) against the same bytes in one streaming ``POST`` to
   a plain aiohttp server (a child process, same machine) that writes them to disk. Target: tus >= 0.8x.
3. **Memory during uploads.** ``--parallel`` tus uploads at once, of ``--small-mb`` and then of ``--large-mb``
   each; the server's RSS sampled every 50 ms (before, peak). Flat: the peak does not grow with file size.
4. **Segment serving.** ``--viewers`` enrolled learners, each with their own signed playlist URL, fetching the
   ladder's segments for ``--seconds`` as fast as answered: requests/s, p50 and p99 (access checked on each).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
from aiohttp import web

from bench.rest import Server, free_port
from media.video import Probe, transcode_command

CHUNK = 256 * 1024
PASSWORD = "bench-media-pass-1"


def make_video(path: Path, seconds: float) -> None:
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
         "-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate=30:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)],
        check=True,
    )  # fmt: skip


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class RssSampler:
    """The server's resident memory, sampled in a thread while a block runs."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self.stop = pid, 0, threading.Event()
        self.before = rss_kb(pid)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, rss_kb(self.pid))
            time.sleep(0.05)

    def __enter__(self) -> RssSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


async def file_body(path: Path) -> Any:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


async def tus_upload(session: aiohttp.ClientSession, url: str, token: str, path: Path) -> str:
    size = await asyncio.to_thread(os.path.getsize, path)
    auth = {"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0"}
    meta = "filename " + base64.b64encode(path.name.encode()).decode()
    async with session.post(f"{url}/api/v1/uploads", headers={**auth, "Upload-Length": str(size),
                                                              "Upload-Metadata": meta}) as resp:  # fmt: skip
        assert resp.status == 201, (resp.status, await resp.text())
        location = resp.headers["Location"]
    target = location if location.startswith("http") else url + location
    headers = {**auth, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream",
               "Content-Length": str(size)}  # fmt: skip
    async with session.patch(target, headers=headers, data=file_body(path)) as resp:
        assert resp.status == 204, (resp.status, await resp.text())
        assert int(resp.headers["Upload-Offset"]) == size
    return target.rsplit("/", 1)[1]


# --- the plain peer: one streaming POST written to disk ---------------------------------------


def plain_server(port: int, directory: str) -> None:
    async def receive(request: web.Request) -> web.Response:
        path = Path(directory) / uuid.uuid4().hex
        with path.open("wb") as f:
            async for chunk in request.content.iter_chunked(CHUNK):
                f.write(chunk)
        size = path.stat().st_size
        path.unlink()
        return web.json_response({"bytes": size})

    app = web.Application(client_max_size=1 << 40)
    app.router.add_post("/upload", receive)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


async def plain_upload(session: aiohttp.ClientSession, url: str, path: Path) -> None:
    size = await asyncio.to_thread(os.path.getsize, path)
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
    async with session.post(f"{url}/upload", headers=headers, data=file_body(path)) as resp:
        assert resp.status == 200 and (await resp.json())["bytes"] == size


# --- the API -----------------------------------------------------------------------------------


async def api(session: aiohttp.ClientSession, method: str, url: str, token: str | None = None, **kw: Any) -> Any:
    headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **kw.pop("headers", {})}
    async with session.request(method, url, headers=headers, **kw) as resp:
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        assert resp.status < 300, (method, url, resp.status, body)
        return body


async def login(session: aiohttp.ClientSession, url: str, email: str) -> str:
    pair = await api(session, "POST", f"{url}/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    return str(pair["access_token"])


async def wait_job(session: aiohttp.ClientSession, url: str, token: str, job: dict[str, Any]) -> dict[str, Any]:
    while job["state"] in ("queued", "running"):
        await asyncio.sleep(0.2)
        job = await api(session, "GET", f"{url}/api/v1/jobs/{job['id']}", token)
    assert job["state"] == "succeeded", job
    return job


def seconds_between(a: str, b: str) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()


async def segment_urls(session: aiohttp.ClientSession, master_url: str) -> list[str]:
    """Every segment URL of the ladder as a player reaches them from the signed master playlist."""
    base = master_url.split("?", 1)[0].rsplit("/", 1)[0]
    async with session.get(master_url) as resp:
        master = await resp.text()
    urls = []
    for line in master.splitlines():
        if line and not line.startswith("#"):
            variant = f"{base}/{line}"
            async with session.get(variant) as resp:
                assert resp.status == 200, (variant, resp.status)
                playlist = await resp.text()
            vbase = variant.split("?", 1)[0].rsplit("/", 1)[0]
            urls += [f"{vbase}/{seg}" for seg in playlist.splitlines() if seg and not seg.startswith("#")]
    return urls


async def serve_segments(session: aiohttp.ClientSession, viewers: list[list[str]], seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def viewer(urls: list[str]) -> None:
        nonlocal errors
        i = 0
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            async with session.get(urls[i % len(urls)]) as resp:
                await resp.read()
                errors += resp.status != 200
            latencies.append((time.perf_counter() - started) * 1000)
            i += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(viewer(u) for u in viewers))
    elapsed = time.perf_counter() - t0
    data = sorted(latencies)
    return {"requests": len(data), "errors": errors, "rps": len(data) / elapsed,
            "p50": data[len(data) // 2], "p99": data[min(len(data) - 1, int(0.99 * len(data)))]}  # fmt: skip


async def run(args: argparse.Namespace, server: Server, work: Path) -> None:
    url = server.url
    assert server.proc is not None
    pid = server.proc.pid
    timeout = aiohttp.ClientTimeout(total=None, sock_read=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        email = f"bench-media-{uuid.uuid4().hex[:6]}@example.com"
        server.create_admin(email, PASSWORD)
        admin = await login(session, url, email)

        # 1. transcode: by hand, then the job
        video = work / "source.mp4"
        await asyncio.to_thread(make_video, video, args.video_seconds)
        by_hand = work / "by-hand"
        for rung in ("1080p", "720p", "480p", "360p"):
            (by_hand / rung).mkdir(parents=True, exist_ok=True)
        settings = SimpleNamespace(media_ffmpeg="ffmpeg", media_ffmpeg_threads=0)
        cmd = transcode_command(settings, video, by_hand, Probe(1920, 1080, args.video_seconds, True))  # type: ignore[arg-type]
        cmd = [c for c in cmd if c not in ("-progress", "pipe:1", "-nostats")]
        t0 = time.perf_counter()
        await asyncio.to_thread(subprocess.run, cmd, check=True, stdout=subprocess.DEVNULL)
        hand_s = time.perf_counter() - t0

        course = await api(session, "POST", f"{url}/api/v1/courses", admin, json={"title": "Bench media"})
        lecture_in = {"title": "L", "media_kind": "video", "media_url": "https://example.com/x.mp4", "duration_s": 1}
        lecture = await api(session, "POST", f"{url}/api/v1/courses/{course['id']}/lectures", admin, json=lecture_in)
        upload_id = await tus_upload(session, url, admin, video)
        job = await api(session, "POST", f"{url}/api/v1/lectures/{lecture['id']}/media", admin,
                        json={"upload_id": upload_id})  # fmt: skip
        job = await wait_job(session, url, admin, job)
        job_s = seconds_between(job["started_at"], job["finished_at"])

        # 2. upload throughput: tus against a plain streaming POST
        blob = work / "blob.bin"
        with blob.open("wb") as f:
            for _ in range(args.upload_mb):
                f.write(os.urandom(1 << 20))
        port = free_port()
        peer = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.media", "--plain-server", str(port), str(work)
        )
        try:
            for _ in range(100):
                try:
                    async with session.post(f"http://127.0.0.1:{port}/upload", data=b"x") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            tus_s, plain_s = [], []
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                await plain_upload(session, f"http://127.0.0.1:{port}", blob)
                plain_s.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                done = await tus_upload(session, url, admin, blob)
                tus_s.append(time.perf_counter() - t0)
                await api(session, "DELETE", f"{url}/api/v1/uploads/{done}", admin,
                          headers={"Tus-Resumable": "1.0.0"})  # fmt: skip
        finally:
            peer.terminate()
            await asyncio.wait_for(peer.wait(), 10)

        # 3. memory while uploads run in parallel, small files then large ones
        memory = {}
        for mb in (args.small_mb, args.large_mb):
            part = work / f"part-{mb}.bin"
            with part.open("wb") as f:
                f.write(os.urandom(mb << 20))
            with RssSampler(pid) as sampler:
                ids = await asyncio.gather(*(tus_upload(session, url, admin, part) for _ in range(args.parallel)))
            memory[mb] = (sampler.before, sampler.peak)
            for done in ids:
                await api(session, "DELETE", f"{url}/api/v1/uploads/{done}", admin,
                          headers={"Tus-Resumable": "1.0.0"})  # fmt: skip
            part.unlink()

        # 4. segment serving: enrolled learners with their own signed URLs
        await api(session, "POST", f"{url}/api/v1/courses/{course['id']}/publish", admin)
        viewers = []
        for n in range(args.viewers):
            learner = f"bench-viewer-{n}-{uuid.uuid4().hex[:6]}@example.com"
            await api(session, "POST", f"{url}/api/v1/auth/register",
                      json={"email": learner, "password": PASSWORD, "display_name": f"Viewer {n}"})  # fmt: skip
            token = await login(session, url, learner)
            await api(session, "POST", f"{url}/api/v1/courses/{course['id']}/enroll", token)
            played = await api(session, "GET", f"{url}/api/v1/lectures/{lecture['id']}", token)
            viewers.append(await segment_urls(session, played["media_url"]))
        serving = await serve_segments(session, viewers, args.seconds)

    print(f"\nmachine: {platform.node()} ({os.cpu_count()} CPUs), Python {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")  # fmt: skip
    print(f"\n{'what':<52} {'studyhall':>12} {'peer':>12} {'ratio':>7}")
    print(f"{f'transcode {args.video_seconds:.0f} s 1080p to the ladder (s)':<52} {job_s:>12.2f} "
          f"{hand_s:>12.2f} {job_s / hand_s:>6.2f}x   (peer: ffmpeg by hand, same command)")  # fmt: skip
    tus_rate, plain_rate = args.upload_mb / min(tus_s), args.upload_mb / min(plain_s)
    print(f"{f'upload {args.upload_mb} MiB (MiB/s, best of {args.rounds})':<52} {tus_rate:>12.0f} "
          f"{plain_rate:>12.0f} {tus_rate / plain_rate:>6.2f}x   (peer: plain aiohttp streaming POST)")  # fmt: skip
    for mb, (before, peak) in memory.items():
        print(f"{f'server RSS, {args.parallel} uploads of {mb} MiB at once (MiB)':<52} "
              f"{before / 1024:>6.0f} -> {peak / 1024:<5.0f}")  # fmt: skip
    print(f"{f'segments, {args.viewers} viewers, access checked (req/s)':<52} {serving['rps']:>12.0f}   "
          f"p50 {serving['p50']:.1f} ms, p99 {serving['p99']:.1f} ms, errors {serving['errors']:.0f}")  # fmt: skip
    print(f"jobs at once per node: STUDYHALL_MEDIA_WORKERS (default 1; this run: "
          f"{server.env.get('STUDYHALL_MEDIA_WORKERS', '1')})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video-seconds", type=float, default=60.0)
    parser.add_argument("--upload-mb", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=20)
    parser.add_argument("--small-mb", type=int, default=8)
    parser.add_argument("--large-mb", type=int, default=64)
    parser.add_argument("--viewers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--event-loop", choices=["asyncio", "uvloop"], default="asyncio",
                        help="studyhall's event loop (STUDYHALL_EVENT_LOOP)")  # fmt: skip
    parser.add_argument("--plain-server", nargs=2, metavar=("PORT", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_server:
        plain_server(int(args.plain_server[0]), args.plain_server[1])
        return
    env = {"STUDYHALL_MEDIA_EXECUTOR": "local", "STUDYHALL_MEDIA_QUOTA_BYTES": str(64 << 30),
           "STUDYHALL_MEDIA_UPLOADS_PER_USER": "1000", "STUDYHALL_RATE_LIMIT_PER_MINUTE": "100000",
           "STUDYHALL_EVENT_LOOP": args.event_loop}  # fmt: skip
    server = Server(os.environ.get("STUDYHALL_DATABASE_URL"), env, pin=False)
    server.start()
    try:
        with tempfile.TemporaryDirectory(prefix="studyhall-bench-media-") as work:
            asyncio.run(run(args, server, Path(work)))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
