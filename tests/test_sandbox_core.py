"""The sandbox's pure rules, without processes: comparison, verdicts, statuses, limits, the seccomp
program (run on a small BPF interpreter), and init's protocol."""

from __future__ import annotations

import errno
import os
import signal
import struct

import pytest

from sandbox.core import InvalidRequest, Outcome, case_verdict, classify, lowered, outputs_match, overall_verdict
from sandbox.launch import Phase, go_message, parse_report, rlimits
from sandbox.models import (
    CaseResult,
    JudgeRequest,
    Limits,
    LimitsIn,
    PhaseResult,
    RunRequest,
    SourceFile,
    Status,
    TestCase,
    Verdict,
)
from sandbox.seccomp import ARCHES, RET_ALLOW, RET_KILL_PROCESS, filter_for

LIMITS = Limits(
    cpu_ms=1000, wall_ms=2000, memory_kb=65536, processes=16, output_bytes=100, file_size_kb=1024, open_files=32
)


@pytest.mark.parametrize(
    ("expected", "actual", "same"),
    [
        ("3", "3\n", True),
        ("1 2\n3", "1 2   \n3\t\n\n\n", True),
        ("a\r\nb", "a\nb", True),
        ("", "\n\n  \n", True),
        ("1 2", "1  2", False),  # inner whitespace counts
        (" 3", "3", False),  # so does leading whitespace
        ("3\n\n4", "3\n4", False),  # and blank lines that are not trailing
        ("3", "", False),
    ],
)
def test_output_comparison_ignores_only_trailing_whitespace(expected: str, actual: str, same: bool) -> None:
    assert outputs_match(expected, actual) is same


def _phase(status: Status = Status.OK, stdout: str = "") -> PhaseResult:
    return PhaseResult(
        status=status, stdout=stdout, stderr="", exit_code=0, signal=None, cpu_ms=1, wall_ms=1, memory_kb=1,
        truncated=False,
    )  # fmt: skip


def test_verdicts() -> None:
    assert case_verdict(_phase(stdout="42\n"), "42") == Verdict.ACCEPTED
    assert case_verdict(_phase(stdout="41\n"), "42") == Verdict.WRONG_ANSWER
    assert case_verdict(_phase(Status.TIME_LIMIT_EXCEEDED, "42"), "42") == Verdict.TIME_LIMIT_EXCEEDED
    cases = [
        CaseResult(index=0, verdict=Verdict.ACCEPTED, run=None),
        CaseResult(index=1, verdict=Verdict.RUNTIME_ERROR, run=None),
        CaseResult(index=2, verdict=Verdict.WRONG_ANSWER, run=None),
    ]
    assert overall_verdict(cases) == Verdict.RUNTIME_ERROR
    assert overall_verdict(cases[:1]) == Verdict.ACCEPTED


def outcome(**overrides: object) -> Outcome:
    values: dict[str, object] = {
        "wait_status": 0, "cpu_ms": 10, "wall_ms": 12, "memory_kb": 100, "stdout": b"", "stderr": b"",
        "stdout_overflow": False, "stderr_overflow": False,
    }  # fmt: skip
    values.update(overrides)
    return Outcome(**values)  # type: ignore[arg-type]


def exited(code: int) -> int:
    return code << 8


@pytest.mark.parametrize(
    ("observed", "status", "exit_code", "sig"),
    [
        ({}, Status.OK, 0, None),
        ({"wait_status": exited(137)}, Status.RUNTIME_ERROR, 137, None),
        ({"wait_status": signal.SIGSEGV}, Status.RUNTIME_ERROR, None, signal.SIGSEGV),
        ({"wait_status": signal.SIGKILL, "oom_killed": True}, Status.MEMORY_LIMIT_EXCEEDED, None, signal.SIGKILL),
        ({"wait_status": signal.SIGXCPU}, Status.TIME_LIMIT_EXCEEDED, None, signal.SIGXCPU),
        ({"wait_status": None, "cpu_ms": 1001}, Status.TIME_LIMIT_EXCEEDED, None, None),
        ({"wait_status": None, "timed_out_wall": True}, Status.TIME_LIMIT_EXCEEDED, None, None),
        ({"wait_status": signal.SIGXFSZ}, Status.OUTPUT_LIMIT_EXCEEDED, None, signal.SIGXFSZ),
        ({"wait_status": exited(1), "file_limit_hit": True}, Status.OUTPUT_LIMIT_EXCEEDED, 1, None),
        # A flood is stopped for the flood, whatever killing it then looks like.
        ({"wait_status": None, "stdout_overflow": True, "oom_killed": True}, Status.OUTPUT_LIMIT_EXCEEDED, None, None),
        ({"wait_status": None, "start_error": "exec: No such file"}, Status.INTERNAL_ERROR, None, None),
    ],
)
def test_how_a_run_ended_becomes_a_status(
    observed: dict[str, object], status: Status, exit_code: int | None, sig: int | None
) -> None:
    result = classify(outcome(**observed), LIMITS)
    assert (result.status, result.exit_code, result.signal) == (status, exit_code, sig)
    assert (result.message is None) == (status == Status.OK)


