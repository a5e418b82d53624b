"""Time-limited TURN credentials: coturn's TURN REST API scheme (``use-auth-secret`` + ``static-auth-secret``).

With ``STUDYHALL_TURN_SECRET`` set, each ``turn:``/``turns:`` server of ``STUDYHALL_ICE_SERVERS`` that carries
no username of its own is handed out with a credential made for one user, valid until an expiry:

- username: ``<expiry as Unix seconds>:<user id>``;
- credential: ``base64(HMAC-SHA1(secret, username))``.

coturn recomputes the credential from the username with the same secret and refuses it once the expiry has
passed, so nothing is stored and a copied credential stops working by itself. Every ``live:join`` answer
carries fresh ones (expiry ``now + STUDYHALL_TURN_CREDENTIAL_TTL_S``); the server's own peers get theirs
when made. STUN servers and TURN servers given a username keep what the setting says.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from core_api.settings import IceServer, Settings

SERVER_USER = "studyhall-sfu"
"""The name in the credentials of the server's own peers."""


def turn_credential(secret: str, user: str, expires_at: int) -> tuple[str, str]:
    """The (username, credential) pair coturn accepts for ``user`` until ``expires_at`` (Unix seconds)."""
    username = f"{expires_at}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def ice_servers_for(settings: Settings, user: str, now: float | None = None) -> list[IceServer]:
    """The ICE servers to give ``user`` (a user id, or :data:`SERVER_USER`): TURN ones with a fresh credential."""
    secret = settings.turn_secret
    if secret is None:
        return list(settings.ice_servers)
    expires_at = int(time.time() if now is None else now) + settings.turn_credential_ttl_s
    out = []
    for server in settings.ice_servers:
        if server.urls.startswith(("turn:", "turns:")) and server.username is None:
            username, credential = turn_credential(secret.get_secret_value(), user, expires_at)
            server = server.model_copy(update={"username": username, "credential": credential})
        out.append(server)
    return out
