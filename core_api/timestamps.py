"""Times clients send: one validated type for every timestamp the API and events take in.

Postgres stores ``timestamptz`` from 4713 BC to 294276 AD, but asyncpg turns Python's ``datetime.max``
(``9999-12-31T23:59:59.999999``) into ``infinity`` and ``datetime.min`` into ``-infinity``, and reads them
back as *naive* datetimes that cannot be compared with aware ones: one stored ``infinity`` made every
later comparison raise. So a time from a client must name its timezone and lie between
:data:`EARLIEST` and :data:`LATEST` (inclusive), far from both ends of what Python can represent, so
that shifting it by any timezone offset or adding a contest's length never overflows.

Use :data:`Timestamp` (or ``Timestamp | None``) for such fields; :func:`check_timestamp` checks a time
parsed some other way (a pagination cursor). A bad time is refused as ``invalid_input``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime

EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)
RANGE_TEXT = f"between {EARLIEST:%Y-%m-%dT%H:%M:%SZ} and {LATEST:%Y-%m-%dT%H:%M:%SZ}"


def check_timestamp(value: datetime) -> datetime:
    """``value`` if it names its timezone and lies within the stored range; ``ValueError`` saying why not."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must name its timezone (end with Z or an offset such as +02:00)")
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"must lie {RANGE_TEXT}") from None
    if not EARLIEST <= utc <= LATEST:
        raise ValueError(f"must lie {RANGE_TEXT}")
    return value


Timestamp = Annotated[AwareDatetime, AfterValidator(check_timestamp)]
"""An ISO-8601 time with a timezone, between :data:`EARLIEST` and :data:`LATEST`."""
