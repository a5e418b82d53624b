"""Changing one's display name (PATCH /me): validation, impersonation, the daily limit, the audit entry,
and how the new name reaches others (room:renamed, new messages, presence, mentions, members)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from core_api.context import CORE
from core_api.names import clean_display_name
from leaderboards.handlers import CONTESTS
from realtime.app import create_app
from realtime.sockets import SOCKETS
from rooms import live as room_live
from tests.chat_helpers import WAIT_S, OpenTab, make_room, tabs  # noqa: F401 (fixture)
from tests.conftest import Actor, ApiClient, make_settings
from tests.contest_helpers import Clock, at, community_with, contest_body, ok


def unique(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:6]}"


async def rename(api: ApiClient, actor: Actor, name: Any) -> tuple[int, Any]:
    return await api.call("PATCH", "/me", actor, json={"display_name": name})


async def audit_of(api: ApiClient, actor: Actor) -> list[dict[str, Any]]:
    admin = await api.user("admin")
    status, page = await api.call("GET", f"/audit?actor_id={actor.id}&action=user.renamed", admin)
    assert status == 200, page
    return list(page["items"])


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("  Ada   Lovelace ", "Ada Lovelace"),
        ("Ａｄａ", "Ada"),  # fullwidth letters become plain ones (NFKC)
        ("ﬁona", "fiona"),  # a ligature is two letters
        ("Zoë", "Zoë"),
        ("李小龍", "李小龍"),
    ],
)
def test_names_are_normalised(raw: str, clean: str) -> None:
    assert clean_display_name(raw) == clean


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "a" * 81,
        "Ada\u200bLovelace",  # zero-width space
        "Ada\u202eecalevoL",  # right-to-left override
        "Ada\u2060",  # word joiner
        "Ada\x07",  # control
        "Ada\u3164",  # Hangul filler
        "\u2800",  # braille blank
        "---",  # no letter or digit
        "Z\u0301\u0302\u0303\u0304algo",  # marks stacked on one letter
        "\ue000Ada",  # private use
    ],
)
def test_bad_names_are_refused(raw: str) -> None:
    with pytest.raises(ValueError, match=r"must|at most"):
        clean_display_name(raw)


async def test_registration_applies_the_same_checks_but_allows_a_shared_name(api: ApiClient) -> None:
    """An account cannot start with an invisible or bidirectional character either; two people may share a
    name at sign-up (only a change of name is refused when confusable: core_api/names.py says why)."""
    for bad in ("Ada\u202eecalevoL", "Ada\u200bLovelace", "---"):
        status, body = await api.call(
            "POST", "/auth/register",
            json={"email": f"{uuid.uuid4().hex[:8]}@example.com", "password": "long enough pass", "display_name": bad},
        )  # fmt: skip
        assert status == 400 and body["error"]["details"]["fields"], (bad, body)
    name = unique("Sam Lee")
    for _ in range(2):
        status, body = await api.call(
            "POST", "/auth/register",
            json={"email": f"{uuid.uuid4().hex[:8]}@example.com", "password": "long enough pass",
                  "display_name": f" {name}  "},
        )  # fmt: skip
        assert status == 201 and body["display_name"] == name, body


async def test_a_user_renames_themself_and_it_is_audited(api: ApiClient) -> None:
    ada = await api.user()
    name = unique("Ada")
    status, me = await rename(api, ada, f"  {name}  ")
    assert status == 200, me
    assert me["display_name"] == name
    status, me = await api.call("GET", "/me", ada)
    assert me["display_name"] == name
    [entry] = await audit_of(api, ada)
    assert entry["target_id"] == ada.id
    assert entry["details"]["after"] == name


async def test_garbage_is_refused_with_a_clear_400(api: ApiClient) -> None:
    ada = await api.user()
    for body in ({}, {"display_name": 5}, {"display_name": None}, {"display_name": "x", "role": "admin"}):
        status, answer = await api.call("PATCH", "/me", ada, json=body)
        assert status == 400, (body, answer)
        assert answer["error"]["code"] == "invalid_input"
    for name in ("Ada\u200bLovelace", "   ", "x" * 400, "\u202eadmin"):
        status, answer = await rename(api, ada, name)
        assert status == 400, (name, answer)
    status, answer = await api.call("PATCH", "/me", json={"display_name": "Ada"})
    assert status == 401
    assert await audit_of(api, ada) == []


@pytest.mark.parametrize(
    "lookalike",
    ["{n}", "{N}", "{spaced}", "{wide}", " {n} "],
)
async def test_a_name_confusable_with_another_users_is_refused(api: ApiClient, lookalike: str) -> None:
    token = uuid.uuid4().hex[:6]
    victim_name = f"Grace Hopper {token}"
    await api.user(name=victim_name)
    mallory = await api.user()
    wide = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in victim_name)  # fullwidth forms
    candidate = lookalike.format(n=victim_name, N=victim_name.upper(), spaced=victim_name.replace(" ", ""), wide=wide)
    status, answer = await rename(api, mallory, candidate)
    assert status == 409, (candidate, answer)
    assert answer["error"]["code"] == "conflict"
    assert "another user" in answer["error"]["message"]
    status, me = await api.call("GET", "/me", mallory)
    assert me["display_name"] != victim_name


async def test_zero_width_padding_of_another_users_name_is_refused(api: ApiClient) -> None:
    victim_name = unique("Linus")
    await api.user(name=victim_name)
    mallory = await api.user()
    # Refused as invisible characters before it could reach the confusable check.
    status, _ = await rename(api, mallory, victim_name.replace(" ", " \u200d"))
    assert status == 400


async def test_changing_the_case_of_ones_own_name_is_allowed(api: ApiClient) -> None:
    name = unique("ada")
    ada = await api.user(name=name)
    status, me = await rename(api, ada, name.upper())
    assert status == 200, me


async def test_two_users_racing_for_one_name_one_wins(api: ApiClient) -> None:
    a, b = await api.user(), await api.user()
    name = unique("Contested")
    results = await asyncio.gather(rename(api, a, name), rename(api, b, name.lower()))
    assert sorted(status for status, _ in results) == [200, 409], results


async def test_renames_are_limited_per_day(database_url: str, tmp_path: Path, aiohttp_client: Any) -> None:
    api = ApiClient(
        await aiohttp_client(create_app(make_settings(database_url, tmp_path, display_name_changes_per_day=2)))
    )
    ada = await api.user()
    first, second = unique("One"), unique("Two")
    assert (await rename(api, ada, first))[0] == 200
    assert (await rename(api, ada, second))[0] == 200
    status, me = await rename(api, ada, second)  # the same name again: no change, not counted
    assert status == 200
    resp = await api.http.patch("/api/v1/me", headers=ada.headers, json={"display_name": unique("Three")})
    assert resp.status == 429
    answer = await resp.json()
    assert answer["error"]["code"] == "rate_limited"
    assert 0 < int(resp.headers["Retry-After"]) <= 86400
    status, me = await api.call("GET", "/me", ada)
    assert me["display_name"] == second
    assert len(await audit_of(api, ada)) == 2
    # A day later the oldest change no longer counts.
    await api.app[CORE].pool.execute(
        "UPDATE audit_log SET created_at = created_at - interval '25 hours' WHERE actor_id = $1", uuid.UUID(ada.id)
    )
    assert (await rename(api, ada, unique("Three")))[0] == 200


async def test_others_see_the_new_name_live_and_on_reading(api: ApiClient, tabs: OpenTab) -> None:  # noqa: F811
    ada, bob = await api.user(name=unique("Ada")), await api.user(name=unique("Bob"))
    room_id = await make_room(api, ada, bob)
    ada_tab, bob_tab = await tabs(ada), await tabs(bob)
    await ada_tab.join(room_id)
    await bob_tab.join(room_id)
    await ada_tab.send(room_id, "before")
    new = unique("Countess")
    status, _ = await rename(api, ada, new)
    assert status == 200
    renamed = await bob_tab.next("room:renamed")
    assert renamed == {"room_id": room_id, "user": {"id": ada.id, "display_name": new}}
    me = await ada_tab.next("me:changed")
    assert me["display_name"] == new
    message = await ada_tab.send(room_id, "after")
    assert message["author"]["display_name"] == new
    # Read again: the people present, the history and the members list all carry the new name.
    joined = await bob_tab.join(room_id)
    assert {m["id"]: m["display_name"] for m in joined["members"]}[ada.id] == new
    assert {m["author"]["display_name"] for m in joined["messages"]} == {new}
    status, members = await api.call("GET", f"/rooms/{room_id}/members", bob)
    assert {m["user_id"]: m["display_name"] for m in members["items"]}[ada.id] == new


async def test_a_rename_while_joining_still_lists_the_new_name(api: ApiClient, tabs: OpenTab) -> None:  # noqa: F811
    """Ada renames herself while her join is under way: her account is re-read (and her rooms told) before the join
    enters her into presence with the name it started with. The entry must still end up with the new name."""
    bob_name = unique("Bob")
    ada, bob = await api.user(name=unique("Ada")), await api.user(name=bob_name)
    room_id = await make_room(api, ada, bob)
    ada_tab, bob_tab = await tabs(ada), await tabs(bob)
    presence = api.app[SOCKETS].services[room_live.PRESENCE]
    enter = presence.enter_and_snapshot
    waiting, reread = asyncio.Event(), asyncio.Event()

    async def late_enter(room: str, sid: str, user: Any) -> Any:
        if user.id == ada.id:
            waiting.set()
            await asyncio.wait_for(reread.wait(), WAIT_S)
        return await enter(room, sid, user)

    presence.enter_and_snapshot = late_enter
    joining = asyncio.create_task(ada_tab.join(room_id))
    await asyncio.wait_for(waiting.wait(), WAIT_S)  # the join is about to enter her, with her old name
    new = unique("Countess")
    assert (await rename(api, ada, new))[0] == 200
    assert (await ada_tab.next("me:changed"))["display_name"] == new  # her connection re-read her account
    reread.set()
    await joining
    joined = await bob_tab.join(room_id)
    assert {m["id"]: m["display_name"] for m in joined["members"]} == {ada.id: new, bob.id: bob_name}


async def test_mentions_follow_the_new_name(api: ApiClient, tabs: OpenTab) -> None:  # noqa: F811
    old, new = unique("Old"), unique("New")
    ada, bob = await api.user(name=old), await api.user()
    room_id = await make_room(api, bob, ada)
    bob_tab = await tabs(bob)
    await bob_tab.join(room_id)
    assert (await rename(api, ada, new))[0] == 200
    ada_tab = await tabs(ada)
    await bob_tab.send(room_id, f"hi @[{old}]")
    await bob_tab.send(room_id, f"hi @[{new}]")
    note = await ada_tab.next("notification:new")
    assert new in str(note["payload"]), note
    assert await ada_tab.nothing_pending("notification:new")


async def test_the_audit_log_filters_by_actor_action_and_time(api: ApiClient) -> None:
    admin, ada = await api.user("admin"), await api.user()
    assert (await rename(api, ada, unique("Ada")))[0] == 200
    status, page = await api.call("GET", f"/audit?actor_id={ada.id}&action=user", admin)
    assert status == 200 and [e["action"] for e in page["items"]] == ["user.renamed"]
    entry = page["items"][0]
    at = entry["created_at"]
    status, page = await api.call("GET", "/audit", admin, params={"actor_id": ada.id, "since": at})
    assert [e["id"] for e in page["items"]] == [entry["id"]]
    status, page = await api.call("GET", "/audit", admin, params={"actor_id": ada.id, "until": at})
    assert page["items"] == []
    status, page = await api.call("GET", "/audit", admin, params={"action": "user.renam"})
    assert status == 200 and all(e["action"] != "user.renamed" for e in page["items"])
    for bad in (
        {"actor_id": "nope"},
        {"since": "yesterday"},
        {"since": at, "until": at},
        {"action": "x" * 65},
        {"action": "user\x00"},
        {"until": "0189-09-19T13:19:43+11:54"},
        {"since": "2026-01-01T00:00:00"},  # no timezone
    ):
        status, answer = await api.call("GET", "/audit", admin, params=bad)
        assert status == 400, (bad, answer)
    status, _ = await api.call("GET", "/audit", ada)
    assert status == 403


async def test_admins_find_accounts_by_email_or_name(api: ApiClient) -> None:
    admin = await api.user("admin")
    name = unique("Findable_%")
    ada = await api.user(name=name)
    status, page = await api.call("GET", "/users", admin, params={"q": name.upper()})
    assert status == 200 and [u["id"] for u in page["items"]] == [ada.id]
    status, page = await api.call("GET", "/users", admin, params={"q": "_%"})
    assert ada.id in [u["id"] for u in page["items"]] and len(page["items"]) < 50
    for path in ("/users", "/communities"):
        status, answer = await api.call("GET", path, admin, params={"q": "a\x00"})
        assert status == 400, (path, answer)


async def test_contest_standings_show_the_new_name(api: ApiClient) -> None:
    organizer, ada = await api.user(name=unique("Organizer")), await api.user(name=unique("Ada"))
    home = await community_with(api, organizer, unique("Home"), [ada])
    clock = Clock()
    clock.now = at(-10)
    api.app[CONTESTS].clock = clock
    problem = {"title": "Three", "tests": [{"stdin": "", "expected_output": "3"}], "cpu_ms": 1000}
    contest = await ok(
        api, "POST", "/contests", organizer, json=contest_body([home], organizer=home, problems=[problem])
    )
    await api.app[CORE].pool.execute(
        "INSERT INTO contest_submissions (id, contest_id, problem_id, user_id, community_id, language, source,"
        " submitted_at, verdict, passed, total, judged_at) VALUES ($1, $2, $3, $4, $5, 'python', 'print(3)', $6,"
        " 'accepted', 1, 1, now())",
        uuid.uuid4(), uuid.UUID(contest["id"]), uuid.UUID(contest["problems"][0]["id"]), uuid.UUID(ada.id),
        uuid.UUID(home), at(5),
    )  # fmt: skip
    clock.now = at(20)

    async def names() -> set[str]:
        await api.app[CONTESTS].refresh(uuid.UUID(contest["id"]))
        standings = await ok(api, "GET", f"/contests/{contest['id']}/standings", organizer)
        return {p["display_name"] for p in standings["people"]}

    before = await names()
    new = unique("Countess")
    assert (await rename(api, ada, new))[0] == 200
    after = await names()
    assert new in after and not (before & after), (before, after)
