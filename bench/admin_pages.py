"""How long each admin page takes, server-side, over millions of jobs.

Fills a database of its own with a realistic mix (``--size full``: 10 million jobs,
mostly succeeded history of the last 30 days, about a million scheduled over the next
30 days, some failed, cancelled and expired, an attempt per started job, a payment
per capture job), then requests every admin page through Django's test client (the
whole request: middleware, queries, template) and prints the median of 5 runs, the
page's query count, and PostgreSQL's plan of its slowest query.

    python -m bench.admin_pages --size tiny    # CI: proves the script works
    python -m bench.admin_pages --size full    # the figures in BENCHMARKS.md
"""

import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from bench.harness import Row, parser, print_table, setup_django, stopwatch

SIZES = {"tiny": 2_000, "small": 200_000, "full": 10_000_000}
RUNS = 5
BASELINE_URL = "/admin/"
#: Share of the jobs in each status; the rest succeeded.
MIX = {
    "scheduled": 0.11,
    "failed": 0.02,
    "cancelled": 0.01,
    "expired": 0.005,
}
#: Jobs in flight at any moment: a few hundred enqueued, a few dozen running.
ENQUEUED, RUNNING = 500, 50
#: Task names and their shares, in order (the first is the payments capture).
TASKS = (
    ("payments.capture_payment", 0.40),
    ("testapp.noop", 0.30),
    ("testapp.record", 0.25),
    ("testapp.fail", 0.05),
)


@dataclass(frozen=True)
class Page:
    """One admin page to time."""

    what: str
    url: str


def main() -> None:
    arguments = parser(__doc__ or "")
    arguments.add_argument(
        "--only", default="", help="time only the pages whose name contains this text"
    )
    args = arguments.parse_args()
    size = SIZES[args.size]
    setup_django(args.database, keep=args.keep)
    from django.db import connection

    with moto_server() as endpoint:
        from django.conf import settings

        settings.SCHEDULER_SQS_ENDPOINT_URL = endpoint
        settings.ALLOWED_HOSTS = ["testserver"]
        settings.SCHEDULER_ADMIN_TASKS = ["payments.capture_payment", "testapp.noop"]
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM scheduler_scheduledjob")
            existing = cursor.fetchone()[0]
        if existing != size:
            print(f"filling {size:,} jobs (there are {existing:,})…", flush=True)
            with stopwatch() as elapsed:
                fill(size)
            print(f"filled in {elapsed():.0f} s", flush=True)
        measure([page for page in pages() if args.only in page.what], size)


@contextmanager
def moto_server() -> Iterator[str]:
    """An SQS server for the monitoring page's dead-letter queue, with that queue."""
    import boto3

    from devtools.sqs_server import command as sqs_server_command
    from scheduler.conf import scheduler_settings
    from scheduler.sqs import dead_letter_queue
    from tests.processes import free_port, running, wait_until

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with running("moto", sqs_server_command(port)):
        client = boto3.client(
            "sqs",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local",  # noqa: S106 - the local server takes any
        )

        def answers() -> bool:
            try:
                client.list_queues()
            except Exception:
                return False
            return True

        assert wait_until(answers, timeout=30), "moto server did not start"
        client.create_queue(QueueName=dead_letter_queue(scheduler_settings.QUEUE_NAME))
        yield endpoint


