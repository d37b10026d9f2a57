"""``pg_terminate_backend`` on the workers' and the dispatchers' connections."""

import time
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from scheduler.models import DispatcherHeartbeat, JobAttempt
from tests.chaos.conftest import scale
from tests.chaos.effects import Workload, spread
from tests.processes import wait_until

pytestmark = pytest.mark.timeout(240)

DISRUPTION_SECONDS = 8


def _terminate_repeatedly(cluster, role, *, mid_tick=False):
    """Terminate ``role``'s connections every 0.7 s for a while; how many were terminated,
    and how many of them in the middle of a statement (``mid_tick`` only: see below)."""
    terminated = interrupted = 0
    deadline = time.monotonic() + DISRUPTION_SECONDS
    while time.monotonic() < deadline:
        if mid_tick:
            with transaction.atomic():
                # A connection is mostly idle between ticks, when a health check replaces
                # it unseen: wait until a tick is in its heartbeat's upsert, blocked on
                # the rows this transaction holds, to terminate it there.
                list(DispatcherHeartbeat.objects.select_for_update())
                within = max(0.0, deadline - time.monotonic())
                wait_until(lambda: _waiting_on_a_lock(role) > 0, timeout=within, interval=0.02)
                interrupted += _waiting_on_a_lock(role)
                terminated += cluster.terminate_connections(role)
        else:
            terminated += cluster.terminate_connections(role)
        time.sleep(0.7)
    return terminated, interrupted


def _waiting_on_a_lock(role):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name LIKE %s AND wait_event_type = 'Lock'",
            [f"chaos-{role}-%"],
        )
        return cursor.fetchone()[0]


def test_worker_connections_terminated(cluster):
    workload = Workload("pg-worker")
    workload.schedule_both(
        scale(30, 300), at=spread(timezone.now() + timedelta(seconds=2), 0.3), seconds=0.3
    )
    cluster.start_workers(2)
    cluster.start_dispatchers(1)
    terminated, _ = _terminate_repeatedly(cluster, "worker")
    assert terminated > 0
    # A connection lost between the body and the outcome means a retry: plain jobs
    # may run twice, atomic ones never.
    workload.settle(timeout=150).assert_clean(plain_once=False)
    assert all(worker.popen.poll() is None for worker in cluster.workers)
    # Connections were lost in use, not only idle (replaced unseen by a health check): a
    # claim or an outcome waited for the database, or an atomic job's transaction was
    # cut and its attempt retried; every job succeeded all the same.
    waited = cluster.worker_output().count("waits for the database job_id=")
    attempts = JobAttempt.objects.filter(job_id__in=workload.job_ids())
    cut = attempts.exclude(outcome="succeeded").count()
    assert waited + cut > 0, (waited, cut)


@pytest.mark.parametrize("dispatcher", ["beat", "loop"])
def test_dispatcher_connections_terminated(cluster, dispatcher):
    workload = Workload(f"pg-{dispatcher}")
    workload.schedule_both(scale(30, 300), at=spread(timezone.now() + timedelta(seconds=2), 0.3))
    cluster.start_workers(2)
    # Celery beat ticking in-process (the deployment's), or the dispatcher loop of
    # `scheduler_dispatch`.
    if dispatcher == "beat":
        cluster.start_beat()
    else:
        cluster.start_dispatchers(1)
    terminated, interrupted = _terminate_repeatedly(cluster, "dispatcher", mid_tick=True)
    assert terminated > 0
    assert interrupted > 0
    workload.settle(timeout=120).assert_clean(plain_once=True)
    assert all(dispatcher.popen.poll() is None for dispatcher in cluster.dispatchers)
    # The ticks cut short failed, and the next ones reached PostgreSQL again.
    for process in cluster.dispatchers:
        output = process.output()
        assert "dispatcher batch failed" in output, output[-3000:]
        assert "database reached again" in output, output[-3000:]
