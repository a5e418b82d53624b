"""Forum use cases: boards' topic lists, topics, replies, edits, deletes, votes, accepted answers, pins and
locks. Each checks the rules of :mod:`core_api.forums.access`, changes state in one transaction, and
stores notifications (mentions, replies) in it; they are delivered live after the commit.
"""

from __future__ import annotations

import math
import unicodedata
import uuid
from datetime import datetime
from typing import Any

from core_api.context import Core, Page, Tx, audit, decode_cursor, encode_cursor, new_id, notify
from core_api.db import Connection, Record
from core_api.errors import AppError, ErrorCode, conflict, forbidden, invalid, not_found
from core_api.forums.access import (
    Board,
    community_board,
    course_board,
    readable_topic,
    readers_mentioned,
    require_moderator,
    require_poster,
)
from core_api.forums.schemas import (
    TITLE_MAX,
    AcceptIn,
    Author,
    BoardOut,
    PostOut,
    ReplyIn,
    TopicDetail,
    TopicIn,
    TopicListQuery,
    TopicOut,
    VoteIn,
)
from core_api.http import Principal
from core_api.mentions import excerpt, parse_mentions

_TOPIC = """SELECT t.id, t.community_id, t.course_id, t.author_id, u.display_name AS author_name, t.title,
    t.created_at, t.last_activity_at, t.pinned_at, t.locked_at, t.accepted_post_id, t.reply_count,
    op.score AS op_score, op.body AS op_body, op.deleted_at AS op_deleted
    FROM forum_topics t JOIN users u ON u.id = t.author_id
    JOIN forum_posts op ON op.topic_id = t.id AND op.depth = 0"""
# $1 is the caller (their vote).
_POST = """SELECT p.id, p.topic_id, p.parent_id, p.depth, p.author_id, u.display_name AS author_name, p.body,
    p.created_at, p.edited_at, p.deleted_at, p.score, t.accepted_post_id,
    coalesce((SELECT v.value FROM forum_votes v WHERE v.post_id = p.id AND v.user_id = $1), 0) AS my_vote
    FROM forum_posts p JOIN users u ON u.id = p.author_id JOIN forum_topics t ON t.id = p.topic_id"""

# --- text ----------------------------------------------------------------------------------------


def clean_text(raw: str, max_len: int, what: str, *, one_line: bool = False) -> str:
    """Text as stored: control characters removed (newline and tab kept unless ``one_line``), trimmed,
    1..``max_len`` characters."""
    text = raw.replace("\r\n", "\n").replace("\r", "\n")
    keep = "" if one_line else "\n\t"
    text = "".join(
        ch if ch in keep or unicodedata.category(ch) not in ("Cc", "Cs") else (" " if one_line else "") for ch in text
    ).strip()
    if not text:
        raise invalid(f"{what}: must not be empty")
    if len(text) > max_len:
        raise invalid(f"{what}: at most {max_len} characters")
    return text


# --- views ---------------------------------------------------------------------------------------


def topic_out(r: Record) -> TopicOut:
    return TopicOut(
        id=r["id"],
        community_id=r["community_id"],
        course_id=r["course_id"],
        title=r["title"],
        author=Author(id=r["author_id"], display_name=r["author_name"]),
        created_at=r["created_at"],
        last_activity_at=r["last_activity_at"],
        pinned=r["pinned_at"] is not None,
        locked=r["locked_at"] is not None,
        accepted_post_id=r["accepted_post_id"],
        reply_count=r["reply_count"],
        score=r["op_score"],
        excerpt="" if r["op_deleted"] is not None else excerpt(r["op_body"], 200),
    )


def post_out(r: Record) -> PostOut:
    deleted = r["deleted_at"] is not None
    return PostOut(
        id=r["id"],
        topic_id=r["topic_id"],
        parent_id=r["parent_id"],
        depth=r["depth"],
        author=Author(id=r["author_id"], display_name=r["author_name"]),
        body="" if deleted else r["body"],
        created_at=r["created_at"],
        edited_at=r["edited_at"],
        deleted=deleted,
        score=r["score"],
        my_vote=r["my_vote"],
        accepted=r["accepted_post_id"] == r["id"],
    )


