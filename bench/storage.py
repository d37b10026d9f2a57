"""Write amplification and storage of the job table: what each index costs, and whether it pays.

Three parts, on a table filled with a realistic mix (mostly succeeded history, some
jobs scheduled up to 30 days out, a few failed, enqueued and running):

1. Bytes per million rows: the table and each of its indexes.
2. EXPLAIN evidence: each query the code runs on the job table (dispatcher, worker,
   recovery, purge, and the admin's list pages), and the index its plan uses. An index
   no query uses is listed as such.
3. A job's life, through the real services on ``--jobs`` fresh jobs: scheduled
   (``schedule_many``), dispatched (the dispatcher, in-memory publisher), claimed (the
   worker's claim), three heartbeats (the lease renewal's UPDATE), succeeded; steadily
   (job after job, as a worker runs them) and in a burst (each step for every job at
   once, the worst case for room on a page). For each step: row versions written, how
   many were HOT (``pg_stat_user_tables``), index tuples
   written per job, by index (counted in the WAL with ``pg_walinspect``: B-tree leaf
   inserts, splits included) and WAL bytes per job. The WAL is read for this
   database's relations only, so other databases' traffic on the server does not count.

    python -m bench.storage --size full
"""

import logging
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from bench import harness

SIZES = {"tiny": (5_000, 200), "small": (200_000, 2_000), "full": (1_000_000, 10_000)}
HEARTBEATS = 3
#: B-tree WAL records that add a tuple to a leaf page.
LEAF_INSERTS = ("INSERT_LEAF", "INSERT_POST", "SPLIT_L", "SPLIT_R")
TABLES = ("scheduler_scheduledjob", "scheduler_jobattempt")


def main() -> None:
    parser = harness.parser(__doc__ or "")
    parser.add_argument("--jobs", type=int, help="jobs taken through their life")
    parser.add_argument(
        "--fillfactor", type=int, help="the job table's fillfactor for this run (to compare)"
    )
    args = parser.parse_args()
    rows, jobs = SIZES[args.size]
    harness.setup_django(args.database, keep=args.keep)
    logging.getLogger("scheduler").setLevel(logging.WARNING)
    from django.conf import settings
    from django.db import connection

    # The mix's running and enqueued jobs must stay so while the script runs, not be
    # recovered by the dispatcher of the life below.
    settings.SCHEDULER_LEASE_SECONDS = settings.SCHEDULER_STALE_AFTER_SECONDS = 86_400

    with connection.cursor() as cursor:
        cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        # Other databases on the server write WAL too, and a checkpoint may recycle
        # the segments of a step before they are read: this session's temporary slot
        # keeps them until the script ends.
        cursor.execute(
            "SELECT pg_create_physical_replication_slot(%s, true, true)",
            [f"bench_storage_{os.getpid()}"],
        )

    if args.fillfactor:
        with connection.cursor() as cursor:
            cursor.execute(
                "ALTER TABLE scheduler_scheduledjob SET (fillfactor = %s)", [args.fillfactor]
            )
    harness.truncate_jobs()
    fill_mix(rows)
    print_sizes(rows)
    print_plans()
    print_life(args.jobs or jobs, burst=False)
    print_life(args.jobs or jobs, burst=True)
    harness.truncate_jobs()


