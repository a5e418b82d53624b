"""The languages the sandbox runs, by id: how to compile and run each, and which version is installed.

Every program runs from the host's ``/usr`` (mounted read-only), so each language uses the system's
interpreter or compiler: ``/usr/bin/python3`` rather than a private Python under /root (which the
sandbox user could not read and whose start-up is three times slower), Debian's ``node``, ``gcc`` and
``g++``. A language whose program is missing on this machine is simply not offered.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from sandbox.models import Limits

Argv = list[str]


@dataclass(frozen=True)
class Language:
    """One language: its id, files, and the commands of its compile (if any) and run steps.

    ``compile_argv(sources)`` gets the source files to compile (work-directory relative) and produces
    ``main``; ``run_argv(entry, limits)`` gets the entry file. ``check_argv(sources)`` checks an
    interpreted language's sources for syntax errors (what ``py_compile`` and ``node --check`` do) and
    produces nothing: when a run fails with one of ``syntax_markers`` on stderr, the check decides whether
    it is a ``compile_error`` (as DOMjudge treats it) rather than a runtime error.
    ``address_space_limit`` says whether the
    run may also be held by ``RLIMIT_AS`` (not for V8, which reserves far more address space than it
    uses; node gets ``--max-old-space-size`` instead). ``oom_markers`` are what the runtime prints on
    stderr when it cannot get memory.

    A *run* (not a judged test case) shows its output as the program writes it and keeps what was written
    before a limit killed it, so its output must not wait in the program's own buffers: ``live_env`` and
    ``live_prefix`` make stdout unbuffered or line-buffered (``PYTHONUNBUFFERED``; coreutils' ``stdbuf
    -oL`` for C and C++, which works by preloading a library into dynamically linked programs; Node writes
    to pipes synchronously already). Judged runs keep the default buffering, which output-heavy solutions
    are timed with.
    """

    id: str
    name: str
    main_file: str
    suffixes: tuple[str, ...]
    executable: str
    version_argv: Argv
    version_pattern: str
    run_argv: Callable[[str, Limits], Argv]
    compile_argv: Callable[[Sequence[str]], Argv] | None = None
    address_space_limit: bool = True
    oom_markers: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    check_argv: Callable[[Sequence[str]], Argv] | None = None
    check_suffixes: tuple[str, ...] = ()
    syntax_markers: tuple[str, ...] = ()
    live_env: dict[str, str] = field(default_factory=dict)
    live_prefix: tuple[str, ...] = ()

    @property
    def compiled(self) -> bool:
        return self.compile_argv is not None

    def checked_sources(self, paths: Sequence[str]) -> list[str]:
        """The files the syntax check looks at (a JavaScript program's ``.json`` files are data)."""
        return [p for p in paths if p.endswith(self.check_suffixes)]

    def sources(self, paths: Sequence[str]) -> list[str]:
        return [p for p in paths if p.endswith(self.suffixes)]

    def entry(self, paths: Sequence[str], wanted: str | None = None) -> str:
        """The file to run: the one asked for, else the main file if the program has one, else its first file."""
        if wanted is not None and wanted in paths:
            return wanted
        return self.main_file if self.main_file in paths else paths[0]


def _node_argv(entry: str, limits: Limits) -> Argv:
    heap_mb = max(16, limits.memory_kb // 1024)
    return ["/usr/bin/node", f"--max-old-space-size={heap_mb}", "--", entry]


# What ``python -m py_compile`` does, without writing bytecode (its cache would go next to the program, or,
# with PYTHONPYCACHEPREFIX, make every standard module compile from source on each start).
_PY_CHECK = """import sys, traceback
for path in sys.argv[1:]:
    with open(path, "rb") as f:
        source = f.read()
    try:
        compile(source, path, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        sys.stderr.write("".join(traceback.format_exception_only(exc)))
        sys.exit(1)
"""


def _python_check(sources: Sequence[str]) -> Argv:
    return ["/usr/bin/python3", "-s", "-B", "-c", _PY_CHECK, *sources]


def _node_check(sources: Sequence[str]) -> Argv:
    # ``node --check`` takes one file: check each, stop at the first with an error.
    script = 'for f; do /usr/bin/node --check -- "$f" || exit 1; done'
    return ["/bin/sh", "-c", script, "check", *sources]


# Line-buffered stdout for C and C++ runs (see Language); without stdbuf they keep the default buffering.
_STDBUF = ("/usr/bin/stdbuf", "-oL") if os.access("/usr/bin/stdbuf", os.X_OK) else ()


LANGUAGES: dict[str, Language] = {
    lang.id: lang
    for lang in (
        Language(
            id="python",
            name="Python 3",
            main_file="main.py",
            suffixes=(".py",),
            executable="/usr/bin/python3",
            version_argv=["/usr/bin/python3", "--version"],
            version_pattern=r"Python (\S+)",
            # -s: no user site directory; -B: no __pycache__ next to the learner's modules.
            run_argv=lambda entry, limits: ["/usr/bin/python3", "-s", "-B", "--", entry],
            oom_markers=("MemoryError",),
            check_argv=_python_check,
            check_suffixes=(".py",),
            # IndentationError and TabError are SyntaxErrors; NUL bytes in a source are a ValueError.
            syntax_markers=("SyntaxError", "IndentationError", "TabError", "null bytes"),
            live_env={"PYTHONUNBUFFERED": "1"},
        ),
        Language(
            id="javascript",
            name="JavaScript (Node.js)",
            main_file="main.js",
            suffixes=(".js", ".mjs", ".cjs", ".json"),
            executable="/usr/bin/node",
            version_argv=["/usr/bin/node", "--version"],
            version_pattern=r"v(\S+)",
            run_argv=_node_argv,
            address_space_limit=False,
            oom_markers=("JavaScript heap out of memory",),
            check_argv=_node_check,
            check_suffixes=(".js", ".mjs", ".cjs"),
            syntax_markers=("SyntaxError",),
        ),
        Language(
            id="c",
            name="C (gcc, C17)",
            main_file="main.c",
            suffixes=(".c",),
            executable="/usr/bin/gcc",
            version_argv=["/usr/bin/gcc", "-dumpfullversion"],
            version_pattern=r"(\S+)",
            compile_argv=lambda sources: ["/usr/bin/gcc", "-std=gnu17", "-O2", "-pipe", "-o", "main", *sources, "-lm"],
            run_argv=lambda entry, limits: ["./main"],
            live_prefix=_STDBUF,
        ),
        Language(
            id="cpp",
            name="C++ (g++, C++17)",
            main_file="main.cpp",
            suffixes=(".cpp", ".cc", ".cxx"),
            executable="/usr/bin/g++",
            version_argv=["/usr/bin/g++", "-dumpfullversion"],
            version_pattern=r"(\S+)",
            compile_argv=lambda sources: ["/usr/bin/g++", "-std=gnu++17", "-O2", "-pipe", "-o", "main", *sources],
            run_argv=lambda entry, limits: ["./main"],
            oom_markers=("std::bad_alloc",),
            live_prefix=_STDBUF,
        ),
    )
}


class LanguageInfo(BaseModel):
    id: str = Field(description="What requests name the language by.")
    name: str
    version: str = Field(description="The installed interpreter's or compiler's version.")
    compiled: bool = Field(description="Whether programs are compiled first (with their own limits).")
    checked: bool = Field(
        description="Whether an interpreted program that fails with a syntax error has its sources checked (with "
        "the compile limits): the syntax error is then a `compile_error`, not a runtime error."
    )
    main_file: str = Field(description="The file a single `source` is saved as, and the default entry point.")
    extensions: list[str]


def installed_ids() -> set[str]:
    """The ids of the languages whose program exists here (cheap: no program is started)."""
    return {lang.id for lang in LANGUAGES.values() if os.access(lang.executable, os.X_OK)}


def installed_languages() -> list[LanguageInfo]:
    """The languages whose programs exist on this machine, with their versions (runs each ``--version``)."""
    found = []
    for lang in LANGUAGES.values():
        if not os.access(lang.executable, os.X_OK):
            continue
        try:
            out = subprocess.run(
                lang.version_argv, capture_output=True, text=True, timeout=20, check=False, env={}, cwd="/"
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        match = re.search(lang.version_pattern, out.stdout + out.stderr)
        found.append(
            LanguageInfo(
                id=lang.id,
                name=lang.name,
                version=match.group(1) if match else "unknown",
                compiled=lang.compiled,
                checked=lang.check_argv is not None,
                main_file=lang.main_file,
                extensions=list(lang.suffixes),
            )
        )
    return found
