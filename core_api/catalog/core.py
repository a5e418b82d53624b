"""Pure rules of course management: normalising categories and tags, the lifecycle's transitions.

No I/O here: the service (catalog/service.py) and courses.py call these with what they read.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Literal

from core_api.errors import conflict, invalid

Status = Literal["draft", "published", "unpublished", "archived"]

_SPACES = re.compile(r"\s+")


def normalise_label(raw: str, *, max_length: int, field: str) -> str:
    """A category or tag as stored and matched: NFKC, trimmed, lower-case, inner whitespace as one space.

    Refuses (``invalid_input`` naming ``field``) what is empty once trimmed, longer than ``max_length``
    characters, or holds control characters.
    """
    text = _SPACES.sub(" ", unicodedata.normalize("NFKC", raw)).strip().lower()
    if not text:
        raise invalid(f"{field} must not be empty", field=field)
    if any(unicodedata.category(ch).startswith("C") for ch in text):
        raise invalid(f"{field} must not contain control characters", field=field)
    if len(text) > max_length:
        raise invalid(f"{field} is longer than {max_length} characters: {text[:40]!r}", field=field)
    return text


def normalise_tags(raw: Iterable[str], *, max_tags: int, max_length: int, field: str = "tags") -> list[str]:
    """Tags normalised, repeats dropped (first kept), at most ``max_tags`` of them (else ``invalid_input``)."""
    tags: list[str] = []
    for item in raw:
        tag = normalise_label(item, max_length=max_length, field=field)
        if tag not in tags:
            tags.append(tag)
    if len(tags) > max_tags:
        raise invalid(f"at most {max_tags} {field} (got {len(tags)})", field=field)
    return tags


def normalise_category(raw: str | None, *, max_length: int) -> str | None:
    """The category as stored; ``None`` or blank clears it."""
    if raw is None or not raw.strip():
        return None
    return normalise_label(raw, max_length=max_length, field="category")


# --- the lifecycle -------------------------------------------------------------------------------


def check_unpublish(status: str) -> bool:
    """May a course in ``status`` be unpublished? False when it already is (nothing to do)."""
    if status == "unpublished":
        return False
    if status == "draft":
        raise conflict("this course was never published: there is nothing to unpublish")
    if status == "archived":
        raise conflict("this course is archived: restore it first")
    return True


def check_publish(status: str) -> bool:
    """May a course in ``status`` be published? False when it already is."""
    if status == "published":
        return False
    if status == "archived":
        raise conflict("this course is archived: restore it before publishing it")
    return True


def check_archive(status: str) -> bool:
    """May a course be archived? False when it already is; any other status can be."""
    return status != "archived"


def restored_status(status: str, archived_from: str | None) -> str:
    """The status an archived course returns to (the one it had when archived)."""
    if status != "archived" or archived_from is None:
        raise conflict("this course is not archived")
    return archived_from


def check_writable(status: str) -> None:
    """An archived course is read-only: its content, price, tags and prerequisites stay as they are."""
    if status == "archived":
        raise conflict("this course is archived and read-only: restore it to change it")


def enrollment_closed_reason(status: str) -> str | None:
    """Why a course in ``status`` takes no new enrollments or purchases; None when it does."""
    return {
        "published": None,
        "draft": "this course is a draft; it opens for enrollment once published",
        "unpublished": "this course is unpublished: it takes no new enrollments (learners already enrolled keep it)",
        "archived": "this course is archived: it takes no new enrollments (learners already enrolled keep it)",
    }.get(status, "this course takes no enrollments")


def delete_refusal(enrolled: int) -> str | None:
    """Why a course with ``enrolled`` learners may not be deleted; None when it may."""
    if enrolled <= 0:
        return None
    learners = "learner is" if enrolled == 1 else "learners are"
    return (
        f"{enrolled} {learners} enrolled in this course, so it cannot be deleted: archive it instead, "
        "which keeps it for them, read-only and out of the catalogue"
    )
