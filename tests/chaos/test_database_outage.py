"""PostgreSQL out of every process's reach for two leases, as in a failover, while jobs run."""

import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from scheduler.models import JobAttempt
from tests import settings_chaos
from tests.chaos.effects import Workload
from tests.chaos.harness import Cluster, PostgresProxy
from tests.processes import wait_until

pytestmark = pytest.mark.timeout(180)

LEASE = settings_chaos.SCHEDULER_LEASE_SECONDS


@pytest.fixture
def postgres_proxy(cluster: Cluster) -> Iterator[PostgresProxy]:
    """The cluster's processes reach PostgreSQL through a proxy the test can cut."""
    db = connection.settings_dict
    proxy = PostgresProxy(host=db["HOST"], port=int(db["PORT"]))
    proxy.start()
    url = f"postgres://{db['USER']}@127.0.0.1:{proxy.port}/{db['NAME']}"
    cluster.env = {**cluster.env, "DATABASE_URL": url}
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.mark.parametrize("dispatcher", ["beat", "loop"])
def test_an_outage_longer_than_a_lease_retries_no_live_job(cluster, postgres_proxy, dispatcher):
    # The workers' heartbeats fail as long as the dispatcher's ticks do; when PostgreSQL
    # is back, a dispatcher that judged leases at once would retry every running job.
    workload = Workload(f"outage-{dispatcher}")
    soon = timezone.now() + timedelta(seconds=1)
    workload.schedule(4, at=lambda _: soon, seconds=5 * LEASE)
    cluster.start_workers(2, concurrency=2)
    if dispatcher == "beat":
        cluster.start_beat()
    else:
        cluster.start_dispatchers(1)
    # Cut once every body has written its effect: one failing then could not be
    # recorded, and would rightly run again once its lease expired.
    assert wait_until(lambda: len(workload.effects()) == 4, timeout=30, interval=0.2)

    postgres_proxy.cut()
    time.sleep(2 * LEASE)
    postgres_proxy.restore()

    workload.settle(timeout=90).assert_clean(plain_once=True)
    attempts = JobAttempt.objects.filter(job_id__in=workload.job_ids())
    assert sorted(attempts.values_list("outcome", flat=True)) == ["succeeded"] * 4
    alive = [*cluster.workers, *cluster.dispatchers]
    assert all(process.popen.poll() is None for process in alive)
