"""The host's reader (soundspan_host.database.reading): an autocommit engine whose pooled
connections are checked against the server only after they rested, on the session's real
PostgreSQL. A request's five or six reads in a row then cost one round trip each."""

import asyncio

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

import soundspan_host.database as database
from soundspan_host.database import async_url, reading
from tests.harness.library import eventually

READ = text("SELECT pg_backend_pid()")


async def test_reads_in_a_row_skip_the_check_and_a_rested_dead_connection_is_replaced(
    database_url, monkeypatch
):
    monkeypatch.setattr(database, "PING_AFTER_IDLE_SECONDS", 0.2)
    engine = create_async_engine(async_url(database_url))
    async with reading(engine) as reader:
        pings = []
        do_ping = reader.dialect.do_ping
        monkeypatch.setattr(
            reader.dialect, "do_ping", lambda conn: pings.append(1) or do_ping(conn)
        )

        async def read() -> int:
            async with reader.connect() as connection:
                return (await connection.execute(READ)).scalar()

        first = await read()
        assert len(pings) == 1  # a new connection: checked once
        assert await read() == first and await read() == first
        assert len(pings) == 1  # reused at once: no round trip for a check

        # the server drops the connection while it rests in the pool (as a restart would)
        admin = await asyncpg.connect(database_url)
        try:
            await admin.execute("SELECT pg_terminate_backend($1)", first)
            gone = "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)"
            await eventually(lambda: admin.fetchval(gone, first), what="the backend's end")
        finally:
            await admin.close()
        await asyncio.sleep(0.3)  # rested longer than the threshold
        replaced = await read()
        assert replaced != first and len(pings) >= 2
    await engine.dispose()
