"""What the embedded database's OS user, a database superuser or a remote worker can take from
the host: no file of root's through a link planted in the cluster folder, none of the host's
environment (its API token, a music server's password), and, for a worker, no more than a
worker's work."""

import asyncio
import os
import shutil
import stat
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from soundspan_hooks.library_views import VIEW_COLUMNS
from soundspan_host.database import prepare_schema
from soundspan_host.database.embedded import EmbeddedPostgres
from soundspan_host.database.embedded_access import (
    HBA_RULES,
    SETUP_HBA_NAME,
    WORKER_ROLE,
    WORKER_SECRET_FILE_NAME,
    secret_file,
    worker_url,
)
from soundspan_host.database.embedded_placement import CLUSTERS, OWNER_RECORD, orphaned_clusters
from soundspan_host.database.worker_role import grant_worker_access
from soundspan_host.doctor import check_placed_clusters, check_writable_by_others
from tests.harness.plugins import TOY_ANALYZER
from tests.harness.processes import free_port


def query(url: str, *statements: str):
    """The first value the last statement returns, the others run before it."""

    async def run():
        connection = await asyncpg.connect(url.replace("+asyncpg", "", 1))
        try:
            for statement in statements[:-1]:
                await connection.execute(statement)
            return await connection.fetchval(statements[-1])
        finally:
            await connection.close()

    return asyncio.run(run())


@pytest.fixture
def stopped_cluster(tmp_path: Path) -> EmbeddedPostgres:
    """A data dir whose cluster was made by a first start, and is down."""
    server = EmbeddedPostgres(tmp_path / "data")
    server.start()
    server.stop()
    return server


@pytest.mark.parametrize("planted", ["pg_hba.conf", SETUP_HBA_NAME])
def test_a_link_planted_in_the_cluster_folder_is_replaced_not_followed(
    stopped_cluster, tmp_path, planted
):
    """The repro: the database's OS user (or a superuser, through COPY ... TO PROGRAM) links
    pg_hba.conf to a root-owned 0600 file; the next start wrote our rules into that file and
    gave it to the database's user."""
    target = tmp_path / "root's own"
    target.write_text("root's secret\n")
    target.chmod(0o600)
    before = target.stat()
    link = stopped_cluster.pgdata / planted
    link.unlink(missing_ok=True)
    link.symlink_to(target)
    if planted == SETUP_HBA_NAME:
        # the setup rules are written when the password is set again: a new password file
        secret_file(stopped_cluster.data_dir).unlink()

    stopped_cluster.start()
    try:
        assert query(stopped_cluster.url, "SELECT 1") == 1
    finally:
        stopped_cluster.stop()

    after = target.stat()
    assert target.read_text() == "root's secret\n"
    assert (after.st_uid, after.st_gid, stat.S_IMODE(after.st_mode)) == (
        before.st_uid,
        before.st_gid,
        0o600,
    )
    hba = stopped_cluster.pgdata / "pg_hba.conf"
    assert not hba.is_symlink() and hba.read_text() == HBA_RULES
    assert hba.stat().st_uid == stopped_cluster.pgdata.stat().st_uid


def test_the_database_gets_none_of_the_hosts_environment(tmp_path, monkeypatch):
    """The repro: `COPY e FROM PROGRAM 'env'` showed SOUNDSPAN_API_TOKEN and the Subsonic
    password, which pg_ctl handed down to the server."""
    monkeypatch.setenv("SOUNDSPAN_API_TOKEN", "token-the-database-must-not-see")
    monkeypatch.setenv("SOUNDSPAN_SUBSONIC__USERS", '[{name="a", password="pw-never-seen"}]')
    server = EmbeddedPostgres(tmp_path / "data")
    server.start()
    try:
        environment = query(
            server.url,
            "CREATE TEMP TABLE e (line text)",
            "COPY e FROM PROGRAM 'env'",
            "SELECT string_agg(line, E'\\n') FROM e",
        )
    finally:
        server.stop()
    assert "PATH=" in environment  # the query saw the server's environment
    assert "SOUNDSPAN" not in environment
    assert "token-the-database-must-not-see" not in environment
    assert "pw-never-seen" not in environment
    assert os.environ["SOUNDSPAN_API_TOKEN"] not in environment


