"""Workspaces over REST (``/workspaces``) and the document endpoint (``/yjs/{workspace_id}``).

REST handlers parse, call :mod:`collab_ide.service` and answer. :func:`mount` adds the websocket route
and the app-scoped :class:`~collab_ide.documents.DocumentManager` (with the Redis relay when scaled).

"Run" (``POST /workspaces/{id}/runs``) is :mod:`collab_ide.runs`: the server's copy of the files as an
execution of the sandbox, its output and result pushed to the workspace's room.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge

from collab_ide import runs, service
from collab_ide.document import AwarenessLimits
from collab_ide.documents import DocumentManager, Tuning
from collab_ide.engine import EnginePeer, EngineSockets, make_engine_handler
from collab_ide.engine import available as engine_available
from collab_ide.relay import LocalRelay, RedisRelay, Relay
from collab_ide.schemas import (
    FileListOut,
    MemberAccessIn,
    TemplateListOut,
    WorkspaceIn,
    WorkspaceListQuery,
    WorkspaceMemberOut,
    WorkspaceOut,
)
from collab_ide.sizes import SizeLimits
from collab_ide.store import DocumentLog
from collab_ide.websocket import (
    CLOSE_GOING_AWAY,
    HEARTBEAT_S,
    HoldLimits,
    SocketPeer,
    TakeoverPeer,
    make_handler,
    make_takeover_handler,
)
from core_api.context import CORE, Page, PageQuery, core_of
from core_api.executions import EXECUTIONS, ExecutionQuery
from core_api.http import Api, Call, Download, Reply
from core_api.settings import Settings
from realtime.fastws import BinarySockets

api = Api()
TAG = "workspaces"
DOCUMENTS = web.AppKey("collab_documents", DocumentManager)
YJS_SOCKETS = web.AppKey("collab_yjs_sockets", BinarySockets)
YJS_ENGINE = web.AppKey("collab_yjs_engine", EngineSockets)


def documents_of(call: Call) -> DocumentManager:
    return call.request.app[DOCUMENTS]


@api.route("GET", "/workspaces/templates", summary="Workspace templates: languages and starter files", tag=TAG,
           response=TemplateListOut)  # fmt: skip
async def get_workspace_templates(call: Call) -> TemplateListOut:
    return service.templates()


@api.route(
    "POST",
    "/workspaces",
    summary="Create a workspace from a template, alone or in a room; the server writes its starter files",
    tag=TAG,
    body=WorkspaceIn,
    response=WorkspaceOut,
    status=201,
    errors=[403, 404, 409, 413],
)
async def post_workspace(call: Call) -> WorkspaceOut:
    return await service.create_workspace(core_of(call), call.me, call.body)


@api.route("GET", "/workspaces", summary="Workspaces the caller can open", tag=TAG, query=WorkspaceListQuery,
           response=Page[WorkspaceOut])  # fmt: skip
async def get_workspaces(call: Call) -> Page[WorkspaceOut]:
    return await service.list_workspaces(core_of(call), call.me, call.query)


@api.route("GET", "/workspaces/{workspace_id}", summary="One workspace and the caller's access", tag=TAG,
           response=WorkspaceOut)  # fmt: skip
async def get_workspace(call: Call) -> WorkspaceOut:
    return await service.get_workspace(core_of(call), call.me, call.params["workspace_id"])


@api.route(
    "GET",
    "/workspaces/{workspace_id}/members",
    summary="Users given explicit access to a workspace",
    tag=TAG,
    query=PageQuery,
    response=Page[WorkspaceMemberOut],
)
async def get_workspace_members(call: Call) -> Page[WorkspaceMemberOut]:
    return await service.list_members(core_of(call), call.me, call.params["workspace_id"], call.query)


@api.route(
    "PUT",
    "/workspaces/{workspace_id}/members/{user_id}",
    summary="Give a user edit or read-only access (creator, room host or moderator, admin)",
    tag=TAG,
    body=MemberAccessIn,
    response=WorkspaceMemberOut,
    errors=[403],
)
async def put_workspace_member(call: Call) -> WorkspaceMemberOut:
    p = call.params
    return await service.set_member(
        core_of(call), documents_of(call), call.me, p["workspace_id"], p["user_id"], call.body
    )


@api.route(
    "DELETE",
    "/workspaces/{workspace_id}/members/{user_id}",
    summary="Withdraw a user's explicit access; their open connections follow at once",
    tag=TAG,
    status=204,
    errors=[403],
)
async def delete_workspace_member(call: Call) -> None:
    p = call.params
    await service.remove_member(core_of(call), documents_of(call), call.me, p["workspace_id"], p["user_id"])


@api.route("GET", "/workspaces/{workspace_id}/files", summary="The workspace's files as they are now", tag=TAG,
           response=FileListOut)  # fmt: skip
async def get_workspace_files(call: Call) -> FileListOut:
    return await service.list_files(core_of(call), documents_of(call), call.me, call.params["workspace_id"])


@api.route(
    "GET",
    "/workspaces/{workspace_id}/archive",
    summary="Download the workspace's current files as a zip archive (built off the event loop)",
    tag=TAG,
    produces="application/zip",
)
async def get_workspace_archive(call: Call) -> Download:
    workspace_id = call.params["workspace_id"]
    body = await service.archive(core_of(call), documents_of(call), call.me, workspace_id)
    return Download(body, "application/zip", f"workspace-{workspace_id}.zip")


# --- the document endpoint and its resources -----------------------------------------------------


def tuning_of(settings: Settings) -> Tuning:
    return Tuning(
        flush_interval_s=settings.collab_flush_interval_s,
        flush_max_updates=settings.collab_flush_max_updates,
        compact_after_updates=settings.collab_compact_after_updates,
        compact_idle_s=settings.collab_compact_idle_s,
        unload_delay_s=settings.collab_unload_delay_s,
    )


def size_limits_of(settings: Settings) -> SizeLimits:
    return SizeLimits(document_bytes=settings.collab_max_document_bytes, file_bytes=settings.collab_max_file_bytes)


def awareness_limits_of(settings: Settings) -> AwarenessLimits:
    return AwarenessLimits(
        max_bytes=settings.collab_awareness_max_bytes,
        max_entries=settings.collab_awareness_max_entries,
        ids_per_connection=settings.collab_awareness_ids_per_connection,
    )


def mount(app: web.Application, settings: Settings, node_id: str, registry: CollectorRegistry) -> None:
    """Add ``/yjs/{workspace_id}`` and the document manager (after the database resource).

    ``registry`` gets the gauges ``studyhall_yjs_documents_loaded`` and ``studyhall_yjs_connections`` (and, on the
    compiled engine, ``studyhall_yjs_engine_fast_updates`` and ``studyhall_yjs_engine_python_messages``).
    """

    async def documents(app: web.Application) -> AsyncIterator[None]:
        relay: Relay = LocalRelay()
        if settings.redis_url is not None:
            relay = RedisRelay(settings.redis_url.get_secret_value(), node_id)
        manager = DocumentManager(
            DocumentLog(app[CORE].pool),
            relay,
            tuning_of(settings),
            awareness=awareness_limits_of(settings),
            sizes=size_limits_of(settings),
        )
        app[DOCUMENTS] = manager
        loaded.set_function(lambda: len(manager.docs))
        connections.set_function(lambda: sum(len(d.peers) for d in manager.docs.values()))
        await manager.start()
        try:
            yield
        finally:
            await manager.close(_going_away)

    async def disconnect_editors(app: web.Application) -> None:
        # Before aiohttp waits for open handlers: close every editor (1001) so its handler returns at once.
        # Connections on the takeover are no longer aiohttp's: they are closed here, and leave their
        # documents before this returns.
        if YJS_SOCKETS in app:
            await app[YJS_SOCKETS].close()
        if YJS_ENGINE in app:
            await app[YJS_ENGINE].close()
        if DOCUMENTS in app:
            for doc in list(app[DOCUMENTS].docs.values()):
                doc.close_all(_going_away)

    loaded = Gauge("studyhall_yjs_documents_loaded", "Yjs documents in memory on this node", registry=registry)
    connections = Gauge("studyhall_yjs_connections", "Open y-websocket connections on this node", registry=registry)
    app.cleanup_ctx.append(documents)
    app.on_shutdown.append(disconnect_editors)
    hold = HoldLimits(max_bytes=settings.collab_held_max_bytes, timeout_s=settings.collab_held_timeout_s)
    if settings.yjs_engine == "c" or (settings.yjs_engine == "auto" and settings.yjs_takeover and engine_available()):
        engine = EngineSockets(
            settings.ws_max_buffer, settings.collab_max_message_bytes, settings.ws_max_fragments, HEARTBEAT_S
        )
        app[YJS_ENGINE] = engine
        handler = make_engine_handler(lambda a: a[DOCUMENTS], engine, hold)
        fast = Gauge(
            "studyhall_yjs_engine_fast_updates",
            "Updates the compiled /yjs engine checked and forwarded itself since the node started",
            registry=registry,
        )
        fast.set_function(lambda: engine.engine.stats()["fast_updates"])
        slow = Gauge(
            "studyhall_yjs_engine_python_messages",
            "/yjs messages the compiled engine handed to Python (sync, awareness, other updates) since it started",
            registry=registry,
        )
        slow.set_function(lambda: engine.engine.stats()["slow_messages"])
    elif settings.yjs_takeover:
        sockets = BinarySockets(
            settings.ws_max_buffer, settings.collab_max_message_bytes, settings.ws_max_fragments, HEARTBEAT_S
        )
        app[YJS_SOCKETS] = sockets
        handler = make_takeover_handler(lambda a: a[DOCUMENTS], sockets, hold)
    else:
        handler = make_handler(lambda a: a[DOCUMENTS], settings.collab_max_message_bytes, hold)
    app.router.add_get("/yjs/{workspace_id}", handler)


def _going_away(peer: object) -> None:
    if isinstance(peer, SocketPeer | TakeoverPeer | EnginePeer):
        peer.close(CLOSE_GOING_AWAY, "server shutting down")


# --- runs ----------------------------------------------------------------------------------------


@api.route(
    "POST",
    "/workspaces/{workspace_id}/runs",
    summary="Run the server's current copy of the files in the sandbox (edit access); output goes to the room",
    tag=TAG,
    body=runs.RunIn,
    query=ExecutionQuery,
    response=runs.RunOut,
    status=202,
    errors=[403, 429, 503],
    extra_statuses={200: "Finished (with `?wait=true`)"},
)
async def post_workspace_run(call: Call) -> Reply:
    run = await runs.start_run(
        core_of(call),
        documents_of(call),
        call.request.app[EXECUTIONS],
        call.me,
        call.params["workspace_id"],
        call.body,
        call.query.wait,
    )
    return Reply(run, 200 if run.execution.state == "finished" else 202)


@api.route("GET", "/workspaces/{workspace_id}/runs", summary="The workspace's runs, newest first", tag=TAG,
           query=PageQuery, response=Page[runs.RunOut])  # fmt: skip
async def get_workspace_runs(call: Call) -> Page[runs.RunOut]:
    return await runs.list_runs(core_of(call), call.me, call.params["workspace_id"], call.query)


@api.route("GET", "/workspaces/{workspace_id}/runs/{run_id}", summary="One run of the workspace", tag=TAG,
           response=runs.RunOut)  # fmt: skip
async def get_workspace_run(call: Call) -> runs.RunOut:
    return await runs.get_run(core_of(call), call.me, call.params["workspace_id"], call.params["run_id"])
