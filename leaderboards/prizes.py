"""Prizes in coins: a platform admin approves them, a prize budget pays them, every credit names its source.

Coins are a currency, so only platform admins decide how many come into being:

- **Approval.** A contest or weekly template offering a prize above 0 coins waits for a platform admin's
  approval (``approval.state: pending``); until then its submissions are refused (409) and a template
  opens no wars. ``POST /contests/{id}/approval {approve, note?}`` (and ``/contest-templates/{id}/approval``),
  platform admins only and audited, approves or rejects; the organizer is notified (``contest_approval``).
  A contest or template created by a platform admin is approved by its creator; a template's approval
  carries over to the wars it opens. Prizes of 0 coins (or none) need no approval.
- **Budgets.** Prizes are paid from one prize budget: the contest's own if it has one, else its
  template's, else its organizing community's. Platform admins set a budget's balance
  (``PUT /communities/{id}/prize-budget``, ``/contests/{id}/prize-budget``,
  ``/contest-templates/{id}/prize-budget`` with ``{coins, note?}``: an entry naming the admin, and an
  audit entry); admins and the organizer's admins read it (``GET``, with its latest entries).
- **Paying** (in the transaction that finalises the contest; the weekly cycle retries a blocked payout):
  the prizes due are added up and taken from the budget in the transaction that credits the winners,
  the budget's row locked. If the budget holds less, or there is none, nothing is paid: the contest shows
  ``payout.state: blocked`` and why, its organizer is told once, and the next pass tries again (once an
  admin has topped the budget up). A budget's balance can never go below zero (a CHECK), whatever runs at
  once. Each credit names the contest, the budget and the approving admin (``wallet_entries``; a CHECK
  refuses a prize credit that does not), and the budget's ``award`` entry names the contest.
- **One prize per placement.** Scoring is per (person, community): a member who solved problems for two
  communities helped each of them, so they are paid once for each placement (ledger ref
  ``award:<contest>:<community>:<user>``), and told of each payment (``contest_award``, naming the
  community) in the same transaction, only for a credit that was written: what a winner is told is what
  the ledger holds. The budget is charged exactly what was credited.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from core_api.communities import ADMIN, acting_rank, visible_community
from core_api.context import CORE, Core, Tx, audit, new_id, notify
from core_api.db import Connection, Record
from core_api.errors import conflict, forbidden, not_found
from core_api.http import Api, Call, Input, Principal
from leaderboards import wallet
from leaderboards.schemas import Approval, ApprovalOut, PayoutOut

api = Api()
TAG = "prizes"
Scope = Literal["community", "contest", "template"]
MAX_BUDGET = 1_000_000_000_000
_COLUMN: dict[Scope, str] = {"community": "community_id", "contest": "contest_id", "template": "template_id"}

# --- approval --------------------------------------------------------------------------------------------


def needs_approval(prizes: list[int]) -> bool:
    return any(p > 0 for p in prizes)


def initial_approval(user: Principal, prizes: list[int]) -> tuple[Approval, uuid.UUID | None]:
    """A new contest's or template's approval: none needed, approved by its admin creator, or pending."""
    if not needs_approval(prizes):
        return "not_needed", None
    return ("approved", user.id) if user.is_admin else ("pending", None)


_MESSAGES: dict[str, str | None] = {
    "not_needed": None,
    "pending": "Its prizes wait for a platform admin's approval; until then submissions are refused "
    "(a template opens no wars).",
    "approved": "A platform admin approved its prizes.",
    "rejected": "A platform admin rejected its prizes: submissions are refused (a template opens no wars).",
}


def approval_out(row: Record) -> ApprovalOut:
    return ApprovalOut(
        state=row["approval"],
        message=_MESSAGES[row["approval"]],
        note=row["approval_note"],
        decided_by=row["approved_by"],
        decided_at=row["approval_decided_at"],
    )


def payout_out(row: Record) -> PayoutOut:
    note, paid_at = row["award_note"], row["awarded_at"]
    if not needs_approval(list(row["prizes"])):
        return PayoutOut(state="none", message=None, paid_at=None)
    if paid_at is not None:
        return PayoutOut(state="none" if note else "paid", message=note, paid_at=None if note else paid_at)
    return PayoutOut(state="blocked" if note else "due", message=note, paid_at=None)


def refused_while_unapproved(row: Record) -> str | None:
    """Why submissions to this contest are refused now, or None."""
    if row["approval"] in ("pending", "rejected"):
        return _MESSAGES[row["approval"]]
    return None


class ApprovalIn(Input):
    approve: bool = Field(description="`true` approves the prizes, `false` rejects them.")
    note: str = Field("", max_length=500, description="Shown to the organizer.")


async def decide(core: Core, admin: Principal, kind: Literal["contest", "template"], target_id: uuid.UUID,
                 body: ApprovalIn) -> ApprovalOut:  # fmt: skip
    """A platform admin approves or rejects the prizes of a contest (not paid yet) or a template."""
    table = "contests" if kind == "contest" else "contest_templates"
    paid = "awarded_at" if kind == "contest" else "NULL::timestamptz"
    state: Approval = "approved" if body.approve else "rejected"
    async with core.transaction() as tx:
        row = await tx.conn.fetchrow(
            f"SELECT id, title, created_by, prizes, approval, {paid} AS awarded_at FROM {table} WHERE id = $1"
            " FOR UPDATE",
            target_id,
        )
        if row is None:
            raise not_found(kind)
        if not needs_approval(list(row["prizes"])):
            raise conflict("it offers no prizes: there is nothing to approve")
        if row["awarded_at"] is not None:
            raise conflict("its prizes have been settled already")
        out = await tx.conn.fetchrow(
            f"UPDATE {table} SET approval = $2, approval_note = $3, approved_by = $4, approval_decided_at = now()"
            " WHERE id = $1 RETURNING approval, approval_note, approved_by, approval_decided_at",
            target_id,
            state,
            body.note or None,
            admin.id,
        )
        assert out is not None
        action = "contest" if kind == "contest" else "contest_template"
        await audit(tx, admin.id, f"{action}.{'approve' if body.approve else 'reject'}", action, target_id,
                    prizes=list(row["prizes"]), note=body.note)  # fmt: skip
        ids = {"contest_id": str(target_id)} if kind == "contest" else {"template_id": str(target_id)}
        await notify(tx, row["created_by"], "contest_approval",
                     {**ids, "title": row["title"], "state": state, "note": body.note})  # fmt: skip
    return approval_out(out)


# --- budgets ----------------------------------------------------------------------------------------------


class BudgetIn(Input):
    coins: int = Field(ge=0, le=MAX_BUDGET, description="The balance the budget holds from now on.")
    note: str = Field("", max_length=500, description="Why (kept with the entry).")


class BudgetEntryOut(BaseModel):
    id: uuid.UUID
    kind: Literal["set", "award"] = Field(description="`set` by an admin, or `award`: prizes paid from it.")
    amount: int
    balance_after: int
    actor_id: uuid.UUID | None = Field(description="The admin who set it.")
    contest_id: uuid.UUID | None = Field(description="The contest whose prizes were paid.")
    note: str
    created_at: datetime


class BudgetOut(BaseModel):
    scope: Scope
    owner_id: uuid.UUID = Field(description="The community, contest or template it belongs to.")
    id: uuid.UUID | None = Field(description="Null until an admin first sets it.")
    balance: int
    entries: list[BudgetEntryOut] = Field(description="The latest 50, newest first.")


async def _check_reader(conn: Connection, user: Principal, scope: Scope, owner_id: uuid.UUID) -> None:
    """Admins read every budget; a community's admins read its budget and those of the contests and
    templates it organizes. Others are refused without learning more than they could see anyway."""
    if scope == "community":
        community = await visible_community(conn, user, owner_id)
        if acting_rank(user, community["my_role"]) < ADMIN:
            raise forbidden("only platform admins and the community's admins see its prize budget")
        return
    table = "contests" if scope == "contest" else "contest_templates"
    row = await conn.fetchrow(f"SELECT organizer_id FROM {table} WHERE id = $1", owner_id)
    if row is None:
        raise not_found(scope)
    if user.is_admin:
        return
    role = await conn.fetchval(
        "SELECT role FROM community_members WHERE community_id = $1 AND user_id = $2", row["organizer_id"], user.id
    )
    if role not in ("admin", "owner"):
        raise forbidden(f"only platform admins and the organizer's admins see this {scope}'s prize budget")


async def _budget_out(conn: Connection, scope: Scope, owner_id: uuid.UUID) -> BudgetOut:
    budget = await conn.fetchrow(f"SELECT id, balance FROM prize_budgets WHERE {_COLUMN[scope]} = $1", owner_id)
    entries = []
    if budget is not None:
        rows = await conn.fetch(
            "SELECT id, kind, amount, balance_after, actor_id, contest_id, note, created_at FROM prize_budget_entries"
            " WHERE budget_id = $1 ORDER BY created_at DESC, id LIMIT 50",
            budget["id"],
        )
        entries = [BudgetEntryOut(**dict(r)) for r in rows]
    return BudgetOut(
        scope=scope,
        owner_id=owner_id,
        id=budget["id"] if budget else None,
        balance=budget["balance"] if budget else 0,
        entries=entries,
    )


async def read_budget(core: Core, user: Principal, scope: Scope, owner_id: uuid.UUID) -> BudgetOut:
    async with core.pool.acquire() as conn:
        await _check_reader(conn, user, scope, owner_id)
        return await _budget_out(conn, scope, owner_id)


async def set_budget(core: Core, admin: Principal, scope: Scope, owner_id: uuid.UUID, body: BudgetIn) -> BudgetOut:
    """Set a budget's balance (a platform admin): an entry names the admin and the change, and the audit log."""
    column = _COLUMN[scope]
    table = {"community": "communities", "contest": "contests", "template": "contest_templates"}[scope]
    async with core.transaction() as tx:
        if not await tx.conn.fetchval(f"SELECT true FROM {table} WHERE id = $1", owner_id):
            raise not_found(scope)
        await tx.conn.execute(
            f"INSERT INTO prize_budgets (id, {column}) VALUES ($1, $2) ON CONFLICT ({column}) DO NOTHING",
            new_id(),
            owner_id,
        )
        budget = await tx.conn.fetchrow(
            f"SELECT id, balance FROM prize_budgets WHERE {column} = $1 FOR UPDATE", owner_id
        )
        assert budget is not None
        change = body.coins - budget["balance"]
        await tx.conn.execute("UPDATE prize_budgets SET balance = $2 WHERE id = $1", budget["id"], body.coins)
        await tx.conn.execute(
            "INSERT INTO prize_budget_entries (id, budget_id, kind, amount, balance_after, actor_id, note)"
            " VALUES ($1, $2, 'set', $3, $4, $5, $6)",
            new_id(), budget["id"], change, body.coins, admin.id, body.note,
        )  # fmt: skip
        await audit(tx, admin.id, "prize_budget.set", "prize_budget", budget["id"], scope=scope,
                    owner_id=str(owner_id), before=budget["balance"], after=body.coins, note=body.note)  # fmt: skip
        return await _budget_out(tx.conn, scope, owner_id)


