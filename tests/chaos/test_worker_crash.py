"""A worker SIGKILLed mid-job: its jobs are retried after the lease, atomic ones cleanly."""

import re
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from scheduler.models import JobAttempt, ScheduledJob
from tests import settings_chaos
from tests.chaos.conftest import scale
from tests.chaos.effects import Workload
from tests.processes import wait_until

pytestmark = pytest.mark.timeout(240)

LEASE = settings_chaos.SCHEDULER_LEASE_SECONDS
TICK = settings_chaos.SCHEDULER_DISPATCH_INTERVAL_SECONDS
LOOKAHEAD = settings_chaos.SCHEDULER_LOOKAHEAD_SECONDS
DROPPED = re.compile(r"message dropped job_id=(\d+)")


@pytest.mark.parametrize("atomic", [False, True], ids=["plain", "atomic"])
def test_a_worker_killed_mid_job_loses_nothing(cluster, atomic):
    workload = Workload("killed")
    start = timezone.now() + timedelta(seconds=2)
    count = scale(12, 60)
    workload.schedule(
        count - 2, at=lambda i: start + timedelta(seconds=i * 0.2), atomic=atomic, seconds=1.5
    )
    victim, survivor = cluster.start_workers(2, concurrency=2)
    # The deployment's dispatcher: beat, ticking in-process.
    cluster.start_beat()

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
    # Cancelled while enqueued (a lookahead before they are due): their messages are in
    # SQS and must do nothing. Scheduled now, once every process is up: scheduled with the
    # others, a loaded machine's start-up outlasted their wait, and they ran before they
    # could be cancelled.
    soon = timezone.now() + timedelta(seconds=LOOKAHEAD + 2)
    later = workload.schedule(
        2, at=lambda i: soon + timedelta(seconds=i * 0.2), atomic=atomic, seconds=1.5
    )
    later_ids = [planned.job_id for planned in later]
    assert wait_until(
        lambda: ScheduledJob.objects.filter(pk__in=later_ids, status="enqueued").count() == 2,
        timeout=30,
    ), workload.statuses()
    for planned in later:
        assert workload.cancel(planned)
    # Settled, the cancelled jobs count as ended at once: their messages are judged only
    # once a worker has dropped them.
    assert wait_until(
        lambda: (
            set(later_ids) <= {int(job_id) for job_id in DROPPED.findall(cluster.worker_output())}
        ),
        timeout=30,
    ), cluster.worker_output()[-3000:]

    report = workload.settle(timeout=120)
    report.assert_clean(plain_once=False)
    # The killed jobs ran again, each within about a lease and a tick (no back-off: the
    # lease was its wait), and the time SQS takes to hand the message over.
    for job_id in killed_jobs:
        attempts = list(JobAttempt.objects.filter(job_id=job_id).order_by("number"))
        assert [a.outcome for a in attempts][-1] == "succeeded"
        assert attempts[0].outcome == JobAttempt.Outcome.LEASE_EXPIRED
        retried_after = attempts[1].started_at.timestamp() - killed_at
        assert retried_after < LEASE + TICK + 4, retried_after
    assert survivor.popen.poll() is None
