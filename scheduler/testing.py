"""Helpers for tests of projects that use the scheduler (and for the scheduler's own)."""

import logging
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import cast
from uuid import UUID

from django.db import connection
from django.db.models import Min
from django.utils import timezone

from scheduler import validation
from scheduler.dispatch.dispatcher import Dispatcher
from scheduler.dispatch.publisher import OutgoingMessage, PublishResult
from scheduler.models import ScheduledJob
from scheduler.protocol import JobRef
from scheduler.registry import get_task
from scheduler.states import Status
from scheduler.worker.execution import Handled, Outcome, apart_from_the_callers_transaction
from scheduler.worker.task import SchedulerTask

#: The worker name recorded on the attempts that run_due_jobs runs.
TESTING_WORKER = "scheduler.testing"

logger = logging.getLogger(__name__)


class InMemoryPublisher:
    """A :class:`~scheduler.dispatch.publisher.Publisher` that keeps what it is given.

    Dispatcher tests use it to need no SQS server: every message is accepted and
    appended to :attr:`published`, in order.
    """

    def __init__(self) -> None:
        self.published: list[OutgoingMessage] = []

    def publish(self, messages: Sequence[OutgoingMessage]) -> PublishResult:
        """Accept every message."""
        self.published.extend(messages)
        return PublishResult(sent=[message.job_id for message in messages])


def run_due_jobs(until: datetime | None = None, *, max_runs: int = 1000) -> list[ScheduledJob]:
    """Run, here and now, every job due by ``until`` (default: now), as workers would.

    For your own tests, with time frozen (freezegun, time-machine): the dispatcher
    sends what is due to an in-memory publisher, and each message goes through the
    same claim, run and record path as on a worker — not Celery's eager mode — so
    retries, deadlines, pauses, atomic tasks and signals behave as in production. A
    job that a run schedules (or retries) due by ``until`` runs too. An error in a job
    is recorded on it, not raised. The clock is not moved: a job due after now but by
    ``until`` runs early. The dispatcher ticks at each job's run time in turn, so a
    deadline is judged then, not at ``until``, a job due after ``until`` is left
    scheduled (not sent ahead, as a dispatcher sends within its lookahead), and
    nothing is purged.

    Returns each job as it was after each run, in the order they ran (not one whose
    message ran nothing, as a job cancelled by a run before it). Raises RuntimeError
    after ``max_runs`` runs: a job that keeps scheduling itself, or its next run, which
    counts from the frozen now (``schedule_in(…, timedelta(days=1))``), not from the
    job's own time, and so is due by ``until`` again and again.

    Inside a test's transaction (pytest-django's ``db``, Django's ``TestCase``), which
    never commits, what each tick and each run leaves for ``transaction.on_commit`` (the
    scheduler's signals among it) runs once that tick or run is done, as a worker's or
    dispatcher's commit runs it.
    """
    until = validation.aware_datetime(until or timezone.now(), "until")
    dispatcher = Dispatcher(
        publisher=InMemoryPublisher(),
        name=TESTING_WORKER,
        judge_leases_at_once=True,
        purge=False,
        lookahead=timedelta(0),
        recovery_interval=0,
    )
    ran: list[ScheduledJob] = []
    # Ticks again at one time, and deliveries that ran nothing: bounded too, as a
    # receiver that schedules a job the next tick expires again would go on forever.
    idle = 0
    tick_at = min(timezone.now(), until)
    while True:
        if idle > max_runs:
            raise RuntimeError(
                f"run_due_jobs stopped after {idle} ticks and deliveries that ran no job "
                f"(max_runs={max_runs}): a signal receiver keeps scheduling a job that "
                "ends before it runs, as one that a deadline expires"
            )
        with _as_if_committed() as called:
            dispatcher.run_once(now=tick_at)
        due = list(
            ScheduledJob.objects.filter(status=Status.ENQUEUED, run_at__lte=until)
            .order_by("run_at", "pk")
            .values_list("pk", "task_name", "dispatch_token", "celery_task_id")
        )
        for job_id, task_name, token, celery_task_id in due:
            if len(ran) >= max_runs:
                raise RuntimeError(
                    f"run_due_jobs stopped after max_runs={max_runs} runs, before job "
                    f"{job_id} ({task_name}): a job that a run schedules counts from the "
                    "frozen now, so a job scheduling its next run is due by until again"
                )
            # An enqueued job always has a token (a database constraint).
            with _as_if_committed():
                handled = _deliver(
                    task_name,
                    JobRef(job_id=job_id, dispatch_token=cast("UUID", token)),
                    task_id=celery_task_id,
                )
            # A dropped message ran nothing: its job was cancelled, moved, paused or
            # expired after the tick sent it (by a run or a receiver before it).
            if handled.outcome is Outcome.DROPPED:
                idle += 1
            else:
                ran.append(ScheduledJob.objects.get(pk=job_id))
        if not due and called:
            # The tick's receivers ran after its sends, where a dispatcher's commit runs
            # them before: what they scheduled due now (a job_expired receiver's job) is
            # sent by a tick at the same time.
            idle += 1
            continue
        if not due:
            # Nothing was sent at tick_at: on to the next run time by ``until``, if any.
            later = ScheduledJob.objects.filter(
                status=Status.SCHEDULED, run_at__gt=tick_at, run_at__lte=until
            ).aggregate(first=Min("run_at"))["first"]
            if later is None:
                return ran
            tick_at = later


@contextmanager
def _as_if_committed() -> Iterator[list[Callable[[], object]]]:
    """Run the on-commit callbacks registered inside, at its end, and take them off the
    transaction: a test's would wait for a commit that never comes (and Django's
    ``captureOnCommitCallbacks`` around the call would run them a second time).
    Outside a transaction they run at once anyway. Yields a list that, at the end,
    holds the callbacks it ran."""
    start = len(connection.run_on_commit)
    failed: Exception | None = None
    called: list[Callable[[], object]] = []
    yield called
    # A callback may register more, as it could after a real commit.
    while len(connection.run_on_commit) > start:
        # (savepoints, callback, robust), as Django keeps them (its stubs say a pair).
        callbacks = cast(
            "list[tuple[object, Callable[[], object], bool]]", connection.run_on_commit[start:]
        )
        del connection.run_on_commit[start:]
        for _savepoints, callback, robust in callbacks:
            called.append(callback)
            try:
                # Whatever PostgreSQL refused in it undone, as a commit would have ended
                # the transaction before it ran: a receiver's failed query (logged by
                # send_robust) broke the test's transaction, and every job after it.
                with apart_from_the_callers_transaction():
                    callback()
            except Exception as error:
                if robust:
                    logger.exception("on-commit callback failed callback=%r", callback)
                    continue
                # Raised once the others ran: a worker records the success it follows
                # and sends its signal, then raises it (the callbacks after it are lost
                # there, the scheduler's signal sent again).
                failed = failed or error
    if failed is not None:
        raise failed


def _deliver(task_name: str, ref: JobRef, *, task_id: str | None) -> Handled:
    """Hand the job's message to its task, with the task id its message would carry:
    the call's (a job apply_async made), or a new one."""
    task = get_task(task_name)
    if not isinstance(task, SchedulerTask):
        raise TypeError(f"{task_name!r} is not a SchedulerTask: its jobs cannot run")
    task.push_request(
        id=task_id or str(uuid.uuid4()), hostname=TESTING_WORKER, called_directly=False
    )
    try:
        return task.handle_job_message(ref)
    finally:
        task.pop_request()
