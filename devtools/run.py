"""``python -m devtools.run`` (``make run``): the whole system on this machine, at once.

Development tooling, not part of a deployment. Starts an embedded PostgreSQL when
DATABASE_URL is unset and nothing answers on 127.0.0.1:5432 (:mod:`devtools.database`),
creates the database if missing, starts an embedded SQS server on loopback unless
SQS_ENDPOINT_URL is set or ``--aws`` is passed, creates the queue, migrates, creates the
demo admin user (debug only, in a database without users), runs the demo the first
time, then runs the Procfile's processes with honcho's manager, which interleaves their
output and stops them all on Ctrl-C, SIGTERM or SIGHUP; then the SQS server and the
embedded PostgreSQL, if any, are stopped.
"""

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import botocore.session
import django
import honcho.compat
import honcho.manager
import psycopg2
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from honcho.environ import parse_procfile
from honcho.manager import SIGNALS, Manager
from psycopg2 import sql

from devtools import sqs_server
from devtools.database import (
    DATA_DIR,
    EmbeddedPostgresError,
    database,
    on_stop_signals,
    stop_on_termination,
)

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PROCFILE = ROOT / "Procfile"
DEMO_ADMIN = ("admin", "admin")
_START_TIMEOUT = 30.0
#: How long the processes have to stop after Ctrl-C before they are killed.
STOP_WAIT_SECONDS = 60


class RunError(Exception):
    """A problem the user can fix; reported as one line, without a traceback."""


def say(message: str) -> None:
    """One line from the runner, labelled like honcho's own."""
    print(f"{time.strftime('%H:%M:%S')} run    | {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Prepare everything, run the Procfile until Ctrl-C, and clean up."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.aws and args.port == args.sqs_port:
        # Each is checked free before anything starts: both would pass, and the web
        # server would find its port taken by the SQS server after "ready".
        parser.error(f"--port and --sqs-port are both {args.port}: give them two ports")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    stop_on_termination()
    try:
        _refuse_if_taken(args.port, "--port")
        with database(say, data_dir=args.pgdata):
            ensure_database()
            django.setup()
            with sqs_endpoint(args.sqs_port, aws=args.aws) as endpoint:
                demo_login = _prepare(endpoint, demo=args.demo)
                returncode = run_procfile(args.port, _child_env(endpoint), demo_login=demo_login)
    # A malformed setting (DATABASE_URL=mysql://…) is raised as the settings load.
    except (RunError, EmbeddedPostgresError, ImproperlyConfigured) as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        say("interrupted before start-up finished; stopped")
        return 130
    if returncode:
        say(f"a process exited on its own (exit code {returncode}), so all were stopped")
    say("every process has stopped")
    return returncode


def _refuse_if_taken(port: int, option: str) -> None:
    if _answers(port):
        # A runner killed without its clean-up (SIGKILL) leaves its processes holding
        # the ports; another port would start a second system on the same database.
        raise RunError(
            f"port {port} is already in use, maybe by a `make run` that is still running "
            "or was killed and left its processes (`pgrep -af "
            "'devtools.sqs_server|celery -A project|manage.py runserver'` lists them; "
            f"stop them with `kill PID…`), or pass {option} to pick another"
        )


def _port(text: str) -> int:
    """A TCP port number, for argparse: refused at once, before anything is started."""
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return port


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="make run", description=__doc__)
    parser.add_argument(
        "--port", type=_port, default=8000, help="web server port on 127.0.0.1 (default 8000)"
    )
    parser.add_argument(
        "--sqs-port",
        type=_port,
        default=9324,
        help="embedded SQS server port on 127.0.0.1, when one is started (default 9324)",
    )
    parser.add_argument(
        "--aws",
        action="store_true",
        help="use Amazon SQS, with the AWS credentials of the environment (by default, "
        "an embedded SQS server: credentials alone never send a local worker to a real queue)",
    )
    parser.add_argument(
        "--pgdata",
        type=Path,
        default=DATA_DIR,
        help="data folder of the embedded PostgreSQL, when one is started (default .data/postgres)",
    )
    parser.add_argument(
        "--no-demo",
        dest="demo",
        action="store_false",
        help="do not create the demo payments when there are no jobs yet",
    )
    return parser


