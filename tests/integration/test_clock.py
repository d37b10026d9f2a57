"""A process compares its host's clock with PostgreSQL's, the reference all hosts reach.

freezegun moves this process's clock and not PostgreSQL's: a host whose clock is off.
"""

import logging
import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, connections
from freezegun import freeze_time

from scheduler.clock import CLOCK_TOLERANCE_SECONDS, check_clock
from tests.conftest import postgresql_out_of_reach


@pytest.mark.parametrize(("off", "said"), [(30, "ahead of"), (-30, "behind")])
def test_a_host_clock_off_postgresql_is_told(db, caplog, off, said):
    caplog.set_level(logging.INFO, logger="scheduler.clock")
    with freeze_time(datetime.now(UTC) + timedelta(seconds=off), tick=True):
        offset = check_clock(process="worker")
    assert offset == pytest.approx(off, abs=1)
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    told = re.match(r"clock offset process=worker seconds=([-+][0-9.]+): ", record.getMessage())
    assert told, record.getMessage()
    assert float(told[1]) == pytest.approx(off, abs=1)
    assert f"this host's clock is {said} PostgreSQL's" in record.getMessage()


def test_a_host_clock_in_sync_is_only_noted(db, caplog):
    caplog.set_level(logging.INFO, logger="scheduler.clock")
    offset = check_clock(process="dispatcher")
    assert offset is not None
    assert abs(offset) <= CLOCK_TOLERANCE_SECONDS
    [record] = caplog.records
    assert record.levelno == logging.INFO
    assert record.getMessage().startswith("clock offset process=dispatcher seconds=")


@pytest.mark.django_db(transaction=True)
def test_a_database_out_of_reach_is_told_and_not_raised(caplog):
    caplog.set_level(logging.INFO, logger="scheduler.clock")
    with postgresql_out_of_reach():
        assert check_clock(process="beat") is None
    [record] = caplog.records
    assert record.getMessage() == "clock not checked process=beat error=OperationalError"


@pytest.mark.django_db(transaction=True)
def test_a_slow_connection_set_up_is_not_counted_as_the_clock_s(monkeypatch):
    # The clock was read before the cursor opened the connection (a worker's, closed
    # just before): half the set-up counted as an offset, always "behind", which hid a
    # clock ahead by as much.
    wrapper = type(connections["default"])
    connect = wrapper.get_new_connection

    def slow(self, params):
        time.sleep(0.4)
        return connect(self, params)

    connection.close()
    monkeypatch.setattr(wrapper, "get_new_connection", slow)
    offset = check_clock(process="worker")
    assert offset is not None
    assert abs(offset) <= CLOCK_TOLERANCE_SECONDS


@pytest.mark.parametrize("off", [90, -90])
def test_metrics_and_the_monitoring_page_judge_overdue_jobs_by_postgresql_s_clock(db, off):
    """A web host's clock is checked by no start-up test: jobs handed to SQS 20 s ago,
    about to be claimed, are not overdue for a clock 90 s ahead; jobs due 5 minutes ago
    are for one 90 s behind."""
    from django.test import Client, override_settings

    from scheduler.admin import monitoring
    from scheduler.models import DispatcherHeartbeat, ScheduledJob
    from tests.integration.admin_helpers import Status, job
    from tests.integration.test_metrics import parse

    now = datetime.now(UTC)
    for _ in range(3):
        job(Status.ENQUEUED, run_at=now - timedelta(seconds=20))
    late = job(Status.SCHEDULED, run_at=now - timedelta(minutes=5))
    DispatcherHeartbeat.objects.create(dispatcher="host-a:1", last_tick_at=now)
    with (
        freeze_time(now + timedelta(seconds=off), tick=True),
        override_settings(SCHEDULER_SQS_ENDPOINT_URL="http://127.0.0.1:9"),
    ):
        response = Client().get("/metrics")
        page = monitoring.snapshot()
    samples = parse(response.content.decode())
    oldest = samples[("scheduler_jobs_oldest_overdue_seconds", frozenset())]
    assert samples[("scheduler_jobs_overdue", frozenset())] == 1
    assert oldest == pytest.approx(300, abs=5)
    assert page.overdue.value == 1
    assert page.oldest_overdue == ScheduledJob.objects.get(pk=late.pk).run_at
    assert abs((page.now - now).total_seconds()) < 5
    assert page.heartbeats.healthy
