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
    ``main``; ``run_argv(entry, limits)`` gets the entry file. ``address_space_limit`` says whether the
    run may also be held by ``RLIMIT_AS`` (not for V8, which reserves far more address space than it
    uses; node gets ``--max-old-space-size`` instead). ``oom_markers`` are what the runtime prints on
    stderr when it cannot get memory.
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

    @property
    def compiled(self) -> bool:
        return self.compile_argv is not None

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
        ),
    )
}


class LanguageInfo(BaseModel):
    id: str = Field(description="What requests name the language by.")
    name: str
    version: str = Field(description="The installed interpreter's or compiler's version.")
    compiled: bool = Field(description="Whether programs are compiled first (with their own limits).")
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
                main_file=lang.main_file,
                extensions=list(lang.suffixes),
            )
        )
    return found
