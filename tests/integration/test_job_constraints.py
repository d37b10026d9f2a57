"""The database refuses a job row that breaks what the code relies on (migration 0013):
a finished job has its ``finished_at`` (the retention purge reads it), a running job has
counted its attempt."""

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import IntegrityError, transaction

from scheduler import states
from scheduler.models import ScheduledJob
from scheduler.states import Status

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
RUNNING = {"status": Status.RUNNING, "dispatch_token": uuid.uuid4(), "started_at": T0}


def _create(**fields: Any) -> ScheduledJob:
    return ScheduledJob.objects.create(
        **{"task_name": "testapp.noop", "queue": "q", "run_at": T0, "max_attempts": 3, **fields}
    )


def _refused(constraint: str) -> Any:
    return pytest.raises(IntegrityError, match=f'check constraint "{constraint}"')


@pytest.mark.parametrize("status", states.FINISHED)
def test_a_finished_job_has_its_end(status: Status) -> None:
    # Without it the retention purge never deletes the job.
    with _refused("scheduler_job_finished_has_end"), transaction.atomic():
        _create(status=status, finished_at=None)
    job = _create(status=status, finished_at=T0)
    with _refused("scheduler_job_finished_has_end"), transaction.atomic():
        ScheduledJob.objects.filter(pk=job.pk).update(finished_at=None)


def test_a_running_job_has_counted_its_attempt() -> None:
    with _refused("scheduler_job_running_has_attempt"), transaction.atomic():
        _create(**RUNNING, attempts=0)
    job = _create(**RUNNING, attempts=1)
    with _refused("scheduler_job_running_has_attempt"), transaction.atomic():
        ScheduledJob.objects.filter(pk=job.pk).update(attempts=0)
    # Waiting, a job has made no attempt yet, or its attempts were counted anew (a retry).
    assert _create(attempts=0).status == Status.SCHEDULED
