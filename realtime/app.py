"""The app factory: one aiohttp application with the REST API, health, readiness and metrics.

Resources open in ``cleanup_ctx`` order (database pool, then services) and close in reverse; they live
under typed ``web.AppKey``s, so tests can build as many apps in one process as they like.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from collab_ide import console as collab_console
from collab_ide import follow as collab_follow
from collab_ide import handlers as collab_handlers
from core_api import (
    assignments,
    auth,
    communities,
    courses,
    enrollments,
    executions,
    notifications,
    profile,
    progress,
    submission_files,
    users,
)
from core_api.accounts import avatar as account_avatar
from core_api.accounts import passwords as account_passwords
from core_api.accounts import sessions as account_sessions
from core_api.analytics import handlers as analytics_handlers
from core_api.announcements import posts as announcement_posts
from core_api.announcements import preferences as notification_preferences
from core_api.announcements.reminders import Reminders
from core_api.catalog import handlers as catalog_handlers
from core_api.context import CORE, Bus, Core
from core_api.db import create_pool, migrate
from core_api.errors import AppError, ErrorCode
from core_api.events import Events
from core_api.forums import handlers as forum_handlers
from core_api.grading import bulk as grading_bulk
from core_api.grading import handlers as grading_handlers
from core_api.grading.service import run_grading
from core_api.heap import HEAP
from core_api.http import CLIENT_ADDR, Api
from core_api.learners import handlers as learners_handlers
from core_api.mail import MAILER, Mailer
from core_api.privacy import erase as privacy_erase
from core_api.privacy import export as privacy_export
from core_api.search import handlers as search_handlers
from core_api.search.service import run_search
from core_api.settings import Settings
from core_api.teaching import applications as teacher_applications
from leaderboards import cycle as contest_cycle
from leaderboards import editing as contest_editing
from leaderboards import handlers as contest_handlers
from leaderboards import prizes as contest_prizes
from leaderboards import wallet as contest_wallet
from leaderboards.wiring import run_contests
from live import handlers as live_handlers
from live import recordings as live_recordings
from live import routing as live_routing
from live.sfu import check_aiortc
from live.signalling import LiveNode
from live.wiring import run_live
from media import drafts as media_drafts
from media import jobs as media_jobs
from media import playback as media_playback
from media import uploads as media_uploads
from media import video as media_video
from media.wiring import run_media
from realtime.bus import CHANNEL_PREFIX, RedisBusRelay, bus_channel
from realtime.engine import SessionGate
from realtime.jobs import run_sandbox
from realtime.ordered import OrderedRooms
from realtime.origins import OriginPolicy, cors_middleware
from realtime.rights import RightsWatch
from realtime.sockets import SOCKETS, SocketServer
from realtime.webapp import mount as mount_webapp
from rooms import chat as room_chat
from rooms import chat_service
from rooms import dm_handlers as room_dms
from rooms import handlers as room_handlers
from rooms import live as room_live
from rooms.chat_order import ChatPositions
from rooms.chat_writer import WRITER as CHAT_WRITER
from rooms.chat_writer import ChatWriter
from rooms.presence import PresenceChange, keep_presence, open_presence
from watch_party import handlers as watch_handlers
from watch_party import service as watch_service
from watch_party.board import open_board
from watch_party.node import WatchNode

log = logging.getLogger(__name__)

VERSION = "0.1.0"
API = Api.combine(
    auth.api,
    users.api,
    profile.api,
    account_sessions.api,  # the caller's sessions, password change and reset (core_api/accounts/)
    account_passwords.api,
    account_avatar.api,
    notification_preferences.api,  # what each user is told about (core_api/announcements/)
    announcement_posts.api,
    privacy_export.api,  # the caller's data: export (a job) and account deletion (core_api/privacy/)
    privacy_erase.api,
    teacher_applications.api,  # learners apply to teach, admins decide (core_api/teaching/)
    courses.api,
    catalog_handlers.api,  # unpublish, archive, delete, prerequisites (core_api/catalog/)
    enrollments.api,
    learners_handlers.api,  # learners' progress for instructors, "continue" (core_api/learners/)
    progress.api,
    assignments.api,
    grading_handlers.api,  # quizzes and the gradebook (core_api/grading/)
    grading_bulk.api,  # grade sheets applied by a job
    analytics_handlers.api,  # dashboards over the rollups of migration 0034 (core_api/analytics/)
    search_handlers.api,  # search over courses, lectures, chat and users (core_api/search/)
    communities.api,
    notifications.api,
    forum_handlers.api,  # community and course forums (core_api/forums/)
    room_handlers.api,
    room_chat.api,
    room_dms.api,  # direct messages: conversations are rooms of kind dm (rooms/dms.py)
    executions.api,
    collab_handlers.api,
    contest_handlers.api,  # group wars (leaderboards/): contests, the weekly cycle, coins
    contest_cycle.api,
    contest_wallet.api,
    contest_prizes.api,  # prize approval and budgets (platform admins)
    contest_editing.api,  # managers edit problems and rejudge
    live_handlers.api,  # live sessions (live/): the schedule
    media_jobs.api,  # background jobs (media/): state, progress, cancel
    media_video.api,  # lecture video to an HLS ladder
    media_drafts.api,  # live sessions' recordings as lecture drafts
)
EVENTS = Events.combine(
    room_handlers.events,
    room_chat.events,
    watch_handlers.events,
    contest_handlers.events,
    collab_console.events,
    live_routing.routed(live_handlers.events),  # live:* reach the session's owner node (live/routing.py)
    collab_follow.events,
)
OPENAPI = web.AppKey("openapi", dict)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Metrics:
    """Prometheus metrics of one app (own registry, so several apps can live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "studyhall_http_requests", "HTTP requests answered", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "studyhall_http_request_duration_seconds",
            "HTTP request latency",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.push_added = Histogram(
            "studyhall_leaderboard_push_added_seconds",
            "Group wars: from the 500 ms interval allowing a contest's push to its public push handed to Socket.IO",
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.pool_size = Gauge("studyhall_db_pool_connections", "Open database connections", registry=self.registry)
        self.pool_idle = Gauge("studyhall_db_pool_idle", "Idle database connections", registry=self.registry)


METRICS = web.AppKey("metrics", Metrics)
SETTINGS = web.AppKey("settings", Settings)
RIGHTS = web.AppKey("rights", RightsWatch)


def _error_response(error: AppError) -> web.Response:
    headers = {}
    if "retry_after_s" in error.details:
        headers["Retry-After"] = str(error.details["retry_after_s"])
    return web.json_response({"error": error.to_dict()}, status=error.status, headers=headers)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as ``{"error": {code, message, details}}``; unexpected ones only as ``internal``."""
    try:
        return await handler(request)
    except AppError as exc:
        return _error_response(exc)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS].max_body_bytes
        return _error_response(AppError(ErrorCode.PAYLOAD_TOO_LARGE, f"request body is larger than {limit} bytes"))
    except web.HTTPNotFound:
        return _error_response(AppError(ErrorCode.NOT_FOUND, f"no such endpoint: {request.path}"))
    except web.HTTPMethodNotAllowed as exc:
        resp = _error_response(
            AppError(ErrorCode.INVALID_INPUT, f"method {request.method} is not allowed on {request.path}")
        )
        resp.set_status(405)
        resp.headers["Allow"] = ",".join(sorted(exc.allowed_methods))
        return resp
    except web.HTTPException:
        raise
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error_response(AppError(ErrorCode.INTERNAL, "internal error; it has been logged"))


@web.middleware
async def context_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Client address, body size limit and metrics for every request."""
    settings = request.app[SETTINGS]
    forwarded = request.headers.get("X-Forwarded-For") if settings.trust_forwarded_for else None
    # The last entry is the one our proxy wrote (the address it saw); earlier ones are the client's to invent,
    # and per-address limits (logins, registrations) must not be dodged by sending a made-up header.
    request[CLIENT_ADDR] = forwarded.split(",")[-1].strip() if forwarded else (request.remote or "unknown")
    streams = getattr(request.match_info.handler, "streams_body", False)  # tus PATCH: streamed to storage
    if request.content_length is not None and request.content_length > settings.max_body_bytes and not streams:
        return _error_response(
            AppError(ErrorCode.PAYLOAD_TOO_LARGE, f"request body is larger than {settings.max_body_bytes} bytes")
        )
    started = time.perf_counter()
    response = await errors_middleware(request, handler)
    info = request.match_info.route.resource
    route = info.canonical if info is not None else "unmatched"
    metrics = request.app[METRICS]
    metrics.requests.labels(request.method, route, str(response.status)).inc()
    metrics.latency.labels(route).observe(time.perf_counter() - started)
    return response


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks: dict[str, Any] = {}
    try:
        async with asyncio.timeout(2):
            await request.app[CORE].pool.fetchval("SELECT 1")
        checks["database"] = "ok"
    except (Exception, TimeoutError) as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    required = set(checks)
    # The sandbox: whether this node can run programs (see realtime/jobs.py).
    sandbox = request.app.get(executions.EXECUTIONS)
    unavailable = "not started" if sandbox is None else sandbox.runner.unavailable
    checks["sandbox"] = "ok" if unavailable is None else f"unavailable: {unavailable}"
    if request.app[SETTINGS].sandbox_required:
        required.add("sandbox")
    ready = all(checks[name] == "ok" for name in required)
    body = {"status": "ready" if ready else "not_ready", "checks": checks}
    return web.json_response(body, status=200 if ready else 503)


class GateMetrics:
    """Counters of the Socket.IO session gate (realtime/engine.py), read when /metrics is scraped."""

    def __init__(self, gate: SessionGate) -> None:
        self.gate = gate

    def collect(self) -> Iterator[Metric]:
        refused = CounterMetricFamily(
            "studyhall_engineio_sessions_refused",
            "Engine.IO sessions refused before logging in: too many from one address, or on this node",
            labels=["limit"],
        )
        for limit, count in self.gate.refused.items():
            refused.add_metric([limit], count)
        yield refused
        yield CounterMetricFamily(
            "studyhall_engineio_sessions_expired",
            "Engine.IO sessions closed for not completing the Socket.IO connect in time",
            value=self.gate.expired,
        )


class ChatOrderMetrics:
    """How often this node had to repair the order of chat (realtime/ordered.py), read when scraped."""

    def __init__(self, ordered: OrderedRooms) -> None:
        self.ordered = ordered

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "studyhall_chat_order_filled",
            "chat:message events read from Postgres because they had not reached this node in time",
            value=self.ordered.filled,
        )
        yield CounterMetricFamily(
            "studyhall_chat_order_dropped",
            "chat:message events that reached this node again or below a joiner's history (not delivered twice)",
            value=self.ordered.dropped,
        )
        yield GaugeMetricFamily(
            "studyhall_chat_order_rooms", "Rooms whose chat this node delivers in order", value=self.ordered.rooms
        )


class ChatCommitMetrics:
    """Group commits of chat:send on this node (rooms/chat_writer.py), read when scraped."""

    def __init__(self, services: dict[str, Any]) -> None:
        self.services = services

    def collect(self) -> Iterator[Metric]:
        writer = self.services.get(CHAT_WRITER)
        yield CounterMetricFamily(
            "studyhall_chat_commit_batches",
            "Transactions the chat writer committed (each stores one or more chat:send messages)",
            value=writer.batches if writer is not None else 0,
        )
        yield CounterMetricFamily(
            "studyhall_chat_commit_messages",
            "chat:send messages the chat writer handled (stored or refused), over all its batches",
            value=writer.messages if writer is not None else 0,
        )
        yield CounterMetricFamily(
            "studyhall_chat_commit_redone",
            "Chat batches stored a second time, each message in a savepoint, because one of them was refused",
            value=writer.redone if writer is not None else 0,
        )


def _metrics(request: web.Request, app: web.Application) -> web.Response:
    """``app``'s metrics, to a caller with STUDYHALL_METRICS_TOKEN when one is configured."""
    token = app[SETTINGS].metrics_token
    if token is not None:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        expected = token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            response = _error_response(AppError(ErrorCode.UNAUTHORIZED, "send the metrics token as a Bearer token"))
            response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    metrics = app[METRICS]
    pool = app[CORE].pool
    metrics.pool_size.set(pool.get_size())
    metrics.pool_idle.set(pool.get_idle_size())
    return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def metrics_view(request: web.Request) -> web.Response:
    """``/metrics`` on the public port: only with STUDYHALL_METRICS_TOKEN set (and then only with it)."""
    if request.app[SETTINGS].metrics_token is None:
        message = "metrics are not served on this port (see STUDYHALL_METRICS_TOKEN and STUDYHALL_METRICS_PORT)"
        raise AppError(ErrorCode.NOT_FOUND, message)
    return _metrics(request, request.app)


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI document; the route table is fixed at import, so it is built once per process."""
    return API.openapi("studyhall", VERSION)


async def openapi_view(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])


def create_app(settings: Settings, database_url: str | None = None, *, run_migrations: bool = True) -> web.Application:
    """Build the application.

    Args:
        settings: the validated settings.
        database_url: the Postgres to use; defaults to ``settings.database_url`` (the CLI passes the
            embedded server's URL when that is unset).
        run_migrations: apply pending migrations at start-up (safe with many nodes starting at once).
    """
    dsn = database_url or (settings.database_url.get_secret_value() if settings.database_url else None)
    if dsn is None:
        raise ValueError("create_app needs a database URL (the CLI starts the embedded Postgres for you)")
    middlewares = [cors_middleware(OriginPolicy(settings)), context_middleware]
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=middlewares)
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[OPENAPI] = openapi_document()
    app[auth.AUTH] = auth.Auth(settings)
    app[MAILER] = Mailer(settings)

    async def database(app: web.Application) -> AsyncIterator[None]:
        if run_migrations:
            await migrate(dsn)
        pool = await create_pool(dsn, min_size=settings.db_pool_min, max_size=settings.db_pool_max)
        app[CORE] = Core(settings=settings, pool=pool, bus=Bus(), mailer=app[MAILER])
        app[CORE].bus.subscribe(app[SOCKETS].on_bus_event)
        relay = None
        try:
            if settings.redis_url is not None:  # every-node events (rights changes) reach the other nodes
                url = settings.redis_url.get_secret_value()
                relay = RedisBusRelay(url, bus_channel(settings), app[SOCKETS].node_id)
                await relay.start(app[CORE].bus)
            yield
        finally:
            if relay is not None:
                await relay.close()
            await app[MAILER].close()
            await pool.close()
            await app[auth.AUTH].close()

    async def presence(app: web.Application) -> AsyncIterator[None]:
        sockets = app[SOCKETS]
        tracker = open_presence(settings, sockets.node_id)
        announcer = room_live.Announcer(sockets, settings.presence_batch_above, settings.presence_batch_s)
        sockets.services[room_live.PRESENCE] = tracker
        sockets.services[room_live.ANNOUNCER] = announcer
        sockets.services[room_live.JOIN_GATE] = asyncio.Semaphore(settings.room_joins_at_once)
        sockets.services[chat_service.NOT_DM] = {}

        async def announce(changes: list[PresenceChange]) -> None:
            await room_live.announce_changes(announcer, changes)

        upkeep = asyncio.create_task(keep_presence(tracker, settings.presence_heartbeat_s, announce))
        try:
            yield
        finally:
            upkeep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await upkeep
            try:
                # Leave this node's rooms now rather than when the heartbeat expires.
                await announce(await tracker.close())
                await announcer.close()
            except Exception:
                log.exception("could not withdraw this node's presence on shutdown")

    async def sockets(app: web.Application) -> AsyncIterator[None]:
        yield
        await app[SOCKETS].close()

    async def chat_order(app: web.Application) -> AsyncIterator[None]:
        # chat:message in seq order on this node: gaps are filled, and positions checked, from Postgres.
        ordered = app[SOCKETS].ordered
        ordered.follow("chat:message", ChatPositions(app[CORE]))
        checker = asyncio.create_task(ordered.run())
        try:
            yield
        finally:
            checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checker
            await ordered.close()

    async def chat_writer(app: web.Application) -> AsyncIterator[None]:
        # Group commit of chat:send (rooms/chat_writer.py): one writer per node.
        if not settings.chat_group_commit:
            yield
            return
        writer = ChatWriter(
            app[CORE],
            settings.chat_group_commit_max,
            settings.chat_group_commit_wait_s,
            settings.chat_group_commit_lanes,
        )
        writer.start()
        app[SOCKETS].services[CHAT_WRITER] = writer
        try:
            yield
        finally:
            app[SOCKETS].services.pop(CHAT_WRITER, None)
            await writer.close()

    async def rights(app: web.Application) -> AsyncIterator[None]:
        # Rights changed while connections are open (realtime/rights.py): re-checked at once and, as a
        # safety net, every STUDYHALL_RIGHTS_RECHECK_S.
        watch = RightsWatch(app[CORE], app[SOCKETS], lambda: app.get(collab_handlers.DOCUMENTS), settings)
        app[RIGHTS] = watch
        app[CORE].bus.subscribe(watch.on_bus_event)
        sweeper = asyncio.create_task(watch.run())
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await watch.close()

    async def metrics_listener(app: web.Application) -> AsyncIterator[None]:
        # STUDYHALL_METRICS_PORT: /metrics on a listener of its own, for Prometheus to scrape each node.
        if settings.metrics_port is None:
            yield
            return
        side = web.Application()

        async def metrics_here(request: web.Request) -> web.Response:
            return _metrics(request, app)

        side.router.add_get("/metrics", metrics_here)
        runner = web.AppRunner(side, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, settings.metrics_host or settings.host, settings.metrics_port).start()
            yield
        finally:
            await runner.cleanup()

    async def hang_up_websockets(app: web.Application) -> None:
        # Direct websockets are no longer aiohttp's connections (realtime/fastws.py), so its shutdown
        # would not close them: close them first, while presence and the database are still up.
        await app[SOCKETS].direct.hang_up()

    async def watch_parties(app: web.Application) -> AsyncIterator[None]:
        # Watch parties: one WatchNode per app (state cache, sync board, upkeep loop, end-of-item timers),
        # handed to every connection; room:join sends joiners of watch rooms the player state.
        sockets = app[SOCKETS]
        board = open_board(settings)
        node = WatchNode(app[CORE], sockets, sockets.services[room_live.PRESENCE], board, settings)
        sockets.services[watch_service.WATCH] = node
        sockets.services.setdefault(room_live.JOIN_HOOKS, []).append(watch_service.on_room_joined)
        upkeep = asyncio.create_task(node.run())
        try:
            yield
        finally:
            upkeep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await upkeep
            await node.close()
            await board.close()

    async def live_sessions(app: web.Application) -> AsyncIterator[None]:
        # Live sessions' WebRTC peers on this node (live/signalling.py, live/sfu.py): closed before Socket.IO.
        check_aiortc()
        node = LiveNode(app[CORE], app[SOCKETS], settings)
        app[SOCKETS].services[live_handlers.NODE] = node
        router = None
        if settings.redis_url is not None:  # each session owned by one node; live:* forwarded to it
            namespace = bus_channel(settings).removeprefix(CHANNEL_PREFIX)
            services = app[SOCKETS].services
            router = live_routing.Router(settings.redis_url.get_secret_value(), namespace, node,
                                         live_handlers.events.specs, services, settings)  # fmt: skip
            await router.start()
            services[live_routing.ROUTER] = router
            registry = app[METRICS].registry
            Gauge("studyhall_live_forwards_waiting", "live:* events this node forwarded and awaits the answer of",
                  registry=registry).set_function(lambda: len(router.pending))  # fmt: skip
            Gauge("studyhall_live_forwarded_serving", "live:* events forwarded to this node being handled",
                  registry=registry).set_function(lambda: len(router.tasks))  # fmt: skip
            Gauge("studyhall_live_remote_connections", "Connections of other nodes in live sessions this node owns",
                  registry=registry).set_function(lambda: len(router.guests))  # fmt: skip
        Gauge("studyhall_asyncio_tasks", "asyncio tasks of this process (a leak shows as growth)",
              registry=app[METRICS].registry).set_function(_task_count)  # fmt: skip
        loop_kind = type(asyncio.get_running_loop()).__module__.split(".")[0]  # uvloop or asyncio
        Gauge("studyhall_event_loop", "1, labelled with the event loop this process runs on (STUDYHALL_EVENT_LOOP)",
              ["loop"], registry=app[METRICS].registry).labels(loop_kind).set(1)  # fmt: skip
        try:
            yield
        finally:
            if router is not None:
                await router.close()  # no more forwarded events
            await node.close()
            if router is not None:
                await router.release_all()

    # Closed in reverse: the sandbox stops its runs first (finishing their executions while the pool
    # and Socket.IO still work), then watch parties, then presence withdraws (and announces) before
    # Socket.IO stops, all before the pool.
    app.on_shutdown.append(hang_up_websockets)

    async def deadline_reminders(app: web.Application) -> AsyncIterator[None]:
        task = None
        if settings.reminder_cycle_s > 0:
            task = asyncio.create_task(Reminders(app[CORE]).run(settings.reminder_cycle_s))
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app.cleanup_ctx.append(database)
    app.cleanup_ctx.append(sockets)
    app.cleanup_ctx.append(chat_order)
    app.cleanup_ctx.append(chat_writer)
    app.cleanup_ctx.append(rights)
    app.cleanup_ctx.append(presence)
    app.cleanup_ctx.append(watch_parties)
    app.cleanup_ctx.append(live_sessions)
    app.cleanup_ctx.append(functools.partial(run_sandbox, settings))
    app.cleanup_ctx.append(run_grading)  # quizzes judge code answers with the sandbox's runner
    app.cleanup_ctx.append(deadline_reminders)  # core_api/announcements/reminders.py, once-only across nodes
    app.cleanup_ctx.append(run_search)
    # Group wars after the sandbox (they judge with it), so they stop judging before it closes.
    app.cleanup_ctx.append(functools.partial(run_contests, settings, observe_push=app[METRICS].push_added.observe))
    app.cleanup_ctx.append(functools.partial(run_live, settings))  # live sessions: schedule reminders, the SFU
    app.cleanup_ctx.append(functools.partial(run_media, settings))  # uploads (tus) and media jobs
    app.cleanup_ctx.append(metrics_listener)
    app[SOCKETS] = SocketServer(app, settings, EVENTS)
    engine, gate = app[SOCKETS].sio.eio, app[SOCKETS].gate
    registry = app[METRICS].registry
    Gauge("studyhall_engineio_sessions", "Engine.IO (Socket.IO) sessions open on this node", registry=registry
          ).set_function(lambda: len(engine.sockets))  # fmt: skip
    Gauge("studyhall_engineio_sessions_anonymous", "Engine.IO sessions not yet through the Socket.IO connect",
          registry=registry).set_function(lambda: len(gate.pending))  # fmt: skip
    registry.register(GateMetrics(gate))
    registry.register(ChatOrderMetrics(app[SOCKETS].ordered))
    registry.register(ChatCommitMetrics(app[SOCKETS].services))
    # Collaborative editing: /yjs/{workspace_id} and the document manager (closed before the pool).
    collab_handlers.mount(app, settings, app[SOCKETS].node_id, app[METRICS].registry)
    API.mount(app, auth.authenticate)
    media_uploads.mount(app)  # tus at /api/v1/uploads (headers and raw bytes: not in the OpenAPI table)
    account_avatar.mount(app)  # profile pictures at /api/v1/users/{user_id}/avatar (a PNG)
    submission_files.mount(app)  # files attached to submissions (raw bytes: not in the OpenAPI table)
    media_playback.mount(app)  # HLS ladders at /api/v1/media/{job_id}/..., behind the lecture's paywall
    live_recordings.mount(app)  # a live session's recording, to whoever recorded it (a WebM file)
    app.router.add_get("/api/v1/openapi.json", openapi_view)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    mount_webapp(app, settings)  # the web app at / (realtime/webapp.py): last, it takes the paths left over
    app.cleanup_ctx.append(functools.partial(keep_heap, settings))  # last: settles what the start-up made
    return app


def _task_count() -> int:
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:  # collected outside the app's event loop
        return 0


async def keep_heap(settings: Settings, app: web.Application) -> AsyncIterator[None]:
    """Garbage collections timed into ``studyhall_gc_pause_seconds``; with ``gc_freeze`` the heap is settled
    once started and when asked (core_api/heap.py)."""
    pauses = Histogram(
        "studyhall_gc_pause_seconds",
        "Garbage collections of this process (the event loop waits for each), by generation",
        ["generation"],
        registry=app[METRICS].registry,
        buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
    )
    Gauge("studyhall_gc_frozen_objects", "Objects gc.freeze() keeps out of collections", registry=app[METRICS].registry
          ).set_function(gc.get_freeze_count)  # fmt: skip
    started = 0.0

    def timed(phase: str, info: dict[str, Any]) -> None:
        nonlocal started
        if phase == "start":
            started = time.perf_counter()
        else:
            pauses.labels(str(info["generation"])).observe(time.perf_counter() - started)

    gc.callbacks.append(timed)
    if settings.gc_freeze:
        HEAP.start(min_interval_s=settings.gc_settle_min_interval_s, full_every_s=settings.gc_full_every_s)
    try:
        yield
    finally:
        if settings.gc_freeze:
            await HEAP.stop()
        gc.callbacks.remove(timed)