async def _topic_detail(conn: Connection, user: Principal, topic_id: uuid.UUID, board: Board) -> TopicDetail:
    row = await conn.fetchrow(f"{_TOPIC} WHERE t.id = $1", topic_id)
    if row is None:
        raise not_found("topic")
    opening = await conn.fetchrow(f"{_POST} WHERE p.topic_id = $2 AND p.depth = 0", user.id, topic_id)
    assert opening is not None
    return TopicDetail(
        **topic_out(row).model_dump(),
        opening=post_out(opening),
        can_post=board.can_post and (row["locked_at"] is None),
        can_moderate=board.can_moderate,
    )


async def _post(conn: Connection, user: Principal, post_id: uuid.UUID) -> PostOut:
    row = await conn.fetchrow(f"{_POST} WHERE p.id = $2", user.id, post_id)
    if row is None:
        raise not_found("post")
    return post_out(row)


# --- pace ----------------------------------------------------------------------------------------


async def _check_pace(tx: Tx, core: Core, user: Principal) -> None:
    """At most ``forum_rate_count`` posts per user per ``forum_rate_window_s`` (admins exempt)."""
    if user.is_admin:
        return
    settings = core.settings
    await tx.conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('forum:' || $1::uuid::text, 0))", user.id)
    now: datetime = await tx.conn.fetchval("SELECT clock_timestamp()")
    window_s, limit = settings.forum_rate_window_s, settings.forum_rate_count
    recent = await tx.conn.fetch(
        "SELECT created_at FROM forum_posts WHERE author_id = $1"
        " AND created_at > $2::timestamptz - make_interval(secs => $3) ORDER BY created_at DESC LIMIT $4",
        user.id,
        now,
        window_s,
        limit,
    )
    if len(recent) >= limit:
        wait = max(1, math.ceil(window_s - (now - recent[limit - 1]["created_at"]).total_seconds()))
        raise AppError(
            ErrorCode.RATE_LIMITED,
            f"you are posting too fast: try again in {wait} s (retry_after={wait})",
            {"retry_after_s": wait},
        )


async def _notify_post(
    tx: Tx,
    board: Board,
    author: Principal,
    topic: Record,
    post_id: uuid.UUID,
    body: str,
    parent_author: uuid.UUID | None,
) -> None:
    """Mentioned readers get ``forum_mention``; the author of the post answered gets ``forum_reply``."""
    payload: dict[str, Any] = {
        "topic_id": str(topic["id"]),
        "post_id": str(post_id),
        "title": topic["title"],
        "by": {"id": str(author.id), "display_name": author.display_name},
        "excerpt": excerpt(body),
    }
    mentioned = await readers_mentioned(tx.conn, board, parse_mentions(body), author.id)
    for user_id in mentioned:
        await notify(tx, user_id, "forum_mention", payload)
    if parent_author is not None and parent_author != author.id and parent_author not in mentioned:
        await notify(tx, parent_author, "forum_reply", payload)


# --- boards and topics ---------------------------------------------------------------------------


async def _board(conn: Connection, user: Principal, kind: str, board_id: uuid.UUID) -> Board:
    return await (community_board if kind == "community" else course_board)(conn, user, board_id)


