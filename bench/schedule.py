"""Scheduling many jobs: ``schedule_many`` against one-by-one ``schedule_at`` and ``bulk_create``.

Each run inserts N jobs (arguments, keyword arguments and a unique key each, as the
demo's captures have) in one transaction, into an empty table; the figure is the median
rows/s of several runs, beside both baselines measured in the same run:

- one-by-one ``schedule_at`` in one transaction (what a loop in a view does today);
- Django's ``bulk_create`` of the same rows, with no validation at all.

Logging is raised to WARNING while timing: a log line per job to a terminal would
measure the terminal.

    python -m bench.schedule --size full
"""

import logging
from collections.abc import Callable
from datetime import timedelta

from bench import harness

SIZES = {"tiny": (200, 1), "small": (2_000, 3), "full": (10_000, 5)}


def main() -> None:
    args = harness.parser(__doc__ or "").parse_args()
    count, runs = SIZES[args.size]
    harness.setup_django(args.database, keep=args.keep)
    logging.getLogger("scheduler").setLevel(logging.WARNING)

    from django.db import transaction
    from django.utils import timezone

    from scheduler import JobSpec, schedule_at, schedule_many
    from scheduler.conf import scheduler_settings
    from scheduler.models import ScheduledJob

    start = timezone.now() + timedelta(days=14)
    specs = [
        JobSpec(
            "testapp.noop",
            start + timedelta(seconds=i),
            [i],
            {"payment_id": i, "currency": "EUR"},
            unique_key=f"capture:{i}",
        )
        for i in range(count)
    ]

    def one_by_one() -> None:
        for spec in specs:
            schedule_at(spec.task, spec.run_at, spec.args, spec.kwargs, unique_key=spec.unique_key)

    def bulk_create() -> None:
        ScheduledJob.objects.bulk_create(
            ScheduledJob(
                task_name=str(spec.task),
                run_at=spec.run_at,
                args=list(spec.args),
                kwargs=dict(spec.kwargs or {}),
                queue=scheduler_settings.QUEUE_NAME,
                max_attempts=scheduler_settings.DEFAULT_MAX_ATTEMPTS,
                unique_key=spec.unique_key,
            )
            for spec in specs
        )

    def many() -> None:
        schedule_many(specs)

    def rows_per_second(insert: Callable[[], None]) -> float:
        harness.truncate_jobs()
        with harness.stopwatch() as elapsed, transaction.atomic():
            insert()
        assert ScheduledJob.objects.count() == count
        return count / elapsed()

    rates: dict[str, list[float]] = {"one": [], "bulk": [], "many": []}
    # Interleaved, so a noisy neighbour slows every contender alike.
    for _ in range(runs):
        rates["one"].append(rows_per_second(one_by_one))
        rates["bulk"].append(rows_per_second(bulk_create))
        rates["many"].append(rows_per_second(many))
    harness.truncate_jobs()
    median = {name: harness.median_of_values(values) for name, values in rates.items()}
    rows = [
        harness.Row(
            f"`schedule_many`, {count:,} jobs in one transaction",
            median["many"],
            median["one"],
            "rows/s",
            "one-by-one `schedule_at`",
        ),
        harness.Row(
            f"`schedule_many`, {count:,} jobs in one transaction",
            median["many"],
            median["bulk"],
            "rows/s",
            "`bulk_create`, no validation",
        ),
    ]
    harness.print_table(f"Scheduling many jobs (median of {runs} runs)", rows)


if __name__ == "__main__":
    main()
