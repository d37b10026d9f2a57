"""PostgreSQL out of every process's reach for two leases, as in a failover, while jobs run."""

import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from django.db import connection
from django.utils import timezone

from scheduler.models import DispatcherHeartbeat, JobAttempt, ScheduledJob
from tests import settings_chaos
from tests.chaos.effects import Workload
from tests.chaos.harness import Cluster, PostgresProxy
from tests.processes import wait_until

pytestmark = pytest.mark.timeout(180)

LEASE = settings_chaos.SCHEDULER_LEASE_SECONDS


def _database_url(port: int) -> str:
    """The test database's URL, at ``port`` on this host."""
    db = connection.settings_dict
    return f"postgres://{db['USER']}@127.0.0.1:{port}/{db['NAME']}"


@pytest.fixture
def postgres_proxy(cluster: Cluster) -> Iterator[PostgresProxy]:
    """The cluster's processes reach PostgreSQL through a proxy the test can cut."""
    db = connection.settings_dict
    proxy = PostgresProxy(host=db["HOST"], port=int(db["PORT"]))
    proxy.start()
    cluster.env = {**cluster.env, "DATABASE_URL": _database_url(proxy.port)}
    try:
        yield proxy
    finally:
        proxy.stop()


def assert_out_of_reach(*, since: datetime, job_ids: list[int]) -> None:
    """The outage took effect: no heartbeat of these running jobs and no dispatcher tick
    reached PostgreSQL after ``since`` (and a second for writes in flight), though
    each is written every second or so."""
    after = since + timedelta(seconds=1)
    assert not ScheduledJob.objects.filter(pk__in=job_ids, heartbeat_at__gt=after).exists()
    assert not DispatcherHeartbeat.objects.filter(last_tick_at__gt=after).exists()


@pytest.mark.parametrize("dispatcher", ["beat", "loop", "replaced"])
def test_an_outage_longer_than_a_lease_retries_no_live_job(cluster, postgres_proxy, dispatcher):
    # The workers' heartbeats fail as long as the dispatcher's ticks do; when PostgreSQL
    # is back, a dispatcher that judged leases at once would retry every running job.
    # So would one that a supervisor started in place of another during the outage: it
    # never saw PostgreSQL gone.
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

    cut_at = timezone.now()
    postgres_proxy.cut()
    if dispatcher == "replaced":
        cluster.kill(cluster.dispatchers[0])
    time.sleep(2 * LEASE)
    assert_out_of_reach(since=cut_at, job_ids=workload.job_ids())
    if dispatcher == "replaced":
        # Its first tick reaches PostgreSQL before any worker's heartbeat does.
        direct = _database_url(int(connection.settings_dict["PORT"]))
        cluster.env = {**cluster.env, "DATABASE_URL": direct}
        cluster.start_dispatchers(1)
    postgres_proxy.restore()

    workload.settle(timeout=90).assert_clean(plain_once=True)
    attempts = JobAttempt.objects.filter(job_id__in=workload.job_ids())
    assert sorted(attempts.values_list("outcome", flat=True)) == ["succeeded"] * 4
    alive = [*cluster.workers, *cluster.dispatchers]
    assert all(process.popen.poll() is None for process in alive)


def test_beat_outlives_an_outage_over_its_schedule_reload(cluster, postgres_proxy):
    # Beat reloads its schedule every 5 minutes (every 2 s here): PostgreSQL out of reach
    # at that mark, the reload's error ended beat ("beat raised exception
    # OperationalError"), for good. It keeps the schedule it had, and ticks once it is back.
    cluster.env = {**cluster.env, "DJANGO_SETTINGS_MODULE": "tests.settings_beat_reload"}
    beat = cluster.start_beat()
    postgres_proxy.cut()
    beat.wait_for_output("beat schedule reload failed", timeout=15)
    restored_at = timezone.now()
    postgres_proxy.restore()
    assert wait_until(
        lambda: DispatcherHeartbeat.objects.filter(last_tick_at__gt=restored_at).exists(),
        timeout=15,
        interval=0.2,
    )
    assert beat.popen.poll() is None


def test_a_failover_from_a_primary_that_drops_packets_stalls_no_process(cluster, postgres_proxy):
    # The primary is lost with its host: nothing answers, nothing is refused, and the
    # connections to it stay unanswered after the failover. Without timeouts on them,
    # a query waits out the kernel's TCP retransmissions (about 15 minutes): the
    # dispatcher's tick, a worker's heartbeat and claim with it. With them (lowered in
    # tests/settings_chaos.py as every period is), each process gives up its connection
    # within seconds and opens one to the new primary.
    running = Workload("failover-running")
    soon = timezone.now() + timedelta(seconds=1)
    running.schedule(2, at=lambda _: soon, seconds=5 * LEASE)
    cluster.start_workers(2, concurrency=2)
    cluster.start_beat()
    assert wait_until(lambda: len(running.effects()) == 2, timeout=30, interval=0.2)

    cut_at = timezone.now()
    postgres_proxy.blackhole()
    time.sleep(2 * LEASE)
    assert_out_of_reach(since=cut_at, job_ids=running.job_ids())
    postgres_proxy.fail_over()
    due = Workload("failover-due")
    due.schedule(4, at=lambda _: timezone.now() + timedelta(seconds=2))

    running.settle(timeout=60).assert_clean(plain_once=True)
    report = due.settle(timeout=60)
    report.assert_clean(plain_once=True)
    assert max(report.lateness) < LEASE, report.summary()
    attempts = JobAttempt.objects.filter(job_id__in=running.job_ids())
    assert sorted(attempts.values_list("outcome", flat=True)) == ["succeeded"] * 2
    alive = [*cluster.workers, *cluster.dispatchers]
    assert all(process.popen.poll() is None for process in alive)
