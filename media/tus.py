"""The tus 1.0 resumable upload protocol: its headers, parsed and checked (pure, no I/O).

The core protocol, with the ``creation``, ``termination`` and ``expiration`` extensions
(https://tus.io/protocols/resumable-upload). No maintained tus server fits aiohttp (``aiohttp-tus`` has
had no release since 2022 and has no hooks for authorization, quotas or our storage), so the protocol's
core is here, and the connection handling around it is in :mod:`media.uploads`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from datetime import datetime
from email.utils import format_datetime

from core_api.errors import AppError, ErrorCode, invalid

VERSION = "1.0.0"
EXTENSIONS = "creation,termination,expiration"
CONTENT_TYPE = "application/offset+octet-stream"
METADATA_MAX_BYTES = 4096
METADATA_MAX_PAIRS = 32
_INTEGER = re.compile(r"[0-9]{1,19}")
_KEY = re.compile(r"[A-Za-z0-9._\-]{1,64}")


class VersionMismatch(AppError):
    """``Tus-Resumable`` is missing or names a version this server does not speak: HTTP 412, as tus says."""

    def __init__(self, got: str | None) -> None:
        super().__init__(
            ErrorCode.INVALID_INPUT,
            f"send 'Tus-Resumable: {VERSION}' (got {got!r}): this server speaks tus {VERSION}",
            {"tus_version": VERSION},
        )

    @property
    def status(self) -> int:
        return 412


def check_version(headers: Mapping[str, str]) -> None:
    """Every request but OPTIONS must say ``Tus-Resumable: 1.0.0``."""
    got = headers.get("Tus-Resumable")
    if got != VERSION:
        raise VersionMismatch(got)


def non_negative(headers: Mapping[str, str], name: str) -> int:
    """A required non-negative integer header (``Upload-Length``, ``Upload-Offset``)."""
    raw = headers.get(name)
    if raw is None:
        raise invalid(f"the {name} header is required")
    raw = raw.strip()
    if not _INTEGER.fullmatch(raw):
        raise invalid(f"{name} must be a non-negative integer, got {raw[:40]!r}")
    return int(raw)


def parse_metadata(raw: str | None) -> dict[str, str]:
    """``Upload-Metadata``: comma-separated ``key base64value`` pairs (the value may be left out).

    Values are kept when they are UTF-8 text (file name, type); binary values are refused."""
    if raw is None or not raw.strip():
        return {}
    if len(raw) > METADATA_MAX_BYTES:
        raise invalid(f"Upload-Metadata is longer than {METADATA_MAX_BYTES} characters")
    out: dict[str, str] = {}
    pairs = raw.split(",")
    if len(pairs) > METADATA_MAX_PAIRS:
        raise invalid(f"Upload-Metadata has more than {METADATA_MAX_PAIRS} pairs")
    for pair in pairs:
        parts = pair.strip().split(" ")
        if len(parts) > 2 or not _KEY.fullmatch(parts[0]):
            raise invalid(
                "Upload-Metadata must be comma-separated 'key base64value' pairs (keys: letters, digits, ._-)"
            )
        key = parts[0]
        if key in out:
            raise invalid(f"Upload-Metadata names {key!r} twice")
        value = ""
        if len(parts) == 2:
            try:
                value = base64.b64decode(parts[1], validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise invalid(f"Upload-Metadata value of {key!r} is not base64 of UTF-8 text") from None
            if "\x00" in value:
                raise invalid(f"Upload-Metadata value of {key!r} contains NUL")
        out[key] = value
    return out


def encode_metadata(metadata: Mapping[str, str]) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" if v else k for k, v in sorted(metadata.items()))


def http_date(moment: datetime) -> str:
    """``Upload-Expires`` is an RFC 9110 date (``Wed, 02 Dec 2026 19:44:22 GMT``)."""
    return format_datetime(moment, usegmt=True)


def base_headers() -> dict[str, str]:
    return {"Tus-Resumable": VERSION, "Cache-Control": "no-store"}
