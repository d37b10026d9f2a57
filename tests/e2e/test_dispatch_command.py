"""End to end with the dispatcher as a management command instead of beat."""

import signal
from datetime import timedelta

import pytest
from django.utils import timezone

from scheduler import schedule_at
from scheduler.models import DispatcherHeartbeat, ScheduledJob
from tests.processes import wait_until
from tests.testapp.tasks import read_runs

pytestmark = pytest.mark.timeout(120)


def test_the_dispatch_command_sends_jobs_and_stops_cleanly_on_sigterm(
    worker, dispatch_command, tmp_path
):
    path = str(tmp_path / "runs")
    job = schedule_at("testapp.record", timezone.now() + timedelta(seconds=6), [path, "cmd"])
    assert wait_until(lambda: len(read_runs(path)) == 1, timeout=30), dispatch_command.output()
    [(_, ran_at)] = read_runs(path)
    assert 0 <= ran_at - job.run_at.timestamp() < 2.0
    # The body ran; the outcome is recorded just after it.
    assert wait_until(lambda: ScheduledJob.objects.get(pk=job.pk).status == "succeeded", timeout=5)
    heartbeat = DispatcherHeartbeat.objects.get(
        dispatcher__endswith=f":{dispatch_command.popen.pid}"
    )
    assert heartbeat.errors == 0

    dispatch_command.popen.send_signal(signal.SIGTERM)
    assert dispatch_command.popen.wait(10) == 0
    assert "stopping after the current tick" in dispatch_command.output()
