"""Coins: an append-only wallet ledger, prizes paid into it, and course enrollments bought with it.

Every change is a new ``wallet_entries`` row (the table refuses updates and deletes); a balance is the sum
of the user's entries. Each entry has a unique ``ref`` (``award:<contest>:<community>:<user>``,
``enroll:<course>:<user>``), so an award or a purchase happens at most once however often it is tried.
Coins come into being only as prizes paid from a prize budget (:mod:`leaderboards.prizes`), and every
credit says so: its ``source`` names the contest, the budget and the admin who approved the prizes.
Spending locks the user's wallet (a transaction-scoped advisory lock) and checks the balance in the same
transaction, so two purchases at once can never take a balance below zero.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from core_api.context import CORE as CORE_KEY
from core_api.context import Core, Tx, audit, new_id
from core_api.courses import owned_course, visible_course
from core_api.db import Connection, Record
from core_api.enrollments import add_enrollment, has_paid, purchase_ref
from core_api.errors import AppError, ErrorCode, conflict
from core_api.http import Api, Call, Input, Principal

api = Api()
TAG = "wallet"


class SourceOut(BaseModel):
    kind: str = Field(description="`prize`: a contest's prize, paid from a prize budget.")
    contest_id: uuid.UUID | None
    budget_id: uuid.UUID | None = Field(description="The prize budget it was paid from.")
    approved_by: uuid.UUID | None = Field(description="The platform admin who approved the prizes.")


class EntryOut(BaseModel):
    id: uuid.UUID
    amount: int
    reason: str
    ref: str
    created_at: datetime
    source: SourceOut | None = Field(
        description="Where a credit came from (null for spending and for entries older than sources)."
    )


@dataclass(frozen=True)
class Source:
    """Where a credit comes from: a contest's prize, paid from a budget, approved by an admin."""

    contest_id: uuid.UUID
    budget_id: uuid.UUID
    approved_by: uuid.UUID
    kind: Literal["prize"] = "prize"


class WalletOut(BaseModel):
    balance: int
    entries: list[EntryOut] = Field(description="The latest 100 entries, newest first.")


class PriceIn(Input):
    coins: int = Field(ge=0, le=1_000_000_000, description="0 makes the course free again.")


class PriceOut(BaseModel):
    course_id: uuid.UUID
    coins: int


class PurchaseOut(BaseModel):
    course_id: uuid.UUID
    coins_paid: int = Field(description="Coins taken now: 0 when you had bought this course before.")
    balance: int
    paid_before: bool = Field(
        False, description="You had bought this course before (and left it): you are back in without paying again."
    )


async def lock_wallet(conn: Connection, user_id: uuid.UUID) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('wallet:' || $1::text))", str(user_id))


async def balance_of(conn: Connection, user_id: uuid.UUID) -> int:
    return int(await conn.fetchval("SELECT coalesce(sum(amount), 0) FROM wallet_entries WHERE user_id = $1", user_id))


async def credit(tx: Tx, user_id: uuid.UUID, amount: int, reason: str, ref: str, source: Source) -> bool:
    """Pay ``amount`` coins once per ``ref``, naming their ``source``; ``False`` if that ref was already paid."""
    done = await tx.conn.fetchval(
        "INSERT INTO wallet_entries (id, user_id, amount, reason, ref, source, contest_id, budget_id, approved_by)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (ref) DO NOTHING RETURNING id",
        new_id(), user_id, amount, reason, ref, source.kind, source.contest_id, source.budget_id, source.approved_by,
    )  # fmt: skip
    return done is not None


async def spend(tx: Tx, user_id: uuid.UUID, amount: int, reason: str, ref: str) -> int:
    """Take ``amount`` coins (409 ``conflict`` if the balance is short); returns the new balance."""
    await lock_wallet(tx.conn, user_id)
    balance = await balance_of(tx.conn, user_id)
    if balance < amount:
        raise conflict(f"this costs {amount} coins and you have {balance}", balance=balance, price=amount)
    await tx.conn.execute(
        "INSERT INTO wallet_entries (id, user_id, amount, reason, ref) VALUES ($1, $2, $3, $4, $5)",
        new_id(),
        user_id,
        -amount,
        reason,
        ref,
    )
    return balance - amount