async def list_topics(core: Core, user: Principal, kind: str, board_id: uuid.UUID, query: TopicListQuery) -> BoardOut:
    """Pinned topics first (first page only), then the others by last activity, newest first."""
    column = "community_id" if kind == "community" else "course_id"
    at, ident = decode_cursor(query.cursor)
    async with core.pool.acquire() as conn:
        board = await _board(conn, user, kind, board_id)
        pinned: list[Record] = []
        if query.cursor is None:
            pinned = await conn.fetch(
                f"{_TOPIC} WHERE t.{column} = $1 AND t.pinned_at IS NOT NULL ORDER BY t.pinned_at DESC, t.id",
                board_id,
            )
        rows = await conn.fetch(
            f"""{_TOPIC} WHERE t.{column} = $1 AND t.pinned_at IS NULL
                AND ($2::timestamptz IS NULL OR (t.last_activity_at, t.id) < ($2, $3))
                ORDER BY t.last_activity_at DESC, t.id DESC LIMIT $4""",
            board_id,
            at,
            ident,
            query.limit + 1,
        )
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    cursor = encode_cursor(rows[-1]["last_activity_at"], rows[-1]["id"]) if more and rows else None
    return BoardOut(
        items=[topic_out(r) for r in [*pinned, *rows]],
        next_cursor=cursor,
        can_post=board.can_post,
        can_moderate=board.can_moderate,
    )


async def create_topic(core: Core, user: Principal, kind: str, board_id: uuid.UUID, body: TopicIn) -> TopicDetail:
    title = clean_text(body.title, TITLE_MAX, "title", one_line=True)
    text = clean_text(body.body, core.settings.forum_max_body, "body")
    async with core.transaction() as tx:
        board = await _board(tx.conn, user, kind, board_id)
        require_poster(board)
        await _check_pace(tx, core, user)
        topic_id, post_id = new_id(), new_id()
        await tx.conn.execute(
            "INSERT INTO forum_topics (id, community_id, course_id, author_id, title) VALUES ($1, $2, $3, $4, $5)",
            topic_id,
            board.community_id,
            board.course_id,
            user.id,
            title,
        )
        await tx.conn.execute(
            "INSERT INTO forum_posts (id, topic_id, parent_id, author_id, depth, body)"
            " VALUES ($1, $2, NULL, $3, 0, $4)",
            post_id,
            topic_id,
            user.id,
            text,
        )
        topic = {"id": topic_id, "title": title}
        await _notify_post(tx, board, user, topic, post_id, text, None)
        return await _topic_detail(tx.conn, user, topic_id, board)


async def get_topic(core: Core, user: Principal, topic_id: uuid.UUID) -> TopicDetail:
    async with core.pool.acquire() as conn:
        _, board = await readable_topic(conn, user, topic_id)
        return await _topic_detail(conn, user, topic_id, board)


async def list_replies(core: Core, user: Principal, topic_id: uuid.UUID, query: TopicListQuery) -> Page[PostOut]:
    """The topic's replies, oldest first, each with its ``parent_id`` and ``depth`` (the client draws the tree)."""
    at, ident = decode_cursor(query.cursor)
    async with core.pool.acquire() as conn:
        await readable_topic(conn, user, topic_id)
        rows = await conn.fetch(
            f"""{_POST} WHERE p.topic_id = $2 AND p.depth > 0
                AND ($3::timestamptz IS NULL OR (p.created_at, p.id) > ($3, $4))
                ORDER BY p.created_at, p.id LIMIT $5""",
            user.id,
            topic_id,
            at,
            ident,
            query.limit + 1,
        )
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    cursor = encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if more and rows else None
    return Page[PostOut](items=[post_out(r) for r in rows], next_cursor=cursor)


# --- replies, edits, deletes ---------------------------------------------------------------------


def _require_open(topic: Record) -> None:
    if topic["locked_at"] is not None:
        raise conflict("the topic is locked")


