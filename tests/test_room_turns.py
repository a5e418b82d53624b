"""A connection's room:leave and the room:join right after it are handled in the order they came (rooms/live.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from realtime.sockets import SOCKETS
from rooms import live as room_live
from tests.chat_helpers import OpenTab, make_room, tabs  # noqa: F401 (fixture)
from tests.conftest import ApiClient


async def test_a_leave_and_the_join_right_after_it_keep_their_order(api: ApiClient, tabs: OpenTab) -> None:  # noqa: F811
    """A screen closed and opened again (the browser's back button) sends room:leave and at once room:join on the
    same connection. Each event runs in a task of its own; the leave must not finish after the join and take the
    connection out of the room it has just joined: the others must still see the user present, and the user
    must still hear the room's messages. (Presence is slowed down here as a busy Redis would be, so that the
    leave's last step comes after the join's unless they are kept in order; the full suite's browser test
    found this under load.)"""
    host, ann = await api.user(), await api.user()
    rid = await make_room(api, host, ann)
    host_tab, ann_tab = await tabs(host), await tabs(ann)
    await host_tab.join(rid)
    await ann_tab.join(rid)
    presence = api.app[SOCKETS].services[room_live.PRESENCE]
    leave = presence.leave

    async def slow_leave(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.2)
        return await leave(*args, **kwargs)

    presence.leave = slow_leave
    loop = asyncio.get_running_loop()
    for round_ in range(3):
        left: asyncio.Future[Any] = loop.create_future()
        # Sent first (in order on the one connection); its answer is awaited only after the join's.
        await ann_tab.sio.emit("room:leave", {"room_id": rid}, callback=lambda ack, done=left: done.set_result(ack))
        ack = await ann_tab.call("room:join", {"room_id": rid})
        assert ack["ok"] and ann.id in {m["id"] for m in ack["members"]}, (round_, ack)
        assert (await asyncio.wait_for(left, 10))["ok"], round_
    snapshot = await host_tab.call("room:join", {"room_id": rid})
    assert ann.id in {m["id"] for m in snapshot["members"]}
    ann_tab.drain("chat:message")
    await host_tab.send(rid, "still here?")
    assert (await ann_tab.next("chat:message"))["body"] == "still here?"