async def wallet(core: Core, user: Principal) -> WalletOut:
    async with core.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT id, amount, reason, ref, created_at, source, contest_id, budget_id, approved_by"
            " FROM wallet_entries WHERE user_id = $1 ORDER BY created_at DESC, id LIMIT 100",
            user.id,
        )
        balance = await balance_of(conn, user.id)
    return WalletOut(balance=balance, entries=[_entry_out(r) for r in rows])


def _entry_out(r: Record) -> EntryOut:
    source = None
    if r["source"] is not None:
        source = SourceOut(kind=r["source"], contest_id=r["contest_id"], budget_id=r["budget_id"],
                           approved_by=r["approved_by"])  # fmt: skip
    return EntryOut(id=r["id"], amount=r["amount"], reason=r["reason"], ref=r["ref"], created_at=r["created_at"],
                    source=source)  # fmt: skip


async def set_price(core: Core, user: Principal, course_id: uuid.UUID, coins: int) -> PriceOut:
    async with core.transaction() as tx:
        await owned_course(tx.conn, user, course_id, lock=True)
        if coins == 0:
            await tx.conn.execute("DELETE FROM course_prices WHERE course_id = $1", course_id)
        else:
            await tx.conn.execute(
                "INSERT INTO course_prices (course_id, coins) VALUES ($1, $2)"
                " ON CONFLICT (course_id) DO UPDATE SET coins = excluded.coins",
                course_id,
                coins,
            )
        await audit(tx, user.id, "course.price", "course", course_id, coins=coins)
    return PriceOut(course_id=course_id, coins=coins)


async def buy(core: Core, user: Principal, course_id: uuid.UUID) -> PurchaseOut:
    """Enroll in a priced course, paying its coins, in one transaction.

    A course is paid for at most once per learner (the purchase's ledger ``ref`` is unique): one who
    bought it, left and comes back is enrolled again without paying again.
    """
    async with core.transaction() as tx:
        course = await visible_course(tx.conn, user, course_id)
        if course["status"] != "published":
            raise conflict("this course is a draft; it opens for enrollment once published")
        price = await tx.conn.fetchval("SELECT coins FROM course_prices WHERE course_id = $1", course_id)
        if price is None:
            raise conflict("this course is free: enroll with POST /courses/{id}/enroll")
        await lock_wallet(tx.conn, user.id)
        enrolled = await tx.conn.fetchval(
            "SELECT true FROM enrollments WHERE user_id = $1 AND course_id = $2", user.id, course_id
        )
        if enrolled:
            raise AppError(ErrorCode.CONFLICT, "you are already enrolled in this course")
        paid_before = await has_paid(tx.conn, user.id, course_id)
        if paid_before:
            coins_paid, balance = 0, await balance_of(tx.conn, user.id)
        else:
            coins_paid = int(price)
            reason = f"enrollment in {course['title']}"
            balance = await spend(tx, user.id, coins_paid, reason, purchase_ref(course_id, user.id))
        if not await add_enrollment(tx.conn, user.id, course_id):
            # Enrolled meanwhile by another request (staff enroll for free): undo the payment.
            raise AppError(ErrorCode.CONFLICT, "you are already enrolled in this course")
        await audit(tx, user.id, "course.purchased", "course", course_id, coins=coins_paid, paid_before=paid_before)
    return PurchaseOut(course_id=course_id, coins_paid=coins_paid, balance=balance, paid_before=paid_before)


@api.route("GET", "/me/wallet", summary="Your coins: balance and latest entries", tag=TAG, response=WalletOut)
async def get_my_wallet(call: Call) -> WalletOut:
    return await wallet(call.request.app[CORE_KEY], call.me)


@api.route("PUT", "/courses/{course_id}/price", summary="Set a course's price in coins (its owner or an admin)",
           tag=TAG, body=PriceIn, response=PriceOut, errors=[403])  # fmt: skip
async def put_course_price(call: Call) -> PriceOut:
    return await set_price(call.request.app[CORE_KEY], call.me, call.params["course_id"], call.body.coins)


@api.route("POST", "/courses/{course_id}/buy", summary="Enroll in a priced course, paying with coins", tag=TAG,
           description="Pays the course's price once: one who bought it, left and comes back is enrolled again "
           "without paying again (`coins_paid` 0, `paid_before` true). 409 `conflict` when already enrolled, "
           "when the course is free or a draft, or when the balance is short.",
           response=PurchaseOut, status=201, errors=[409])  # fmt: skip
async def post_course_buy(call: Call) -> PurchaseOut:
    return await buy(call.request.app[CORE_KEY], call.me, call.params["course_id"])
