"""The database: an external PostgreSQL URL, or the embedded server; pgvector; migrations."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import event, make_url, text
from sqlalchemy.exc import ArgumentError, DBAPIError, DisconnectionError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from soundspan_host.database.embedded import EmbeddedPostgres
from soundspan_host.database.migrations import missing_heads, upgrade_to_head
from soundspan_host.errors import ConfigError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 10
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def async_url(url: str) -> str:
    """Accept the usual postgres:// and postgresql:// URLs; SQLAlchemy needs the asyncpg driver."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # a bad port is a ValueError; neither shows the URL,
        # which may hold a password
        raise ConfigError(
            "database_url is not a database URL (the value is not shown: it may hold a password);"
            " write it as postgresql://user:password@host:5432/database"
        ) from None
    if parsed.get_backend_name() not in ("postgres", "postgresql"):
        raise ConfigError(f"database_url must be a PostgreSQL URL, not {parsed.drivername}://")
    if "sslmode" in parsed.query:
        # libpq's name, which users copy from every guide; asyncpg takes the same modes as `ssl`
        mode = parsed.query["sslmode"]
        if mode not in SSL_MODES:
            raise ConfigError(
                f"database_url: sslmode={str(mode)[:20]!r} is not one of {', '.join(SSL_MODES)}"
            )
        parsed = parsed.difference_update_query(["sslmode"]).update_query_dict({"ssl": mode})
    return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def shown_url(url: str) -> str:
    """A URL fit for logs and error messages: as a user writes it, the password masked."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=True)


@asynccontextmanager
async def open_database(
    database_url: str | None,
    data_dir: Path,
    *,
    embedded_port: int = 0,
    embedded_shared_buffers_mb: Literal["auto"] | int = "auto",
    plugin_migrations: Sequence[Path] = (),
    migrate: bool = True,
) -> AsyncIterator[AsyncEngine]:
    """Connect (starting the embedded server if no URL is set), migrate (or, with `migrate`
    false, as a worker, wait for the host to), and clean up after."""
    embedded = None
    if database_url is None:
        embedded = EmbeddedPostgres(
            data_dir,
            port=embedded_port,
            shared_buffers_mb=embedded_shared_buffers_mb,
        )
        url = await asyncio.to_thread(embedded.start)
    else:
        url = async_url(database_url)
    engine = create_async_engine(
        url, pool_pre_ping=True, connect_args={"timeout": CONNECT_TIMEOUT_SECONDS}
    )
    try:
        if migrate:
            await prepare_schema(engine, plugin_migrations)
        else:
            await wait_for_schema(engine, plugin_migrations)
        yield engine
    finally:
        try:
            await engine.dispose()
        finally:
            if embedded is not None:
                await asyncio.to_thread(embedded.stop)


@asynccontextmanager
async def reading(engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """A second engine on the same database for reads that need no transaction, in
    autocommit: a read is one round trip where one on `engine` takes six (its liveness check
    opens and closes a transaction of its own, and the read is wrapped in BEGIN and ROLLBACK).
    Each round trip wakes the server and the host in turn, which on a small box is most of a
    quick read's time (bench/RESULTS.md, issue 25)."""
    reader = create_async_engine(
        engine.url,
        isolation_level="AUTOCOMMIT",
        connect_args={"timeout": CONNECT_TIMEOUT_SECONDS},
    )
    ping_after_idle(reader)  # what lets the host outlive a restarted database
    try:
        yield reader
    finally:
        await reader.dispose()


PING_AFTER_IDLE_SECONDS = 1.0
RETURNED_AT = "soundspan.returned_at"  # a pooled connection's info: when it came back


def ping_after_idle(engine: AsyncEngine) -> None:
    """Check that a pooled connection still reaches the server before it is used, where it has
    rested PING_AFTER_IDLE_SECONDS or more: a dead one (the database restarted) is replaced
    before the read fails.

    SQLAlchemy's `pool_pre_ping` checks at every checkout, and a request reads five or six
    times within milliseconds, each check a round trip; its documented alternative is this
    "checkout" event raising DisconnectionError, on which the pool connects afresh. A
    connection lost while in use fails its read, and the pool then replaces all those older
    than the failure."""

    @event.listens_for(engine.sync_engine, "checkin")
    def returned(dbapi_connection: Any, record: Any) -> None:
        record.info[RETURNED_AT] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if time.monotonic() - record.info.get(RETURNED_AT, 0.0) < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            if engine.dialect.is_disconnect(error, dbapi_connection, None):
                raise DisconnectionError(str(error)) from error
            raise


async def prepare_schema(engine: AsyncEngine, plugin_migrations: Sequence[Path] = ()) -> None:
    """Check the server answers, create the vector extension, apply every migration."""
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
            await connection.run_sync(upgrade_to_head, plugin_migrations)
    except (OSError, TimeoutError, DBAPIError) as error:
        raise ConfigError(
            f"cannot use the database at {shown_url(str(engine.url))}: {_reason(error)}; "
            "check SOUNDSPAN_DATABASE_URL (or unset it to use the embedded database)"
        ) from error
    except SQLAlchemyError as error:
        raise ConfigError(f"database migration failed: {error}") from error


async def wait_for_schema(
    engine: AsyncEngine, plugin_migrations: Sequence[Path], poll_seconds: float = 2.0
) -> None:
    """Wait until the database has every revision of these migrations: a worker's role may
    not change the schema, so the host (of the same version and plugins) must have."""
    told = False
    while True:
        try:
            async with engine.connect() as connection:
                missing = await connection.run_sync(missing_heads, plugin_migrations)
        except (OSError, TimeoutError, DBAPIError) as error:
            raise ConfigError(
                f"cannot use the database at {shown_url(str(engine.url))}: {_reason(error)}; "
                "check SOUNDSPAN_DATABASE_URL"
            ) from error
        if not missing:
            return
        if not told:
            log.warning(
                "waiting for the host to bring the database to this worker's schema (it lacks "
                "%s): start the host, of this worker's version and with the same plugins on",
                ", ".join(missing),
            )
            told = True
        await asyncio.sleep(poll_seconds)


def _reason(error: BaseException) -> str:
    if isinstance(error, DBAPIError) and error.orig is not None:
        return str(error.orig).splitlines()[0] or type(error.orig).__name__
    return str(error) or type(error).__name__
