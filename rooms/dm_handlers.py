"""Direct messages over REST: ``/dms`` (find or create, list, one, unread) and ``/me/blocks``.

A conversation is a room (kind ``dm``): its messages go over the chat events (``room:join``, ``chat:*``).
The rules are in :mod:`rooms.dms`.
"""

from __future__ import annotations

from core_api.context import Page, core_of
from core_api.http import Api, Call, Reply
from rooms import dms
from rooms.dm_schemas import BlockOut, BlocksOut, ConversationOut, DmIn, DmListQuery, UnreadOut

api = Api()
TAG = "direct messages"


@api.route(
    "POST",
    "/dms",
    summary="Find or start the conversation of the caller and these users",
    description="Answers the one conversation of exactly this set of people, creating it the first time "
    "(`created: true`; the others are notified, `dm_started`). Refused (403) when one of you has blocked "
    "the other; at most `STUDYHALL_DM_MAX_PARTICIPANTS` people; new conversations are rate limited per user "
    "(`STUDYHALL_DM_NEW_RATE_COUNT` per `STUDYHALL_DM_NEW_RATE_WINDOW_S`, 429 with `retry_after_s`).",
    tag=TAG,
    body=DmIn,
    response=ConversationOut,
    errors=[403, 404, 429],
)
async def post_dm(call: Call) -> ConversationOut:
    return await dms.start(core_of(call), call.me, call.body)


@api.route(
    "GET",
    "/dms",
    summary="The caller's conversations, most recently active first, with unread counts",
    tag=TAG,
    query=DmListQuery,
    response=Page[ConversationOut],
)
async def get_dms(call: Call) -> Page[ConversationOut]:
    return await dms.list_conversations(core_of(call), call.me, call.query)


@api.route("GET", "/dms/unread", summary="Unread direct messages of the caller", tag=TAG, response=UnreadOut)
async def get_dms_unread(call: Call) -> UnreadOut:
    return await dms.unread(core_of(call), call.me)


@api.route("GET", "/dms/{room_id}", summary="One of the caller's conversations", tag=TAG, response=ConversationOut)
async def get_dm(call: Call) -> ConversationOut:
    return await dms.get_conversation(core_of(call), call.me, call.params["room_id"])


@api.route("GET", "/me/blocks", summary="Users the caller has blocked", tag=TAG, response=BlocksOut)
async def get_blocks(call: Call) -> BlocksOut:
    return await dms.list_blocks(core_of(call), call.me)


@api.route(
    "PUT",
    "/me/blocks/{user_id}",
    summary="Block a user: no new conversations between you, your two-person conversation closes",
    tag=TAG,
    response=BlockOut,
    errors=[404],
)
async def put_block(call: Call) -> BlockOut:
    return await dms.block(core_of(call), call.me, call.params["user_id"])


@api.route("DELETE", "/me/blocks/{user_id}", summary="Lift a block", tag=TAG, status=204, errors=[404])
async def delete_block(call: Call) -> Reply:
    await dms.unblock(core_of(call), call.me, call.params["user_id"])
    return Reply(None, 204)
