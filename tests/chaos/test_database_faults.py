"""``pg_terminate_backend`` on the workers' and the dispatchers' connections."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.chaos.conftest import scale
from tests.chaos.effects import Workload, spread

pytestmark = pytest.mark.timeout(240)

DISRUPTION_SECONDS = 8


def _terminate_repeatedly(cluster, role):
    terminated = 0
    deadline = time.monotonic() + DISRUPTION_SECONDS
    while time.monotonic() < deadline:
        terminated += cluster.terminate_connections(role)
        time.sleep(0.7)
    return terminated


def test_worker_connections_terminated(cluster):
    workload = Workload("pg-worker")
    workload.schedule_both(
        scale(30, 300), at=spread(timezone.now() + timedelta(seconds=2), 0.3), seconds=0.3
    )
    cluster.start_workers(2)
    cluster.start_dispatchers(1)
    assert _terminate_repeatedly(cluster, "worker") > 0
    # A connection lost between the body and the outcome means a retry: plain jobs
    # may run twice, atomic ones never.
    workload.settle(timeout=150).assert_clean(plain_once=False)
    assert all(worker.popen.poll() is None for worker in cluster.workers)


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
    assert _terminate_repeatedly(cluster, "dispatcher") > 0
    workload.settle(timeout=120).assert_clean(plain_once=True)
    assert all(dispatcher.popen.poll() is None for dispatcher in cluster.dispatchers)