def fill(size: int) -> None:
    """Replace every job, attempt, payment and audit entry by ``size`` generated jobs."""
    from django.db import connection

    from scheduler.conf import scheduler_settings

    counts = {status: int(size * share) for status, share in MIX.items()}
    counts["enqueued"], counts["running"] = min(ENQUEUED, size // 100), min(RUNNING, size // 100)
    counts["succeeded"] = size - sum(counts.values())
    # (status, run_at from, run_at span in days): history in the last 30 days, pending in
    # the next 30; cancelled jobs were due on either side of now.
    shapes = {
        "succeeded": ("now() - interval '30 days'", 30),
        "failed": ("now() - interval '30 days'", 30),
        "expired": ("now() - interval '30 days'", 30),
        "cancelled": ("now() - interval '30 days'", 60),
        "scheduled": ("now() + interval '1 minute'", 30),
        "enqueued": ("now()", 300 / 86400),
        "running": ("now() - interval '10 seconds'", 10 / 86400),
    }
    cumulative, bounds = 0.0, []
    for name, share in TASKS:
        cumulative += share
        bounds.append((name, cumulative))
    task_case = "CASE " + " ".join(
        f"WHEN r_task < {bound} THEN '{name}'" for name, bound in bounds[:-1]
    )
    task_case += f" ELSE '{bounds[-1][0]}' END"
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE payments_payment, scheduler_auditentry, scheduler_jobattempt, "
            "scheduler_scheduledjob RESTART IDENTITY CASCADE"
        )
        cursor.execute("SELECT setseed(0.42)")
        for status, (start, days) in shapes.items():
            started = status in ("succeeded", "failed", "running")
            finished = status in ("succeeded", "failed", "cancelled", "expired")
            attempts = {"failed": 5, "succeeded": 1, "running": 1}.get(status, 0)
            cursor.execute(
                f"""
                INSERT INTO scheduler_scheduledjob
                    (task_name, args, kwargs, queue, run_at, status, attempts, max_attempts,
                     unique_key, dispatch_token, deadline, enqueued_at, sends, resend_at,
                     started_at, finished_at, last_error, retry_on_error, created_at, updated_at)
                SELECT task_name, '[]', '{{}}', %(queue)s, run_at, %(status)s, %(attempts)s, 5,
                       CASE WHEN task_name = 'payments.capture_payment'
                            THEN 'payments:capture:' || %(status)s || '-' || i END,
                       CASE WHEN %(status)s IN ('enqueued', 'running') THEN gen_random_uuid() END,
                       NULL,
                       CASE WHEN %(status)s IN ('enqueued', 'running', 'succeeded', 'failed')
                            THEN run_at - interval '5 minutes' END,
                       CASE WHEN %(status)s IN ('enqueued', 'running') THEN 1 ELSE 0 END,
                       -- An enqueued job is re-sent at its stale time unless claimed.
                       CASE WHEN %(status)s = 'enqueued' THEN run_at + interval '5 minutes' END,
                       CASE WHEN %(started)s THEN run_at + late END,
                       CASE WHEN %(finished)s THEN run_at + late + interval '1 second' END,
                       CASE WHEN %(status)s = 'failed'
                            THEN 'Traceback (most recent call last):\nRuntimeError: declined'
                            ELSE '' END,
                       true, run_at - interval '14 days', run_at
                FROM (
                    SELECT i, {task_case} AS task_name,
                           {start} + (i::float / %(count)s * %(days)s) * interval '1 day'
                               AS run_at,
                           -- Mostly a fraction of a second late, with a long tail.
                           (0.02 + 8 * power(random(), 6)) * interval '1 second' AS late
                    FROM (SELECT i, random() AS r_task
                          FROM generate_series(1, %(count)s) AS i) AS numbers
                ) AS generated
                -- Pending jobs were scheduled over weeks, with delays from minutes to a
                -- month: their rows lie among the others in no run_at order.
                ORDER BY CASE WHEN %(status)s = 'scheduled' THEN random() END
                """,  # noqa: S608 - only this module's constants are formatted in
                {
                    "queue": scheduler_settings.QUEUE_NAME,
                    "status": status,
                    "attempts": attempts,
                    "started": started,
                    "finished": finished,
                    "count": counts[status],
                    "days": days,
                },
            )
            print(f"  {status}: {counts[status]:,}", flush=True)
        # One attempt per started job (the failed ones' last).
        cursor.execute(
            """
            INSERT INTO scheduler_jobattempt
                (job_id, task_name, number, dispatch_token, scheduled_for, started_at,
                 finished_at, outcome, error, worker)
            SELECT id, task_name, attempts, gen_random_uuid(), run_at, started_at, finished_at,
                   CASE status WHEN 'succeeded' THEN 'succeeded' WHEN 'failed' THEN 'error'
                               ELSE 'running' END,
                   last_error, 'bench@host:1'
            FROM scheduler_scheduledjob WHERE started_at IS NOT NULL
            -- As the worker inserts them: in the order they started.
            ORDER BY started_at
            """
        )
        cursor.execute(
            """
            INSERT INTO payments_payment
                (amount, currency, status, authorization_id, capture_id, capture_job_id,
                 authorized_at, authorization_expires_at, captured_at)
            SELECT 10 + (id % 500), 'EUR',
                   CASE status WHEN 'succeeded' THEN 'captured'
                               WHEN 'expired' THEN 'capture_missed' ELSE 'authorized' END,
                   'auth_' || id,
                   CASE WHEN status = 'succeeded' THEN 'cap_' || id ELSE '' END,
                   id, run_at - interval '14 days', run_at + interval '16 days',
                   CASE WHEN status = 'succeeded' THEN finished_at END
            FROM scheduler_scheduledjob WHERE task_name = 'payments.capture_payment'
            """
        )
        for table in ("scheduler_scheduledjob", "scheduler_jobattempt", "payments_payment"):
            cursor.execute(f"VACUUM ANALYZE {table}")