def fill_mix(count: int) -> None:
    """``count`` jobs: 90 % succeeded over the last 25 days, 8 % scheduled up to 30 days
    out, 1 % failed, 0.5 % cancelled, 0.25 % enqueued, 0.25 % running; one in five
    with a unique key, one in ten with a deadline, over ten task names."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO scheduler_scheduledjob
                (task_name, args, kwargs, queue, run_at, status, attempts, max_attempts,
                 unique_key, dispatch_token, deadline, enqueued_at, sends, resend_at,
                 started_at, heartbeat_at, finished_at, last_error, created_at, updated_at,
                 retry_on_error)
            SELECT 'bench.task_' || (i %% 10), jsonb_build_array(i), '{"currency": "EUR"}',
                   'scheduler-jobs', run_at, status,
                   CASE WHEN status IN ('scheduled', 'enqueued') THEN 0 ELSE 1 END, 5,
                   CASE WHEN i %% 5 = 0 THEN 'key:' || i END,
                   CASE WHEN status IN ('enqueued', 'running') THEN gen_random_uuid() END,
                   CASE WHEN i %% 10 = 0 AND status IN ('scheduled', 'enqueued')
                        THEN run_at + interval '7 days' END,
                   CASE WHEN status <> 'scheduled' THEN run_at END,
                   CASE WHEN status <> 'scheduled' THEN 1 ELSE 0 END,
                   CASE WHEN status = 'enqueued' THEN run_at + interval '5 minutes' END,
                   CASE WHEN status NOT IN ('scheduled', 'enqueued', 'cancelled')
                        THEN run_at END,
                   CASE WHEN status = 'running' THEN now() END,
                   CASE WHEN status IN ('succeeded', 'failed', 'cancelled')
                        THEN run_at + interval '1 second' END,
                   CASE WHEN status = 'failed' THEN 'RuntimeError: boom' ELSE '' END,
                   run_at - interval '14 days', run_at, true
            FROM (
                SELECT i, mix.status,
                       CASE WHEN mix.status = 'scheduled'
                            THEN now() + interval '1 hour' + random() * interval '30 days'
                            WHEN mix.status IN ('enqueued', 'running')
                            THEN now() - random() * interval '10 seconds'
                            ELSE now() - random() * interval '25 days' END AS run_at
                FROM generate_series(1, %s) AS i,
                LATERAL (SELECT CASE WHEN i %% 400 = 0 THEN 'enqueued'
                                     WHEN i %% 400 = 1 THEN 'running'
                                     WHEN i %% 200 = 2 THEN 'cancelled'
                                     WHEN i %% 100 = 3 THEN 'failed'
                                     WHEN i %% 100 < 12 THEN 'scheduled'
                                     ELSE 'succeeded' END AS status) AS mix
            ) AS rows
            """,
            [count],
        )
        cursor.execute("VACUUM ANALYZE scheduler_scheduledjob")


def print_sizes(rows: int) -> None:
    """The table's and each index's bytes per million rows."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname, c.relkind, pg_relation_size(c.oid),
                   coalesce(c.reloptions::text, '')
            FROM pg_class c
            WHERE c.oid = 'scheduler_scheduledjob'::regclass
               OR c.oid IN (SELECT indexrelid FROM pg_index
                            WHERE indrelid = 'scheduler_scheduledjob'::regclass)
            ORDER BY c.relkind DESC, c.relname
            """
        )
        relations = cursor.fetchall()
    scale = 1_000_000 / rows
    print(f"\n### Bytes per million rows ({rows:,} rows of the mix, after VACUUM)\n")
    print("| relation | MB per million rows |")
    print("|---|---|")
    for name, kind, size, options in relations:
        label = f"table {name} {options}".strip() if kind == "r" else f"index {name}"
        print(f"| {label} | {size * scale / 1e6:,.1f} |")
    total = sum(size for *_, size, _ in relations)
    indexes = sum(size for _, kind, size, _ in relations if kind == "i")
    print(f"| **table + {len(relations) - 1} indexes** | **{total * scale / 1e6:,.1f}** |")
    print(f"| of which indexes | {indexes * scale / 1e6:,.1f} |")


def queries() -> dict[str, Any]:
    """Every query the code runs on the job table, by what it is for."""
    from django.utils import timezone

    from scheduler import states
    from scheduler.models import ScheduledJob

    jobs = ScheduledJob.objects
    now = timezone.now()
    window = timedelta(minutes=5)
    succeeded = jobs.filter(status="succeeded")
    purged = now - timedelta(days=25)
    return {
        "dispatcher: due jobs": jobs.due(within=window, now=now)
        .order_by("run_at", "pk")
        .select_for_update(skip_locked=True)
        .values("pk")[:100],
        "dispatcher: deadlines passed": jobs.missed_deadline(now=now).values("pk")[:100],
        # The re-send of unclaimed jobs (issue 8.1), by resend_at.
        "dispatcher: re-sends due": jobs.resend_due(now=now)
        .order_by("resend_at")
        .values("pk")[:100],
        "dispatcher: leases expired": jobs.lease_expired(lease=window, now=now).values("pk")[:100],
        # Two parts, each by finished_at on its own index (purge_finished): succeeded
        # jobs first (succeeded_idx), then those that ended badly (ended_badly_idx).
        "dispatcher: purge, succeeded": succeeded.filter(finished_at__lt=purged)
        .order_by("finished_at")
        .values("pk")[:1000],
        "dispatcher: purge, ended badly": jobs.filter(
            status__in=states.ENDED_BADLY, finished_at__lt=purged
        )
        .order_by("finished_at")
        .values("pk")[:1000],
        # As capped_status_counts reads them: in no order (not the model's -run_at), and
        # nothing but what the index holds (an index-only scan).
        "monitoring: succeeded jobs, to the cap": succeeded.order_by().values("finished_at")[
            :10001
        ],
        "monitoring: jobs failed in the last day": jobs.filter(
            status="failed", finished_at__gte=now - timedelta(hours=24)
        )
        .order_by("-finished_at")
        .values("task_name")[:10001],
        "worker: claim": jobs.select_for_update(of=("self",)).filter(pk=12345),
        "unique key held by an active job": jobs.active().filter(unique_key="key:12345"),
        "admin: all jobs, latest first": jobs.order_by("-run_at")[:100],
        "admin: failed jobs": jobs.filter(status="failed").order_by("-run_at")[:100],
        "admin: succeeded jobs, latest finished first": succeeded.order_by("-finished_at", "-id")[
            :100
        ],
        "admin: scheduled jobs": jobs.filter(status="scheduled").order_by("-run_at")[:100],
        "admin: running jobs": jobs.filter(status="running").order_by("-run_at")[:100],
        "admin: one task": jobs.filter(task_name="bench.task_3").order_by("-run_at")[:100],
    }


