"""A backlog with re-sends after 5 s: few copies, every job once, drained by the first copies."""

import math
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from scheduler import schedule_at
from scheduler.models import JobAttempt, ScheduledJob
from tests.e2e.conftest import celery_worker
from tests.processes import wait_until
from tests.testapp.tasks import read_runs

pytestmark = pytest.mark.timeout(240)

JOBS = 400
STALE = 5


@pytest.fixture
def e2e_env(e2e_env, settings):
    """The fast settings, with re-sends 5 s after a job is due."""
    settings.SCHEDULER_STALE_AFTER_SECONDS = STALE
    return {**e2e_env, "DJANGO_SETTINGS_MODULE": "tests.settings_backlog"}


def test_400_jobs_due_together_with_the_worker_late_run_once_with_few_extra_messages(
    e2e_env, dispatch_command, tmp_path
):
    path = str(tmp_path / "runs")
    due = timezone.now() + timedelta(seconds=4)
    with transaction.atomic():
        for number in range(JOBS):
            schedule_at("testapp.record", due, [path, str(number)])
    assert wait_until(
        lambda: not ScheduledJob.objects.filter(status="scheduled").exists(), timeout=20
    ), dispatch_command.output()[-3000:]
    # The worker starts a little after the jobs are due.
    time.sleep(max(0.0, (due - timezone.now()).total_seconds() + 2))
    with celery_worker(e2e_env) as worker:
        assert wait_until(lambda: len(read_runs(path)) >= JOBS, timeout=180), (
            f"{len(read_runs(path))} of {JOBS} ran\n" + worker.output()[-3000:]
        )
        # Copies still in flight arrive and are dropped; none may run a job again.
        time.sleep(3 * STALE)
    runs = Counter(label for label, _ in read_runs(path))
    assert len(runs) == JOBS
    assert set(runs.values()) == {1}, [label for label, n in runs.items() if n > 1]
    assert JobAttempt.objects.count() == JOBS
    assert ScheduledJob.objects.filter(status="succeeded").count() == JOBS

    messages = ScheduledJob.objects.aggregate(total=Sum("sends"))["total"]
    last_start = max(ScheduledJob.objects.values_list("started_at", flat=True))
    drained = (last_start - due).total_seconds()
    # Each job has at most 1 + log2(its wait / STALE + 1) copies (one more for tick rounding).
    bound = sum(
        2 + math.floor(math.log2(max(0.0, (started - due).total_seconds()) / STALE + 1))
        for started in ScheduledJob.objects.values_list("started_at", flat=True)
    )
    print(f"{JOBS} jobs: {messages} messages, drained {drained:.1f}s after they were due")
    assert JOBS <= messages <= bound
    for job in ScheduledJob.objects.all():
        waited = (job.started_at - due).total_seconds()
        assert job.sends <= 2 + math.floor(math.log2(max(0.0, waited) / STALE + 1)), (
            job.pk,
            job.sends,
            waited,
        )
