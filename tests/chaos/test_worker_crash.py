"""A worker SIGKILLed mid-job: its jobs are retried after the lease, atomic ones cleanly."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from scheduler.models import JobAttempt
from tests import settings_chaos
from tests.chaos.conftest import scale
from tests.chaos.effects import Workload
from tests.processes import wait_until

pytestmark = pytest.mark.timeout(240)

LEASE = settings_chaos.SCHEDULER_LEASE_SECONDS
TICK = settings_chaos.SCHEDULER_DISPATCH_INTERVAL_SECONDS
BACKOFF_MAX = settings_chaos.SCHEDULER_RETRY_BACKOFF_MAX_SECONDS


@pytest.mark.parametrize("atomic", [False, True], ids=["plain", "atomic"])
def test_a_worker_killed_mid_job_loses_nothing(cluster, atomic):
    workload = Workload("killed")
    start = timezone.now() + timedelta(seconds=2)
    count = scale(12, 60)
    jobs = workload.schedule(
        count, at=lambda i: start + timedelta(seconds=i * 0.2), atomic=atomic, seconds=1.5
    )
    victim, survivor = cluster.start_workers(2, concurrency=2)
    # The deployment's dispatcher: beat, ticking in-process.
    cluster.start_beat()
    # Cancelled while enqueued: their messages are in SQS and must do nothing.
    for planned in jobs[-2:]:
        assert workload.cancel(planned)

    def victim_running() -> list[int]:
        return list(
            JobAttempt.objects.filter(
                job_id__in=workload.job_ids(),
                outcome=JobAttempt.Outcome.RUNNING,
                worker__startswith="chaos-worker-1@",
            ).values_list("job_id", flat=True)
        )

    killed_jobs: list[int] = []

    def two_running_on_the_victim() -> bool:
        killed_jobs[:] = victim_running()
        return len(killed_jobs) == 2

    assert wait_until(two_running_on_the_victim, timeout=30), workload.statuses()
    cluster.kill(victim)
    killed_at = time.time()
    cluster.start_workers(1)

    report = workload.settle(timeout=120)
    report.assert_clean(plain_once=False)
    # The killed jobs ran again, each within about a lease (and a tick and a back-off).
    for job_id in killed_jobs:
        attempts = list(JobAttempt.objects.filter(job_id=job_id).order_by("number"))
        assert [a.outcome for a in attempts][-1] == "succeeded"
        assert attempts[0].outcome == JobAttempt.Outcome.LEASE_EXPIRED
        retried_after = attempts[1].started_at.timestamp() - killed_at
        assert retried_after < LEASE + TICK + BACKOFF_MAX + 3, retried_after
    assert survivor.popen.poll() is None
