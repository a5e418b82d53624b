"""The sandbox's Python API (``await runner.run(...)``, ``await runner.judge(...)``) against the real thing:
bubblewrap, cgroups and the system's python3, node, gcc and g++ on this machine."""

from __future__ import annotations

import asyncio
import functools
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.core import InvalidRequest
from sandbox.models import JudgeRequest, LimitsIn, RunRequest, SourceFile, Status, TestCase, Verdict
from sandbox.runner import LocalRunner, QueueFull, SandboxConfig
from tests.sandbox_helpers import pool_config

HELLO = {
    "python": 'print("hello, " + input())',
    "javascript": 'const name = require("fs").readFileSync(0, "utf8").trim(); console.log("hello, " + name)',
    "c": '#include <stdio.h>\nint main(void){char s[64]; scanf("%63s", s); printf("hello, %s\\n", s); return 0;}',
    "cpp": "#include <iostream>\n#include <string>\n"
    'int main(){std::string s; std::cin >> s; std::cout << "hello, " << s << "\\n";}',
}


@pytest.mark.parametrize("language", sorted(HELLO))
async def test_hello_world_runs_in_every_language(runner: LocalRunner, language: str) -> None:
    result = await runner.run(RunRequest(language=language, source=HELLO[language], stdin="world\n"))
    assert result.status == Status.OK, result
    assert result.stdout == "hello, world\n"
    assert (result.exit_code, result.signal, result.truncated) == (0, None, False)
    assert result.wall_ms >= 0 and result.memory_kb > 0
    assert (result.compile is not None) == (language in ("c", "cpp"))


async def test_languages_are_listed_with_their_installed_versions(runner: LocalRunner) -> None:
    languages = {info.id: info for info in await runner.languages()}
    assert set(languages) == {"python", "javascript", "c", "cpp"}
    assert languages["python"].version.startswith("3.")
    assert languages["javascript"].version[0].isdigit()
    assert languages["c"].compiled and not languages["python"].compiled


async def test_python_is_the_system_interpreter_running_as_an_unprivileged_user(runner: LocalRunner) -> None:
    source = "import os, sys\nprint(sys.executable, os.getuid(), os.getgid(), os.getcwd(), sorted(os.listdir('/')))"
    result = await runner.run(RunRequest(language="python", source=source))
    executable, uid, gid, cwd, _ = result.stdout.split(" ", 4)
    assert executable == "/usr/bin/python3"
    assert int(uid) != 0 and int(gid) != 0
    assert cwd == "/work"


async def test_exit_codes_are_reported_exactly_and_signals_apart(runner: LocalRunner) -> None:
    exit137 = await runner.run(RunRequest(language="python", source="raise SystemExit(137)"))
    assert (exit137.status, exit137.exit_code, exit137.signal) == (Status.RUNTIME_ERROR, 137, None)
    segv = await runner.run(RunRequest(language="c", source="int main(void){ volatile int *p = 0; return *p; }"))
    assert (segv.status, segv.exit_code, segv.signal) == (Status.RUNTIME_ERROR, None, 11)
    assert "SIGSEGV" in (segv.message or "")


async def test_a_compile_error_is_reported_with_the_compiler_output(runner: LocalRunner) -> None:
    result = await runner.run(RunRequest(language="cpp", source="int main() { return missing; }"))
    assert result.status == Status.COMPILE_ERROR
    assert "missing" in result.stderr and "error" in result.stderr
    assert result.compile is not None and result.compile.status == Status.RUNTIME_ERROR


async def test_programs_of_several_files(runner: LocalRunner) -> None:
    python = await runner.run(
        RunRequest(
            language="python",
            files=[
                SourceFile(path="main.py", content="from lib.greet import hi\nprint(hi())"),
                SourceFile(path="lib/greet.py", content="def hi():\n    return 'hi from a module'"),
            ],
        )
    )
    assert python.stdout == "hi from a module\n", python
    c = await runner.run(
        RunRequest(
            language="c",
            files=[
                SourceFile(
                    path="main.c",
                    content='#include "add.h"\n#include <stdio.h>\nint main(void){printf("%d\\n", add(2, 3));}',
                ),
                SourceFile(path="add.h", content="int add(int a, int b);"),
                SourceFile(path="add.c", content="int add(int a, int b){ return a + b; }"),
            ],
        )
    )
    assert c.stdout == "5\n", c


async def test_cpu_time_limit(runner: LocalRunner) -> None:
    result = await runner.run(
        RunRequest(language="python", source="while True: pass", limits=LimitsIn(cpu_ms=300, wall_ms=5000))
    )
    assert result.status == Status.TIME_LIMIT_EXCEEDED
    assert result.cpu_ms > 300 and result.wall_ms < 5000
    assert "CPU" in (result.message or "")


async def test_cpu_limit_counts_every_process_together(runner: LocalRunner) -> None:
    source = "import os\nfor _ in range(3):\n    if os.fork() == 0:\n        break\nwhile True: pass"
    result = await runner.run(RunRequest(language="python", source=source, limits=LimitsIn(cpu_ms=400, wall_ms=5000)))
    assert result.status == Status.TIME_LIMIT_EXCEEDED
    assert result.wall_ms < 5000


