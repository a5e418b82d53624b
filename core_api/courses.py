"""Courses and their lectures.

A course belongs to the instructor who created it and starts as a draft: only its owner and admins see
it until it is published (a course needs at least one lecture to be published). Everyone signed in
sees published courses. Lectures are ordered by ``position`` and carry a plain video URL or an HLS
playlist with a duration.

**Priced courses** (a price in coins, leaderboards/wallet.py): everyone who may see the course sees its
lectures' titles and durations, but only those entitled to play them — learners enrolled in it (who
bought it), its owner and admins — get the media URL. Others get ``media_url: null`` with ``locked``
and a reason (:mod:`core_api.paywall`, whose rule watch parties apply too).

**Lifecycle** (the transitions are :mod:`core_api.catalog`'s): a published course can be *unpublished*
(out of the catalogue, closed to new enrollments) or *archived* (the same, and read-only); learners
enrolled in either keep seeing it. A *deleted* course (soft: ``deleted_at``) is seen by admins only.
Categories and tags are normalised by :mod:`core_api.catalog.core`; the catalogue filters by them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from core_api.announcements.fanout import notify_learners
from core_api.catalog import store as catalog_store
from core_api.catalog.core import check_publish, check_writable, normalise_category, normalise_label, normalise_tags
from core_api.catalog.limits import check_rate
from core_api.catalog.schemas import CourseIn, CourseListQuery, CourseOut, CoursePatch
from core_api.context import Core, Page, audit, core_of, decode_cursor, new_id, page_of
from core_api.db import Connection, Record
from core_api.errors import AppError, conflict, forbidden, invalid, not_found
from core_api.http import Api, Call, Input, Principal, Reply
from core_api.media_urls import ensure_ladder_kept, unsigned
from core_api.paywall import OPEN, MediaAccess, media_access
from core_api.rbac import require_owner_or_admin, require_role

api = Api()
TAG = "courses"
URL_PATTERN = r"^https?://[^\s]+$"

# --- schemas -------------------------------------------------------------------------------------


class LectureIn(Input):
    title: str = Field(min_length=1, max_length=200)
    media_kind: Literal["video", "hls"] = Field(description="`video`: a file URL; `hls`: an .m3u8 playlist URL.")
    media_url: str = Field(max_length=2048, pattern=URL_PATTERN)
    duration_s: float = Field(ge=0, le=7 * 86400)
    position: int | None = Field(
        None,
        ge=0,
        le=100_000,
        description="Where the lecture goes (0 = first; past the end = last; default: last). The lectures from "
        "there on move down by one: positions are always 0, 1, 2, ... without gaps or repeats.",
    )


class LecturePatch(Input):
    title: str | None = Field(None, min_length=1, max_length=200)
    media_kind: Literal["video", "hls"] | None = None
    media_url: str | None = Field(None, max_length=2048, pattern=URL_PATTERN)
    duration_s: float | None = Field(None, ge=0, le=7 * 86400)
    position: int | None = Field(
        None,
        ge=0,
        le=100_000,
        description="Move the lecture there (past the end = last); the lectures in between shift by one.",
    )


class LectureOut(BaseModel):
    id: uuid.UUID
    course_id: uuid.UUID
    position: int
    title: str
    media_kind: Literal["video", "hls"]
    media_url: str | None = Field(
        description="The video or playlist URL; null when you may not play the lecture (see `locked`)."
    )
    duration_s: float
    created_at: datetime
    locked: bool = Field(
        False,
        description="True when the course is priced and you are not enrolled in it (nor its owner or an admin): "
        "the lecture is listed but not playable until you buy the course.",
    )
    locked_reason: str | None = Field(None, description="Why the lecture is locked and how to open it.")
    media_url_expires_at: datetime | None = Field(
        None,
        description="When `media_url` stops working: set for a video studyhall serves itself (an HLS ladder made "
        "from an upload), whose URL carries a playback token for you alone; read the lecture again for a fresh one.",
    )


class LectureList(BaseModel):
    items: list[LectureOut]


# --- service -------------------------------------------------------------------------------------

_COURSE_COLUMNS = """c.id, c.owner_id, c.title, c.description, c.status, c.created_at, c.updated_at,
    c.published_at, c.archived_at, c.archived_from, c.deleted_at, c.category,
    ARRAY(SELECT t.tag FROM course_tags t WHERE t.course_id = c.id ORDER BY t.tag) AS tags,
    coalesce((SELECT jsonb_agg(jsonb_build_object('id', r.id, 'title', r.title) ORDER BY r.title, r.id)
              FROM course_prerequisites q JOIN courses r ON r.id = q.requires_id
              WHERE q.course_id = c.id AND r.status = 'published' AND r.deleted_at IS NULL), '[]') AS prerequisites,
    (SELECT count(*) FROM lectures l WHERE l.course_id = c.id) AS lecture_count,
    (SELECT coalesce(sum(l.duration_s), 0) FROM lectures l WHERE l.course_id = c.id) AS total_duration_s,
    (SELECT p.coins FROM course_prices p WHERE p.course_id = c.id) AS price_coins"""
_LECTURE_COLUMNS = "id, course_id, position, title, media_kind, media_url, duration_s, created_at"


def course_out(r: Record) -> CourseOut:
    return CourseOut(**dict(r))


def lecture_out(core: Core, user: Principal, r: Record, access: MediaAccess = OPEN) -> LectureOut:
    """A lecture as ``user`` sees it: a locked one without its media URL; a ladder this server serves with a
    playback URL signed for them (core_api/media_urls.py)."""
    if access.locked:
        return LectureOut(**{**dict(r), "media_url": None, "locked": True, "locked_reason": access.reason})
    signed = core.playback.sign(r["media_url"], user.id, float(r["duration_s"] or 0), datetime.now(UTC))
    return LectureOut(**{**dict(r), "media_url": signed.url, "media_url_expires_at": signed.expires_at})


def can_view(course: Record, user: Principal, *, enrolled: bool) -> bool:
    """Admins see every course, deleted ones too; nobody else sees a deleted one. Published: everyone.
    Unpublished and archived: the owner and learners enrolled in it. Drafts: the owner."""
    if user.is_admin:
        return True
    if course["deleted_at"] is not None:
        return False
    if course["status"] == "published" or course["owner_id"] == user.id:
        return True
    return enrolled and course["status"] in ("unpublished", "archived")


async def visible_course(
    conn: Connection, user: Principal, course_id: uuid.UUID, *, lock: bool = False, share: bool = False
) -> Record:
    """The course if the user may see it; one they may not (someone else's draft, a deleted course) is
    reported as not found. ``lock`` takes the row for update; ``share`` holds it against one (an enrollment
    is made under ``share``, so that a concurrent unpublish, archive or delete waits for it or refuses it)."""
    row = await conn.fetchrow(
        f"""SELECT {_COURSE_COLUMNS},
                   EXISTS (SELECT 1 FROM enrollments e WHERE e.course_id = c.id AND e.user_id = $2) AS enrolled
            FROM courses c WHERE c.id = $1"""
        + (" FOR UPDATE OF c" if lock else " FOR SHARE OF c" if share else ""),
        course_id,
        user.id,
    )
    if row is None or not can_view(row, user, enrolled=row["enrolled"]):
        raise not_found("course")
    return row


async def owned_course(conn: Connection, user: Principal, course_id: uuid.UUID, *, lock: bool = False) -> Record:
    """The course if the user may manage it (its owner or an admin)."""
    row = await visible_course(conn, user, course_id, lock=lock)
    require_owner_or_admin(user, row["owner_id"], "course")
    return row


async def writable_course(conn: Connection, user: Principal, course_id: uuid.UUID) -> Record:
    """The course, locked, if the user may change its content (owner or admin) and it is not archived."""
    row = await owned_course(conn, user, course_id, lock=True)
    check_writable(row["status"])
    return row


async def visible_lecture(conn: Connection, user: Principal, lecture_id: uuid.UUID) -> tuple[Record, Record]:
    """A lecture and its course, if the user may see the course."""
    lecture = await conn.fetchrow(f"SELECT {_LECTURE_COLUMNS} FROM lectures WHERE id = $1", lecture_id)
    if lecture is None:
        raise not_found("lecture")
    try:
        course = await visible_course(conn, user, lecture["course_id"])
    except AppError:
        raise not_found("lecture") from None
    return lecture, course


async def read_course(core: Core, user: Principal, course_id: uuid.UUID) -> Record:
    async with core.pool.acquire() as conn:
        return await visible_course(conn, user, course_id)


async def read_lecture(core: Core, user: Principal, lecture_id: uuid.UUID) -> LectureOut:
    async with core.pool.acquire() as conn:
        lecture, course = await visible_lecture(conn, user, lecture_id)
        access = await media_access(conn, user, course)
    return lecture_out(core, user, lecture, access)


async def list_lectures(core: Core, user: Principal, course_id: uuid.UUID) -> list[LectureOut]:
    async with core.pool.acquire() as conn:
        course = await visible_course(conn, user, course_id)
        access = await media_access(conn, user, course)
        rows: list[Record] = await conn.fetch(
            f"SELECT {_LECTURE_COLUMNS} FROM lectures WHERE course_id = $1 ORDER BY position, created_at, id",
            course_id,
        )
    return [lecture_out(core, user, r, access) for r in rows]


async def list_courses(core: Core, user: Principal, query: CourseListQuery) -> Page[CourseOut]:
    """The catalogue: published courses, plus the caller's own (any status) and, for admins, every live
    course; ``deleted`` lists deleted ones (admins). Filtered by category and tags (all must match)."""
    settings = core.settings
    at, ident = decode_cursor(query.cursor)
    if query.deleted and not user.is_admin:
        raise forbidden("only admins list deleted courses")
    category = None
    if query.category is not None:
        category = normalise_label(query.category, max_length=settings.course_category_max_length, field="category")
    tags = normalise_tags(
        query.tag, max_tags=settings.course_max_tags, max_length=settings.course_tag_max_length, field="tag"
    )
    args: list[object] = [at, ident, query.limit + 1]

    def param(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    where = ["($1::timestamptz IS NULL OR (c.created_at, c.id) > ($1, $2))"]
    where.append("c.deleted_at IS NOT NULL" if query.deleted else "c.deleted_at IS NULL")
    if query.mine:
        where.append(f"c.owner_id = {param(user.id)}")
    elif not user.is_admin:
        where.append(f"(c.status = 'published' OR c.owner_id = {param(user.id)})")
    if category is not None:
        where.append(f"c.category = {param(category)}")
    if tags:
        # Courses holding every asked tag: found through the tag index, not by scanning the catalogue.
        where.append(
            f"c.id IN (SELECT t.course_id FROM course_tags t WHERE t.tag = ANY({param(tags)}::text[])"
            f" GROUP BY t.course_id HAVING count(*) = {len(tags)})"
        )
    rows = await core.pool.fetch(
        f"""SELECT {_COURSE_COLUMNS} FROM courses c WHERE {" AND ".join(where)}
            ORDER BY c.created_at, c.id LIMIT $3""",
        *args,
    )
    return page_of(rows, query.limit, course_out)


def _taxonomy(core: Core, category: str | None, tags: list[str] | None) -> tuple[str | None, list[str] | None]:
    settings = core.settings
    norm_tags = None
    if tags is not None:
        norm_tags = normalise_tags(tags, max_tags=settings.course_max_tags, max_length=settings.course_tag_max_length)
    return normalise_category(category, max_length=settings.course_category_max_length), norm_tags


async def create_course(core: Core, user: Principal, body: CourseIn) -> Record:
    require_role(user, "instructor", "admin")
    category, tags = _taxonomy(core, body.category, body.tags)
    async with core.transaction() as tx:
        course_id = new_id()
        await tx.conn.execute(
            "INSERT INTO courses (id, owner_id, title, description, category) VALUES ($1, $2, $3, $4, $5)",
            course_id,
            user.id,
            body.title,
            body.description,
            category,
        )
        await catalog_store.replace_tags(tx.conn, course_id, tags or [])
        return await visible_course(tx.conn, user, course_id)


async def update_course(core: Core, user: Principal, course_id: uuid.UUID, body: CoursePatch) -> Record:
    category, tags = _taxonomy(core, body.category, body.tags)
    async with core.transaction() as tx:
        await writable_course(tx.conn, user, course_id)
        await tx.conn.execute(
            "UPDATE courses SET title = coalesce($2, title), description = coalesce($3, description),"
            " category = CASE WHEN $4 THEN $5 ELSE category END, updated_at = now() WHERE id = $1",
            course_id,
            body.title,
            body.description,
            "category" in body.model_fields_set,
            category,
        )
        if tags is not None:
            await catalog_store.replace_tags(tx.conn, course_id, tags)
        return await visible_course(tx.conn, user, course_id)


async def publish_course(core: Core, user: Principal, course_id: uuid.UUID) -> Record:
    """Publish a draft, or publish again an unpublished course (archived ones are restored first)."""
    async with core.transaction() as tx:
        course = await owned_course(tx.conn, user, course_id, lock=True)
        if not check_publish(course["status"]):
            return course
        await check_rate(tx, core, user)
        if course["lecture_count"] == 0:
            raise conflict("a course needs at least one lecture before it can be published")
        await tx.conn.execute(
            "UPDATE courses SET status = 'published', published_at = now(), updated_at = now() WHERE id = $1",
            course_id,
        )
        await audit(tx, user.id, "course.published", "course", course_id, title=course["title"])
        return await visible_course(tx.conn, user, course_id)


async def _keep_ladder(core: Core, conn: Connection, media_url: str | None) -> None:
    """A lecture pointed at one of studyhall's ladders: refused if its files were removed (409)."""
    job_id = None if media_url is None else core.playback.ladder_of(media_url)
    if job_id is not None:
        await ensure_ladder_kept(conn, job_id)


async def add_lecture(core: Core, user: Principal, course_id: uuid.UUID, body: LectureIn) -> Record:
    media_url = body.media_url if body.media_url is None else unsigned(core.settings, body.media_url)
    async with core.transaction() as tx:
        course = await writable_course(tx.conn, user, course_id)
        await _keep_ladder(core, tx.conn, media_url)
        count = await lecture_count(tx.conn, course_id)
        position = count if body.position is None else min(body.position, count)
        # Make room: the lectures at and after the new one move down by one.
        await tx.conn.execute(
            "UPDATE lectures SET position = position + 1 WHERE course_id = $1 AND position >= $2", course_id, position
        )
        row = await tx.conn.fetchrow(
            f"""INSERT INTO lectures (id, course_id, position, title, media_kind, media_url, duration_s)
                VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {_LECTURE_COLUMNS}""",
            new_id(),
            course_id,
            position,
            body.title,
            body.media_kind,
            media_url,
            body.duration_s,
        )
        await tx.conn.execute("UPDATE courses SET updated_at = now() WHERE id = $1", course_id)
        assert row is not None
        if course["status"] == "published":  # a draft's lectures are news to nobody yet
            payload = {"course_id": str(course_id), "course_title": course["title"], "lecture_id": str(row["id"]),
                       "title": row["title"]}  # fmt: skip
            await notify_learners(tx, course_id, "new_lecture", payload)
        return row


async def update_lecture(core: Core, user: Principal, lecture_id: uuid.UUID, body: LecturePatch) -> Record:
    async with core.transaction() as tx:
        lecture, course = await visible_lecture(tx.conn, user, lecture_id)
        require_owner_or_admin(user, course["owner_id"], "course")
        await writable_course(tx.conn, user, course["id"])
        media_url = body.media_url if body.media_url is None else unsigned(core.settings, body.media_url)
        await _keep_ladder(core, tx.conn, media_url)
        position = None
        if body.position is not None:
            lecture = await _lock_lectures(tx.conn, user, lecture_id, course["id"])
            position = min(body.position, await lecture_count(tx.conn, course["id"]) - 1)
            await _move(tx.conn, course["id"], lecture["position"], position)
        row = await tx.conn.fetchrow(
            f"""UPDATE lectures SET title = coalesce($2, title), media_kind = coalesce($3, media_kind),
                    media_url = coalesce($4, media_url), duration_s = coalesce($5, duration_s),
                    position = coalesce($6, position)
                WHERE id = $1 RETURNING {_LECTURE_COLUMNS}""",
            lecture_id,
            body.title,
            body.media_kind,
            media_url,
            body.duration_s,
            position,
        )
        assert row is not None
        return row


async def delete_lecture(core: Core, user: Principal, lecture_id: uuid.UUID) -> None:
    async with core.transaction() as tx:
        _, course = await visible_lecture(tx.conn, user, lecture_id)
        require_owner_or_admin(user, course["owner_id"], "course")
        lecture = await _lock_lectures(tx.conn, user, lecture_id, course["id"])
        if course["status"] == "published" and await lecture_count(tx.conn, course["id"]) <= 1:
            raise conflict("a published course must keep at least one lecture")
        await tx.conn.execute("DELETE FROM lectures WHERE id = $1", lecture_id)
        # Close the gap: the lectures after it move up by one.
        await tx.conn.execute(
            "UPDATE lectures SET position = position - 1 WHERE course_id = $1 AND position > $2",
            course["id"],
            lecture["position"],
        )


async def lecture_count(conn: Connection, course_id: uuid.UUID) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM lectures WHERE course_id = $1", course_id))


async def _lock_lectures(conn: Connection, user: Principal, lecture_id: uuid.UUID, course_id: uuid.UUID) -> Record:
    """Lock the course (its lectures' order changes one transaction at a time) and read the lecture again,
    as it is now: a concurrent move may have changed its position since it was first read. An archived
    course's lectures stay as they are."""
    await writable_course(conn, user, course_id)
    lecture = await conn.fetchrow(f"SELECT {_LECTURE_COLUMNS} FROM lectures WHERE id = $1", lecture_id)
    if lecture is None:
        raise not_found("lecture")
    return lecture


async def _move(conn: Connection, course_id: uuid.UUID, old: int, new: int) -> None:
    """Shift the lectures between a lecture's old and new position by one, toward the gap it leaves."""
    if new < old:
        await conn.execute(
            "UPDATE lectures SET position = position + 1 WHERE course_id = $1 AND position >= $2 AND position < $3",
            course_id, new, old,
        )  # fmt: skip
    elif new > old:
        await conn.execute(
            "UPDATE lectures SET position = position - 1 WHERE course_id = $1 AND position > $2 AND position <= $3",
            course_id, old, new,
        )  # fmt: skip


# --- handlers ------------------------------------------------------------------------------------


@api.route(
    "GET",
    "/courses",
    summary="The catalogue: courses the caller can see",
    tag=TAG,
    description="Published courses, the caller's own (any status) and, for admins, every course not deleted; "
    "unpublished and archived courses of others are not listed (learners enrolled in them find them in "
    "`/me/enrollments`). `category` and `tag` (repeatable: all must match) filter; they are normalised as stored, "
    "so `?tag=Python` finds `python`. A filter that could not be stored (too long, more than "
    "STUDYHALL_COURSE_MAX_TAGS tags) answers 400.",
    query=CourseListQuery,
    response=Page[CourseOut],
    errors=[400, 403],
)
async def get_courses(call: Call) -> Page[CourseOut]:
    return await list_courses(core_of(call), call.me, call.query)


@api.route(
    "POST",
    "/courses",
    summary="Create a draft course (instructor, admin)",
    tag=TAG,
    body=CourseIn,
    response=CourseOut,
    status=201,
    errors=[403],
)
async def post_course(call: Call) -> CourseOut:
    return course_out(await create_course(core_of(call), call.me, call.body))


@api.route("GET", "/courses/{course_id}", summary="One course", tag=TAG, response=CourseOut)
async def get_course(call: Call) -> CourseOut:
    return course_out(await read_course(core_of(call), call.me, call.params["course_id"]))


@api.route(
    "PATCH",
    "/courses/{course_id}",
    summary="Edit a course (owner, admin)",
    tag=TAG,
    description="Only the fields sent change; `tags` replaces the course's tags, `category: null` clears it. "
    "An archived course is read-only (409).",
    body=CoursePatch,
    response=CourseOut,
    errors=[403, 409],
)
async def patch_course(call: Call) -> CourseOut:
    if not call.body.model_fields_set:
        raise invalid("nothing to change")
    return course_out(await update_course(core_of(call), call.me, call.params["course_id"], call.body))


@api.route(
    "POST",
    "/courses/{course_id}/publish",
    summary="Publish a draft or unpublished course (owner, admin)",
    tag=TAG,
    description="Idempotent. An archived course is restored (`POST .../restore`) before it can be published (409).",
    response=CourseOut,
    errors=[403, 409, 429],
)
async def post_publish(call: Call) -> CourseOut:
    return course_out(await publish_course(core_of(call), call.me, call.params["course_id"]))


@api.route(
    "GET",
    "/courses/{course_id}/lectures",
    summary="A course's lectures in order",
    tag=TAG,
    description="Everyone who may see the course gets every lecture's title and duration. Of a priced course, "
    "only learners enrolled in it, its owner and admins get `media_url`; everyone else gets `media_url: null`, "
    "`locked: true` and `locked_reason`. The URLs of studyhall's own HLS ladders are signed for the caller "
    "(`media_url_expires_at`, see `GET /lectures/{id}`).",
    response=LectureList,
)
async def get_lectures(call: Call) -> LectureList:
    return LectureList(items=await list_lectures(core_of(call), call.me, call.params["course_id"]))


@api.route(
    "POST",
    "/courses/{course_id}/lectures",
    summary="Add a lecture (owner, admin)",
    tag=TAG,
    body=LectureIn,
    response=LectureOut,
    status=201,
    errors=[403],
)
async def post_lecture(call: Call) -> LectureOut:
    core = core_of(call)
    return lecture_out(core, call.me, await add_lecture(core, call.me, call.params["course_id"], call.body))


@api.route(
    "GET",
    "/lectures/{lecture_id}",
    summary="One lecture",
    tag=TAG,
    description="`media_url` is null (and `locked` true) for a lecture of a priced course you are not enrolled in. "
    "A video studyhall serves itself (an HLS ladder made from an upload) comes with a playback URL signed for you "
    "alone (`?token=`, no Authorization header needed) that works until `media_url_expires_at`; read the lecture "
    "again for a fresh one (docs/media.md).",
    response=LectureOut,
)
async def get_lecture(call: Call) -> LectureOut:
    return await read_lecture(core_of(call), call.me, call.params["lecture_id"])


@api.route(
    "PATCH",
    "/lectures/{lecture_id}",
    summary="Edit a lecture (course owner, admin)",
    tag=TAG,
    body=LecturePatch,
    response=LectureOut,
    errors=[403],
)
async def patch_lecture(call: Call) -> LectureOut:
    if not call.body.model_fields_set:
        raise invalid("nothing to change")
    core = core_of(call)
    return lecture_out(core, call.me, await update_lecture(core, call.me, call.params["lecture_id"], call.body))


@api.route(
    "DELETE",
    "/lectures/{lecture_id}",
    summary="Remove a lecture (course owner, admin)",
    tag=TAG,
    status=204,
    errors=[403, 409],
)
async def delete_lecture_view(call: Call) -> Reply:
    # Its videos' ladders go with the media sweep, after STUDYHALL_MEDIA_LADDER_KEEP_S (media/video.py).
    await delete_lecture(core_of(call), call.me, call.params["lecture_id"])
    return Reply(None, 204)
