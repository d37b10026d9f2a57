"""One delivery's database work in the worker: what sits between the eta and the body.

Each delivery goes through :func:`scheduler.worker.execution.run_job`, the path a Celery
worker's :class:`~scheduler.worker.task.SchedulerTask` takes, with a body that only
notes the time (no Celery: its own costs are the same for every task). Two figures per
delivery, with the worker's connection handling around each (``task_prerun`` and
``task_postrun``, :mod:`scheduler.worker.connections`):

- **eta → body**: each job already due (its eta passed); from the call to the body's
  first line: the claim (one statement with its attempt, committed without waiting for
  the disk), the heartbeat's start. This is the lateness this project adds to Celery's
  own.
- **body → recorded**: from the body's return to the outcome committed (durably).
- **run_at → body, handed over early**: each job due ``HANDOFF_AHEAD`` after the call, as
  a worker hands a job's message to its pool; from the job's ``run_at`` to the body's
  first line, wall clock. The claim's statement runs *before* ``run_at`` and is not
  timed: its transaction holds the row and sleeps until ``run_at``; what is timed is the
  wake-up from that sleep, the transaction's COMMIT (``synchronous_commit`` off), the
  heartbeat's start. Jobs 0.3 s apart.

The baseline is the floor of one database write: one ``UPDATE … RETURNING`` of the job's
row in its own transaction (one round trip, its commit included), as close as a claim can
get to free. It commits as the step it is set beside does: without waiting for the disk
(``synchronous_commit`` off for that transaction, as the claim's commit) for *eta → body*
and *run_at → body*; durably, as the outcome's commit, for *body → recorded*. (Beside
*run_at → body*, where only a COMMIT is timed, the floor holds a statement more.) Each
floor is measured at the pace of the deliveries it is set beside. Deliveries come back
to back (a burst), and then one every 0.3 s (the worker between jobs, as in the
precision benchmark, where a cold connection and disk cost more).

    python -m bench.worker --size full
"""

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bench import harness

#: size -> (deliveries back to back, deliveries 0.3 s apart)
SIZES = {"tiny": (50, 5), "small": (500, 30), "full": (2_000, 100)}
IDLE_GAP_SECONDS = 0.3


@dataclass
class _NoteTheStart:
    """A :class:`~scheduler.worker.execution.JobRunner` whose body notes when it starts."""

    atomic: bool = False
    started: float = 0.0
    started_at: float = 0.0

    def run_job_body(self, run: Any) -> None:  # noqa: ARG002 - the runner protocol's
        self.started, self.started_at = time.perf_counter(), time.time()