async def test_wall_time_limit(runner: LocalRunner) -> None:
    result = await runner.run(
        RunRequest(language="python", source="import time\ntime.sleep(60)", limits=LimitsIn(wall_ms=500))
    )
    assert result.status == Status.TIME_LIMIT_EXCEEDED
    assert "wall" in (result.message or "")
    assert result.cpu_ms < 500


async def test_memory_limit_and_peak_memory(runner: LocalRunner) -> None:
    grow = "blocks = []\nwhile True:\n    blocks.append(bytearray(1 << 20))"
    bomb = await runner.run(RunRequest(language="python", source=grow, limits=LimitsIn(memory_kb=64 * 1024)))
    assert bomb.status == Status.MEMORY_LIMIT_EXCEEDED, bomb
    assert bomb.memory_kb >= 60 * 1024
    fits = await runner.run(RunRequest(language="python", source="x = bytearray(40 << 20)\nprint(len(x))"))
    assert fits.status == Status.OK
    assert 40 * 1024 <= fits.memory_kb < 128 * 1024
    node = await runner.run(
        RunRequest(language="javascript", source="const a = []; for (;;) a.push(new Array(1e5).fill(1))",
                   limits=LimitsIn(memory_kb=96 * 1024))
    )  # fmt: skip
    assert node.status == Status.MEMORY_LIMIT_EXCEEDED, node


async def test_output_is_capped_and_a_flood_stopped(runner: LocalRunner) -> None:
    result = await runner.run(
        RunRequest(language="python", source="while True: print('x' * 1000)", limits=LimitsIn(output_bytes=10_000))
    )
    assert result.status == Status.OUTPUT_LIMIT_EXCEEDED
    assert result.truncated and len(result.stdout) == 10_000
    ok = await runner.run(RunRequest(language="python", source="import sys\nsys.stderr.write('e' * 500)"))
    assert ok.status == Status.OK and ok.stderr == "e" * 500 and not ok.truncated


async def test_invalid_utf8_output_is_replaced_not_fatal(runner: LocalRunner) -> None:
    result = await runner.run(RunRequest(language="python", source="import sys\nsys.stdout.buffer.write(b'ok \\xff')"))
    assert result.status == Status.OK and result.stdout == "ok \ufffd"


async def test_large_stdin(runner: LocalRunner) -> None:
    data = "line\n" * 200_000  # 1 MB
    result = await runner.run(
        RunRequest(language="python", source="import sys\nprint(len(sys.stdin.read()))", stdin=data)
    )
    assert result.stdout == f"{len(data)}\n"


async def test_each_run_gets_a_fresh_sandbox(runner: LocalRunner) -> None:
    write = "open('left.txt', 'w').write('x'); open('/tmp/left.txt', 'w').write('x'); print('wrote')"
    look = "import os\nprint(os.path.exists('left.txt'), os.path.exists('/tmp/left.txt'))"
    for _ in range(4):  # every slot of the pool gets used
        assert (await runner.run(RunRequest(language="python", source=write))).stdout == "wrote\n"
        assert (await runner.run(RunRequest(language="python", source=look))).stdout == "False False\n"


async def test_requests_cannot_raise_limits_or_name_unknown_languages(runner: LocalRunner) -> None:
    with pytest.raises(InvalidRequest, match="cpu_ms may be at most"):
        await runner.run(RunRequest(language="python", source="", limits=LimitsIn(cpu_ms=10**9)))
    with pytest.raises(InvalidRequest, match="unknown language"):
        await runner.run(RunRequest(language="cobol", source=""))
    with pytest.raises(InvalidRequest, match=r"needs at least one"):
        await runner.run(RunRequest(language="c", files=[SourceFile(path="notes.txt", content="")]))


async def test_a_full_queue_refuses_at_once(sandbox_machine: None) -> None:
    pool = LocalRunner(pool_config(workers=1, spare_slots=0, queue=1))
    await pool.open()
    try:
        slow = RunRequest(language="python", source="import time; time.sleep(30)", limits=LimitsIn(wall_ms=5000))
        first = await pool.submit(slow)
        second = await pool.submit(slow)
        with pytest.raises(QueueFull):
            await pool.submit(slow)
        assert pool.queued == 2
        for job in (first, second):
            job.result.cancel()
    finally:
        await pool.close()


async def test_concurrent_runs_use_the_workers_in_parallel(runner: LocalRunner) -> None:
    results = await asyncio.gather(
        *(runner.run(RunRequest(language="python", source=f"print({i} * {i})")) for i in range(6))
    )
    assert [r.stdout for r in results] == [f"{i * i}\n" for i in range(6)]


# --- the judge -------------------------------------------------------------------------------------

SUM = "a, b = map(int, input().split())\nprint(a + b)"


