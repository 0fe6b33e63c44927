"""The database URL as users write it, from every PostgreSQL guide: libpq's `sslmode` works
(asyncpg calls it `ssl`), and a mode the server cannot give is one clear line, no traceback."""

import asyncio

import pytest
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from soundspan_host.database import async_url, prepare_schema
from soundspan_host.database.embedded import EmbeddedPostgres
from soundspan_host.database.embedded_access import SUPERUSER, read_secret
from soundspan_host.errors import ConfigError
from tests.harness.processes import free_port


def with_query(url: str, **query: str) -> str:
    return make_url(url).update_query_dict(query).render_as_string(hide_password=False)


@pytest.mark.parametrize("mode", ["disable", "prefer"])
async def test_sslmode_is_taken_as_asyncpg_takes_it(database_url, mode):
    engine = create_async_engine(async_url(with_query(database_url, sslmode=mode)))
    try:
        await prepare_schema(engine)  # connects and migrates
    finally:
        await engine.dispose()


async def test_an_ssl_mode_the_server_cannot_give_is_one_clear_line(tmp_path):
    """A real server over TCP (TLS has no meaning on a Unix socket), which has no TLS:
    `require` must fail, saying so (it was a 383-line traceback: asyncpg has no `sslmode`)."""
    server = EmbeddedPostgres(tmp_path / "data", port=free_port())
    await asyncio.to_thread(server.start)
    url = f"postgresql://{SUPERUSER}:{read_secret(server.data_dir)}@127.0.0.1:{server.port}/x"
    engine = create_async_engine(async_url(with_query(url, sslmode="require")))
    try:
        with pytest.raises(ConfigError) as refused:
            await prepare_schema(engine)
    finally:
        await engine.dispose()
        await asyncio.to_thread(server.stop)
    message = str(refused.value)
    assert message.startswith("cannot use the database at ") and "\n" not in message
    assert "SSL" in message and "SOUNDSPAN_DATABASE_URL" in message


def test_an_unknown_sslmode_is_refused_by_name():
    with pytest.raises(ConfigError, match="sslmode='sometimes' is not one of disable, allow"):
        async_url("postgresql://me:pw@db/music?sslmode=sometimes")
