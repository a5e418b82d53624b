"""What goes into the sandbox and what comes out: requests, limits, results, verdicts.

These are pydantic models so that they validate at the edge, travel as JSON (Celery jobs, REST
answers) and describe themselves in OpenAPI. They carry no behaviour beyond validation; the rules
live in :mod:`sandbox.core`.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

MAX_FILES = 32
MAX_SOURCE_CHARS = 512 * 1024
MAX_STDIN_CHARS = 1024 * 1024
MAX_TESTS = 100
_PATH = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*){0,3}$")


class Status(StrEnum):
    """How one program run ended."""

    OK = "ok"
    COMPILE_ERROR = "compile_error"
    RUNTIME_ERROR = "runtime_error"
    TIME_LIMIT_EXCEEDED = "time_limit_exceeded"
    MEMORY_LIMIT_EXCEEDED = "memory_limit_exceeded"
    OUTPUT_LIMIT_EXCEEDED = "output_limit_exceeded"
    INTERNAL_ERROR = "internal_error"


class Verdict(StrEnum):
    """A test case's (or a whole judgement's) outcome: accepted, wrong answer, or why the run failed."""

    ACCEPTED = "accepted"
    WRONG_ANSWER = "wrong_answer"
    COMPILE_ERROR = "compile_error"
    RUNTIME_ERROR = "runtime_error"
    TIME_LIMIT_EXCEEDED = "time_limit_exceeded"
    MEMORY_LIMIT_EXCEEDED = "memory_limit_exceeded"
    OUTPUT_LIMIT_EXCEEDED = "output_limit_exceeded"
    INTERNAL_ERROR = "internal_error"
    SKIPPED = "skipped"  # not run: an earlier case failed and the judge was told to stop there


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Limits(_Frozen):
    """Resource limits of one program run (compile and run phases have their own)."""

    cpu_ms: int = Field(ge=1, description="CPU time of all the program's processes together.")
    wall_ms: int = Field(ge=1, description="Elapsed time from start to exit.")
    memory_kb: int = Field(
        ge=1024, description="Peak memory of all its processes (cgroup accounting, page cache included)."
    )
    processes: int = Field(ge=1, description="Processes and threads alive at once.")
    output_bytes: int = Field(ge=1, description="Bytes kept of stdout and of stderr each; more ends the run.")
    file_size_kb: int = Field(ge=1, description="Largest file the program may write.")
    open_files: int = Field(ge=8, description="Open file descriptors per process.")


class LimitsIn(_Frozen):
    """Limits a request asks for: each one may only lower the server's maximum, never raise it."""

    cpu_ms: int | None = Field(None, ge=1)
    wall_ms: int | None = Field(None, ge=1)
    memory_kb: int | None = Field(None, ge=1024)
    processes: int | None = Field(None, ge=1)
    output_bytes: int | None = Field(None, ge=1)
    file_size_kb: int | None = Field(None, ge=1)
    open_files: int | None = Field(None, ge=8)


def _relative_path(value: str) -> str:
    if not _PATH.match(value) or any(part in (".", "..") for part in value.split("/")):
        raise ValueError(
            "must be a relative path of at most 4 parts made of letters, digits, '_', '-' and '.' "
            "(no leading dot, no '..')"
        )
    return value


FilePath = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_relative_path)]


class SourceFile(_Frozen):
    path: FilePath = Field(description="Where the file goes, relative to the work directory (`main.py`, `lib/util.c`).")
    content: str = Field(max_length=MAX_SOURCE_CHARS)


class _Program(_Frozen):
    language: str = Field(min_length=1, max_length=32, description="A language id from `GET /api/v1/languages`.")
    source: str | None = Field(
        None, max_length=MAX_SOURCE_CHARS, description="The program as one file (the language's main file)."
    )
    files: list[SourceFile] | None = Field(
        None,
        min_length=1,
        max_length=MAX_FILES,
        description="The program as several files; the entry point is the language's main file if present, "
        "else the first file.",
    )
    limits: LimitsIn | None = Field(None, description="Lower limits for the run phase (never above the server's).")
    entry: str | None = Field(
        None,
        max_length=255,
        description="With `files`: the file to run (interpreted languages; compiled ones build every source file).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> _Program:
        if (self.source is None) == (self.files is None):
            raise ValueError("give exactly one of source or files")
        if self.entry is not None and (self.files is None or self.entry not in {f.path for f in self.files}):
            raise ValueError("entry must name one of the files")
        if self.files is not None:
            paths = [f.path for f in self.files]
            if len(set(paths)) != len(paths):
                raise ValueError("file paths must be unique")
            if sum(len(f.content) for f in self.files) > MAX_SOURCE_CHARS:
                raise ValueError(f"the files together must not exceed {MAX_SOURCE_CHARS} characters")
        return self


class RunRequest(_Program):
    """Run a program once with the given standard input."""

    stdin: str = Field("", max_length=MAX_STDIN_CHARS)
    interactive: bool = Field(
        False,
        description="Keep standard input open after `stdin`: input sent while the program runs reaches it, "
        "until it is closed (EOF) or the program ends.",
    )


class TestCase(_Frozen):
    __test__ = False  # not a pytest class

    stdin: str = Field("", max_length=MAX_STDIN_CHARS)
    expected_output: str = Field(max_length=MAX_STDIN_CHARS)


class JudgeRequest(_Program):
    """Compile once, then run the program against each test case in a fresh sandbox."""

    tests: list[TestCase] = Field(min_length=1, max_length=MAX_TESTS)
    stop_at_first_failure: bool = Field(False, description="Skip the remaining cases after the first failing one.")


class PhaseResult(_Frozen):
    """One program run in the sandbox (a compile, or the program itself)."""

    status: Status
    stdout: str
    stderr: str
    exit_code: int | None = Field(description="The exit code, or null when the program was ended by a signal.")
    signal: int | None = Field(description="The signal that ended the program, if one did.")
    cpu_ms: int
    wall_ms: int
    memory_kb: int = Field(
        description="Peak memory: of the program's processes together (cgroup, page cache included) or of its "
        "largest process (peak RSS), whichever is more."
    )
    truncated: bool = Field(description="stdout or stderr was cut at the output limit.")
    message: str | None = Field(None, description="Why the run ended this way, for people (e.g. which limit).")


class RunResult(PhaseResult):
    """The program's run; ``compile`` holds the compile step of compiled languages."""

    compile: PhaseResult | None = None


class CaseResult(_Frozen):
    index: int
    verdict: Verdict
    run: PhaseResult | None = Field(description="The run on this case's input; null when skipped.")


class JudgeResult(_Frozen):
    verdict: Verdict = Field(description="`accepted` if every case was, else the first failing case's verdict.")
    passed: int
    total: int
    compile: PhaseResult | None = None
    cases: list[CaseResult]
