"""Dispatchers killed between send and commit, slow to commit, delivering thrice, racing."""

import itertools
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from scheduler.models import ScheduledJob
from tests.chaos.conftest import scale
from tests.chaos.effects import Workload, spread
from tests.processes import logged_at

pytestmark = pytest.mark.timeout(300)


def test_a_dispatcher_killed_between_send_and_commit(cluster):
    workload = Workload("dispatcher-killed")
    workload.schedule_both(scale(20, 200), at=spread(timezone.now() - timedelta(seconds=1), 0.05))
    cluster.start_workers(1)
    [dispatcher] = cluster.start_dispatchers(fault="hang-after-send", wait=False)
    dispatcher.wait_for_output("hanging before commit", timeout=60)
    orphaned = {send.job_id for send in cluster.sends()}
    assert orphaned
    cluster.kill(dispatcher)
    # Its transaction rolled back: the messages in SQS carry tokens no job ever had.
    assert set(ScheduledJob.objects.filter(pk__in=orphaned).values_list("status", flat=True)) == {
        "scheduled"
    }
    cluster.start_dispatchers(1)
    workload.settle(timeout=90).assert_clean(plain_once=True)
    assert "message dropped" in cluster.worker_output()


def test_messages_reaching_workers_before_the_dispatch_commits(cluster):
    workload = Workload("early-message")
    workload.schedule_both(scale(20, 200), at=spread(timezone.now() - timedelta(seconds=1), 0.05))
    cluster.start_workers(1)
    cluster.start_dispatchers(1, fault="slow-commit")
    workload.settle(timeout=90).assert_clean(plain_once=True)
    committed = {send.job_id: send.returned_at for send in cluster.sends()}
    assert set(committed) == {planned.job_id for planned in workload.planned.values()}
    effects = workload.effects()
    for planned in workload.planned.values():
        [at] = effects[planned.label]
        assert at.timestamp() >= committed[planned.job_id]
    output = cluster.worker_output()
    # The fault took effect: messages reached the worker before their batch committed.
    received = [at for at, _ in logged_at(output, r"\] received")]
    assert received
    assert min(received) < min(committed.values()), (received, committed)
    # Each claim waited for the commit instead of dropping its message. (Copies dropped
    # later are re-sends: a batch committed after the stale period, 2 s here, is re-sent.)
    dropped = logged_at(output, r"message dropped job_id=(\d+)")
    assert all(at >= committed[int(job_id)] for at, job_id in dropped), (dropped, committed)


def test_every_message_delivered_three_times(cluster):
    workload = Workload("thrice")
    planned = workload.schedule_both(
        scale(40, 400), at=spread(timezone.now() + timedelta(seconds=2), 0.1)
    )
    cluster.start_workers(2)
    cluster.start_dispatchers(1, fault="triple")
    # Cancelled after dispatch: three copies of each in SQS, none may run.
    cancelling_at = time.time()
    cancelled = [p for p in planned[::7] if workload.cancel(p)]
    assert cancelled
    # Each was enqueued when cancelled: its copies had reached SQS and its dispatch had
    # committed (a cancel keeps enqueued_at; a job dispatched later would have none).
    sent_before = {send.job_id for send in cluster.sends() if send.returned_at < cancelling_at}
    ids = [p.job_id for p in cancelled]
    assert set(ids) <= sent_before, (ids, sent_before)
    enqueued = ScheduledJob.objects.filter(
        pk__in=ids, status="cancelled", enqueued_at__isnull=False
    )
    assert enqueued.count() == len(ids)
    workload.settle(timeout=120).assert_clean(plain_once=True)


def test_four_dispatchers_racing_on_due_jobs(cluster):
    workload = Workload("race")
    count = scale(400, 5000)
    cluster.start_workers(2, concurrency=4)
    # Sends that take a while, as a slow SQS's: one dispatcher, ticking first, sent every
    # batch before the others ticked (one CI run on a loaded machine), and nothing raced.
    cluster.start_dispatchers(4, fault="slow-sqs")
    # All four are ticking when the jobs appear, all due at once.
    workload.schedule_both(count, at=spread(timezone.now() - timedelta(seconds=1), 0))
    # 400 due jobs drain in about 20 s here: room for a loaded machine.
    workload.settle(timeout=scale(120, 900)).assert_clean(plain_once=True)
    # No two dispatchers claimed one job: every copy of it carries its one token, and none
    # went out before the one before it had returned (a re-send claims only a row whose
    # dispatch committed, after its send returned; re-sends wait 4 s, 8 s…, far longer
    # than a send takes). Not a gap between returns: a loaded moto made one send return
    # 1.6 s later than the next one's, a re-send 2 s after the claim.
    sends = sorted(cluster.sends(), key=lambda send: (send.job_id, send.called_at))
    for job_id, group in itertools.groupby(sends, key=lambda send: send.job_id):
        copies = list(group)
        assert len({send.token for send in copies}) == 1, (job_id, copies)
        for earlier, later in itertools.pairwise(copies):
            assert later.called_at >= earlier.returned_at, (job_id, copies)
    assert {send.job_id for send in sends} == set(workload.job_ids())
    # The dispatchers shared the work.
    assert len(Counter(send.dispatcher for send in sends)) >= 2
