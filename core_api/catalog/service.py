"""Use cases of course management: the lifecycle and prerequisites. Each runs in one transaction with the
course row locked, checks that the caller is the course's owner or an admin, and is audited."""

from __future__ import annotations

import uuid

from core_api.catalog import core, store
from core_api.catalog.limits import check_rate
from core_api.context import Core, audit
from core_api.courses import owned_course, visible_course, writable_course
from core_api.db import Record
from core_api.errors import conflict, invalid
from core_api.http import Principal


async def unpublish(app: Core, user: Principal, course_id: uuid.UUID) -> Record:
    """Out of the catalogue and closed to new enrollments and purchases; enrolled learners keep it."""
    async with app.transaction() as tx:
        course = await owned_course(tx.conn, user, course_id, lock=True)
        await check_rate(tx, app, user)
        if not core.check_unpublish(course["status"]):
            return course
        await store.set_status(tx.conn, course_id, "unpublished", None)
        await audit(tx, user.id, "course.unpublished", "course", course_id, title=course["title"])
        return await visible_course(tx.conn, user, course_id)


async def archive(app: Core, user: Principal, course_id: uuid.UUID) -> Record:
    """Read-only, out of the catalogue, closed to new enrollments; enrolled learners keep viewing it."""
    async with app.transaction() as tx:
        course = await owned_course(tx.conn, user, course_id, lock=True)
        await check_rate(tx, app, user)
        if not core.check_archive(course["status"]):
            return course
        await store.set_status(tx.conn, course_id, "archived", course["status"])
        await audit(tx, user.id, "course.archived", "course", course_id, title=course["title"], was=course["status"])
        return await visible_course(tx.conn, user, course_id)


async def restore(app: Core, user: Principal, course_id: uuid.UUID) -> Record:
    """An archived course back to the status it had when archived."""
    async with app.transaction() as tx:
        course = await owned_course(tx.conn, user, course_id, lock=True)
        await check_rate(tx, app, user)
        status = core.restored_status(course["status"], course["archived_from"])
        await store.set_status(tx.conn, course_id, status, None)
        await audit(tx, user.id, "course.restored", "course", course_id, title=course["title"], status=status)
        return await visible_course(tx.conn, user, course_id)


async def delete(app: Core, user: Principal, course_id: uuid.UUID) -> None:
    """Soft delete: gone for everyone but admins. Refused while learners are enrolled (archive instead).
    Enrollments are made holding the course row shared, so none slips in between the count and the delete."""
    async with app.transaction() as tx:
        course = await owned_course(tx.conn, user, course_id, lock=True)
        await check_rate(tx, app, user)
        if course["deleted_at"] is not None:
            return  # an admin deleting again
        enrolled = await store.enrolled_count(tx.conn, course_id)
        refusal = core.delete_refusal(enrolled)
        if refusal is not None:
            raise conflict(refusal, enrolled=enrolled)
        await store.mark_deleted(tx.conn, course_id, user.id)
        await audit(tx, user.id, "course.deleted", "course", course_id, title=course["title"])


async def set_prerequisites(app: Core, user: Principal, course_id: uuid.UUID, raw_ids: list[str]) -> Record:
    """Replace a course's prerequisites. Each must be a published, live course other than this one that does
    not itself (at any depth) require this one."""
    limit = app.settings.course_max_prerequisites
    ids: list[uuid.UUID] = []
    bad: list[str] = []
    for raw in raw_ids:
        try:
            ident = uuid.UUID(raw)
        except ValueError:
            bad.append(raw[:64])
            continue
        if ident not in ids:
            ids.append(ident)
    if bad:
        raise invalid("course_ids must be course ids", field="course_ids", not_ids=bad[:20])
    if len(ids) > limit:
        raise invalid(f"at most {limit} prerequisites (got {len(ids)})", field="course_ids")
    if course_id in ids:
        raise invalid("a course cannot be its own prerequisite", field="course_ids")
    async with app.transaction() as tx:
        await tx.conn.execute("SELECT pg_advisory_xact_lock($1)", store.PREREQUISITES_LOCK)
        course = await writable_course(tx.conn, user, course_id)
        await check_rate(tx, app, user)
        found = {r["id"]: r for r in await store.courses_by_id(tx.conn, ids)}
        unusable = [
            str(i)
            for i in ids
            if i not in found or found[i]["status"] != "published" or found[i]["deleted_at"] is not None
        ]
        if unusable:
            raise invalid(
                "prerequisites must be published courses; these are not (or do not exist): " + ", ".join(unusable),
                field="course_ids",
                unknown=unusable,
            )
        if ids and await store.reaches(tx.conn, ids, course_id):
            raise conflict("these prerequisites would make a cycle: one of them already requires this course")
        await store.replace_prerequisites(tx.conn, course_id, ids)
        await tx.conn.execute("UPDATE courses SET updated_at = now() WHERE id = $1", course_id)
        await audit(
            tx,
            user.id,
            "course.prerequisites",
            "course",
            course_id,
            title=course["title"],
            requires=[str(i) for i in ids],
        )
        return await visible_course(tx.conn, user, course_id)