def print_plans() -> None:
    """EXPLAIN each query; say which index it uses, and which indexes nothing uses."""
    from django.db import connection, transaction

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexrelid::regclass::text FROM pg_index "
            "WHERE indrelid = 'scheduler_scheduledjob'::regclass ORDER BY 1"
        )
        indexes = [name for (name,) in cursor.fetchall()]
    used: Counter[str] = Counter()
    print("\n### EXPLAIN: the index each query uses\n")
    print("| query | index (plan) | time |")
    print("|---|---|---|")
    details = []
    for what, queryset in queries().items():
        with transaction.atomic():  # the dispatcher's and the worker's lock rows
            plan = queryset.explain(analyze=True)
        names = [name for name in indexes if re.search(rf"\b{re.escape(name)}\b", plan)]
        used.update(names)
        time = re.search(r"Execution Time: ([\d.]+) ms", plan)
        node = "Seq Scan" if "Seq Scan" in plan else ""
        print(
            f"| {what} | {', '.join(names) or node or '?'} | "
            f"{time.group(1) + ' ms' if time else '?'} |"
        )
        details.append((what, plan))
    unused = [name for name in indexes if not used[name]]
    print(f"\nIndexes no query above uses: {', '.join(unused) or 'none'}.")
    print("\n<details><summary>The plans</summary>\n")
    for what, plan in details:
        print(f"{what}:\n```\n{plan}\n```")
    print("</details>")


@dataclass
class Step:
    """What one step of a job's life wrote."""

    name: str
    #: Per table: rows "inserted", "updated", of which "hot".
    rows: dict[str, Counter[str]] = field(default_factory=dict)
    index_tuples: Counter[str] = field(default_factory=Counter)
    wal_bytes: int = 0
    seconds: float = 0.0


