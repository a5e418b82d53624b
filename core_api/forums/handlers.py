"""Forums over REST: thin handlers (parse, call the service). The rules are in :mod:`core_api.forums.access`."""

from __future__ import annotations

from core_api.context import Page, core_of
from core_api.forums import service
from core_api.forums.schemas import (
    AcceptIn,
    BoardOut,
    FlagIn,
    PostEditIn,
    PostOut,
    ReplyIn,
    TopicDetail,
    TopicIn,
    TopicListQuery,
    VoteIn,
)
from core_api.http import Api, Call

api = Api()
TAG = "forums"
_LIMITS = (
    "Sizes: `STUDYHALL_FORUM_MAX_BODY` characters per post, titles up to 200; at most `STUDYHALL_FORUM_RATE_COUNT` "
    "posts (topics and replies) per user per `STUDYHALL_FORUM_RATE_WINDOW_S` (429 with `retry_after_s`)."
)


@api.route(
    "GET",
    "/communities/{community_id}/topics",
    summary="A community's forum: pinned topics first, then by last activity",
    description="Readable by whoever may see the community (members only for a private one).",
    tag=TAG,
    query=TopicListQuery,
    response=BoardOut,
)
async def get_community_topics(call: Call) -> BoardOut:
    return await service.list_topics(core_of(call), call.me, "community", call.params["community_id"], call.query)


@api.route(
    "POST",
    "/communities/{community_id}/topics",
    summary="Open a topic in a community's forum (members)",
    description=_LIMITS + " @mentions notify the community's members they name.",
    tag=TAG,
    body=TopicIn,
    response=TopicDetail,
    status=201,
    errors=[403, 404, 429],
)
async def post_community_topic(call: Call) -> TopicDetail:
    return await service.create_topic(core_of(call), call.me, "community", call.params["community_id"], call.body)


@api.route(
    "GET",
    "/courses/{course_id}/topics",
    summary="A course's forum (enrolled learners, the course's owner, admins)",
    tag=TAG,
    query=TopicListQuery,
    response=BoardOut,
    errors=[403],
)
async def get_course_topics(call: Call) -> BoardOut:
    return await service.list_topics(core_of(call), call.me, "course", call.params["course_id"], call.query)


@api.route(
    "POST",
    "/courses/{course_id}/topics",
    summary="Open a topic in a course's forum (enrolled learners, the owner)",
    description=_LIMITS,
    tag=TAG,
    body=TopicIn,
    response=TopicDetail,
    status=201,
    errors=[403, 429],
)
async def post_course_topic(call: Call) -> TopicDetail:
    return await service.create_topic(core_of(call), call.me, "course", call.params["course_id"], call.body)


@api.route("GET", "/topics/{topic_id}", summary="A topic with its opening post", tag=TAG, response=TopicDetail)
async def get_topic(call: Call) -> TopicDetail:
    return await service.get_topic(core_of(call), call.me, call.params["topic_id"])


@api.route(
    "GET",
    "/topics/{topic_id}/posts",
    summary="A topic's replies, oldest first, with parent_id and depth",
    tag=TAG,
    query=TopicListQuery,
    response=Page[PostOut],
)
async def get_topic_posts(call: Call) -> Page[PostOut]:
    return await service.list_replies(core_of(call), call.me, call.params["topic_id"], call.query)


@api.route(
    "POST",
    "/topics/{topic_id}/posts",
    summary="Reply to a topic or to one of its posts (not in a locked topic)",
    description=_LIMITS + " Replies nest at most `STUDYHALL_FORUM_MAX_DEPTH` deep. The answered post's author is "
    "notified (`forum_reply`), mentioned readers too (`forum_mention`).",
    tag=TAG,
    body=ReplyIn,
    response=PostOut,
    status=201,
    errors=[403, 409, 429],
)
async def post_reply(call: Call) -> PostOut:
    return await service.reply(core_of(call), call.me, call.params["topic_id"], call.body)


@api.route(
    "PATCH",
    "/posts/{post_id}",
    summary="Edit one's own post",
    tag=TAG,
    body=PostEditIn,
    response=PostOut,
    errors=[403, 409],
)
async def patch_post(call: Call) -> PostOut:
    return await service.edit(core_of(call), call.me, call.params["post_id"], call.body.body)


@api.route(
    "DELETE",
    "/posts/{post_id}",
    summary="Delete a post (its author, or a moderator): it stays as a tombstone",
    tag=TAG,
    response=PostOut,
    errors=[403],
)
async def delete_post(call: Call) -> PostOut:
    return await service.delete(core_of(call), call.me, call.params["post_id"])


@api.route(
    "PUT",
    "/posts/{post_id}/vote",
    summary="Vote on a post: +1, -1, or 0 to take the vote back (one per user; not one's own)",
    tag=TAG,
    body=VoteIn,
    response=PostOut,
    errors=[403, 409],
)
async def put_vote(call: Call) -> PostOut:
    return await service.vote(core_of(call), call.me, call.params["post_id"], call.body)


@api.route(
    "PUT",
    "/topics/{topic_id}/accepted",
    summary="Mark a reply as the accepted answer, or clear it (the topic's author or a moderator)",
    tag=TAG,
    body=AcceptIn,
    response=TopicDetail,
    errors=[403, 409],
)
async def put_accepted(call: Call) -> TopicDetail:
    return await service.accept(core_of(call), call.me, call.params["topic_id"], call.body)


@api.route(
    "PUT",
    "/topics/{topic_id}/pinned",
    summary="Pin or unpin a topic (moderators: community owner/admins, course owner, admins)",
    description="At most `STUDYHALL_FORUM_MAX_PINNED` pinned topics per board (409).",
    tag=TAG,
    body=FlagIn,
    response=TopicDetail,
    errors=[403, 409],
)
async def put_pinned(call: Call) -> TopicDetail:
    return await service.set_flag(core_of(call), call.me, call.params["topic_id"], "pin", call.body.on)


@api.route(
    "PUT",
    "/topics/{topic_id}/locked",
    summary="Lock or unlock a topic (moderators): a locked topic takes no replies, votes or edits",
    tag=TAG,
    body=FlagIn,
    response=TopicDetail,
    errors=[403],
)
async def put_locked(call: Call) -> TopicDetail:
    return await service.set_flag(core_of(call), call.me, call.params["topic_id"], "lock", call.body.on)
