"""Shared plumbing of the benchmarks: a database of their own, fast fills, timing, tables.

Benchmarks are scripts, not tests: each prints its figures, side by side with a
baseline measured in the same run. ``--size tiny`` (what CI runs) only proves a script
works. The database a script creates is dropped when it ends, on an error too (``--keep``
keeps it).
"""

import argparse
import atexit
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg2
from psycopg2 import sql

if TYPE_CHECKING:
    from tests.chaos.harness import SqsServer

DEFAULT_SERVER = "postgres://postgres@127.0.0.1:5432"


def parser(description: str) -> argparse.ArgumentParser:
    """The arguments every benchmark takes: its size, its database, and ``--keep``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--size",
        default="small",
        help="tiny (CI: proves the script works), small, or full (the figures in BENCHMARKS.md)",
    )
    # Each script its own database: two benchmarks at once must not drop each other's.
    parser.add_argument(
        "--database",
        default=f"bench_{Path(sys.argv[0]).stem}",
        help="database to create afresh and use, dropped at the end unless --keep "
        "(default: bench_ and the script's name)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave the database in place at the end (to look into it)",
    )
    return parser


def setup_django(
    database: str, settings_module: str = "tests.settings", *, keep: bool = False
) -> None:
    """Point Django at ``database``, created afresh, set it up, and migrate.

    Afresh, not reused: a database left by another checkout may record another
    migration history, which ``migrate`` refuses. Dropped when the script ends (at exit,
    after an error or SIGTERM too), unless ``keep`` (``--keep``): CI runs every script,
    and each left a database behind.
    """
    server = os.environ.get("BENCH_POSTGRES", DEFAULT_SERVER)
    _drop_database(server, database)
    _server_statement(server, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    if not keep:
        atexit.register(_drop_at_exit, server, database, os.getpid())
        # SIGTERM (kill, a CI timeout) exits through the drop too, as SystemExit.
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _exit_on_sigterm)
    os.environ["DATABASE_URL"] = f"{server}/{database}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", settings_module)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", interactive=False, verbosity=0)


def _drop_database(server: str, database: str) -> None:
    """Drop ``database`` if it exists, this process's Django connections closed first
    (others, e.g. of a process left running, are ended by ``FORCE``)."""
    from django.apps import apps

    if apps.ready:
        from django.db import connections

        connections.close_all()
    name = sql.Identifier(database)
    _server_statement(server, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))


def _drop_at_exit(server: str, database: str, pid: int) -> None:
    """:func:`_drop_database` at exit, in the process that created the database only (not
    in a child forked from it), saying so if it fails."""
    if os.getpid() != pid:
        return
    try:
        _drop_database(server, database)
    except psycopg2.Error as error:
        print(f"bench: database {database} not dropped: {error}", file=sys.stderr)


def _server_statement(server: str, statement: sql.Composed) -> None:
    """Run ``statement`` on ``server``'s maintenance database, outside a transaction."""
    connection = psycopg2.connect(f"{server}/postgres")
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        connection.close()


def fill_scheduled(count: int, *, task_name: str = "testapp.noop", due_in_days: float = 30) -> None:
    """Insert ``count`` scheduled jobs spread over the next ``due_in_days``, in one statement."""
    from django.db import connection

    from scheduler.conf import scheduler_settings

    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO scheduler_scheduledjob
                (task_name, args, kwargs, queue, run_at, status, attempts, max_attempts,
                 sends, last_error, created_at, updated_at, retry_on_error)
            SELECT %s, '[]', '{}', %s,
                   now() + (i::float / %s * %s) * interval '1 day',
                   'scheduled', 0, 5, 0, '', now(), now(), true
            FROM generate_series(1, %s) AS i
            """,
            [task_name, scheduler_settings.QUEUE_NAME, count, due_in_days, count],
        )
        cursor.execute("ANALYZE scheduler_scheduledjob")


def truncate_jobs() -> None:
    """Empty the job tables."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE scheduler_jobattempt, scheduler_scheduledjob CASCADE")


@contextmanager
def stopwatch() -> Iterator[Callable[[], float]]:
    """Seconds elapsed inside the block: ``with stopwatch() as elapsed: …; elapsed()``."""
    start = time.perf_counter()
    end: list[float] = []
    try:
        yield lambda: (end[0] if end else time.perf_counter()) - start
    finally:
        end.append(time.perf_counter())


