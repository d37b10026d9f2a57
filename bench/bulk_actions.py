"""The admin's bulk actions on many jobs: set-based, against the same services job by job.

Workers down for half an hour leave thousands of expired or failed jobs; an operator
selects them all (up to the list's count limit, 10,000) and acts once. Each run fills N
jobs, with a unique key each (as the demo's captures have), then acts on all of them by
an operator with a reason (an audit entry per job); the figure is the median jobs/s of
several runs, beside the baseline measured in the same run: what the bulk actions did
before they were set-based (``_each`` in ``git show 2a823ae^:scheduler/admin/bulk.py``):
count the selection, read the id and ``run_at`` of its jobs in the action's sources in
one query, then call the single-job service for each job.

Logging is raised to WARNING while timing: a log line per job to a terminal would
measure the terminal.

    python -m bench.bulk_actions --size full
"""

import functools
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from bench import harness

if TYPE_CHECKING:
    from scheduler.admin.bulk import Who

SIZES = {"tiny": (200, 1), "small": (2_000, 3), "full": (10_000, 3)}
WHO: "Who" = {"actor": "alice", "reason": "gateway back"}
#: The statuses an action applies to (its transition's sources).
Sources = tuple[str, ...]
#: A single-job service called with a job's id and run_at, as the old actions called it.
Apply = Callable[[int, datetime], object]


def main() -> None:
    args = harness.parser(__doc__ or "").parse_args()
    count, runs = SIZES[args.size]
    harness.setup_django(args.database, keep=args.keep)
    logging.getLogger("scheduler").setLevel(logging.WARNING)

    from scheduler import services, states
    from scheduler.models import ScheduledJob
    from scheduler.services import bulk

    later = timedelta(hours=1)
    # (what, the status filled, set-based, job by job: the sources the old action read and
    # the service it called with each job's id and run_at, as in its admin action then)
    actions: list[tuple[str, str, Callable[[], object], tuple[Sources, Apply]]] = [
        (
            "Cancel",
            "scheduled",
            lambda: bulk.cancel_many(ScheduledJob.objects.all(), **WHO),
            (states.CANCEL.sources, lambda pk, _run_at: services.cancel(pk, **WHO)),
        ),
        (
            "Reschedule by an hour",
            "scheduled",
            lambda: bulk.shift_many(ScheduledJob.objects.all(), offset=later, **WHO),
            (
                states.RESCHEDULE.sources,
                lambda pk, run_at: services.reschedule(pk, run_at + later, **WHO),
            ),
        ),
        (
            "Retry failed jobs",
            "failed",
            lambda: bulk.retry_many(ScheduledJob.objects.all(), **WHO),
            (states.RETRY.sources, lambda pk, _run_at: services.retry(pk, **WHO)),
        ),
    ]
    rows = []
    for what, status, many, (sources, one) in actions:
        rates: dict[str, list[float]] = {"many": [], "one": []}
        # Interleaved, so a noisy neighbour slows both alike.
        for _ in range(runs):
            rates["one"].append(
                jobs_per_second(count, status, functools.partial(by_one, sources, one))
            )
            rates["many"].append(jobs_per_second(count, status, many))
        median = {name: harness.median_of_values(values) for name, values in rates.items()}
        rows.append(
            harness.Row(
                f"{what}, {count:,} jobs",
                median["many"],
                median["one"],
                "jobs/s",
                "the single-job service, job by job",
            )
        )
    harness.truncate_jobs()
    harness.print_table(f"Bulk actions (median of {runs} runs)", rows)


def jobs_per_second(count: int, status: str, act: Callable[[], object]) -> float:
    """Jobs/s of ``act`` on ``count`` jobs in ``status``, each with a unique key."""
    from django.db import connection

    from scheduler.models import AuditEntry

    harness.truncate_jobs()
    harness.fill_scheduled(count)
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE scheduler_auditentry")
        cursor.execute(
            "UPDATE scheduler_scheduledjob SET status = %s, unique_key = 'capture:' || id, "
            "finished_at = CASE WHEN %s = 'failed' THEN now() END",
            [status, status],
        )
    with harness.stopwatch() as elapsed:
        act()
    assert AuditEntry.objects.count() == count, "every job acted on"
    return count / elapsed()


def by_one(sources: Sources, apply: Apply) -> None:
    """The admin's actions before they were set-based, as ``_each`` ran them (``git show
    2a823ae^:scheduler/admin/bulk.py``): the selection counted, then the id and ``run_at``
    of those of its jobs in ``sources`` read in one query, and ``apply`` called with each.

    ``_each`` also caught the errors that skip a job; none is raised here (every job is
    acted on, which :func:`jobs_per_second` checks), so catching them would cost nothing.
    """
    from scheduler.models import ScheduledJob

    jobs = ScheduledJob.objects.all()
    jobs.count()
    candidates = jobs.filter(status__in=sources).order_by("pk").values_list("pk", "run_at")
    for pk, run_at in candidates.iterator():
        apply(pk, run_at)


if __name__ == "__main__":
    main()