async def test_judge_accepts_output_up_to_trailing_whitespace(runner: LocalRunner) -> None:
    verdict = await runner.judge(
        JudgeRequest(
            language="python",
            source="a, b = map(int, input().split())\nprint(a + b, '  ')\nprint()\nprint()",
            tests=[TestCase(stdin="1 2", expected_output="3"), TestCase(stdin="10 -4\n", expected_output="6\n\n")],
        )
    )
    assert verdict.verdict == Verdict.ACCEPTED
    assert (verdict.passed, verdict.total) == (2, 2)
    assert [c.verdict for c in verdict.cases] == [Verdict.ACCEPTED, Verdict.ACCEPTED]


async def test_judge_reports_the_first_failure_and_can_stop_there(runner: LocalRunner) -> None:
    source = "a, b = map(int, input().split())\nif a < 0: raise ValueError\nprint(a + b if a < 100 else 0)"
    tests = [
        TestCase(stdin="1 1", expected_output="2"),
        TestCase(stdin="100 1", expected_output="101"),  # wrong answer
        TestCase(stdin="-1 1", expected_output="0"),  # runtime error
    ]
    every = await runner.judge(JudgeRequest(language="python", source=source, tests=tests))
    assert every.verdict == Verdict.WRONG_ANSWER
    assert [c.verdict for c in every.cases] == [Verdict.ACCEPTED, Verdict.WRONG_ANSWER, Verdict.RUNTIME_ERROR]
    assert every.passed == 1
    stopped = await runner.judge(
        JudgeRequest(language="python", source=source, tests=tests, stop_at_first_failure=True)
    )
    assert [c.verdict for c in stopped.cases] == [Verdict.ACCEPTED, Verdict.WRONG_ANSWER, Verdict.SKIPPED]
    assert stopped.cases[2].run is None


async def test_judge_verdicts_for_failing_statuses(runner: LocalRunner) -> None:
    slow = await runner.judge(
        JudgeRequest(
            language="cpp",
            source="#include <iostream>\nint main(){long a,b; std::cin>>a>>b; if(a==0) for(;;); std::cout<<a+b;}",
            tests=[TestCase(stdin="1 2", expected_output="3"), TestCase(stdin="0 0", expected_output="0")],
            limits=LimitsIn(cpu_ms=300),
        )
    )
    assert slow.verdict == Verdict.TIME_LIMIT_EXCEEDED
    assert slow.compile is not None and slow.compile.status == Status.OK
    broken = await runner.judge(
        JudgeRequest(language="c", source="int main( {", tests=[TestCase(stdin="", expected_output="")])
    )
    assert broken.verdict == Verdict.COMPILE_ERROR and broken.cases == []


async def test_judge_runs_every_case_from_the_program_as_handed_in(runner: LocalRunner) -> None:
    # A program that leaves notes for itself in the work directory must not see them on the next case.
    source = "import os\nseen = os.path.exists('memo')\nopen('memo', 'w').write('x')\nprint(seen)"
    verdict = await runner.judge(
        JudgeRequest(language="python", source=source, tests=[TestCase(expected_output="False")] * 3)
    )
    assert verdict.verdict == Verdict.ACCEPTED, verdict
    compiled = await runner.judge(
        JudgeRequest(
            language="c",
            source='#include <stdio.h>\nint main(void){int a; scanf("%d", &a); printf("%d\\n", a * 2);}',
            tests=[TestCase(stdin=str(i), expected_output=str(2 * i)) for i in range(3)],
        )
    )
    assert compiled.verdict == Verdict.ACCEPTED, compiled


async def test_a_crashed_pool_is_cleaned_up_by_the_next_one(sandbox_machine: None, tmp_path: Path) -> None:
    # A process that opens a pool and dies without closing it leaves mounts and cgroups behind ...
    script = (
        "import asyncio, os\n"
        "from sandbox.runner import LocalRunner, SandboxConfig\n"
        "async def main():\n"
        "    pool = LocalRunner(SandboxConfig(workers=1))\n"
        "    await pool.open()\n"
        "    print(pool.name, flush=True)\n"
        "    os._exit(0)\n"
        "asyncio.run(main())\n"
    )
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    name = done.stdout.strip()
    runtime, cgroup = SandboxConfig().runtime_dir / name, Path("/sys/fs/cgroup/memory/studyhall-sandbox") / name
    assert await asyncio.to_thread(runtime.exists)
    # A sandbox user's process still working for that pool (as a sandbox caught half set up would be).
    sandbox_user = pwd.getpwnam(SandboxConfig().user)
    stray = await asyncio.to_thread(
        functools.partial(
            subprocess.Popen, ["/usr/bin/tail", "-F", str(runtime / "slot-0" / "work" / "nothing")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, user=sandbox_user.pw_uid, group=sandbox_user.pw_gid,
        )
    )  # fmt: skip
    # ... which the next pool to open removes (and it works as usual).
    pool = LocalRunner(pool_config())
    await pool.open()
    try:
        assert await asyncio.to_thread(stray.wait, 10) == -9
        assert not await asyncio.to_thread(runtime.exists)
        assert not await asyncio.to_thread(cgroup.exists)
        assert (await pool.run(RunRequest(language="python", source="print(1)"))).stdout == "1\n"
    finally:
        await pool.close()
