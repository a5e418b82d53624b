"""The access log, without the secrets that URLs carry.

Websocket clients put their credential in the URL (``/yjs/{id}?ticket=`` or ``?token=<access token>``),
and a long-polling Socket.IO client its session id (``/socket.io/?...&sid=``, which is as good as the
session while it lives). aiohttp's access log writes the request line and the ``Referer`` as they came,
so logs, and whoever reads them, would hold working credentials. :class:`RedactingAccessLogger` writes
the value of every query parameter whose name looks secret as ``[redacted]``; the name stays, so the
log still tells how a client authenticated.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote_plus

from aiohttp.web_log import AccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

# Parameter names whose values are credentials, or may be.
SECRET_NAME = re.compile(r"token|ticket|secret|passw|key|sig|auth|session|credential|^sid$|^code$", re.IGNORECASE)
REDACTED = "[redacted]"


def redact_url(url: str) -> str:
    """``url`` (a path with its query, or a whole URL) with the values of secret parameters redacted."""
    head, sep, query = url.partition("?")
    if not sep:
        return url
    query, hash_sep, fragment = query.partition("#")
    pairs = []
    for pair in query.split("&"):
        name, eq, _ = pair.partition("=")
        pairs.append(f"{name}={REDACTED}" if eq and SECRET_NAME.search(unquote_plus(name)) else pair)
    return head + "?" + "&".join(pairs) + hash_sep + fragment


def redact_request_line(line: str) -> str:
    """``GET /path?token=... HTTP/1.1`` with the target's secrets redacted."""
    method, sep, rest = line.partition(" ")
    target, sep2, version = rest.rpartition(" ")
    if not sep or not sep2:
        return redact_url(line)
    return f"{method} {redact_url(target)} {version}"


class RedactingAccessLogger(AccessLogger):
    """aiohttp's access logger (same format), with secrets in the request line and Referer redacted."""

    def _format_line(
        self, request: BaseRequest, response: StreamResponse, time: float
    ) -> Iterable[tuple[str | tuple[str, str], str]]:
        line = []
        for key, value in super()._format_line(request, response, time):
            if key == "first_request_line" or (isinstance(key, tuple) and key[1].lower() == "referer"):
                value = redact_request_line(value) if key == "first_request_line" else redact_url(value)
            line.append((key, value))
        return line