async def reply(core: Core, user: Principal, topic_id: uuid.UUID, body: ReplyIn) -> PostOut:
    text = clean_text(body.body, core.settings.forum_max_body, "body")
    async with core.transaction() as tx:
        topic, board = await readable_topic(tx.conn, user, topic_id, lock=True)
        require_poster(board)
        _require_open(topic)
        if body.parent_id is None:
            parent = await tx.conn.fetchrow(
                "SELECT id, depth, author_id, deleted_at FROM forum_posts WHERE topic_id = $1 AND depth = 0", topic_id
            )
        else:
            parent = await tx.conn.fetchrow(
                "SELECT id, depth, author_id, deleted_at FROM forum_posts WHERE id = $1 AND topic_id = $2",
                body.parent_id,
                topic_id,
            )
        if parent is None:
            raise not_found("post")
        if parent["deleted_at"] is not None and parent["depth"] > 0:
            raise conflict("the post you answer was deleted")
        depth = parent["depth"] + 1
        if depth > core.settings.forum_max_depth:
            raise invalid(f"replies nest at most {core.settings.forum_max_depth} deep: answer an earlier post")
        await _check_pace(tx, core, user)
        post_id = new_id()
        created = await tx.conn.fetchval(
            "INSERT INTO forum_posts (id, topic_id, parent_id, author_id, depth, body) VALUES ($1, $2, $3, $4, $5, $6)"
            " RETURNING created_at",
            post_id,
            topic_id,
            parent["id"],
            user.id,
            depth,
            text,
        )
        await tx.conn.execute(
            "UPDATE forum_topics SET reply_count = reply_count + 1, last_activity_at = $2 WHERE id = $1",
            topic_id,
            created,
        )
        await _notify_post(tx, board, user, topic, post_id, text, parent["author_id"])
        return await _post(tx.conn, user, post_id)


async def _locked_post(conn: Connection, user: Principal, post_id: uuid.UUID) -> tuple[Record, Record, Board]:
    topic_id = await conn.fetchval("SELECT topic_id FROM forum_posts WHERE id = $1", post_id)
    if topic_id is None:
        raise not_found("post")
    topic, board = await readable_topic(conn, user, topic_id, lock=True)
    post = await conn.fetchrow(
        "SELECT id, topic_id, author_id, depth, deleted_at, body FROM forum_posts WHERE id = $1 FOR UPDATE", post_id
    )
    if post is None:
        raise not_found("post")
    return post, topic, board


async def edit(core: Core, user: Principal, post_id: uuid.UUID, body: str) -> PostOut:
    """The author changes their post (not a deleted one, not in a locked topic). Mentions are not re-sent."""
    text = clean_text(body, core.settings.forum_max_body, "body")
    async with core.transaction() as tx:
        post, topic, _ = await _locked_post(tx.conn, user, post_id)
        if post["author_id"] != user.id:
            raise forbidden("only the author may edit a post")
        if post["deleted_at"] is not None:
            raise conflict("the post was deleted")
        _require_open(topic)
        if text != post["body"]:
            await tx.conn.execute("UPDATE forum_posts SET body = $2, edited_at = now() WHERE id = $1", post_id, text)
        return await _post(tx.conn, user, post_id)


async def delete(core: Core, user: Principal, post_id: uuid.UUID) -> PostOut:
    """Tombstone a post: its author, or a moderator (audited). Its replies stay; an accepted answer is unset.

    Deleting an opening post keeps the topic (its replies) with an empty opening."""
    async with core.transaction() as tx:
        post, topic, board = await _locked_post(tx.conn, user, post_id)
        if post["deleted_at"] is None:
            if post["author_id"] != user.id:
                require_moderator(board)
                await audit(tx, user.id, "forum.delete_post", "forum_post", post_id, user_id=str(post["author_id"]))
            await tx.conn.execute(
                "UPDATE forum_posts SET deleted_at = now(), deleted_by = $2 WHERE id = $1", post_id, user.id
            )
            if post["depth"] > 0:
                await tx.conn.execute(
                    "UPDATE forum_topics SET reply_count = reply_count - 1,"
                    " accepted_post_id = CASE WHEN accepted_post_id = $2 THEN NULL ELSE accepted_post_id END"
                    " WHERE id = $1",
                    topic["id"],
                    post_id,
                )
        return await _post(tx.conn, user, post_id)


# --- votes ---------------------------------------------------------------------------------------


