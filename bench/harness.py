"""Shared plumbing of the benchmarks: a database of their own, fast fills, timing, tables.

Benchmarks are scripts, not tests: each prints its figures, side by side with a
baseline measured in the same run. ``--size tiny`` (what CI runs) only proves a script
works.
"""

import argparse
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg2
from psycopg2 import sql

DEFAULT_SERVER = "postgres://postgres@127.0.0.1:5432"


def parser(description: str) -> argparse.ArgumentParser:
    """The arguments every benchmark takes: its size and its database."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--size",
        default="small",
        help="tiny (CI: proves the script works), small, or full (the figures in BENCHMARKS.md)",
    )
    parser.add_argument(
        "--database",
        default="bench_longdelay",
        help="database to create (if missing) and use; its tables are replaced",
    )
    return parser


def setup_django(database: str, settings_module: str = "tests.settings") -> None:
    """Point Django at ``database`` (created if missing), set it up, and migrate."""
    server = os.environ.get("BENCH_POSTGRES", DEFAULT_SERVER)
    connection = psycopg2.connect(f"{server}/postgres")
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database])
        if cursor.fetchone() is None:
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    connection.close()
    os.environ["DATABASE_URL"] = f"{server}/{database}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", settings_module)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", interactive=False, verbosity=0)


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


def print_table(title: str, rows: Sequence[Row]) -> None:
    """Print ``rows`` as a Markdown table, ready for BENCHMARKS.md."""
    print(f"\n### {title}\n")
    print("| what | this project | baseline | ratio |")
    print("|---|---|---|---|")
    for row in rows:
        baseline = (
            "—"
            if row.baseline is None
            else f"{row.baseline:,.4g} {row.unit} ({row.baseline_name})".strip()
        )
        ratio = "—" if row.ratio is None else f"{row.ratio:.2f}"
        print(f"| {row.what} | {row.ours:,.4g} {row.unit} | {baseline} | {ratio} |")
