"""A backlog while every worker is away for ten stale periods: bounded copies, each job once."""

import math
from collections import Counter

import pytest
from django.utils import timezone

from tests import settings_chaos
from tests.chaos.conftest import scale
from tests.chaos.effects import Workload
from tests.processes import wait_until

pytestmark = pytest.mark.timeout(300)

STALE_AFTER = settings_chaos.SCHEDULER_STALE_AFTER_SECONDS
OUTAGE = 10 * STALE_AFTER


def test_a_backlog_with_workers_away_for_ten_stale_periods(cluster, sqs_server):
    workload = Workload("backlog")
    count = scale(200, 1000)
    for atomic in (False, True):
        workload.schedule(count // 2, at=lambda _: timezone.now(), atomic=atomic)
    cluster.start_dispatchers(1)
    assert wait_until(lambda: workload.statuses().get("enqueued") == count, timeout=30)
    wait_until(lambda: False, timeout=OUTAGE)

    # Re-sends double their wait: about log2(10) + 1 copies of each job, not ten.
    bound = math.ceil(math.log2(OUTAGE / STALE_AFTER)) + 2
    per_job = Counter(send.job_id for send in cluster.sends())
    assert max(per_job.values()) <= bound, per_job.most_common(3)
    assert len({send.token for send in cluster.sends()}) == count  # one token per job
    # No worker yet: every copy sent is there (a re-send may land while SQS counts).
    sent_before = len(cluster.sends())
    in_sqs = sqs_server.messages(cluster.env["SCHEDULER_QUEUE_NAME"])
    assert sent_before <= in_sqs <= len(cluster.sends()), in_sqs

    cluster.start_workers(2, concurrency=4)
    workload.settle(timeout=scale(60, 240)).assert_clean(plain_once=True)