def main() -> None:
    """Time the deliveries and print their percentiles beside the floor's."""
    args = harness.parser(__doc__ or "").parse_args()
    burst, idle = SIZES[args.size]
    harness.setup_django(args.database, keep=args.keep)
    logging.getLogger("scheduler").setLevel(logging.WARNING)

    from celery.signals import task_postrun, task_prerun
    from django.db import connection
    from django.utils import timezone

    from scheduler import JobSpec, schedule_many
    from scheduler.dispatch.dispatcher import Dispatcher
    from scheduler.services.transitions import LAZY_COMMIT
    from scheduler.testing import InMemoryPublisher
    from scheduler.worker.execution import Outcome, run_job
    from scheduler.worker.request import HANDOFF_AHEAD

    def messages(count: int, first_due: datetime, gap: float) -> list[Any]:
        harness.truncate_jobs()
        schedule_many(
            JobSpec("testapp.noop", first_due + timedelta(seconds=i * gap), [i])
            for i in range(count)
        )
        publisher = InMemoryPublisher()
        dispatcher = Dispatcher(publisher, name="bench")
        while dispatcher.run_once().sent:
            pass
        return publisher.published

    def deliveries(count: int, gap: float) -> tuple[list[float], list[float]]:
        runner = _NoteTheStart()
        to_body, to_recorded = [], []
        for message in messages(count, timezone.now() - timedelta(seconds=1), 0.0):
            time.sleep(gap)
            task_prerun.send(sender=None)  # the worker's connection handling
            start = time.perf_counter()
            deliver(message, runner)
            end = time.perf_counter()
            task_postrun.send(sender=None)
            to_body.append((runner.started - start) * 1000)
            to_recorded.append((end - runner.started) * 1000)
        return to_body, to_recorded

    def handed_over_early(count: int, gap: float) -> list[float]:
        runner = _NoteTheStart()
        lateness = []
        first_due = timezone.now() + timedelta(seconds=2)
        for message in messages(count, first_due, gap):
            time.sleep(max(0.0, (message.eta - HANDOFF_AHEAD - timezone.now()).total_seconds()))
            task_prerun.send(sender=None)
            deliver(message, runner, not_before=message.eta)
            task_postrun.send(sender=None)
            lateness.append((runner.started_at - message.eta.timestamp()) * 1000)
        return lateness

    def deliver(message: Any, runner: _NoteTheStart, not_before: datetime | None = None) -> None:
        handled = run_job(
            job_id=message.job_id,
            token=message.dispatch_token,
            task_name=message.task_name,
            worker="bench",
            runner=runner,
            not_before=not_before,
        )
        assert handled.outcome is Outcome.SUCCEEDED, handled

    def floor(count: int, gap: float, *, lazy: bool) -> list[float]:
        """One ``UPDATE … RETURNING`` per job, autocommit; with ``lazy``, its commit does
        not wait for the disk, as the claim's does not (the same ``LAZY_COMMIT`` CTE)."""
        harness.truncate_jobs()
        harness.fill_scheduled(count)
        with connection.cursor() as cursor:
            cursor.execute("SELECT id FROM scheduler_scheduledjob ORDER BY id")
            ids = [job_id for (job_id,) in cursor.fetchall()]
        update = "UPDATE scheduler_scheduledjob SET heartbeat_at = now() "
        if lazy:
            update = f"{LAZY_COMMIT}{update}FROM lazy "
        update += "WHERE id = %s RETURNING id"
        elapsed = []
        for job_id in ids:
            time.sleep(gap)
            with harness.stopwatch() as took, connection.cursor() as cursor:
                cursor.execute(update, [job_id])
                cursor.fetchone()
            elapsed.append(took() * 1000)
        return elapsed

    rows: list[harness.Row] = []

    def add(label: str, values: list[float], base: list[float], base_name: str) -> None:
        rows.extend(
            harness.Row(
                f"{label}, p{p}",
                harness.percentile(values, p),
                harness.percentile(base, p),
                "ms",
                base_name,
            )
            for p in (50, 99)
        )

    lazy_floor = "one UPDATE … RETURNING, commit not waiting for the disk"
    durable_floor = "one UPDATE … RETURNING, durable commit"
    # One floor per pace and commit, shared by the deliveries measured at that pace.
    idle_floors = {lazy: floor(idle, IDLE_GAP_SECONDS, lazy=lazy) for lazy in (True, False)}
    ahead_ms = HANDOFF_AHEAD.total_seconds() * 1000
    add(
        f"{idle:,} deliveries handed over {ahead_ms:g} ms early, {IDLE_GAP_SECONDS:g} s apart: "
        "run_at → body (the claim's commit and the heartbeat's start; its statement ran "
        "before run_at)",
        handed_over_early(idle, IDLE_GAP_SECONDS),
        idle_floors[True],
        lazy_floor,
    )
    for label, count, gap, floors in (
        (
            "back to back",
            burst,
            0.0,
            {lazy: floor(burst, 0.0, lazy=lazy) for lazy in (True, False)},
        ),
        (f"{IDLE_GAP_SECONDS:g} s apart", idle, IDLE_GAP_SECONDS, idle_floors),
    ):
        to_body, to_recorded = deliveries(count, gap)
        add(f"{count:,} deliveries {label}: eta → body", to_body, floors[True], lazy_floor)
        add(
            f"{count:,} deliveries {label}: body → recorded",
            to_recorded,
            floors[False],
            durable_floor,
        )
    harness.truncate_jobs()
    harness.print_table("One delivery's database work in the worker", rows)


if __name__ == "__main__":
    main()
