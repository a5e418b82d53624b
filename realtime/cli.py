"""The command line: ``studyhall serve | worker | migrate | check-config | config-reference | create-admin``.

Settings are read once from the environment (``STUDYHALL_*``); an invalid setting exits with status 2
and names the variable. Without ``STUDYHALL_DATABASE_URL`` every command that needs the database runs
the embedded PostgreSQL from ``STUDYHALL_DATA_DIR/pgdata`` for as long as it runs, and stops it on the
way out (Ctrl-C and SIGTERM included).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import ipaddress
import logging
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
from aiohttp import web
from pydantic import ValidationError

from core_api import demo
from core_api.auth import Passwords, RegisterIn
from core_api.config_reference import reference_markdown
from core_api.context import Tx, audit
from core_api.db import connect, migrate
from core_api.demo import DemoData, load_demo
from core_api.embedded import DataDirInUse, EmbeddedPostgres, EmbeddedPostgresError
from core_api.settings import ConfigError, Settings, load_settings
from realtime.accesslog import RedactingAccessLogger
from realtime.app import create_app
from realtime.jobs import run_worker
from sandbox.host import probe

Command = Callable[[Settings, argparse.Namespace], int]


def _say(*lines: str) -> None:
    for line in lines:
        print(line, flush=True)


def _fail(message: str, status: int = 1) -> int:
    print(f"studyhall: {message}", file=sys.stderr, flush=True)
    return status


class Terminated(KeyboardInterrupt):
    """SIGTERM, unwinding like Ctrl-C so that the embedded PostgreSQL is stopped on the way out."""


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise Terminated


@contextmanager
def _database(settings: Settings, *, share: bool = False) -> Iterator[str]:
    """The database URL: the configured one, or the embedded server's, which is stopped on exit.

    With ``share``, a command that finds the embedded server already run by another studyhall process
    (``serve``) connects through that server's socket instead of refusing; ``serve`` itself never shares.
    """
    if settings.database_url is not None:
        yield settings.database_url.get_secret_value()
        return
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    pg = EmbeddedPostgres(settings.data_dir / "pgdata")
    started = time.monotonic()
    try:
        try:
            url = pg.start()
        except DataDirInUse:
            running = pg.running_url() if share else None
            if running is None:
                raise
            _say(f"using the embedded PostgreSQL of the studyhall process running on {pg.pgdata}")
            yield running
            return
        how = "initialised and started" if pg.created else "started"
        _say(f"embedded PostgreSQL {how} in {time.monotonic() - started:.1f}s; data in {pg.pgdata}")
        yield url
    finally:
        pg.stop()


def _report_migrations(applied: list[str]) -> None:
    if not applied:
        _say("database schema is up to date")
    for name in applied:
        _say(f"applied migration {name}")


# --- serve ---------------------------------------------------------------------------------------


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def _url_host(host: str) -> str:
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host


async def _load_demo(settings: Settings, dsn: str) -> DemoData:
    conn = await connect(dsn)
    try:
        return await load_demo(conn, Passwords(settings))
    finally:
        await conn.close()


def _print_demo(data: DemoData, host: str) -> None:
    _say("demo data " + ("loaded" if data.created else "already present") + "; accounts (email / password):")
    for acc in data.accounts:
        _say(f"  {acc.role:<10}  {acc.email} / {acc.password}")
    _say(f'  course "{demo.COURSE_TITLE}" ({len(demo.LECTURES)} lectures), community "{demo.COMMUNITY_NAME}"')
    if host not in ("127.0.0.1", "::1", "localhost"):
        _say(f"warning: the demo accounts have well-known passwords and this server listens on {host}")


def new_event_loop(choice: str) -> asyncio.AbstractEventLoop:
    """The loop ``serve`` runs on (``STUDYHALL_EVENT_LOOP``)."""
    if choice == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def serve(settings: Settings, args: argparse.Namespace) -> int:
    if settings.event_loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        return _fail("STUDYHALL_EVENT_LOOP=uvloop, but uvloop is not installed (pip install uvloop; or use auto)")
    if settings.yjs_engine == "c" and importlib.util.find_spec("collab_ide._engine") is None:
        return _fail("STUDYHALL_YJS_ENGINE=c, but the compiled engine is not built (run scripts/setup; or use python)")
    host = settings.host if args.host is None else args.host
    port = settings.port if args.port is None else args.port
    try:
        sock = _bind(host, port)
    except OSError as exc:
        return _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    port = sock.getsockname()[1]
    settings = settings.model_copy(update={"host": host, "port": port})
    base = f"http://{_url_host(host)}:{port}"
    with sock, _database(settings) as dsn:
        _report_migrations(asyncio.run(migrate(dsn)))
        demo_data = asyncio.run(_load_demo(settings, dsn)) if args.demo else None
        if demo_data is not None:
            _print_demo(demo_data, host)
        app = create_app(settings, dsn, run_migrations=False)

        def announce(_message: str) -> None:
            _say(f"studyhall listening on {base}", f"OpenAPI: {base}/api/v1/openapi.json")
            if demo_data is not None:
                acc = demo_data.accounts[2]
                body = f'{{"email": "{acc.email}", "password": "{acc.password}"}}'
                json_header = "-H 'Content-Type: application/json'"
                _say(f"log in: curl -s -X POST {base}/api/v1/auth/login {json_header} -d '{body}'")
            _say("press Ctrl-C to stop")

        web.run_app(
            app,
            loop=new_event_loop(settings.event_loop),
            sock=sock,
            print=announce,
            shutdown_timeout=10,
            handle_signals=True,
            access_log_class=RedactingAccessLogger,  # no credentials from websocket URLs in the log
        )
        signal.signal(signal.SIGTERM, _raise_interrupt)  # run_app restored the default on its way out
        _say("studyhall stopped")
    return 0


# --- the other commands --------------------------------------------------------------------------


def migrate_command(settings: Settings, args: argparse.Namespace) -> int:
    with _database(settings, share=True) as dsn:
        _report_migrations(asyncio.run(migrate(dsn)))
    return 0


def _show(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def worker(settings: Settings, args: argparse.Namespace) -> int:
    media = args.queues == "media"
    concurrency = args.concurrency or (settings.media_workers if media else settings.sandbox_workers)
    if concurrency < 1:
        return _fail("--concurrency must be at least 1", 2)
    if media:
        from media.distributed import run_media_worker

        return run_media_worker(settings, concurrency)
    return run_worker(settings, concurrency)


def check_config(settings: Settings, args: argparse.Namespace) -> int:
    for name, value in settings.masked().items():
        _say(f"{name}={_show(value)}")
    if settings.embedded:
        _say(f"# mode: embedded (PostgreSQL runs from {settings.data_dir / 'pgdata'})")
    else:
        _say("# mode: external (PostgreSQL at STUDYHALL_DATABASE_URL)")
    if settings.media_on_celery:
        _say("# media: jobs run on Celery workers (`studyhall worker -Q media`, Redis broker)")
    else:
        _say("# media: jobs run in this process")
    if settings.sandbox_on_celery:
        _say("# sandbox: programs run on Celery workers (`studyhall worker`, Redis broker)")
    else:
        reason = probe(settings.sandbox_bwrap, settings.sandbox_cgroup_root).reason
        _say("# sandbox: programs run in this process" + (f"; unavailable here: {reason}" if reason else ""))
    return 0


async def _make_admin(settings: Settings, dsn: str, body: RegisterIn) -> tuple[uuid.UUID, str | None]:
    """Create the admin, or promote the existing account; return its id and its role before."""
    password_hash = await Passwords(settings).hash(body.password)
    conn = await connect(dsn)
    try:
        async with conn.transaction():
            before: str | None = None
            user_id = await conn.fetchval(
                "INSERT INTO users (id, email, display_name, password_hash, role) VALUES ($1, $2, $3, $4, 'admin')"
                " ON CONFLICT DO NOTHING RETURNING id",
                uuid.uuid4(),
                body.email,
                body.display_name,
                password_hash,
            )
            if user_id is None:
                found = await conn.fetchrow(
                    "SELECT id, role FROM users WHERE lower(email) = lower($1) FOR UPDATE", body.email
                )
                assert found is not None
                user_id, before = found["id"], found["role"]
                await conn.execute("UPDATE users SET role = 'admin' WHERE id = $1", user_id)
            await audit(Tx(conn), None, "user.created_admin", "user", user_id, email=body.email, before=before)
    finally:
        await conn.close()
    return user_id, before


def create_admin(settings: Settings, args: argparse.Namespace) -> int:
    flags = {"email": "--email", "password": "--password", "display_name": "--name"}
    try:
        name = args.name if args.name is not None else args.email.partition("@")[0]
        body = RegisterIn(email=args.email, password=args.password, display_name=name or "admin")
    except ValidationError as exc:
        problems = [f"{flags.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}" for e in exc.errors()]
        return _fail("; ".join(problems), 2)
    with _database(settings, share=True) as dsn:
        _report_migrations(asyncio.run(migrate(dsn)))
        user_id, before = asyncio.run(_make_admin(settings, dsn, body))
    if before is None:
        _say(f"created admin account {body.email}")
    elif before == "admin":
        _say(f"{body.email} is already an admin (password unchanged)")
    else:
        _say(f"promoted existing account {body.email} from {before} to admin (password unchanged)")
    _say(f"id: {user_id}")
    return 0


def config_reference(settings: Settings, args: argparse.Namespace) -> int:
    sys.stdout.write(reference_markdown())
    return 0


# --- entry point ---------------------------------------------------------------------------------


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be between 0 and 65535")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="studyhall", description="Study together: the studyhall server.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("serve", help="run the server (starts the embedded PostgreSQL unless configured)")
    p.add_argument("--host", help="address to listen on (default: STUDYHALL_HOST)")
    p.add_argument("--port", type=_port, help="port to listen on, 0 for any free one (default: STUDYHALL_PORT)")
    p.add_argument("--demo", action="store_true", help="load demo accounts, a course and a community")
    p.set_defaults(run=serve)
    p = sub.add_parser("worker", help="run sandbox or media jobs from Redis (Celery; needs STUDYHALL_REDIS_URL)")
    p.add_argument(
        "-Q", "--queues", choices=("sandbox", "media"), default="sandbox",
        help="sandbox: programs (default); media: video transcodes, grade sheets, data exports",
    )  # fmt: skip
    p.add_argument(
        "--concurrency", type=int, default=None,
        help="jobs run at once (default: STUDYHALL_SANDBOX_WORKERS, or STUDYHALL_MEDIA_WORKERS with -Q media)",
    )  # fmt: skip
    p.set_defaults(run=worker)
    p = sub.add_parser("migrate", help="apply pending database migrations")
    p.set_defaults(run=migrate_command)
    p = sub.add_parser("check-config", help="print the effective settings (secrets masked)")
    p.set_defaults(run=check_config)
    p = sub.add_parser("config-reference", help="print the configuration reference (docs/configuration.md)")
    p.set_defaults(run=config_reference)
    p = sub.add_parser("create-admin", help="create an admin account, or promote an existing one")
    p.add_argument("--email", required=True)
    p.add_argument("--password", required=True, help="at least 8 characters")
    p.add_argument("--name", help="display name (default: the part of the email before @)")
    p.set_defaults(run=create_admin)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        return _fail(str(exc), 2)
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)  # SIGTERM unwinds like Ctrl-C
    try:
        run: Command = args.run
        return run(settings, args)
    except Terminated:
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except EmbeddedPostgresError as exc:
        return _fail(str(exc))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return _fail(f"database error: {type(exc).__name__}: {exc}")
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    raise SystemExit(main())
