"""Communities take part in a contest, or in a template's weekly wars, only with their admins' consent.

An organizer names communities when creating a contest or a template. For each one:

- a community the caller administers (its owner or an admin; any community for a platform admin, who acts
  as every community's owner) takes part at once;
- any other community is *invited*: its owner and admins are notified (``contest_invitation``), and it
  takes part once one of them accepts (``POST .../communities/{community_id}/answer {accept}``); the
  organizer is notified of the answer (``contest_invitation_answered``), except of a decline by a
  private community they cannot see. A community admin sees its invitations at
  ``GET /communities/{id}/contest-invitations``;
- an id that names no community is dropped.

Nothing here tells anyone whether a private community they cannot see exists: creating the contest
answers the same for such a community as for an id that names none, the managers' list of invitations
leaves out communities the caller cannot see (until they accept), and answering for one is
``not_found`` as everywhere else.
Only communities that accepted are listed with their names on the contest, its standings and boards.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from core_api.communities import ADMIN, acting_rank, visible_community
from core_api.context import Core, Tx, audit, notify
from core_api.db import Connection, Pool
from core_api.errors import conflict, forbidden, not_found
from core_api.http import Input, Principal
from leaderboards.schemas import InvitationOut, Participation

Kind = Literal["contest", "template"]


@dataclass(frozen=True)
class Target:
    """What communities are invited to: a contest, or a template (whose wars they then take part in)."""

    kind: Kind
    id: uuid.UUID
    title: str

    @property
    def table(self) -> str:
        return "contest_communities" if self.kind == "contest" else "contest_template_communities"

    @property
    def column(self) -> str:
        return "contest_id" if self.kind == "contest" else "template_id"

    def ids(self) -> dict[str, str | None]:
        return {
            "contest_id": str(self.id) if self.kind == "contest" else None,
            "template_id": str(self.id) if self.kind == "template" else None,
        }


async def community_admins(conn: Connection, community_id: uuid.UUID) -> list[uuid.UUID]:
    rows = await conn.fetch(
        "SELECT user_id FROM community_members WHERE community_id = $1 AND role IN ('owner', 'admin') ORDER BY user_id",
        community_id,
    )
    return [r["user_id"] for r in rows]


async def enlist(tx: Tx, user: Principal, target: Target, community_ids: list[uuid.UUID]) -> None:
    """Make ``community_ids`` take part (those the caller administers) or invite them (the others)."""
    rows = await tx.conn.fetch(
        "SELECT c.id, c.name, (SELECT m.role FROM community_members m WHERE m.community_id = c.id"
        " AND m.user_id = $2) AS my_role FROM communities c WHERE c.id = ANY($1::uuid[]) ORDER BY c.id",
        sorted(set(community_ids)),
        user.id,
    )
    for row in rows:
        consents = acting_rank(user, row["my_role"]) >= ADMIN
        await tx.conn.execute(
            f"INSERT INTO {target.table} ({target.column}, community_id, state, invited_by, answered_by, answered_at)"
            " VALUES ($1, $2, $3, $4, $5, CASE WHEN $5::uuid IS NULL THEN NULL ELSE now() END)"
            " ON CONFLICT DO NOTHING",
            target.id,
            row["id"],
            "accepted" if consents else "invited",
            user.id,
            user.id if consents else None,
        )
        if consents:
            continue
        payload = {
            **target.ids(),
            "title": target.title,
            "community_id": str(row["id"]),
            "community_name": row["name"],
            "invited_by": str(user.id),
            "invited_by_name": user.display_name,
        }
        for admin in await community_admins(tx.conn, row["id"]):
            await notify(tx, admin, "contest_invitation", payload)


async def invitations_of(conn: Connection | Pool, user: Principal, target: Target) -> list[InvitationOut]:
    """Every community invited to ``target`` that the caller can see, with its answer (for managers)."""
    rows = await conn.fetch(
        f"SELECT x.community_id, x.state, x.answered_at, c.name FROM {target.table} x"
        " JOIN communities c ON c.id = x.community_id"
        f" WHERE x.{target.column} = $1 AND ($3 OR c.visibility = 'public' OR x.state = 'accepted'"
        " OR EXISTS (SELECT 1 FROM community_members m WHERE m.community_id = c.id AND m.user_id = $2))"
        " ORDER BY c.name, c.id",
        target.id,
        user.id,
        user.is_admin,
    )
    return [
        InvitationOut(community_id=r["community_id"], name=r["name"], state=r["state"], answered_at=r["answered_at"])
        for r in rows
    ]


async def accepted_of(conn: Connection | Pool, target: Target) -> list[uuid.UUID]:
    rows = await conn.fetch(
        f"SELECT community_id FROM {target.table} WHERE {target.column} = $1 AND state = 'accepted'"
        " ORDER BY community_id",
        target.id,
    )
    return [r["community_id"] for r in rows]


async def _sees(conn: Connection, user_id: uuid.UUID, community_id: uuid.UUID) -> bool:
    """Whether the user can see the community (public, a member, or a platform admin)."""
    return bool(
        await conn.fetchval(
            "SELECT c.visibility = 'public' OR EXISTS (SELECT 1 FROM community_members m WHERE m.community_id = c.id"
            " AND m.user_id = $2) OR EXISTS (SELECT 1 FROM users u WHERE u.id = $2 AND u.role = 'admin')"
            " FROM communities c WHERE c.id = $1",
            community_id,
            user_id,
        )
    )


# --- answering --------------------------------------------------------------------------------------


class AnswerIn(Input):
    accept: bool = Field(description="`true`: the community takes part; `false`: it declines.")


async def answer(core: Core, user: Principal, kind: Kind, target_id: uuid.UUID, community_id: uuid.UUID,
                 accept: bool, now: datetime) -> InvitationOut:  # fmt: skip
    """A community admin's answer to an invitation. It may change until a contest starts (a template's, any
    time: it applies to the wars opened afterwards); after the start a pending invitation may still be
    accepted, but a community taking part stays in."""
    state: Participation = "accepted" if accept else "declined"
    async with core.transaction() as tx:
        community = await visible_community(tx.conn, user, community_id)
        if acting_rank(user, community["my_role"]) < ADMIN:
            raise forbidden("only the community's owner and admins answer its invitations")
        if kind == "contest":
            owner = await tx.conn.fetchrow(
                "SELECT id, title, created_by, starts_at, ends_at, finalised_at FROM contests WHERE id = $1 FOR SHARE",
                target_id,
            )
        else:
            owner = await tx.conn.fetchrow(
                "SELECT id, title, created_by FROM contest_templates WHERE id = $1 FOR SHARE", target_id
            )
        target = Target(kind, target_id, owner["title"] if owner else "")
        current = await tx.conn.fetchrow(
            f"SELECT state FROM {target.table} WHERE {target.column} = $1 AND community_id = $2 FOR UPDATE",
            target_id,
            community_id,
        )
        if owner is None or current is None:
            raise not_found("invitation")
        if kind == "contest":
            if owner["finalised_at"] is not None or now >= owner["ends_at"]:
                raise conflict("the contest is over; its invitations can no longer be answered")
            if now >= owner["starts_at"] and current["state"] == "accepted" and not accept:
                raise conflict("the contest has started: a community taking part stays in")
        row = await tx.conn.fetchrow(
            f"UPDATE {target.table} SET state = $3, answered_by = $4, answered_at = now()"
            f" WHERE {target.column} = $1 AND community_id = $2 RETURNING state, answered_at",
            target_id,
            community_id,
            state,
            user.id,
        )
        assert row is not None
        if current["state"] != state:
            await audit(tx, user.id, f"contest.invitation_{state}", target.kind, target_id,
                        community_id=str(community_id))  # fmt: skip
            organizer = owner["created_by"]
            # A private community the organizer cannot see that declines stays unseen: nobody is told.
            if organizer != user.id and (accept or await _sees(tx.conn, organizer, community_id)):
                await notify(
                    tx,
                    organizer,
                    "contest_invitation_answered",
                    {**target.ids(), "title": target.title, "community_id": str(community_id),
                     "community_name": community["name"], "accepted": accept},
                )  # fmt: skip
    return InvitationOut(community_id=community_id, name=community["name"], state=state, answered_at=row["answered_at"])


class CommunityInvitationOut(BaseModel):
    kind: Kind
    contest_id: uuid.UUID | None
    template_id: uuid.UUID | None
    title: str
    organizer_id: uuid.UUID | None
    starts_at: datetime | None = Field(description="The contest's start; null for a template (weekly wars).")
    state: Participation
    invited_by: uuid.UUID | None
    invited_at: datetime
    answered_at: datetime | None


class CommunityInvitationList(BaseModel):
    items: list[CommunityInvitationOut] = Field(description="The latest 200, newest first.")


async def community_invitations(core: Core, user: Principal, community_id: uuid.UUID) -> CommunityInvitationList:
    async with core.pool.acquire() as conn:
        community = await visible_community(conn, user, community_id)
        if acting_rank(user, community["my_role"]) < ADMIN:
            raise forbidden("only the community's owner and admins see its invitations")
        rows = await conn.fetch(
            "SELECT * FROM ("
            " SELECT 'contest' AS kind, c.id AS contest_id, NULL::uuid AS template_id, c.title, c.organizer_id,"
            " c.starts_at, x.state, x.invited_by, x.invited_at, x.answered_at FROM contest_communities x"
            " JOIN contests c ON c.id = x.contest_id WHERE x.community_id = $1"
            " UNION ALL"
            " SELECT 'template', NULL, t.id, t.title, t.organizer_id, NULL, x.state, x.invited_by, x.invited_at,"
            " x.answered_at FROM contest_template_communities x JOIN contest_templates t ON t.id = x.template_id"
            " WHERE x.community_id = $1) i ORDER BY invited_at DESC LIMIT 200",
            community_id,
        )
    return CommunityInvitationList(items=[CommunityInvitationOut(**dict(r)) for r in rows])
