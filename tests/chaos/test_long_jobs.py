"""Jobs that run for three leases: the heartbeat keeps them; nobody runs them twice."""

from datetime import timedelta

import pytest
from django.utils import timezone

from scheduler.models import JobAttempt
from tests import settings_chaos
from tests.chaos.effects import Workload

pytestmark = pytest.mark.timeout(180)

LEASE = settings_chaos.SCHEDULER_LEASE_SECONDS


def test_jobs_running_three_leases_run_once_and_succeed(cluster):
    workload = Workload("long")
    soon = timezone.now() + timedelta(seconds=1)
    for atomic in (False, True):
        workload.schedule(2, at=lambda _: soon, atomic=atomic, seconds=3 * LEASE + 1)
    cluster.start_workers(2, concurrency=2)
    cluster.start_dispatchers(1)

    workload.settle(timeout=60).assert_clean(plain_once=True)
    attempts = JobAttempt.objects.filter(job_id__in=workload.job_ids())
    assert sorted(attempts.values_list("outcome", flat=True)) == ["succeeded"] * 4