# what workers read: the core tables, and the views that plugins read them through
LIBRARY = ("tracks", "contents", "analysis_jobs", *VIEW_COLUMNS)


def test_workers_log_in_as_a_role_that_does_a_workers_work_and_nothing_more(tmp_path):
    """The repro: every remote worker held the superuser's password, and with it `COPY ...
    TO PROGRAM` (a shell as the database's OS user) and every table."""
    server = EmbeddedPostgres(tmp_path / "data", port=free_port())
    server.start()
    try:
        asyncio.run(migrate_and_grant(server.url, TOY_ANALYZER.source / "migrations"))
        url = worker_url(server.data_dir, server.port)
        assert WORKER_ROLE in url and secret_file(server.data_dir).read_text().strip() not in url
        assert (
            stat.S_IMODE(secret_file(server.data_dir, WORKER_SECRET_FILE_NAME).stat().st_mode)
            == 0o600
        )
        assert (
            query(
                url,
                "SELECT rolsuper OR rolcreaterole OR rolcreatedb FROM pg_roles"
                " WHERE rolname = current_user",
            )
            is False
        )
        may = {
            (table, privilege): query(url, f"SELECT has_table_privilege('{table}', '{privilege}')")
            for table in (*LIBRARY, "analysis_workers", "toy_results")
            for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE")
        }
        assert {key for key, allowed in may.items() if allowed} == {
            *((table, "SELECT") for table in LIBRARY),
            ("analysis_jobs", "UPDATE"),
            *(
                (table, privilege)
                for table in ("analysis_workers", "toy_results")
                for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE")
            ),
        }
        for forbidden in (
            "COPY (SELECT 1) TO PROGRAM 'true'",
            "CREATE TABLE planted (id int)",
            "ALTER TABLE tracks ADD COLUMN planted int",
            "TRUNCATE analysis_jobs",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                query(url, forbidden)
        assert query(url, "SELECT count(*) FROM analysis_jobs") == 0
    finally:
        server.stop()


async def migrate_and_grant(url: str, analyzer_migrations: Path) -> None:
    """What a host does at start: migrate, then grant the workers' role its tables."""
    engine = create_async_engine(url)
    try:
        await prepare_schema(engine, [analyzer_migrations])
        await grant_worker_access(engine, ["toy"])
    finally:
        await engine.dispose()


@pytest.mark.skipif(os.geteuid() != 0, reason="clusters are placed for a host run as root")
def test_doctor_names_placed_databases_whose_data_dir_is_gone(tmp_path):
    """The repro: 14 placed clusters (695 MB) outlived their data dirs, and the record of
    each one's data dir was world-readable."""
    kept, deleted = (EmbeddedPostgres(tmp_path / name) for name in ("kept", "deleted"))
    for server in (kept, deleted):
        server.start()
        server.stop()
    homes = [server.pgdata.parent for server in (kept, deleted)]
    assert all(home.parent == CLUSTERS for home in homes)  # placed: pytest's temp is private
    for home in homes:
        assert stat.S_IMODE((home / OWNER_RECORD).stat().st_mode) == 0o600
    shutil.rmtree(deleted.data_dir)
    try:
        orphans = dict(orphaned_clusters())
        assert orphans.get(homes[1]) == str(deleted.data_dir) and homes[0] not in orphans
        [check] = check_placed_clusters()
        assert check.status == "warn" and f"{homes[1]} (for {deleted.data_dir})" in check.detail
    finally:
        shutil.rmtree(homes[1])


def test_doctor_warns_of_a_data_dir_others_may_write_in(tmp_path):
    """Another account that may write in the model cache could swap a model for its own."""
    models = tmp_path / "data" / "models" / "clap"
    models.mkdir(parents=True)
    assert check_writable_by_others(tmp_path / "data") == []
    models.chmod(0o777)
    [check] = check_writable_by_others(tmp_path / "data")
    assert check.status == "warn" and f"{models} (777" in check.detail