# --- paying -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Payment:
    user_id: uuid.UUID
    community_id: uuid.UUID
    community_name: str
    rank: int
    coins: int

    def ref(self, contest_id: uuid.UUID) -> str:
        """The ledger ref: one credit per contest, community and member, however often paying runs."""
        return f"award:{contest_id}:{self.community_id}:{self.user_id}"


async def _winners(conn: Connection, contest_id: uuid.UUID, prizes: list[int]) -> list[Payment]:
    """Each member who solved a problem (not disqualified) for a community ranked r gets ``prizes[r - 1]``,
    once per such community."""
    rows = await conn.fetch(
        "SELECT DISTINCT r.rank, r.community_id, c.name, s.user_id FROM contest_results r"
        " JOIN communities c ON c.id = r.community_id JOIN contest_submissions s"
        " ON s.contest_id = r.contest_id AND s.community_id = r.community_id"
        " AND s.verdict = 'accepted' AND NOT s.disqualified"
        " WHERE r.contest_id = $1 AND r.rank <= $2 ORDER BY r.rank, r.community_id, s.user_id",
        contest_id,
        len(prizes),
    )
    return [
        Payment(r["user_id"], r["community_id"], r["name"], r["rank"], prizes[r["rank"] - 1])
        for r in rows
        if prizes[r["rank"] - 1] > 0
    ]