def ensure_database() -> None:
    """Create the database named by DATABASE_URL if it does not exist yet."""
    db = settings.DATABASES["default"]
    params = {
        "user": db.get("USER") or None,
        "password": db.get("PASSWORD") or None,
        "host": db.get("HOST") or None,
        "port": db.get("PORT") or None,
        "connect_timeout": 5,
    }
    try:
        psycopg2.connect(dbname=db["NAME"], **params).close()
        return
    except psycopg2.OperationalError as error:
        first_error = _first_line(error)
    try:
        # The maintenance database answers even when ours does not exist yet.
        connection = psycopg2.connect(dbname="postgres", **params)
    except psycopg2.OperationalError as error:
        where = f"{db.get('HOST') or 'localhost'}:{db.get('PORT') or 5432}"
        # A server that answered (a wrong password, an unknown role) is running; libpq
        # gives no code for it, only the server's message.
        advice = (
            "Check the user and password in DATABASE_URL"
            if "FATAL:" in str(error)
            else "Start PostgreSQL (e.g. `sudo service postgresql start`) or set DATABASE_URL"
        )
        raise RunError(
            f"cannot connect to PostgreSQL at {where} ({first_error}). {advice}, "
            "e.g. postgres://user:password@host:5432/longdelay"
        ) from None
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db["NAME"]])
            if cursor.fetchone() is None:
                cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db["NAME"])))
                say(f"created database {db['NAME']}")
            else:
                raise RunError(f"cannot connect to database {db['NAME']}: {first_error}")
    finally:
        connection.close()


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


@contextmanager
def sqs_endpoint(port: int, *, aws: bool = False) -> Iterator[str | None]:
    """The SQS endpoint to use: the configured one, Amazon SQS (None) when asked for, or
    an embedded server.

    Credentials alone are no request: a laptop's default profile often reaches a real
    account, whose queue a local worker would drain of messages it cannot run.
    """
    if settings.SCHEDULER_SQS_ENDPOINT_URL:
        say(f"SQS: {settings.SCHEDULER_SQS_ENDPOINT_URL} (SQS_ENDPOINT_URL)")
        yield settings.SCHEDULER_SQS_ENDPOINT_URL
        return
    if aws:
        if not _has_aws_credentials():
            raise RunError("--aws: no AWS credentials found (environment or ~/.aws)")
        say(f"SQS: Amazon SQS in {settings.SCHEDULER_SQS_REGION} (--aws)")
        yield None
        return
    with embedded_sqs(port) as endpoint:
        yield endpoint


def _has_aws_credentials() -> bool:
    # Only the local sources (environment, config files): asking the EC2 or container
    # metadata endpoints would stall for seconds on a laptop.
    resolver: Any = botocore.session.get_session().get_component("credential_provider")
    for provider in ("container-role", "iam-role"):
        resolver.remove(provider)
    return resolver.load_credentials() is not None


