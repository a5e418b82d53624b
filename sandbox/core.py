"""The sandbox's pure rules: limits, how a run's end becomes a status, output comparison, verdicts.

Nothing here touches processes or files, so every rule is tested on its own (tests/test_sandbox_core.py).
"""

from __future__ import annotations

import os
import signal as signals
from collections.abc import Sequence
from dataclasses import dataclass

from sandbox.models import CaseResult, Limits, LimitsIn, PhaseResult, Status, Verdict


class InvalidRequest(ValueError):
    """The request cannot be run as asked (unknown language, a limit above the maximum, ...)."""


def lowered(maximum: Limits, requested: LimitsIn | None) -> Limits:
    """The limits of a run: the server's maximum, lowered where the request asks for less.

    Asking for more than the maximum is refused rather than quietly capped, so that a judge's problem
    setter learns that the limit they wrote is not the one that applies.
    """
    if requested is None:
        return maximum
    values = maximum.model_dump()
    for name, value in requested.model_dump(exclude_none=True).items():
        if value > values[name]:
            raise InvalidRequest(f"limits.{name} may be at most {values[name]} on this server (asked for {value})")
        values[name] = value
    return Limits(**values)


# --- how a run ended -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """Everything observed about one finished program run, before it is given a status.

    ``wait_status`` is the raw status from ``wait4`` (None if the program never reported one: it was
    killed from outside, or could not start); the usage figures come from the run's cgroup.
    """

    wait_status: int | None
    cpu_ms: int
    wall_ms: int
    memory_kb: int
    stdout: bytes
    stderr: bytes
    stdout_overflow: bool
    stderr_overflow: bool
    oom_killed: bool = False
    timed_out_wall: bool = False
    start_error: str | None = None
    process_limit_hit: bool = False
    file_limit_hit: bool = False


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def classify(outcome: Outcome, limits: Limits, *, oom_markers: Sequence[str] = ()) -> PhaseResult:
    """Turn an :class:`Outcome` into a :class:`PhaseResult` (status, exit code or signal, message).

    Order matters: a limit the server enforced explains a death better than the signal it caused
    (the memory limit's OOM kill is SIGKILL, the CPU limit's rlimit is SIGXCPU, the file size limit's
    is SIGXFSZ), and a program that flooded its output is stopped for that whatever else it did.
    ``oom_markers`` are stderr texts with which a runtime says it could not get memory (Python's
    ``MemoryError``) when the address-space rlimit refuses an allocation before the cgroup limit
    is reached.
    """
    exit_code: int | None = None
    signal: int | None = None
    if outcome.wait_status is not None:
        if os.WIFEXITED(outcome.wait_status):
            exit_code = os.WEXITSTATUS(outcome.wait_status)
        elif os.WIFSIGNALED(outcome.wait_status):
            signal = os.WTERMSIG(outcome.wait_status)
    failed = exit_code != 0
    stderr_text = _text(outcome.stderr)
    status, message = Status.OK, None
    if outcome.start_error is not None:
        status, message = Status.INTERNAL_ERROR, f"the program could not be started: {outcome.start_error}"
    elif outcome.stdout_overflow or outcome.stderr_overflow:
        which = "stdout" if outcome.stdout_overflow else "stderr"
        status, message = (
            Status.OUTPUT_LIMIT_EXCEEDED,
            f"{which} passed the output limit of {limits.output_bytes} bytes",
        )
    elif outcome.oom_killed or (failed and any(m in stderr_text for m in oom_markers)):
        status, message = Status.MEMORY_LIMIT_EXCEEDED, f"memory limit of {limits.memory_kb} KiB reached"
    elif outcome.timed_out_wall:
        status, message = Status.TIME_LIMIT_EXCEEDED, f"wall time limit of {limits.wall_ms} ms reached"
    elif outcome.cpu_ms > limits.cpu_ms or signal == signals.SIGXCPU:
        status, message = Status.TIME_LIMIT_EXCEEDED, f"CPU time limit of {limits.cpu_ms} ms reached"
    elif signal == signals.SIGXFSZ or (failed and outcome.file_limit_hit):
        status, message = Status.OUTPUT_LIMIT_EXCEEDED, f"file size limit of {limits.file_size_kb} KiB reached"
    elif failed:
        status = Status.RUNTIME_ERROR
        if signal is not None:
            message = f"killed by signal {signal} ({_signal_name(signal)})"
        else:
            message = f"exited with code {exit_code}"
        if outcome.process_limit_hit:
            message += f"; the process limit of {limits.processes} was reached"
    return PhaseResult(
        status=status,
        stdout=_text(outcome.stdout),
        stderr=stderr_text,
        exit_code=exit_code,
        signal=signal,
        cpu_ms=outcome.cpu_ms,
        wall_ms=outcome.wall_ms,
        memory_kb=outcome.memory_kb,
        truncated=outcome.stdout_overflow or outcome.stderr_overflow,
        message=message,
    )


def _signal_name(number: int) -> str:
    try:
        return signals.Signals(number).name
    except ValueError:
        return "unknown"


def compile_failed(result: PhaseResult) -> PhaseResult:
    """A compile that did not succeed, as the run's outcome: its status becomes ``compile_error``
    unless the sandbox itself failed (``internal_error`` stays what it is)."""
    if result.status == Status.INTERNAL_ERROR:
        return result
    message = result.message or "the compiler reported errors"
    return result.model_copy(update={"status": Status.COMPILE_ERROR, "message": f"compilation failed: {message}"})


# --- judging ---------------------------------------------------------------------------------------


def normalized_lines(text: str) -> list[str]:
    """Output as the judge compares it: each line without trailing whitespace, no trailing blank lines."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def outputs_match(expected: str, actual: str) -> bool:
    """True when ``actual`` equals ``expected`` up to trailing whitespace per line and trailing blank lines."""
    return normalized_lines(expected) == normalized_lines(actual)


def case_verdict(run: PhaseResult, expected_output: str) -> Verdict:
    if run.status != Status.OK:
        return Verdict(run.status.value)
    return Verdict.ACCEPTED if outputs_match(expected_output, run.stdout) else Verdict.WRONG_ANSWER


def overall_verdict(cases: Sequence[CaseResult]) -> Verdict:
    """``accepted`` when every case is, else the verdict of the first case that is not (skipped cases
    only follow a failure, so they are never the first)."""
    for case in cases:
        if case.verdict != Verdict.ACCEPTED:
            return case.verdict
    return Verdict.ACCEPTED
