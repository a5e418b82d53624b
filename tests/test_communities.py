"""Communities: visibility, membership, the role ladder owner > admin > member, ownership hand-over, kicks."""

from __future__ import annotations

import uuid
from typing import Any

from tests.conftest import Actor, ApiClient

Json = dict[str, Any]


def unique(prefix: str = "Community") -> str:
    return f"{prefix} {uuid.uuid4().hex[:8]}"


async def create(api: ApiClient, owner: Actor, visibility: str = "public", name: str | None = None) -> Json:
    status, body = await api.call(
        "POST",
        "/communities",
        owner,
        json={"name": name or unique(), "description": "a place to learn", "visibility": visibility},
    )
    assert status == 201, body
    return dict(body)


async def add(api: ApiClient, actor: Actor, community: Json, user: Actor, role: str = "member") -> Json:
    status, body = await api.call(
        "POST", f"/communities/{community['id']}/members", actor, json={"user_id": user.id, "role": role}
    )
    assert status == 201, body
    return dict(body)


async def set_role(api: ApiClient, actor: Actor, community: Json, user: Actor, role: str) -> tuple[int, Any]:
    return await api.call("PUT", f"/communities/{community['id']}/members/{user.id}", actor, json={"role": role})


async def kick(api: ApiClient, actor: Actor, community: Json, user: Actor) -> tuple[int, Any]:
    return await api.call("DELETE", f"/communities/{community['id']}/members/{user.id}", actor)


async def roles_of(api: ApiClient, actor: Actor, community: Json) -> dict[str, str]:
    status, page = await api.call("GET", f"/communities/{community['id']}/members?limit=200", actor)
    assert status == 200, page
    return {m["user_id"]: m["role"] for m in page["items"]}


async def audit_for(api: ApiClient, community: Json, action: str) -> list[Json]:
    admin = await api.user("admin")
    status, page = await api.call("GET", "/audit?limit=200", admin)
    assert status == 200, page
    return [e for e in page["items"] if e["target_id"] == community["id"] and e["action"] == action]


async def test_creator_becomes_owner_and_names_are_unique_ignoring_case(api: ApiClient) -> None:
    alice, bob = await api.user(), await api.user()
    name = unique("Rustaceans")
    community = await create(api, alice, name=name)
    assert community["name"] == name and community["visibility"] == "public"
    assert community["my_role"] == "owner" and community["member_count"] == 1
    assert community["created_by"] == alice.id

    status, body = await api.call("POST", "/communities", bob, json={"name": name.upper(), "description": ""})
    assert status == 409 and body["error"]["code"] == "conflict"
    # Surrounding blanks do not make a different name either.
    status, _ = await api.call("POST", "/communities", bob, json={"name": f"  {name.lower()} "})
    assert status == 409


async def test_bad_community_input_is_a_clear_400(api: ApiClient) -> None:
    alice = await api.user()
    for body in (
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 81},
        {"name": unique(), "visibility": "secret"},
        {"name": unique(), "description": "d" * 2001},
        {"name": unique(), "owner": alice.id},
        {"name": 42},
        {"name": "line\nbreak"},
        {"name": unique(), "description": "nul \x00 inside"},
    ):
        status, answer = await api.call("POST", "/communities", alice, json=body)
        assert status == 400, body
        assert answer["error"]["code"] == "invalid_input"
    status, _ = await api.call("GET", "/communities/not-a-uuid", alice)
    assert status == 404
    status, _ = await api.call("GET", f"/communities/{uuid.uuid4()}", alice)
    assert status == 404
    status, _ = await api.call("GET", "/communities?cursor=garbage", alice)
    assert status == 400
    status, _ = await api.call("POST", "/communities", json={"name": unique()})
    assert status == 401


async def test_private_communities_are_invisible_to_outsiders(api: ApiClient) -> None:
    owner, outsider, admin = await api.user(), await api.user(), await api.user("admin")
    private = await create(api, owner, "private")
    public = await create(api, owner, "public")
    cid = private["id"]

    for method, path, body in (
        ("GET", f"/communities/{cid}", None),
        ("GET", f"/communities/{cid}/members", None),
        ("PATCH", f"/communities/{cid}", {"description": "mine now"}),
        ("POST", f"/communities/{cid}/members", {"user_id": outsider.id}),
        ("PUT", f"/communities/{cid}/members/{owner.id}", {"role": "member"}),
        ("DELETE", f"/communities/{cid}/members/{owner.id}", None),
        ("POST", f"/communities/{cid}/leave", None),
    ):
        status, answer = await api.call(method, path, outsider, json=body)
        assert status == 404, (method, path, answer)

    seen = await list_all(api, outsider)
    assert public["id"] in seen and cid not in seen
    assert seen[public["id"]]["my_role"] is None and seen[public["id"]]["member_count"] == 1

    # The owner lists it with their role; a platform admin sees it too.
    assert (await list_all(api, owner))[cid]["my_role"] == "owner"
    assert cid in await list_all(api, admin)
    status, got = await api.call("GET", f"/communities/{cid}", admin)
    assert status == 200 and got["my_role"] is None