async def vote(core: Core, user: Principal, post_id: uuid.UUID, body: VoteIn) -> PostOut:
    """One vote per user and post (+1, -1; 0 takes it back); not on one's own post, a deleted one, or in a
    locked topic. Readers who may not post may not vote either."""
    async with core.transaction() as tx:
        post, topic, board = await _locked_post(tx.conn, user, post_id)
        require_poster(board)
        _require_open(topic)
        if post["author_id"] == user.id:
            raise forbidden("you cannot vote on your own post")
        if post["deleted_at"] is not None:
            raise conflict("the post was deleted")
        before = await tx.conn.fetchval(
            "SELECT value FROM forum_votes WHERE post_id = $1 AND user_id = $2", post_id, user.id
        )
        before = before or 0
        if body.value != before:
            if body.value == 0:
                await tx.conn.execute("DELETE FROM forum_votes WHERE post_id = $1 AND user_id = $2", post_id, user.id)
            else:
                await tx.conn.execute(
                    "INSERT INTO forum_votes (post_id, user_id, value) VALUES ($1, $2, $3)"
                    " ON CONFLICT (post_id, user_id) DO UPDATE SET value = $3",
                    post_id,
                    user.id,
                    body.value,
                )
            await tx.conn.execute(
                "UPDATE forum_posts SET score = score + $2 WHERE id = $1", post_id, body.value - before
            )
        return await _post(tx.conn, user, post_id)


# --- moderation ----------------------------------------------------------------------------------


async def accept(core: Core, user: Principal, topic_id: uuid.UUID, body: AcceptIn) -> TopicDetail:
    """The topic's author or a moderator marks a reply as the accepted answer (or clears it)."""
    async with core.transaction() as tx:
        topic, board = await readable_topic(tx.conn, user, topic_id, lock=True)
        if topic["author_id"] != user.id:
            require_moderator(board)
        if body.post_id is not None:
            post = await tx.conn.fetchrow(
                "SELECT depth, deleted_at FROM forum_posts WHERE id = $1 AND topic_id = $2", body.post_id, topic_id
            )
            if post is None:
                raise not_found("post")
            if post["depth"] == 0:
                raise invalid("post_id: the opening post cannot be its own answer")
            if post["deleted_at"] is not None:
                raise conflict("the post was deleted")
        await tx.conn.execute("UPDATE forum_topics SET accepted_post_id = $2 WHERE id = $1", topic_id, body.post_id)
        if topic["author_id"] != user.id:
            await audit(tx, user.id, "forum.accept", "forum_topic", topic_id, post_id=str(body.post_id))
        return await _topic_detail(tx.conn, user, topic_id, board)


async def set_flag(core: Core, user: Principal, topic_id: uuid.UUID, flag: str, on: bool) -> TopicDetail:
    """Pin (``pinned_at``) or lock (``locked_at``) a topic, or undo it: moderators only, audited."""
    column = {"pin": "pinned_at", "lock": "locked_at"}[flag]
    async with core.transaction() as tx:
        topic, board = await readable_topic(tx.conn, user, topic_id, lock=True)
        require_moderator(board)
        if (topic[column] is not None) != on:
            if flag == "pin" and on:
                scope = "community_id" if topic["community_id"] is not None else "course_id"
                pinned = await tx.conn.fetchval(
                    f"SELECT count(*) FROM forum_topics WHERE {scope} = $1 AND pinned_at IS NOT NULL", topic[scope]
                )
                if pinned >= core.settings.forum_max_pinned:
                    raise conflict(
                        f"a board has at most {core.settings.forum_max_pinned} pinned topics: unpin one first"
                    )
            await tx.conn.execute(
                f"UPDATE forum_topics SET {column} = CASE WHEN $2 THEN now() END WHERE id = $1", topic_id, on
            )
            await audit(tx, user.id, f"forum.{flag}" if on else f"forum.un{flag}", "forum_topic", topic_id)
        return await _topic_detail(tx.conn, user, topic_id, board)
