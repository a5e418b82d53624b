"""The state as it is stored (a JSON document) and as clients get it (``watch:state``, ``watch:readiness``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import Any

from watch_party.core import Item, Media, Person, ReadyCheck, WatchState, ready_met


def media_to_json(media: Media) -> dict[str, Any]:
    return dataclasses.asdict(media)


def media_from_json(doc: dict[str, Any]) -> Media:
    return Media(
        url=doc["url"],
        kind=doc["kind"],
        duration=doc.get("duration"),
        title=doc.get("title", ""),
        lecture_id=doc.get("lecture_id"),
    )


def item_to_json(item: Item) -> dict[str, Any]:
    return {"id": item.id, "media": media_to_json(item.media), "added_by": item.added_by}


def item_from_json(doc: dict[str, Any]) -> Item:
    return Item(id=doc["id"], media=media_from_json(doc["media"]), added_by=doc.get("added_by"))


def to_document(state: WatchState) -> dict[str, Any]:
    """The whole state as stored (JSON)."""
    return {
        "version": state.version,
        "playlist": [item_to_json(i) for i in state.playlist],
        "current": state.current,
        "playing": state.playing,
        "position": state.position,
        "server_time": state.server_time,
        "rate": state.rate,
        "rate_before": state.rate_before,
        "control": state.control,
        "leader": state.leader.to_json() if state.leader else None,
        "ready_check": {"mode": state.ready_check.mode, "count": state.ready_check.count},
        "waiting": state.waiting,
        "ready": sorted(state.ready),
        "ready_rev": state.ready_rev,
        "changed_at": state.changed_at,
    }


def from_document(room_id: str, doc: dict[str, Any]) -> WatchState:
    leader = doc.get("leader")
    check = doc.get("ready_check") or {}
    return WatchState(
        room_id=room_id,
        version=int(doc["version"]),
        playlist=tuple(item_from_json(i) for i in doc.get("playlist", [])),
        current=doc.get("current"),
        playing=bool(doc.get("playing")),
        position=float(doc.get("position", 0.0)),
        server_time=float(doc.get("server_time", 0.0)),
        rate=float(doc.get("rate", 1.0)),
        rate_before=float(doc.get("rate_before", 0.0)),
        control=doc.get("control", "host"),
        leader=Person(leader["id"], leader["display_name"]) if leader else None,
        ready_check=ReadyCheck(check.get("mode", "off"), int(check.get("count", 1))),
        waiting=bool(doc.get("waiting")),
        ready=frozenset(doc.get("ready", [])),
        ready_rev=int(doc.get("ready_rev", 0)),
        changed_at=float(doc.get("changed_at", 0.0)),
    )


LOCKED_REASON = "this lecture belongs to a priced course you have not bought: buy the course to watch it"


def media_view(item: Item, locked: Collection[str] = ()) -> dict[str, Any]:
    """An item's media as a viewer gets it: without its URL when it is a lecture in ``locked`` (one of a
    priced course the viewer may not play)."""
    view = {**media_to_json(item.media), "item_id": item.id, "locked": False, "locked_reason": None}
    if item.media.lecture_id is not None and item.media.lecture_id in locked:
        view.update(url=None, locked=True, locked_reason=LOCKED_REASON)
    return view


def lecture_ids(state: WatchState) -> set[str]:
    """The lectures in the playlist (whose URLs some viewers may not be allowed to see)."""
    return {i.media.lecture_id for i in state.playlist if i.media.lecture_id is not None}


def state_view(
    state: WatchState, *, cause: str = "sync", by: Person | None = None, locked: Collection[str] = ()
) -> dict[str, Any]:
    """``watch:state`` as clients get it: API.md's fields first, then this server's additions. Lectures in
    ``locked`` (ids) go without their URL (see :func:`media_view`)."""
    item = state.item
    return {
        "room_id": state.room_id,
        "media": media_view(item, locked) if item is not None else None,
        "playing": state.playing,
        "position": state.position,
        "rate": state.rate,
        "server_time": state.server_time,
        "version": state.version,
        "rate_before": state.rate_before,
        "changed_at": state.changed_at,
        "waiting": state.waiting,
        "current": state.current,
        "playlist": [{**item_to_json(i), "media": media_view(i, locked)} for i in state.playlist],
        "control": state.control,
        "leader": state.leader.to_json() if state.leader else None,
        "ready_check": {"mode": state.ready_check.mode, "count": state.ready_check.count},
        "cause": cause,
        "by": by.to_json() if by else None,
    }


def readiness_view(state: WatchState, present_ids: Collection[str]) -> dict[str, Any]:
    """``watch:readiness``: who is ready for the current item and whether the ready check is met."""
    return {
        "room_id": state.room_id,
        "item_id": state.current,
        "ready": sorted(state.ready),
        "rev": state.ready_rev,
        "check": {"mode": state.ready_check.mode, "count": state.ready_check.count},
        "present": len(present_ids),
        "met": ready_met(state, present_ids),
    }
