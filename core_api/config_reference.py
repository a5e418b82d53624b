"""The configuration reference (``docs/configuration.md``), generated from :class:`~core_api.settings.Settings`.

Every setting's name, default, allowed range and description come from the settings model itself, so the
reference cannot drift from what the server accepts: ``studyhall config-reference`` prints it, and a test
compares it with the file in ``docs/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import annotated_types
from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from core_api.settings import ENV_PREFIX, Settings

# Sections of the reference, by the first setting name prefix that matches (in this order).
SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Server, database and accounts", ()),
    (
        "Abuse limits and CORS",
        ("register_", "password_hash_", "login_", "cors_", "metrics_", "eio_", "sio_", "ws_ticket"),
    ),
    ("Realtime: presence, chat, Socket.IO and rights", ("presence_", "chat_", "ping_", "ws_", "rights_")),
    ("Watch parties", ("watch_",)),
    ("Sandbox (code execution)", ("sandbox_",)),
    ("Collaborative editing", ("collab_",)),
    ("Group wars (contests and coins)", ("contest_",)),
    ("Courses and progress", ("course_", "progress_", "lecture_", "certificate_")),
    ("Quizzes and the gradebook", ("quiz_",)),
    ("Search", ("search_",)),
)

# Defaults that depend on the machine: shown as what they mean, not as this machine's value.
_COMPUTED_DEFAULTS = {
    "data_dir": "`/var/lib/studyhall` as root, else `~/.local/share/studyhall`",
    "sandbox_workers": "the CPU count",
}

INTRO = """\
# Configuration reference

studyhall reads its settings once at start-up from environment variables named `STUDYHALL_<NAME>` and
validates them: an invalid value stops the server (and every command) with a message naming the
variable. `studyhall check-config` prints the settings in effect, secrets masked. Every setting has a
default that works on a fresh machine (embedded Postgres, no Redis).

This page is generated from the settings model (`core_api/settings.py`) by `studyhall config-reference`;
a test keeps it equal to the code. Do not edit it by hand.
"""


def section_of(name: str) -> str:
    for title, prefixes in SECTIONS[1:]:
        if name.startswith(prefixes):
            return title
    return SECTIONS[0][0]


def _default(name: str, field: FieldInfo) -> str:
    if name in _COMPUTED_DEFAULTS:
        return _COMPUTED_DEFAULTS[name]
    value: Any = field.default
    if value is PydanticUndefined and field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, Path):
        return f"`{value}`"
    if isinstance(value, (list, tuple, set, frozenset)):
        return f"`{','.join(str(v) for v in value)}`" if value else "empty"
    if value == "":
        return "empty"
    return f"`{value}`"


def _allowed(field: FieldInfo) -> str:
    low = high = None
    parts: list[str] = []
    for meta in field.metadata:
        if isinstance(meta, annotated_types.Ge):
            low = f"≥ {meta.ge}"
        elif isinstance(meta, annotated_types.Gt):
            low = f"> {meta.gt}"
        elif isinstance(meta, annotated_types.Le):
            high = f"≤ {meta.le}"
        elif isinstance(meta, annotated_types.Lt):
            high = f"< {meta.lt}"
    parts.extend(p for p in (low, high) if p)
    args = getattr(field.annotation, "__args__", ())
    if getattr(field.annotation, "__origin__", None) is not None and all(isinstance(a, str) for a in args) and args:
        parts.append("one of " + ", ".join(f"`{a}`" for a in args))
    return ", ".join(parts)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def reference_markdown() -> str:
    """The whole reference page, as ``docs/configuration.md`` holds it."""
    by_section: dict[str, list[str]] = {title: [] for title, _ in SECTIONS}
    for name, field in Settings.model_fields.items():
        row = (
            f"| `{ENV_PREFIX}{name.upper()}` | {_default(name, field)} | {_cell(_allowed(field))} "
            f"| {_cell(field.description or '')} |"
        )
        by_section[section_of(name)].append(row)
    out = [INTRO]
    for title, rows in by_section.items():
        if not rows:
            continue
        out.append(f"## {title}\n")
        out.append("| variable | default | allowed | meaning |")
        out.append("| --- | --- | --- | --- |")
        out.extend(rows)
        out.append("")
    return "\n".join(out).rstrip() + "\n"
