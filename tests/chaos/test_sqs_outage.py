"""The SQS server stopped (SIGSTOP, state kept) during dispatch and during consumption,
and restarted (every message lost)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from scheduler.dispatch.queues import ensure_queue
from scheduler.models import ScheduledJob
from tests.chaos.conftest import scale
from tests.chaos.effects import Workload, spread
from tests.processes import wait_until

pytestmark = pytest.mark.timeout(240)

OUTAGE_SECONDS = 6


@pytest.mark.parametrize("outage", ["stopped", "restarted"])
def test_sqs_outage_while_jobs_are_dispatched(cluster, sqs_server, outage):
    """Stopped (SIGSTOP, state kept) or restarted (every message lost) as jobs come due."""
    workload = Workload(f"sqs-{outage}")
    # Jobs keep coming due through the outage: the dispatcher has to send some then.
    workload.schedule_both(scale(40, 400), at=spread(timezone.now() + timedelta(seconds=3), 0.5))
    cluster.start_workers(2)
    cluster.start_dispatchers(1)
    if outage == "stopped":
        _once_jobs_succeed(workload, lambda: sqs_server.pause_for(OUTAGE_SECONDS))
    else:
        _once_jobs_succeed(workload, lambda: _restart(sqs_server))


def test_sqs_stopped_during_consumption(cluster, sqs_server):
    workload = Workload("sqs-consume")
    count = scale(40, 400)
    # Each job works a while: the workers take seconds to consume them, however late they
    # start (on a busy machine, every job was overdue and all ran between two looks).
    workload.schedule_both(
        count, at=spread(timezone.now() + timedelta(seconds=5), 0.1), seconds=0.2
    )
    cluster.start_dispatchers(1)
    # Everything is in SQS before the outage; the workers are consuming when it starts.
    assert wait_until(
        lambda: ScheduledJob.objects.filter(status="enqueued").count() == count, timeout=30
    ), workload.statuses()
    cluster.start_workers(2)
    _once_jobs_succeed(workload, lambda: sqs_server.pause_for(OUTAGE_SECONDS))
    # The outage failed acks of jobs that ran (their messages came back, and were
    # dropped as not current): the workers went on, one line each.
    output = cluster.worker_output()
    assert "sqs ack failed" in output
    assert "Couldn't ack" not in output


def _restart(sqs_server):
    sqs_server.restart()
    # As an operator would after losing the server: `manage.py scheduler_create_queue`.
    ensure_queue()


def _once_jobs_succeed(workload, outage):
    """Once jobs are succeeding, cause the outage; then every job must run once."""
    statuses: dict[str, int] = {}

    def some_succeeded() -> bool:
        statuses.clear()
        statuses.update(workload.statuses())
        return statuses.get("succeeded", 0) > 0

    assert wait_until(some_succeeded, timeout=30)
    # The outage must find jobs still to send or to run, or it tests nothing.
    assert sum(statuses.values()) > statuses["succeeded"], statuses
    outage()
    workload.settle(timeout=120).assert_clean(plain_once=True)
