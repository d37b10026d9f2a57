"""Helpers to make jobs for tests."""

import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from scheduler import states
from scheduler.conf import scheduler_settings
from scheduler.models import ScheduledJob
from scheduler.registry import get_task
from scheduler.services.dispatching import enqueued_changes
from scheduler.services.transitions import apply
from scheduler.worker.execution import Handled, Outcome, run_job
from tests.processes import wait_until


def make_jobs(run_ats: list[datetime], **fields: Any) -> list[ScheduledJob]:
    """Insert scheduled jobs directly (fast), one per run_at."""
    defaults: dict[str, Any] = {
        "task_name": "testapp.noop",
        "queue": scheduler_settings.QUEUE_NAME,
        "max_attempts": 3,
    }
    defaults.update(fields)
    return ScheduledJob.objects.bulk_create(
        [ScheduledJob(run_at=run_at, **defaults) for run_at in run_ats]
    )


def dispatch_one(job: ScheduledJob, *, now: datetime) -> uuid.UUID:
    """Mark one job enqueued the way the dispatcher does (no message) and return its token."""
    token = uuid.uuid4()
    with transaction.atomic():
        mark_enqueued(job, token=token, now=now)
    return token


def mark_enqueued(job: ScheduledJob, *, token: uuid.UUID, now: datetime) -> None:
    """Mark one job enqueued with ``token``, as the dispatcher does, in the caller's
    transaction, which then holds its row as the dispatcher's does until it commits."""
    jobs = ScheduledJob.objects.filter(pk=job.pk)
    assert apply(states.DISPATCH, jobs, dispatch_token=token, **enqueued_changes(now=now)) == 1


def deliver(
    *,
    job_id: int,
    task_name: str,
    token: uuid.UUID,
    worker: str = "w",
    not_before: datetime | None = None,
) -> Handled:
    """Hand one message of a job to the worker's path, as SchedulerTask does for it."""
    return run_job(
        job_id=job_id,
        token=token,
        task_name=task_name,
        worker=worker,
        runner=get_task(task_name),
        not_before=not_before,
    )


@dataclass
class DeliveryAhead:
    """A delivery handed over before its job's time, in a thread of its own: its
    outcome and its statements once the thread is joined."""

    thread: threading.Thread
    outcomes: list[Outcome] = field(default_factory=list)
    statements: list[str] = field(default_factory=list)


def deliver_ahead(job: ScheduledJob, *, token: uuid.UUID, not_before: datetime) -> DeliveryAhead:
    """Deliver ``job``'s message in a thread of its own, handed over before
    ``not_before`` (its eta) as a worker does; return once its claim holds the job's
    row, which it does until ``not_before``. The test must be transactional."""

    def worker() -> None:
        try:
            with CaptureQueriesContext(connection) as captured:
                handled = deliver(
                    job_id=job.pk, task_name=job.task_name, token=token, not_before=not_before
                )
            delivery.outcomes.append(handled.outcome)
            delivery.statements.extend(query["sql"] for query in captured.captured_queries)
        finally:
            connection.close()  # this thread's

    def held() -> bool:
        with transaction.atomic():
            return not ScheduledJob.objects.select_for_update(skip_locked=True).filter(pk=job.pk)

    delivery = DeliveryAhead(threading.Thread(target=worker))
    delivery.thread.start()
    assert wait_until(held, timeout=5, interval=0.005)
    return delivery


def insert_many(count: int, *, now: datetime, **columns: str) -> None:
    """Insert ``count`` jobs of ``testapp.noop`` in one statement, fast enough for the
    plan tests' hundred thousand rows. ``columns`` maps a column (``run_at``,
    ``status``, ``finished_at``, ``deadline``) to an SQL expression of ``i`` (1 to
    ``count``) and ``%(now)s``; a status as a literal is quoted (``"'scheduled'"``)."""
    names = ", ".join(columns)
    values = ", ".join(columns.values())
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO scheduler_scheduledjob (task_name, args, kwargs, queue, attempts, "
            f"max_attempts, sends, last_error, created_at, updated_at, retry_on_error, {names}) "
            "SELECT 'testapp.noop', '[]', '{}', 'scheduler-jobs', 0, 5, 0, '', %(now)s, "
            f"%(now)s, true, {values} FROM generate_series(1, %(count)s) AS i",
            {"now": now, "count": count},
        )
