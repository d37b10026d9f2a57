"""Behind PgBouncer in transaction mode, as on many AWS deployments (RDS Proxy pools the
same way): each transaction may run on any server session, so nothing may rely on a
session's state from one transaction to the next.

A real PgBouncer in front of the test database, other clients using the same small pool
meanwhile (the web and worker processes of a deployment), and the project's code in a
process of its own, connected through it.
"""

import os
import shutil
import subprocess
import textwrap
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import psycopg2
import pytest
from django.db import connection

from tests.integration.test_upgrade import _run_python
from tests.processes import Process, start_server

pytestmark = pytest.mark.django_db(transaction=True)

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


@pytest.fixture
def pgbouncer(tmp_path: Path) -> Iterator[str]:
    """The test database's URL through a PgBouncer in transaction mode, with a pool of
    three server sessions."""
    if not os.access(PGBOUNCER, os.X_OK):
        pytest.fail(
            "no pgbouncer to put in front of the test database: install Debian's "
            "pgbouncer package (`apt-get install pgbouncer`, as .ci/run does)"
        )
    db = connection.settings_dict
    tmp_path.chmod(0o755)  # PgBouncer, as root, runs as postgres: it reads its file here

    def command(port: int) -> list[str]:
        ini = tmp_path / f"pgbouncer-{port}.ini"
        ini.write_text(
            textwrap.dedent(f"""\
                [databases]
                * = host={db["HOST"]} port={db["PORT"] or 5432} user={db["USER"]}
                [pgbouncer]
                listen_addr = 127.0.0.1
                listen_port = {port}
                unix_socket_dir =
                auth_type = any
                pool_mode = transaction
                default_pool_size = 3
                max_client_conn = 100
                """)
        )
        ini.chmod(0o644)
        # PgBouncer refuses to run as root; -u drops to another user.
        return [PGBOUNCER, *(["-u", "postgres"] if os.geteuid() == 0 else []), str(ini)]

    def ready(_process: Process, port: int) -> bool:
        try:
            with closing(psycopg2.connect(_url(db, port), connect_timeout=2)) as probe:
                return probe.cursor() is not None
        except psycopg2.OperationalError:
            return False

    process, port = start_server("pgbouncer", command, ready=ready)
    try:
        yield _url(db, port)
    finally:
        process.stop()


def _url(db: dict[str, object], port: int) -> str:
    return f"postgres://{db['USER']}@127.0.0.1:{port}/{db['NAME']}"


@pytest.fixture
def other_clients(pgbouncer: str) -> Iterator[None]:
    """Three clients running short transactions through the pool until the test ends."""
    stop = threading.Event()

    def traffic() -> None:
        with closing(psycopg2.connect(pgbouncer)) as client:
            client.autocommit = True
            with client.cursor() as cursor:
                while not stop.is_set():
                    cursor.execute("SELECT 1")

    threads = [threading.Thread(target=traffic, daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)


def _run(url: str, code: str, *, timeout: float) -> str:
    """Run ``code`` in a Django process of its own on ``url``; its output."""
    script = "import django\ndjango.setup()\n" + textwrap.dedent(code)
    try:
        result = _run_python(url, "-c", script, timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        raise AssertionError(f"still running after {timeout} s: {expired.stderr!r}") from None
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _advisory_locks() -> int:
    """The advisory locks held on the test database: others' (CI's other legs, on the same
    server at the same time) are no business of the test's."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        (count,) = cursor.fetchone()
        return int(count)


@pytest.mark.usefixtures("other_clients")
def test_writing_the_dispatch_entry_leaves_no_lock_behind(pgbouncer: str) -> None:
    # The writer took a session's advisory lock and released it in another transaction:
    # on another session, which held none. The lock stayed, and the next beat or
    # migrate waited for it for good.
    write = """
        from scheduler.dispatch.beat import ensure_dispatch_schedule
        for _ in range({times}):
            ensure_dispatch_schedule()
        print("written")
    """
    assert _run(pgbouncer, write.format(times=30), timeout=60).split() == ["written"]
    assert _advisory_locks() == 0
    assert _run(pgbouncer, write.format(times=1), timeout=30).split() == ["written"]


@pytest.mark.usefixtures("other_clients")
def test_admin_pages_with_drop_downs_render(pgbouncer: str) -> None:
    # Their options were read with a server-side cursor, declared in one transaction and
    # fetched in the next, on another session: "cursor … does not exist", a 500.
    pages = """
        from django.contrib.auth.models import User
        from django.test import Client
        from django.test.utils import setup_test_environment
        from scheduler.dispatch.beat import ensure_dispatch_schedule

        setup_test_environment()
        entry = ensure_dispatch_schedule()
        client = Client(raise_request_exception=False)
        client.force_login(User.objects.create_superuser("pooled", "p@example.com", "p"))
        urls = [f"/admin/django_celery_beat/periodictask/{entry.pk}/change/",
                "/admin/auth/group/add/"]
        print(*[client.get(url).status_code for _ in range(20) for url in urls])
    """
    assert set(_run(pgbouncer, pages, timeout=120).split()) == {"200"}


@pytest.mark.usefixtures("other_clients")
def test_one_clients_transactions_run_on_several_sessions(pgbouncer: str) -> None:
    # What the tests above rely on: the pool gives each transaction any session.
    with closing(psycopg2.connect(pgbouncer)) as client:
        client.autocommit = True
        with client.cursor() as cursor:
            sessions = set()
            for _ in range(200):
                cursor.execute("SELECT pg_backend_pid()")
                sessions.add(cursor.fetchone()[0])
    assert len(sessions) > 1
