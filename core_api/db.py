"""Postgres: the connection pool and the SQL migrations.

Migrations are the numbered ``NNNN_name.sql`` files in ``core_api/migrations``, applied in order, each
in its own transaction, and recorded in ``schema_migrations`` with a checksum. A session-level advisory
lock makes concurrent starts safe: the second node waits, then finds nothing left to apply.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeAlias

import asyncpg

log = logging.getLogger(__name__)

# Any fixed 64-bit number, unique to this purpose, shared by every node.
MIGRATION_LOCK_ID = 0x5354_5544_5948_414C  # "STUDYHAL"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

Pool: TypeAlias = asyncpg.Pool
Connection: TypeAlias = asyncpg.Connection
Record: TypeAlias = asyncpg.Record


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def bundled_migrations() -> list[Migration]:
    """The migrations shipped in the package, in version order."""
    found = []
    for entry in resources.files("core_api.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration numbers: {versions}")
    return found


async def _init_connection(conn: Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def connect(dsn: str) -> Connection:
    conn: Connection = await asyncpg.connect(dsn)
    await _init_connection(conn)
    return conn


async def _keep_session(conn: Connection) -> None:
    """Skip asyncpg's reset query on release: studyhall never changes session state on pooled connections
    (no SET, LISTEN or session advisory locks), so the reset would only cost a round trip per request."""


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 20) -> Pool:
    pool: Pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=_init_connection, reset=_keep_session, command_timeout=30
    )
    return pool


async def migrate(dsn: str, migrations: list[Migration] | None = None) -> list[str]:
    """Apply every pending migration; return the names applied. Safe to run from many nodes at once."""
    migrations = bundled_migrations() if migrations is None else migrations
    applied_now: list[str] = []
    conn = await connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
        try:
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version    integer PRIMARY KEY,
                       name       text NOT NULL,
                       checksum   text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {r["version"]: r for r in await conn.fetch("SELECT version, name, checksum FROM schema_migrations")}
            for mig in migrations:
                prior = done.get(mig.version)
                if prior is not None:
                    if prior["checksum"] != mig.checksum:
                        log.warning(
                            "migration %04d_%s changed after it was applied; the database keeps the old one",
                            mig.version,
                            mig.name,
                        )
                    continue
                async with conn.transaction():
                    await conn.execute(mig.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                        mig.version,
                        mig.name,
                        mig.checksum,
                    )
                applied_now.append(f"{mig.version:04d}_{mig.name}")
                log.info("applied migration %04d_%s", mig.version, mig.name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    finally:
        await conn.close()
    return applied_now


def row(record: Record | None) -> dict[str, Any] | None:
    return dict(record) if record is not None else None