def test_a_runtime_that_says_it_ran_out_of_memory_exceeded_the_memory_limit() -> None:
    failed = outcome(wait_status=exited(1), stderr=b"Traceback ...\nMemoryError\n")
    assert classify(failed, LIMITS, oom_markers=("MemoryError",)).status == Status.MEMORY_LIMIT_EXCEEDED
    assert classify(failed, LIMITS).status == Status.RUNTIME_ERROR
    printed = outcome(wait_status=0, stderr=b"MemoryError is a class\n")  # succeeded: not a memory failure
    assert classify(printed, LIMITS, oom_markers=("MemoryError",)).status == Status.OK


def test_process_limit_is_named_in_the_message() -> None:
    result = classify(outcome(wait_status=exited(1), process_limit_hit=True), LIMITS)
    assert result.status == Status.RUNTIME_ERROR and "process limit of 16" in (result.message or "")


def test_limits_may_only_be_lowered() -> None:
    assert lowered(LIMITS, None) == LIMITS
    assert lowered(LIMITS, LimitsIn(cpu_ms=10, memory_kb=2048)).cpu_ms == 10
    with pytest.raises(InvalidRequest, match="wall_ms may be at most 2000"):
        lowered(LIMITS, LimitsIn(wall_ms=2001))


@pytest.mark.parametrize("path", ["../x.py", "/etc/passwd", "a/../../b", ".hidden", "a//b", "a/b/c/d/e.py", "x\0y"])
def test_file_paths_stay_inside_the_work_directory(path: str) -> None:
    with pytest.raises(ValueError, match="relative path"):
        SourceFile(path=path, content="")


def test_requests_need_exactly_one_kind_of_source() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        RunRequest(language="python")
    with pytest.raises(ValueError, match="unique"):
        RunRequest(language="python", files=[SourceFile(path="a.py", content=""), SourceFile(path="a.py", content="")])
    JudgeRequest(language="c", source="", tests=[TestCase(expected_output="")])


# --- init's protocol -------------------------------------------------------------------------------


def test_go_message_carries_rlimits_environment_and_argv() -> None:
    phase = Phase(argv=["/usr/bin/python3", "main.py"], limits=LIMITS, env={"X": "1"}, address_space_limit=True)
    fields = go_message(phase).split(b"\0")
    assert fields[-1] == b""  # every field NUL-terminated
    assert b"LCPU 2 3" in fields and b"LFSIZE 1048576 1048576" in fields and b"LCORE 0 0" in fields
    assert b"LNPROC 34 34" in fields  # well above pids.max (16 + init), so the cgroup refuses first
    assert any(f.startswith(b"LAS ") for f in fields)
    assert b"EX=1" in fields and b"EHOME=/work" in fields and b"C/work" in fields
    assert fields[-3:-1] == [b"A/usr/bin/python3", b"Amain.py"]
    assert not any(name == "AS" for name, *_ in rlimits(Phase(argv=["x"], limits=LIMITS)))


def test_reports_of_init() -> None:
    done = parse_report(b"X 2560 12345 1000 2000 9000", 1.0)
    assert (done.wait_status, done.wall_ms, done.maxrss_kb, done.start_error) == (2560, 12, 9000, None)
    failed = parse_report(f"F {errno.ENOENT} exec".encode(), 0.005)
    assert failed.wait_status is None and failed.start_error == f"exec: {os.strerror(errno.ENOENT)}"
    silent = parse_report(b"", 0.25)
    assert (silent.wait_status, silent.wall_ms) == (None, 250)


# --- the seccomp program, run on a classic-BPF interpreter -----------------------------------------


def run_bpf(program: bytes, arch: int, nr: int, arg0: int = 0) -> int:
    """Evaluate a seccomp filter on one system call (the subset of cBPF the filter uses)."""
    data = struct.pack("=iIQ6Q", nr, arch, 0, arg0, 0, 0, 0, 0, 0)
    insns = [struct.unpack("=HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == 0x20:  # ld [k]
            acc = struct.unpack_from("=I", data, k)[0]
            pc += 1
        elif code in (0x15, 0x35):  # jeq / jge
            taken = acc == k if code == 0x15 else acc >= k
            pc += 1 + (jt if taken else jf)
        elif code == 0x06:  # ret
            return int(k)
        else:
            raise AssertionError(f"unexpected instruction {code:#x}")


@pytest.mark.parametrize("machine", sorted(ARCHES))
def test_the_seccomp_filter(machine: str) -> None:
    arch = ARCHES[machine]
    program = filter_for(machine)
    errno_of = 0x00050000

    def verdict(nr: int, arg0: int = 0, audit_arch: int = arch.audit_arch) -> int:
        return run_bpf(program, audit_arch, nr, arg0)

    assert verdict(arch.socket, 1) == RET_ALLOW  # AF_UNIX
    for family in (2, 10, 17, 16):  # AF_INET, AF_INET6, AF_PACKET, AF_NETLINK
        assert verdict(arch.socket, family) == errno_of | errno.EACCES
    assert verdict(425) == errno_of | errno.ENOSYS  # io_uring_setup
    for nr, err in arch.denied.items():
        assert verdict(nr) == errno_of | err
    assert verdict(0) == RET_ALLOW and verdict(60) == RET_ALLOW
    assert verdict(0, audit_arch=0x40000003) == RET_KILL_PROCESS  # i386: int 0x80 system calls
    if arch.x32_bit:
        assert verdict(0x40000000 | arch.socket, 2) == errno_of | errno.ENOSYS