@contextmanager
def embedded_sqs(port: int) -> Iterator[str]:
    """A moto SQS server on loopback for as long as the context lasts."""
    _refuse_if_taken(port, "--sqs-port")
    server = subprocess.Popen(
        sqs_server.command(port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Its own session: Ctrl-C must not stop it before the worker has stopped.
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + _START_TIMEOUT
        while not _answers(port):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RunError(f"the embedded SQS server did not start on port {port}")
            time.sleep(0.1)
        endpoint = f"http://127.0.0.1:{port}"
        say(f"SQS: embedded server at {endpoint} (in memory, stopped with the rest)")
        yield endpoint
    finally:
        _stop(server)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _stop(process: subprocess.Popen[Any], timeout: float = 10) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _child_env(endpoint: str | None) -> dict[str, str]:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        # Lines reach honcho as they are written, so the logs interleave in order.
        "PYTHONUNBUFFERED": "1",
    }
    if endpoint:
        env["SQS_ENDPOINT_URL"] = endpoint
    return env


def _prepare(endpoint: str | None, *, demo: bool) -> bool:
    """Queue, schema, demo user and demo data; whether the demo admin's login works."""
    from django.core.management import call_command
    from django.test.utils import override_settings

    from scheduler.dispatch.queues import ensure_queue, refusal
    from scheduler.models import ScheduledJob

    # The queue first: an SQS endpoint that does not answer stops the run before the
    # database is changed.
    if endpoint:
        # The embedded server's address is known only now, after settings were loaded.
        with override_settings(SCHEDULER_SQS_ENDPOINT_URL=endpoint):
            try:
                setup = ensure_queue()
            except (BotoCoreError, ClientError) as error:
                raise RunError(refusal(error)) from None
        say(f"queue ready: {setup.url} (dead-letter queue {setup.dlq_arn})")
    else:
        say("Amazon SQS: create the queue once with `python manage.py scheduler_create_queue`")
    call_command("migrate", interactive=False, verbosity=0)
    say("database migrated")
    demo_login = _ensure_demo_admin()
    if demo and not ScheduledJob.objects.exists():
        say("no jobs yet: creating the demo payments (python manage.py scheduler_demo)")
        call_command("scheduler_demo")
    return demo_login


def _ensure_demo_admin() -> bool:
    """Create the demo admin in a database without users; whether its login works.

    A database that has users is someone's (shared, staging, a restored copy): a
    superuser with a known password has no place in it.
    """
    from django.contrib.auth import get_user_model

    if not settings.DEBUG:
        say("DJANGO_DEBUG is off: no demo admin user; use `python manage.py createsuperuser`")
        return False
    username, password = DEMO_ADMIN
    users = get_user_model().objects
    if not users.exists():
        users.create_superuser(username, f"{username}@example.com", password)
        say(f"created the demo admin user {username!r} with password {password!r}")
        return True
    demo = users.filter(username=username).first()
    if demo is not None and demo.check_password(password):
        return True
    say("the database has users: no demo admin user; use `python manage.py createsuperuser`")
    return False


class _MainProcessFirst(honcho.compat.ProcessManager):  # type: ignore[misc]
    """Signals a process's main process to stop, and its whole group to die.

    honcho sent SIGTERM to each process's group: a Celery worker's pool processes, which
    take SIGTERM's default, died at once with their jobs (each retried by its lease,
    its effects done twice), where the worker's warm shutdown lets them finish.
    """

    def terminate(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)


class ProcessManager(Manager):  # type: ignore[misc]  # honcho has no types
    """honcho's manager, stopped by SIGHUP as by SIGTERM, and safely while it starts;
    its stop asks each process's main process alone (:class:`_MainProcessFirst`).

    honcho signals each process by the pid its start message brings, and a stop
    requested before it had read them all (Ctrl-C in the first few ms) failed on a
    missing pid, leaving the processes started so far running: such a stop now waits
    for the last start message.
    """

    def __init__(self) -> None:
        super().__init__()
        self._procmgr = _MainProcessFirst()
        self._owner = os.getpid()
        #: Whether a stop waits for the pids (True: a kill), None when none does.
        self._pending_stop: bool | None = None

    def _start(self) -> None:
        # loop() has just set its handler, for SIGINT and SIGTERM only.
        honcho_stop = signal.getsignal(signal.SIGTERM)
        assert callable(honcho_stop)

        def stop(signum: int, frame: FrameType | None) -> None:
            # The processes honcho forks to run each command inherit this handler; only
            # this process's manager knows the pids.
            if os.getpid() == self._owner:
                honcho_stop(signum, frame)

        signal.signal(signal.SIGINT, stop)
        on_stop_signals(stop)
        super()._start()

    def _killall(self, force: bool = False) -> None:
        if self._all_started():
            super()._killall(force)
        else:
            self._pending_stop = force or bool(self._pending_stop)

    def _all_started(self) -> bool:
        # loop() asks after each message it reads, a start message among them.
        started: bool = super()._all_started()
        if started and self._pending_stop is not None:
            force, self._pending_stop = self._pending_stop, None
            super()._killall(force)
        return started


def run_procfile(port: int, env: dict[str, str], *, demo_login: bool = False) -> int:
    """Run the Procfile's processes with honcho's manager until Ctrl-C or one exits.

    Returns 0 when stopped on request (Ctrl-C, SIGTERM, SIGHUP), else the exit code of
    the process that stopped first.
    """
    # honcho kills what is still running 5 s after Ctrl-C: a worker's warm shutdown
    # waits out its long poll and its running jobs, which would be left to their leases.
    honcho.manager.KILL_WAIT = STOP_WAIT_SECONDS
    # honcho's handler names the signal and sets the exit code from this table.
    SIGNALS.setdefault(signal.SIGHUP, {"name": "SIGHUP", "rc": 128 + signal.SIGHUP})
    manager = ProcessManager()
    for name, command in parse_procfile(PROCFILE.read_text()).processes.items():
        # honcho's own naming, as `honcho start` prints it.
        manager.add_process(f"{name}.1", command, env={**env, "PORT": str(port)}, cwd=str(ROOT))
    threading.Thread(target=_announce_when_listening, args=(port, demo_login), daemon=True).start()
    manager.loop()
    stopped_on_request = {signal["rc"] for signal in SIGNALS.values()}
    returncode = manager.returncode or 0
    return 0 if returncode in stopped_on_request else returncode


def _announce_when_listening(port: int, demo_login: bool) -> None:
    deadline = time.monotonic() + 5 * _START_TIMEOUT
    while time.monotonic() < deadline:
        if _answers(port):
            _announce(port, demo_login)
            return
        time.sleep(0.25)


def _announce(port: int, demo_login: bool) -> None:
    say(f"ready: admin at http://127.0.0.1:{port}/admin/")
    if demo_login:
        say("log in as {} / {} (demo user)".format(*DEMO_ADMIN))
    say("press Ctrl-C to stop everything")


if __name__ == "__main__":
    sys.exit(main())