def median_of(runs: int, measure: Callable[[], float]) -> float:
    """The median of ``runs`` measurements."""
    return statistics.median(measure() for _ in range(runs))


def median_of_values(values: Sequence[float]) -> float:
    """The median of measurements already taken (e.g. interleaved with a baseline's)."""
    return statistics.median(values)


@dataclass(frozen=True)
class Row:
    """One line of a result table: this project's figure beside its baseline's."""

    what: str
    ours: float
    baseline: float | None = None
    unit: str = ""
    baseline_name: str = ""

    @property
    def ratio(self) -> float | None:
        """ours / baseline."""
        if self.baseline is None or self.baseline == 0:
            return None
        return self.ours / self.baseline


def print_markdown(title: str, header: Sequence[str], lines: Iterable[Sequence[str]]) -> None:
    """Print a Markdown table under a ``###`` title, ready for BENCHMARKS.md."""
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for line in lines:
        print("| " + " | ".join(line) + " |")


def _figure(value: float) -> str:
    """Four significant digits, grouped (``42,510``, ``0.4284``), never in e-notation."""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def print_table(title: str, rows: Sequence[Row]) -> None:
    """Print ``rows`` as a Markdown table, ready for BENCHMARKS.md."""
    print_markdown(
        title,
        ["what", "this project", "baseline", "ratio"],
        (
            [
                row.what,
                f"{_figure(row.ours)} {row.unit}",
                "—"
                if row.baseline is None
                else f"{_figure(row.baseline)} {row.unit} ({row.baseline_name})".strip(),
                "—" if row.ratio is None else f"{row.ratio:.2f}",
            ]
            for row in rows
        ),
    )


# --- Live runs: real processes, and three ways to run a task later ----------------------

#: The systems compared on one worker: this project's jobs (``schedule_many``), Celery's
#: own countdown (``send_task(eta=…)``: the worker receives the message at once and holds
#: it until its eta) and django-celery-beat's one-off ``ClockedSchedule`` task.
SYSTEMS = ("project", "celery", "beat")
#: The task all three run: its body starts by appending ``label time.time()`` to a file.
PROBE_TASK = "testapp.record"
#: The live runs' Django settings: the project's (periods, lead, long poll), with the
#: test apps for the probe task, and DEBUG off.
LIVE_SETTINGS_MODULE = "bench.settings"


@dataclass(frozen=True)
class Due:
    """One task run asked of a system: its label and when it is due (epoch seconds)."""

    label: str
    system: str
    due: float


@dataclass(frozen=True)
class Outcome:
    """How one system's runs went: lateness (seconds, each run's first start - due)."""

    system: str
    lateness: list[float]
    missing: int
    duplicated: int

    @property
    def early(self) -> int:
        """Runs that started before they were due."""
        return sum(1 for value in self.lateness if value < 0)

    def percentile(self, p: int) -> float:
        """The p-th percentile of lateness, seconds (0 without data)."""
        return percentile(self.lateness, p)


def percentile(values: Sequence[float], p: int) -> float:
    """The p-th percentile of ``values`` (0 without data)."""
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