async def list_all(api: ApiClient, actor: Actor, query: str = "") -> dict[str, Json]:
    found: dict[str, Json] = {}
    cursor = None
    while True:
        path = "/communities?limit=50" + query + (f"&cursor={cursor}" if cursor else "")
        status, page = await api.call("GET", path, actor)
        assert status == 200, page
        for item in page["items"]:
            assert item["id"] not in found, "an item appeared on two pages"
            found[item["id"]] = item
        cursor = page["next_cursor"]
        if cursor is None:
            return found


async def test_community_list_pages_without_duplicates_and_mine_filter(api: ApiClient) -> None:
    alice, bob = await api.user(), await api.user()
    made = [await create(api, alice) for _ in range(5)]
    joined = made[:2]
    for community in joined:
        status, _ = await api.call("POST", f"/communities/{community['id']}/join", bob)
        assert status == 200

    ids: list[str] = []
    cursor = None
    while True:
        path = "/communities?limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, page = await api.call("GET", path, bob)
        assert status == 200
        assert len(page["items"]) <= 2
        ids += [c["id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(ids) == len(set(ids))
    assert {c["id"] for c in made} <= set(ids)

    mine = await list_all(api, bob, "&mine=true")
    assert set(mine) == {c["id"] for c in joined}
    assert all(c["my_role"] == "member" and c["member_count"] == 2 for c in mine.values())


async def test_only_community_admins_edit_a_community(api: ApiClient) -> None:
    owner, helper, member, outsider = await api.user(), await api.user(), await api.user(), await api.user()
    community = await create(api, owner)
    path = f"/communities/{community['id']}"
    await add(api, owner, community, helper, "admin")
    await add(api, owner, community, member)

    for actor in (member, outsider):
        status, body = await api.call("PATCH", path, actor, json={"description": "hijacked"})
        assert status == 403 and body["error"]["code"] == "forbidden"
    status, got = await api.call("PATCH", path, helper, json={"description": "Weekly study sessions"})
    assert status == 200 and got["description"] == "Weekly study sessions" and got["my_role"] == "admin"

    status, _ = await api.call("PATCH", path, owner, json={})
    assert status == 400
    taken = await create(api, outsider)
    status, _ = await api.call("PATCH", path, owner, json={"name": taken["name"].lower()})
    assert status == 409
    status, got = await api.call("PATCH", path, owner, json={"visibility": "private"})
    assert status == 200 and got["visibility"] == "private"
    status, _ = await api.call("GET", path, outsider)
    assert status == 404
    updates = await audit_for(api, community, "community.updated")
    assert {"visibility": "private"} in [e["details"] for e in updates]


async def test_join_is_idempotent_and_private_is_invite_only(api: ApiClient) -> None:
    owner, bob = await api.user(), await api.user()
    public = await create(api, owner)
    for _ in range(2):
        status, got = await api.call("POST", f"/communities/{public['id']}/join", bob)
        assert status == 200 and got["my_role"] == "member" and got["member_count"] == 2

    private = await create(api, owner, "private")
    status, body = await api.call("POST", f"/communities/{private['id']}/join", bob)
    assert status == 403 and "invite only" in body["error"]["message"]
    status, _ = await api.call("POST", f"/communities/{uuid.uuid4()}/join", bob)
    assert status == 404


async def test_leaving_and_the_owner_cannot_leave(api: ApiClient) -> None:
    owner, bob = await api.user(), await api.user()
    community = await create(api, owner)
    await api.call("POST", f"/communities/{community['id']}/join", bob)
    status, _ = await api.call("POST", f"/communities/{community['id']}/leave", bob)
    assert status == 204
    status, got = await api.call("GET", f"/communities/{community['id']}", bob)
    assert got["my_role"] is None and got["member_count"] == 1
    status, body = await api.call("POST", f"/communities/{community['id']}/leave", owner)
    assert status == 409 and body["error"]["code"] == "conflict"
    assert (await roles_of(api, owner, community)) == {owner.id: "owner"}

    # Leaving a private community means losing sight of it.
    private = await create(api, owner, "private")
    await add(api, owner, private, bob)
    status, _ = await api.call("POST", f"/communities/{private['id']}/leave", bob)
    assert status == 204
    status, _ = await api.call("GET", f"/communities/{private['id']}", bob)
    assert status == 404


async def test_members_list_pages_in_joining_order(api: ApiClient) -> None:
    owner = await api.user()
    community = await create(api, owner)
    joiners = [await api.user() for _ in range(5)]
    for user in joiners:
        await api.call("POST", f"/communities/{community['id']}/join", user)

    seen: list[str] = []
    cursor = None
    while True:
        path = f"/communities/{community['id']}/members?limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, page = await api.call("GET", path, joiners[0])
        assert status == 200
        seen += [m["user_id"] for m in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [owner.id] + [u.id for u in joiners]


async def test_admins_add_people_to_a_private_community_and_they_are_notified(api: ApiClient) -> None:
    owner, helper, carol, dave = await api.user(), await api.user(), await api.user(), await api.user()
    private = await create(api, owner, "private")
    added = await add(api, owner, private, helper, "admin")
    assert added["role"] == "admin" and added["user_id"] == helper.id

    status, _ = await api.call(
        "POST", f"/communities/{private['id']}/members", helper, json={"user_id": carol.id, "role": "admin"}
    )
    assert status == 403
    added = await add(api, helper, private, carol)
    assert added["role"] == "member"
    status, got = await api.call("GET", f"/communities/{private['id']}", carol)
    assert status == 200 and got["my_role"] == "member"

    status, page = await api.call("GET", "/me/notifications", carol)
    assert status == 200
    note = page["items"][0]
    assert note["kind"] == "community_added" and note["read_at"] is None
    assert note["payload"]["community_id"] == private["id"] and note["payload"]["role"] == "member"

    # A plain member cannot add; adding twice or adding nobody is refused clearly.
    status, _ = await api.call("POST", f"/communities/{private['id']}/members", carol, json={"user_id": dave.id})
    assert status == 403
    status, _ = await api.call("POST", f"/communities/{private['id']}/members", owner, json={"user_id": carol.id})
    assert status == 409
    status, _ = await api.call(
        "POST", f"/communities/{private['id']}/members", owner, json={"user_id": str(uuid.uuid4())}
    )
    assert status == 404
    status, _ = await api.call(
        "POST", f"/communities/{private['id']}/members", owner, json={"user_id": dave.id, "role": "owner"}
    )
    assert status == 400
    assert len(await audit_for(api, private, "community.member_added")) == 2


async def test_role_rules_for_community_admins(api: ApiClient) -> None:
    owner, a1, a2, m = await api.user(), await api.user(), await api.user(), await api.user()
    community = await create(api, owner)
    await add(api, owner, community, a1, "admin")
    await add(api, owner, community, a2, "admin")
    await add(api, owner, community, m)

    status, _ = await set_role(api, a1, community, m, "admin")
    assert status == 403
    status, _ = await set_role(api, a1, community, m, "owner")
    assert status == 403
    status, _ = await set_role(api, a1, community, a2, "member")
    assert status == 403
    status, _ = await set_role(api, a1, community, owner, "member")
    assert status == 403
    status, _ = await set_role(api, m, community, a1, "member")
    assert status == 403
    status, body = await set_role(api, owner, community, m, "boss")
    assert status == 400 and body["error"]["code"] == "invalid_input"
    # Stepping down oneself is allowed.
    status, got = await set_role(api, a1, community, a1, "member")
    assert status == 200 and got["role"] == "member"

    status, got = await set_role(api, owner, community, m, "admin")
    assert status == 200 and got["role"] == "admin"
    status, _ = await api.call(
        "PUT", f"/communities/{community['id']}/members/{uuid.uuid4()}", owner, json={"role": "admin"}
    )
    assert status == 404
    assert await roles_of(api, owner, community) == {owner.id: "owner", a1.id: "member", a2.id: "admin", m.id: "admin"}

    changes = await audit_for(api, community, "community.role_changed")
    assert {(e["details"]["user_id"], e["details"]["before"], e["details"]["after"]) for e in changes} == {
        (a1.id, "admin", "member"),
        (m.id, "member", "admin"),
    }
    assert all(e["actor_id"] in (owner.id, a1.id) for e in changes)


async def test_ownership_transfer(api: ApiClient) -> None:
    owner, heir, outsider = await api.user(), await api.user(), await api.user()
    community = await create(api, owner, "private")
    await add(api, owner, community, heir)

    status, body = await set_role(api, owner, community, owner, "admin")
    assert status == 409, body
    status, _ = await set_role(api, owner, community, outsider, "owner")
    assert status == 404

    status, got = await set_role(api, owner, community, heir, "owner")
    assert status == 200 and got["role"] == "owner"
    assert await roles_of(api, heir, community) == {owner.id: "admin", heir.id: "owner"}
    status, got = await api.call("GET", f"/communities/{community['id']}", owner)
    assert got["my_role"] == "admin"

    # The former owner is now an ordinary admin: may leave, may not take the community back.
    status, _ = await set_role(api, owner, community, owner, "owner")
    assert status == 403
    status, _ = await api.call("POST", f"/communities/{community['id']}/leave", owner)
    assert status == 204
    status, _ = await api.call("POST", f"/communities/{community['id']}/leave", heir)
    assert status == 409

    changes = await audit_for(api, community, "community.role_changed")
    assert {(e["details"]["user_id"], e["details"]["before"], e["details"]["after"]) for e in changes} == {
        (heir.id, "member", "owner"),
        (owner.id, "owner", "admin"),
    }
    status, page = await api.call("GET", "/me/notifications?limit=1", heir)
    assert page["items"][0]["kind"] == "community_role_changed"
    assert page["items"][0]["payload"]["role"] == "owner"


async def test_kick_rules(api: ApiClient) -> None:
    owner, a1, a2, m1, m2 = (await api.user(), await api.user(), await api.user(), await api.user(), await api.user())
    community = await create(api, owner)
    for admin in (a1, a2):
        await add(api, owner, community, admin, "admin")
    for member in (m1, m2):
        await add(api, owner, community, member)

    assert (await kick(api, m1, community, m2))[0] == 403
    assert (await kick(api, a1, community, a2))[0] == 403
    assert (await kick(api, a1, community, owner))[0] == 403
    assert (await kick(api, owner, community, owner))[0] == 403
    assert (await kick(api, a1, community, m1))[0] == 204
    assert (await kick(api, owner, community, a2))[0] == 204
    assert (await kick(api, owner, community, a2))[0] == 404
    assert await roles_of(api, owner, community) == {owner.id: "owner", a1.id: "admin", m2.id: "member"}

    removed = await audit_for(api, community, "community.member_removed")
    assert {(e["actor_id"], e["details"]["user_id"], e["details"]["role"]) for e in removed} == {
        (a1.id, m1.id, "member"),
        (owner.id, a2.id, "admin"),
    }
    status, page = await api.call("GET", "/me/notifications?limit=1", m1)
    assert page["items"][0]["kind"] == "community_removed"
    # A kicked member may join a public community again.
    status, got = await api.call("POST", f"/communities/{community['id']}/join", m1)
    assert status == 200 and got["my_role"] == "member"


async def test_platform_admins_act_as_owner_everywhere(api: ApiClient) -> None:
    owner, a1, m1, staff = await api.user(), await api.user(), await api.user(), await api.user("admin")
    community = await create(api, owner, "private")
    await add(api, owner, community, a1, "admin")
    await add(api, owner, community, m1)

    status, _ = await api.call("PATCH", f"/communities/{community['id']}", staff, json={"description": "moderated"})
    assert status == 200
    assert (await kick(api, staff, community, a1))[0] == 204
    assert (await kick(api, staff, community, owner))[0] == 403
    status, got = await set_role(api, staff, community, m1, "owner")
    assert status == 200 and got["role"] == "owner"
    assert await roles_of(api, staff, community) == {owner.id: "admin", m1.id: "owner"}
    added = await add(api, staff, community, staff, "admin")
    assert added["role"] == "admin"


async def test_communities_are_found_by_name(api: ApiClient) -> None:
    alice, bob = await api.user(), await api.user()
    token = uuid.uuid4().hex[:8]
    public = await create(api, alice, name=f"Findable {token}")
    await create(api, alice, visibility="private", name=f"Hidden findable {token}")
    status, page = await api.call("GET", "/communities", bob, params={"q": token.upper()})
    assert status == 200
    assert [c["id"] for c in page["items"]] == [public["id"]]
    status, answer = await api.call("GET", "/communities", bob, params={"q": "x" * 81})
    assert status == 400, answer
