"""The one error type: a stable machine-readable code, a human message, optional details."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    INVALID_INPUT = "invalid_input"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    RATE_LIMITED = "rate_limited"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_INPUT: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.INTERNAL: 500,
    ErrorCode.UNAVAILABLE: 503,
}


class AppError(Exception):
    """An error the client is told about: REST answers it as ``{"error": {...}}`` with its HTTP status."""

    def __init__(self, code: ErrorCode, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}

    @property
    def status(self) -> int:
        return HTTP_STATUS[self.code]

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code.value, "message": self.message, "details": self.details}


def not_found(what: str) -> AppError:
    return AppError(ErrorCode.NOT_FOUND, f"{what} not found")


def forbidden(message: str = "you are not allowed to do this") -> AppError:
    return AppError(ErrorCode.FORBIDDEN, message)


def conflict(message: str, **details: Any) -> AppError:
    return AppError(ErrorCode.CONFLICT, message, details)


def invalid(message: str, **details: Any) -> AppError:
    return AppError(ErrorCode.INVALID_INPUT, message, details)


def unauthorized(message: str = "authentication required") -> AppError:
    return AppError(ErrorCode.UNAUTHORIZED, message)


def refuse_past_limit(
    times: list[datetime], limit: int, window: timedelta, message: str, now: datetime | None = None
) -> None:
    """429 ``rate_limited`` with ``Retry-After`` when ``times`` (the recent events, oldest first, all within
    ``window``) already hold ``limit`` of them: the caller may act again once the oldest that counts leaves the
    window."""
    if len(times) < limit:
        return
    wait = (times[-limit] + window - (now or datetime.now(UTC))).total_seconds()
    raise AppError(ErrorCode.RATE_LIMITED, message, {"retry_after_s": max(1, math.ceil(wait))})