class LiveSystem:
    """A moto SQS server, one `celery worker` and `celery beat` (the dispatcher), all real.

    Start it with :func:`live_system`. :meth:`submit` asks one of :data:`SYSTEMS` to run
    the probe task at given times; :meth:`outcome` reads when each run started.
    """

    def __init__(self, runs_file: Path, sqs: "SqsServer") -> None:
        self.runs_file = runs_file
        self.sqs = sqs
        self._count = 0

    def submit(self, system: str, dues: Sequence[float]) -> list[Due]:
        """Ask ``system`` to run the probe task once at each of ``dues`` (epoch seconds)."""
        from datetime import UTC, datetime

        planned = []
        for due in dues:
            self._count += 1
            planned.append(Due(f"{system}-{self._count}", system, due))
        at = [datetime.fromtimestamp(item.due, tz=UTC) for item in planned]
        args = [[str(self.runs_file), item.label] for item in planned]
        if system == "project":
            from scheduler import schedule_many

            schedule_many(
                {"task": PROBE_TASK, "run_at": when, "args": arguments}
                for when, arguments in zip(at, args, strict=True)
            )
        elif system == "celery":
            from project.celery import app

            for when, arguments in zip(at, args, strict=True):
                app.send_task(PROBE_TASK, args=arguments, eta=when)
        elif system == "beat":
            _clocked_tasks(planned, at, args)
        else:
            raise ValueError(f"unknown system {system!r}")
        return planned

    def starts(self) -> dict[str, list[float]]:
        """When each label's runs started (epoch seconds)."""
        from tests.testapp.tasks import read_runs

        by_label: dict[str, list[float]] = {}
        for label, at in read_runs(self.runs_file):
            by_label.setdefault(label, []).append(at)
        return by_label

    def wait_for(self, planned: Sequence[Due], *, timeout: float) -> bool:
        """Wait until every planned run has started (or ``timeout``); whether they all did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            starts = self.starts()
            if all(item.label in starts for item in planned):
                return True
            time.sleep(0.2)
        return False

    def outcome(self, system: str, planned: Sequence[Due]) -> Outcome:
        """The lateness, missing and duplicated runs of ``system``'s share of ``planned``."""
        starts = self.starts()
        mine = [item for item in planned if item.system == system]
        runs = [sorted(starts.get(item.label, [])) for item in mine]
        return Outcome(
            system=system,
            lateness=[times[0] - item.due for item, times in zip(mine, runs, strict=True) if times],
            missing=sum(1 for times in runs if not times),
            duplicated=sum(1 for times in runs if len(times) > 1),
        )


def _clocked_tasks(planned: Sequence[Due], at: Sequence[Any], args: Sequence[list[str]]) -> None:
    """One-off django-celery-beat tasks, one per run, as bulk inserts (beat is told once)."""
    import json

    from django_celery_beat.models import ClockedSchedule, PeriodicTask, PeriodicTasks

    from scheduler.conf import scheduler_settings

    clocks = {when: ClockedSchedule.objects.create(clocked_time=when) for when in set(at)}
    PeriodicTask.objects.bulk_create(
        PeriodicTask(
            name=item.label,
            task=PROBE_TASK,
            args=json.dumps(arguments),
            clocked=clocks[when],
            one_off=True,
            queue=scheduler_settings.QUEUE_NAME,
        )
        for item, when, arguments in zip(planned, at, args, strict=True)
    )
    PeriodicTasks.update_changed()


@contextmanager
def live_system(
    database: str,
    *,
    logs: Path | None = None,
    settings_module: str = LIVE_SETTINGS_MODULE,
    keep: bool = False,
) -> Iterator[LiveSystem]:
    """Start moto, one worker (2 processes) and beat on ``database``; stop them after.

    This process and the others run with ``settings_module``.
    The queue is new; the job and clocked-task tables are emptied first. With ``logs``,
    the processes' logs are saved there at the end.
    """
    import tempfile
    import uuid

    from tests.chaos.harness import SqsServer

    sqs = SqsServer()
    os.environ["SQS_ENDPOINT_URL"] = sqs.endpoint
    os.environ["SCHEDULER_QUEUE_NAME"] = f"bench-{uuid.uuid4().hex[:8]}"
    setup_django(database, settings_module=settings_module, keep=keep)
    from django.db import connection
    from django_celery_beat.models import ClockedSchedule, PeriodicTask

    from scheduler.dispatch.queues import ensure_queue
    from tests.chaos.harness import Cluster, child_env

    truncate_jobs()
    PeriodicTask.objects.filter(clocked__isnull=False).delete()
    ClockedSchedule.objects.all().delete()
    # A benchmark stopped with SIGTERM (kill, a CI timeout) stops its processes too.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    sqs.start()
    try:
        ensure_queue()
        env = child_env(
            database=connection.settings_dict,
            endpoint=sqs.endpoint,
            queue=os.environ["SCHEDULER_QUEUE_NAME"],
        )
        with tempfile.TemporaryDirectory() as workdir:
            cluster = Cluster(env=env, workdir=Path(workdir), settings_module=settings_module)
            try:
                cluster.start_workers(1, concurrency=2)
                cluster.start_beat()
                yield LiveSystem(Path(workdir) / "runs.txt", sqs)
            except BaseException:
                cluster.dump_output()
                raise
            finally:
                if logs is not None:
                    cluster.save_logs(logs)
                cluster.close()
    finally:
        sqs.stop()
        signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum: int, frame: object) -> None:  # noqa: ARG001 - signal's call
    raise SystemExit(128 + signum)
