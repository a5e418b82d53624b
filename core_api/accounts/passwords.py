"""Passwords: change one's own, and reset a forgotten one by email (see the package docstring).

A reset link carries a random token (256 bits); only its SHA-256 is stored, with an expiry
(``STUDYHALL_PASSWORD_RESET_TTL_S``), and it works once. Asking for a link answers the same, at the same speed,
whether or not the address has an account: the mail goes out in the background, and an unknown address
simply gets none. Requests are limited per client address (429) and the mails per account (silently: the
answer stays the same, so the limit reveals nothing). A reset or change ends sessions, so whoever knew the old
password is signed out at their next request.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, EmailStr, Field

from core_api.auth import AUTH, TAG, address_key, end_sessions
from core_api.context import Core, audit, core_of, rights_changed
from core_api.errors import AppError, ErrorCode, invalid
from core_api.http import Api, Call, Input, Principal
from core_api.mail import MAILER, Mailer

api = Api()
RESET_PATH = "/reset-password"  # the web app's screen that takes the token (web/src/routes/auth/)
PASSWORD = Field(min_length=8, max_length=256, description="At least 8 characters.")


class PasswordChangeIn(Input):
    current_password: str = Field(min_length=1, max_length=256)
    new_password: str = PASSWORD


class ResetRequestIn(Input):
    email: EmailStr = Field(max_length=254)


class ResetConfirmIn(Input):
    token: str = Field(min_length=1, max_length=200)
    new_password: str = PASSWORD


class ResetRequestOut(BaseModel):
    message: str


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def change_password(core: Core, call: Call, body: PasswordChangeIn) -> int:
    """Check the current password (failures count as failed logins), set the new one, end the other sessions."""
    auth = call.request.app[AUTH]
    user: Principal = call.me
    key = user.email.strip().lower()
    wait = await auth.by_account.retry_after(key)
    if wait > 0:
        raise AppError(
            ErrorCode.RATE_LIMITED, "too many wrong passwords; try again later", {"retry_after_s": int(wait) + 1}
        )
    stored = await core.pool.fetchval("SELECT password_hash FROM users WHERE id = $1", user.id)
    if not await auth.passwords.verify(stored, body.current_password):
        await auth.by_account.fail(key)
        # 400, not 401: a client takes 401 for an expired session and would sign the user out
        raise invalid("the current password is wrong", field="current_password")
    new_hash = await auth.passwords.hash(body.new_password)
    async with core.transaction() as tx:
        await tx.conn.execute("UPDATE users SET password_hash = $2 WHERE id = $1", user.id, new_hash)
        ended = await end_sessions(tx.conn, user.id, keep=user.session_id)
        await tx.conn.execute(
            "UPDATE password_resets SET used_at = now() WHERE user_id = $1 AND used_at IS NULL", user.id
        )
        await audit(tx, user.id, "user.password_changed", "user", user.id, sessions_ended=ended)
        rights_changed(tx, user.id)
    return ended


def reset_mail(mailer: Mailer, base_url: str, to: str, name: str, token: str, ttl_s: int) -> None:
    minutes = max(1, ttl_s // 60)
    link = f"{base_url}{RESET_PATH}?token={token}"
    mailer.send_later(
        to,
        "Reset your studyhall password",
        f"Hello {name},\n\nsomeone (we hope you) asked to reset the password of your studyhall account.\n"
        f"Open this link within {minutes} minutes to choose a new password; it works once:\n\n{link}\n\n"
        "If you did not ask for this, ignore this message: your password stays as it is.\n",
    )


async def request_reset(core: Core, call: Call, email: str) -> None:
    auth = call.request.app[AUTH]
    wait = await auth.resets_by_address.take(address_key(call.remote))
    if wait > 0:
        raise AppError(
            ErrorCode.RATE_LIMITED,
            "too many password reset requests from your address; try again later",
            {"retry_after_s": math.ceil(wait)},
        )
    row = await core.pool.fetchrow(
        "SELECT id, email, display_name FROM users WHERE lower(email) = lower($1)", email.strip()
    )
    if row is None:
        return  # the same answer; nothing is sent
    if await auth.resets_by_account.take(str(row["id"])) > 0:
        return  # enough mails for now; the same answer
    token = secrets.token_urlsafe(32)
    ttl = core.settings.password_reset_ttl_s
    async with core.transaction() as tx:
        await tx.conn.execute(
            "INSERT INTO password_resets (token_hash, user_id, expires_at) VALUES ($1, $2, $3)",
            _hash(token),
            row["id"],
            datetime.now(UTC) + timedelta(seconds=ttl),
        )
        await audit(tx, None, "user.password_reset_requested", "user", row["id"], address=call.remote)
    reset_mail(call.request.app[MAILER], core.settings.base_url, row["email"], row["display_name"], token, ttl)


async def confirm_reset(core: Core, call: Call, body: ResetConfirmIn) -> None:
    auth = call.request.app[AUTH]
    gone = invalid("this reset link is invalid, used or expired; ask for a new one", field="token")
    found = await core.pool.fetchval(
        "SELECT user_id FROM password_resets WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now()",
        _hash(body.token),
    )
    if found is None:
        raise gone
    new_hash = await auth.passwords.hash(body.new_password)
    async with core.transaction() as tx:
        # Spent in the same statement that checks it: of two requests with one link, one wins.
        user_id = await tx.conn.fetchval(
            "UPDATE password_resets SET used_at = now() WHERE token_hash = $1 AND used_at IS NULL"
            " AND expires_at > now() RETURNING user_id",
            _hash(body.token),
        )
        if user_id is None:
            raise gone
        await tx.conn.execute("UPDATE users SET password_hash = $2 WHERE id = $1", user_id, new_hash)
        await tx.conn.execute(
            "UPDATE password_resets SET used_at = now() WHERE user_id = $1 AND used_at IS NULL", user_id
        )
        ended = await end_sessions(tx.conn, user_id)
        await audit(tx, None, "user.password_reset", "user", user_id, sessions_ended=ended, address=call.remote)
        rights_changed(tx, user_id)
    email = await core.pool.fetchval("SELECT email FROM users WHERE id = $1", user_id)
    if email is not None:
        await auth.by_account.clear(email.strip().lower())  # a reset lifts the lock of failed logins


@api.route(
    "POST",
    "/me/password",
    summary="Change your password (every other session ends)",
    description="The current password must be right (400 `invalid_input`, field `current_password`, otherwise; wrong "
    "tries count like failed logins, and past `STUDYHALL_LOGIN_MAX_FAILURES_PER_ACCOUNT` the answer is 429). "
    "The new one needs 8 to 256 "
    "characters. Every other session of the account ends (its tokens stop working at their next request); the one "
    "asking stays signed in. Audited (`user.password_changed`).",
    tag=TAG,
    body=PasswordChangeIn,
    status=204,
    errors=[429, 503],
)
async def post_password(call: Call) -> None:
    await change_password(core_of(call), call, call.body)


@api.route(
    "POST",
    "/auth/password-reset",
    summary="Ask for a password reset link by email",
    description="Always 202 with the same message, whether or not an account uses the address (nothing tells "
    "who has an account): if one does, it is sent a link to `{public URL}/reset-password?token=…`, valid for "
    "`STUDYHALL_PASSWORD_RESET_TTL_S` and once. At most `STUDYHALL_PASSWORD_RESET_MAX_PER_ADDRESS` requests per "
    "client address per `STUDYHALL_PASSWORD_RESET_WINDOW_S` (then 429 with `Retry-After`), and at most "
    "`STUDYHALL_PASSWORD_RESET_MAX_PER_ACCOUNT` mails to one account in that window (further requests get the same "
    "202 and send nothing). Mail goes through `STUDYHALL_SMTP_URL`, or to `STUDYHALL_MAIL_DIR` in development.",
    tag=TAG,
    auth=False,
    body=ResetRequestIn,
    response=ResetRequestOut,
    status=202,
    errors=[429],
)
async def post_password_reset(call: Call) -> ResetRequestOut:
    await request_reset(core_of(call), call, call.body.email)
    return ResetRequestOut(
        message="If an account uses this address, we sent it a link to choose a new password. Check your inbox."
    )


@api.route(
    "POST",
    "/auth/password-reset/confirm",
    summary="Set a new password with a reset link's token (every session ends)",
    description="400 `invalid_input` (field `token`) when the token is unknown, used or expired. On success the "
    "password is set, the token and every other outstanding reset link of the account are spent, every session "
    "of the account ends, and failed-login locks are lifted; sign in with the new password. Audited "
    "(`user.password_reset`).",
    tag=TAG,
    auth=False,
    body=ResetConfirmIn,
    status=204,
    errors=[503],
)
async def post_password_reset_confirm(call: Call) -> None:
    await confirm_reset(core_of(call), call, call.body)
