"""Sandbox benchmark: hello-world latency per language next to a plain start, and runs/s at concurrency 2.

Usage (as root, like the server: the sandbox makes its own user, cgroups and mounts)::

    .venv/bin/python -m bench.sandbox [--runs 100] [--compiled-runs 30] [--seconds 10]

For each language the same hello-world program runs two ways, alternately, so that whatever else the
machine does weighs on both alike:

- ``plain``: the physical limit, with nothing sandboxed: the source written to a temporary directory,
  compiled with the same command for C and C++, and started with ``asyncio.create_subprocess_exec`` with
  the same arguments and a cleared environment, its output read through pipes;
- ``sandboxed``: ``await runner.run(RunRequest(...))`` on an in-process pool (2 workers): a fresh
  bubblewrap sandbox per run with its seccomp filter, cgroup limits and rlimits, as the server runs it.

Latency is from the call to the result. Then Python hello-worlds run for ``--seconds`` at concurrency
2, sandboxed and plain, for runs/s. Targets (issue 5): Python p50 within 1.3x of plain, 40 Python
runs/s or more on a 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from sandbox.languages import LANGUAGES, installed_languages
from sandbox.models import RunRequest, Status
from sandbox.runner import RUN_LIMITS, LocalRunner, SandboxConfig

HELLO = {
    "python": 'print("hello, world")',
    "javascript": 'console.log("hello, world")',
    "c": '#include <stdio.h>\nint main(void) { puts("hello, world"); return 0; }',
    "cpp": '#include <iostream>\nint main() { std::cout << "hello, world" << std::endl; }',
}
PLAIN_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


@dataclass
class Sample:
    plain: list[float] = field(default_factory=list)
    sandboxed: list[float] = field(default_factory=list)


def pct(values: list[float], q: float) -> float:
    data = sorted(values)
    return data[min(len(data) - 1, int(q * len(data)))] * 1000


async def _exec(argv: list[str], cwd: str) -> bytes:
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, env={**PLAIN_ENV, "HOME": cwd}, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} failed: {err.decode()}")
    return out


def write_source(path: Path, text: str) -> None:
    path.write_text(text)


async def plain_run(language: str, workdir: str) -> float:
    """The same program with nothing sandboxed (compiled first for C and C++, as the sandbox does)."""
    lang = LANGUAGES[language]
    started = time.perf_counter()
    write_source(Path(workdir, lang.main_file), HELLO[language])
    if lang.compile_argv is not None:
        await _exec(lang.compile_argv([lang.main_file]), workdir)
    out = await _exec(lang.run_argv(lang.main_file, RUN_LIMITS), workdir)
    elapsed = time.perf_counter() - started
    assert out.strip() == b"hello, world", out
    return elapsed


async def sandboxed_run(runner: LocalRunner, language: str) -> float:
    started = time.perf_counter()
    result = await runner.run(RunRequest(language=language, source=HELLO[language]))
    elapsed = time.perf_counter() - started
    assert result.status == Status.OK and result.stdout == "hello, world\n", result
    return elapsed


async def latency(runner: LocalRunner, language: str, runs: int, workdir: str) -> Sample:
    sample = Sample()
    for _ in range(3):  # warm the page cache and the pool
        await plain_run(language, workdir)
        await sandboxed_run(runner, language)
    for i in range(runs):
        # Alternate which goes first, so neither always follows the other's clean-up.
        if i % 2:
            sample.plain.append(await plain_run(language, workdir))
            sample.sandboxed.append(await sandboxed_run(runner, language))
        else:
            sample.sandboxed.append(await sandboxed_run(runner, language))
            sample.plain.append(await plain_run(language, workdir))
    return sample


async def throughput(runner: LocalRunner | None, seconds: float, concurrency: int = 2) -> float:
    """Python hello-worlds completed per second by ``concurrency`` clients (plain when runner is None)."""
    done = 0
    deadline = time.perf_counter() + seconds
    dirs = [tempfile.mkdtemp(prefix="bench-plain-") for _ in range(concurrency)]

    async def client(workdir: str) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            if runner is None:
                await plain_run("python", workdir)
            else:
                await sandboxed_run(runner, "python")
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(client(d) for d in dirs))
    elapsed = time.perf_counter() - started
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
    return done / elapsed


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()}, Python {platform.python_version()}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100, help="hello-worlds per interpreted language and way")
    parser.add_argument("--compiled-runs", type=int, default=30, help="hello-worlds per compiled language and way")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each runs/s measurement")
    args = parser.parse_args()

    runner = LocalRunner(SandboxConfig(workers=2))
    if runner.unavailable:
        raise SystemExit(f"the sandbox cannot run here: {runner.unavailable}")
    await runner.open()
    load_before = os.getloadavg()
    versions = {info.id: info.version for info in installed_languages()}
    print(f"machine: {machine()}")
    print(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    print()
    print("| language | runs | plain p50 ms | plain p99 ms | sandboxed p50 ms | sandboxed p99 ms | p50 ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    try:
        workdir = tempfile.mkdtemp(prefix="bench-plain-")
        for language in ("python", "javascript", "c", "cpp"):
            if language not in versions:
                continue
            runs = args.compiled_runs if LANGUAGES[language].compiled else args.runs
            s = await latency(runner, language, runs, workdir)
            p50_plain, p50_box = pct(s.plain, 0.5), pct(s.sandboxed, 0.5)
            print(
                f"| {language} ({versions[language]}) | {runs} | {p50_plain:.1f} | {pct(s.plain, 0.99):.1f} "
                f"| {p50_box:.1f} | {pct(s.sandboxed, 0.99):.1f} | {p50_box / p50_plain:.2f}x |",
                flush=True,
            )
        shutil.rmtree(workdir, ignore_errors=True)
        print()
        sandboxed = await throughput(runner, args.seconds)
        plain = await throughput(None, args.seconds)
        print("| python hello-world, concurrency 2 | runs/s |")
        print("| --- | ---: |")
        print(f"| plain | {plain:.1f} |")
        print(f"| sandboxed | {sandboxed:.1f} |")
    finally:
        await runner.close()
    load_after = os.getloadavg()
    print()
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
