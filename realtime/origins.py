"""Which browser origins may use the server: its own, and those listed in ``STUDYHALL_CORS_ORIGINS``.

Browsers enforce CORS for HTTP requests, so the REST API only has to answer preflights and label its
responses (:func:`cors_middleware`). They do not for websockets: a page on any site may open
``ws://this-server/yjs/...`` or ``/socket.io/``, so a websocket upgrade from a foreign origin is refused
here (``/yjs``) and by python-engineio with the same rule (``/socket.io/``, websocket and long-polling).
Clients that are not browsers send no ``Origin`` and are not affected.

"Own origin" means the origin's host and port are the request's ``Host`` (what the browser connected
to, passed on by a proxy that keeps ``Host``, as ``deploy/nginx.conf`` does), also ``X-Forwarded-Host``
behind a trusted proxy (``STUDYHALL_TRUST_FORWARDED_FOR``), or the origin of ``STUDYHALL_PUBLIC_URL``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from core_api.errors import AppError, ErrorCode
from core_api.settings import Settings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ALLOWED_METHODS = "GET, POST, PUT, PATCH, DELETE"
ALLOWED_HEADERS = "Authorization, Content-Type"
EXPOSED_HEADERS = "Retry-After, Content-Disposition, Location"
PREFLIGHT_MAX_AGE_S = 600


def origin_of(url: str) -> str | None:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


class OriginPolicy:
    """Decides whether a request's ``Origin`` may use this server."""

    def __init__(self, settings: Settings) -> None:
        self.listed = frozenset(settings.cors_origin_list)
        public = origin_of(settings.public_url) if settings.public_url else None
        self.own = frozenset({public} if public else ())
        self.trust_forwarded = settings.trust_forwarded_for

    def is_listed(self, origin: str) -> bool:
        return origin.lower().rstrip("/") in self.listed

    def allows(self, origin: str, headers: Mapping[str, str]) -> bool:
        """Whether a request with this ``Origin`` and these request headers comes from an allowed page."""
        normal = origin.lower().rstrip("/")
        if normal in self.listed or normal in self.own:
            return True
        netloc = urlsplit(normal).netloc
        if not netloc or urlsplit(normal).scheme not in ("http", "https"):
            return False  # "null" (sandboxed frames, files) and anything that is not a web origin
        hosts = [headers.get("Host", "")]
        if self.trust_forwarded:
            hosts.append(headers.get("X-Forwarded-Host", "").split(",")[0])
        return any(netloc == host.strip().lower() for host in hosts if host)

    def engineio_check(self, origin: str | None, environ: dict[str, Any]) -> bool:
        """python-engineio's ``cors_allowed_origins`` callable: the same rule, from a WSGI environ.

        (It is also asked without an origin, for response headers: none are due then.)
        """
        if origin is None:
            return False
        headers = {"Host": environ.get("HTTP_HOST", ""), "X-Forwarded-Host": environ.get("HTTP_X_FORWARDED_HOST", "")}
        return self.allows(origin, headers)


def _refusal(message: str) -> web.Response:
    error = AppError(ErrorCode.FORBIDDEN, message)
    return web.json_response({"error": error.to_dict()}, status=error.status)


def cors_middleware(policy: OriginPolicy) -> Any:
    """The REST API's CORS (preflights and response headers) and the ``/yjs`` websockets' origin check."""

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is None:
            return await handler(request)
        path = request.path
        if not path.startswith("/api/"):
            if path.startswith("/yjs/") and not policy.allows(origin, request.headers):
                return _refusal(f"origin {origin[:100]} may not open websockets here (STUDYHALL_CORS_ORIGINS)")
            return await handler(request)
        allowed = policy.allows(origin, request.headers)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            if not allowed:
                return _refusal(f"origin {origin[:100]} may not call this API (STUDYHALL_CORS_ORIGINS)")
            return web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Origin": origin,
                    "Access-Control-Allow-Methods": ALLOWED_METHODS,
                    "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                    "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_S),
                    "Vary": "Origin",
                },
            )
        response = await handler(request)
        response.headers.add("Vary", "Origin")
        if allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        return response

    return cors