async def _settle(tx: Tx, contest: Record, note: str | None, **details: object) -> int:
    await tx.conn.execute("UPDATE contests SET awarded_at = now(), award_note = $2 WHERE id = $1", contest["id"], note)
    await audit(tx, None, "contest.award", "contest", contest["id"], note=note, **details)
    return 1


async def _block(tx: Tx, contest: Record, why: str) -> int:
    """Leave the prizes unpaid, saying why; the organizer is told when the reason changes."""
    if contest["award_note"] != why:
        await tx.conn.execute("UPDATE contests SET award_note = $2 WHERE id = $1", contest["id"], why)
        await notify(tx, contest["created_by"], "contest_award_blocked",
                     {"contest_id": str(contest["id"]), "title": contest["title"], "reason": why})  # fmt: skip
    return 0


async def award(core: Core, contest_id: uuid.UUID) -> int:
    """Pay a finalised contest's prizes once, from its budget, in a transaction of its own (the cycle's
    retry of a blocked payout); see :func:`award_in`."""
    async with core.transaction() as tx:
        return await award_in(tx, contest_id)


async def award_in(tx: Tx, contest_id: uuid.UUID) -> int:
    """Pay a finalised contest's prizes once, from its budget, in ``tx`` (the finalising transaction);
    1 if this call settled them, 0 if not (not finalised, settled already, or blocked: the budget cannot
    pay, and the contest says why)."""
    contest = await tx.conn.fetchrow(
        "SELECT id, title, created_by, organizer_id, template_id, prizes, approval, approved_by, awarded_at,"
        " award_note, finalised_at FROM contests WHERE id = $1 FOR UPDATE",
        contest_id,
    )
    if contest is None or contest["awarded_at"] is not None or contest["finalised_at"] is None:
        return 0
    prizes: list[int] = list(contest["prizes"])
    if not needs_approval(prizes):
        return await _settle(tx, contest, None, winners=0)
    if contest["approval"] != "approved":
        return await _settle(tx, contest, "Not paid: its prizes were never approved.", winners=0)
    payments = await _winners(tx.conn, contest_id, prizes)
    total = sum(p.coins for p in payments)
    if total == 0:
        return await _settle(tx, contest, None, winners=0)
    if contest["approved_by"] is None:
        return await _block(tx, contest, "The admin who approved its prizes no longer exists: approve them again.")
    budget = await tx.conn.fetchrow(
        "SELECT id, balance FROM prize_budgets WHERE contest_id = $1 OR template_id = $2 OR community_id = $3"
        " ORDER BY contest_id IS NULL, template_id IS NULL LIMIT 1 FOR UPDATE",
        contest_id,
        contest["template_id"],
        contest["organizer_id"],
    )
    if budget is None:
        return await _block(
            tx,
            contest,
            f"Its prizes come to {total} coins and there is no prize budget to pay "
            "them from: a platform admin sets one for the contest or its organizing community.",
        )
    if budget["balance"] < total:
        return await _block(tx, contest, f"Its prizes come to {total} coins and its prize budget holds "
                            f"{budget['balance']}: paid as soon as a platform admin raises it.")  # fmt: skip
    source = wallet.Source(contest_id=contest_id, budget_id=budget["id"], approved_by=contest["approved_by"])
    paid: list[Payment] = []
    for p in payments:
        reason = f"rank {p.rank} for {p.community_name} in {contest['title']}"
        if not await wallet.credit(tx, p.user_id, p.coins, reason, p.ref(contest_id), source):
            continue  # credited before: neither paid nor told again
        paid.append(p)
        # In the same transaction as the credit: a winner is told exactly what the ledger holds, once.
        told = {"contest_id": str(contest_id), "title": contest["title"], "rank": p.rank, "coins": p.coins,
                "community_id": str(p.community_id), "community_name": p.community_name}  # fmt: skip
        await notify(tx, p.user_id, "contest_award", told)
    coins = sum(p.coins for p in paid)
    if coins:
        left = await tx.conn.fetchval(
            "UPDATE prize_budgets SET balance = balance - $2 WHERE id = $1 RETURNING balance", budget["id"], coins
        )
        await tx.conn.execute(
            "INSERT INTO prize_budget_entries (id, budget_id, kind, amount, balance_after, contest_id, note, ref)"
            " VALUES ($1, $2, 'award', $3, $4, $5, $6, $7)",
            new_id(), budget["id"], -coins, left, contest_id, f"prizes of {contest['title']}", f"award:{contest_id}",
        )  # fmt: skip
    return await _settle(
        tx,
        contest,
        None,
        winners=len({p.user_id for p in paid}),
        payments=len(paid),
        coins=coins,
        budget_id=str(budget["id"]),
    )