@contextmanager
def measured(name: str, steps: list[Step]) -> Iterator[None]:
    """Record the row versions, HOT updates, index tuples and WAL of the block."""
    from django.db import connection

    def stats() -> dict[str, Counter[str]]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_force_next_flush()")
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
                "WHERE relname = ANY(%s)",
                [list(TABLES)],
            )
            return {
                name: Counter(inserted=ins, updated=upd, hot=hot)
                for name, ins, upd, hot in cursor.fetchall()
            }

    def lsn() -> str:
        """Where the WAL ends now, once it is on disk (pg_walinspect reads no further).

        Asynchronous commits (the dispatcher's mark) reach the disk within the WAL
        writer's delay.
        """
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_current_wal_insert_lsn()")
            end = str(cursor.fetchone()[0])
            while True:
                cursor.execute("SELECT pg_current_wal_flush_lsn() >= %s::pg_lsn", [end])
                if cursor.fetchone()[0]:
                    return end
                time.sleep(0.01)

    # Flushing the stats needs the backend to be idle: measure between transactions.
    before, start = stats(), lsn()
    with harness.stopwatch() as elapsed:
        yield
    after, end = stats(), lsn()
    step = Step(name, {table: after[table] - before[table] for table in TABLES})
    step.seconds = elapsed()
    steps.append(step)
    if end == start:
        return  # nothing written (pg_walinspect refuses an empty range)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT coalesce(c.relname, 'other'), w.resource_manager, w.record_type,
                   count(*), sum(w.record_length)
            FROM pg_get_wal_records_info(%s, %s) AS w
            LEFT JOIN pg_class c
              ON c.relfilenode = substring(w.block_ref from 'rel \\d+/\\d+/(\\d+)')::oid
            WHERE w.block_ref LIKE '%%/' || (SELECT oid FROM pg_database
                                           WHERE datname = current_database()) || '/%%'
            GROUP BY 1, 2, 3
            """,
            [start, end],
        )
        for relation, manager, record, count, length in cursor.fetchall():
            step.wal_bytes += int(length)
            if manager == "Btree" and record in LEAF_INSERTS:
                step.index_tuples[relation] += int(count)


def print_life(count: int, *, burst: bool) -> None:
    """Take ``count`` jobs through their life with the real services; print what it wrote.

    Steady: the worker runs one job after the other (claim, heartbeats, success). A
    burst: every job is claimed, then every job renews its lease, and so on, which
    leaves the least room on each page.
    """
    from django.db import transaction
    from django.utils import timezone

    from scheduler import JobSpec, schedule_many
    from scheduler.dispatch.dispatcher import Dispatcher
    from scheduler.services import running
    from scheduler.testing import InMemoryPublisher

    def claim(message: Any) -> running.Claim:
        claimed = running.claim(
            job_id=message.job_id,
            token=message.dispatch_token,
            task_name=message.task_name,
            worker="bench",
        )
        assert isinstance(claimed, running.Claim), claimed
        return claimed

    def heartbeat(claimed: running.Claim) -> None:
        token = claimed.job.dispatch_token
        assert token is not None
        assert running.heartbeat(job_id=claimed.job.pk, token=token)

    def succeed(claimed: running.Claim) -> None:
        assert running.record_success(job=claimed.job, attempt=claimed.attempt)

    steps: list[Step] = []
    now = timezone.now()
    with measured("schedule (insert)", steps), transaction.atomic():
        schedule_many(
            JobSpec("testapp.noop", now - timedelta(seconds=1), [i], {"currency": "EUR"})
            for i in range(count)
        )
    publisher = InMemoryPublisher()
    with measured("dispatch", steps):
        dispatcher = Dispatcher(publisher, name="bench")
        while dispatcher.run_once().sent:
            pass
    messages = publisher.published
    assert len(messages) == count, len(messages)
    if burst:
        with measured("claim (and its attempt)", steps):
            claims = [claim(message) for message in messages]
        for beat in range(1, HEARTBEATS + 1):
            with measured(f"heartbeat {beat}", steps):
                for claimed in claims:
                    heartbeat(claimed)
        with measured("succeed (and its attempt)", steps):
            for claimed in claims:
                succeed(claimed)
    else:
        with measured(f"claim, {HEARTBEATS} heartbeats, succeed; job after job", steps):
            for message in messages:
                claimed = claim(message)
                for _ in range(HEARTBEATS):
                    heartbeat(claimed)
                succeed(claimed)
    kind = "a burst: each step for every job at once" if burst else "steady: job after job"
    print_steps(steps, count, kind)


def print_steps(steps: list[Step], count: int, kind: str) -> None:
    per_job: Callable[[float], str] = lambda value: f"{value / count:,.2f}"  # noqa: E731
    print(f"\n### A job's life, {count:,} jobs through the real services, {kind} (per job)\n")
    print(
        "| step | rows inserted | rows updated | of which HOT | index tuples written | WAL bytes "
        "| jobs/s |"
    )
    print("|---|---|---|---|---|---|---|")
    total = Step("**whole life**")
    for step in steps:
        for table, counts in step.rows.items():
            total.rows.setdefault(table, Counter()).update(counts)
        total.index_tuples.update(step.index_tuples)
        total.wal_bytes += step.wal_bytes
        total.seconds += step.seconds
    for step in [*steps, total]:
        inserts, updates, hot = (
            sum(counts[kind] for counts in step.rows.values())
            for kind in ("inserted", "updated", "hot")
        )
        print(
            f"| {step.name} | {per_job(inserts)} | {per_job(updates)} | {per_job(hot)} | "
            f"{per_job(sum(step.index_tuples.values()))} | {per_job(step.wal_bytes)} | "
            f"{count / step.seconds:,.0f} |"
        )
    print()
    for table, counts in total.rows.items():
        updates, hot = counts["updated"], counts["hot"]
        print(
            f"HOT ratio of {table} over a job's life (n_tup_hot_upd / n_tup_upd): "
            f"{hot / max(updates, 1):.0%} ({hot / count:.1f} of {updates / count:.1f} updates)"
        )
    print(f"(with {HEARTBEATS} heartbeats per job)")
    tuples = total.index_tuples
    print("\n| index | tuples written per job |")
    print("|---|---|")
    for relation, written in sorted(tuples.items(), key=lambda item: -item[1]):
        print(f"| {relation} | {written / count:,.2f} |")


if __name__ == "__main__":
    main()