def pages() -> list[Page]:
    """The pages an operator opens, with ids and names taken from the data."""
    from django.urls import reverse

    from scheduler.models import ScheduledJob

    jobs = reverse("admin:scheduler_scheduledjob_changelist")
    payments = reverse("admin:payments_payment_changelist")
    failed = ScheduledJob.objects.filter(status="failed").only("pk").order_by("-pk").first()
    assert failed is not None, "no failed job: the fill did not run"
    # Ids restart at 1 on every fill.
    middle = ScheduledJob.objects.count() // 2
    # A key the fill gave (a search for one no job has would time a second "no match").
    key = (
        ScheduledJob.objects.filter(unique_key__isnull=False)
        .order_by("-pk")
        .values_list("unique_key", flat=True)
        .first()
    )
    assert key is not None, "no job with a unique key: the fill did not run"
    return [
        Page("job list", jobs),
        Page("filter: failed", f"{jobs}?status__exact=failed"),
        Page("filter: succeeded", f"{jobs}?status__exact=succeeded"),
        Page("filter: expired", f"{jobs}?status__exact=expired"),
        Page("filter: scheduled", f"{jobs}?status__exact=scheduled"),
        Page("filter: task", f"{jobs}?task=testapp.fail"),
        Page("filter: queue", f"{jobs}?queue=other-queue"),
        Page("filter: overdue", f"{jobs}?run_at=overdue"),
        Page("filter: next 24 hours", f"{jobs}?run_at=next_day"),
        Page("filter: past 7 days, failed", f"{jobs}?run_at=past_week&status__exact=failed"),
        Page("date drill-down: a day", _a_day(jobs)),
        Page("search: id", f"{jobs}?q={middle}"),
        Page("search: task name", f"{jobs}?q=testapp.f"),
        Page("search: unique key", f"{jobs}?q={key}"),
        Page("search: a key prefix many jobs share", f"{jobs}?q=payments:capture:"),
        Page("search: no match", f"{jobs}?q=nothing-matches-this"),
        Page("job page", reverse("admin:scheduler_scheduledjob_change", args=[failed.pk])),
        Page("monitoring", reverse("admin:scheduler_scheduledjob_monitoring")),
        Page("payments list", payments),
        Page("payments: capture missed", f"{payments}?status__exact=capture_missed"),
    ]


def _a_day(url: str) -> str:
    from django.utils import timezone

    day = timezone.now().date()
    return f"{url}?run_at__day={day.day}&run_at__month={day.month}&run_at__year={day.year}"


def measure(to_time: list[Page], size: int) -> None:
    """Time each page, then print the table and each page's slowest query plan."""
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    user = User.objects.filter(username="bench").first() or User.objects.create_superuser(
        "bench", "bench@example.com", "bench"
    )
    client = Client()
    client.force_login(user)
    rows, plans = [], []
    for page in to_time:
        client.get(page.url)  # warm the caches a running server has warm
        ours, floor = [], []
        for _ in range(RUNS):
            # The baseline, interleaved so that both suffer the same neighbours: the
            # admin's home page, which reads no job (the cost of any admin page).
            with stopwatch() as elapsed:
                client.get(BASELINE_URL)
            floor.append(elapsed())
            with CaptureQueriesContext(connection) as queries, stopwatch() as elapsed:
                response = client.get(page.url)
            assert response.status_code == 200, f"{page.url}: {response.status_code}"
            ours.append(elapsed())
        rows.append(
            Row(
                f"{page.what} ({len(queries)} queries)",
                statistics.median(ours) * 1000,
                statistics.median(floor) * 1000,
                unit="ms",
                baseline_name="admin home page",
            )
        )
        plans.append((page, _slowest_plan(queries.captured_queries)))
    print_table(f"Admin pages at {size:,} jobs (server-side, median of {RUNS})", rows)
    print("\n### The slowest query of each page, as PostgreSQL ran it\n")
    for page, plan in plans:
        print(f"#### {page.what}: {page.url}\n\n```\n{plan}\n```\n")


def _slowest_plan(captured: list[dict[str, Any]]) -> str:
    """EXPLAIN ANALYZE of the slowest SELECT among ``captured``."""
    from django.db import connection

    selects = [query for query in captured if query["sql"].lstrip().upper().startswith("SELECT")]
    if not selects:
        return "(no query)"
    slowest = max(selects, key=lambda query: float(query["time"]))
    with connection.cursor() as cursor:
        started = time.perf_counter()
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {slowest['sql']}")
        plan = "\n".join(line for (line,) in cursor.fetchall())
        elapsed = (time.perf_counter() - started) * 1000
    return f"{slowest['sql']}\n\n{plan}\n(explain took {elapsed:.1f} ms)"


if __name__ == "__main__":
    main()