# --- REST ---------------------------------------------------------------------------------------------------


@api.route("POST", "/contests/{contest_id}/approval", summary="Approve or reject a contest's prizes (platform admins)",
           tag=TAG, body=ApprovalIn, response=ApprovalOut, roles=["admin"], errors=[403, 404, 409])  # fmt: skip
async def post_contest_approval(call: Call) -> ApprovalOut:
    return await decide(call.request.app[CORE], call.me, "contest", call.params["contest_id"], call.body)


@api.route("POST", "/contest-templates/{template_id}/approval",
           summary="Approve or reject a weekly template's prizes (platform admins)", tag=TAG, body=ApprovalIn,
           response=ApprovalOut, roles=["admin"], errors=[403, 404, 409])  # fmt: skip
async def post_template_approval(call: Call) -> ApprovalOut:
    return await decide(call.request.app[CORE], call.me, "template", call.params["template_id"], call.body)


def _budget_routes(scope: Scope, path: str, param: str, what: str) -> None:
    async def get_budget(call: Call) -> BudgetOut:
        return await read_budget(call.request.app[CORE], call.me, scope, call.params[param])

    async def put_budget(call: Call) -> BudgetOut:
        return await set_budget(call.request.app[CORE], call.me, scope, call.params[param], call.body)

    name = scope if scope != "template" else "contest_template"
    get_budget.__name__, put_budget.__name__ = f"get_{name}_prize_budget", f"put_{name}_prize_budget"
    api.route("GET", path, summary=f"The prize budget of {what} (admins, and the organizer's admins)", tag=TAG,
              response=BudgetOut, errors=[403, 404])(get_budget)  # fmt: skip
    api.route("PUT", path, summary=f"Set the prize budget of {what} (platform admins)", tag=TAG, body=BudgetIn,
              response=BudgetOut, roles=["admin"], errors=[403, 404])(put_budget)  # fmt: skip


_budget_routes("community", "/communities/{community_id}/prize-budget", "community_id",
               "a community (pays its contests' prizes)")  # fmt: skip
_budget_routes("contest", "/contests/{contest_id}/prize-budget", "contest_id",
               "one contest (before its community's)")  # fmt: skip
_budget_routes("template", "/contest-templates/{template_id}/prize-budget", "template_id",
               "a weekly template's wars (before their community's)")  # fmt: skip
