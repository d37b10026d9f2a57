"""End to end with a lease of 3 s (tests/settings_lease.py): a live job keeps its lease
however long it runs; a killed worker's job is retried within the lease and a tick; an
atomic job killed before its commit leaves nothing, and its retry writes once."""

import os
import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from scheduler import schedule_at
from scheduler.models import ScheduledJob
from tests.e2e.conftest import celery_worker
from tests.processes import wait_until
from tests.testapp.models import Effect
from tests.testapp.tasks import read_runs

pytestmark = pytest.mark.timeout(120)

LEASE = 3
TICK = 1


@pytest.fixture
def e2e_env(e2e_env, settings):
    settings.SCHEDULER_LEASE_SECONDS = LEASE
    settings.SCHEDULER_HEARTBEAT_INTERVAL_SECONDS = 0.5
    return {**e2e_env, "DJANGO_SETTINGS_MODULE": "tests.settings_lease"}


def _job(pk):
    return ScheduledJob.objects.get(pk=pk)


def _kill(process):
    """SIGKILL a worker and its pool processes, as an OOM killer or a lost host would."""
    os.killpg(process.popen.pid, signal.SIGKILL)
    process.popen.wait(10)


def test_a_job_running_three_leases_is_not_retried(worker, dispatch_command, tmp_path):
    path = str(tmp_path / "runs")
    job = schedule_at("testapp.sleep_first", timezone.now(), [path, "long", 3 * LEASE])

    assert wait_until(lambda: _job(job.pk).status == "succeeded", timeout=40), worker.output()[
        -4000:
    ]
    job = _job(job.pk)
    assert job.attempts == 1
    assert [a.outcome for a in job.history.all()] == ["succeeded"]
    assert job.heartbeat_at - job.started_at >= timedelta(seconds=3 * LEASE - 1)
    assert [label for label, _ in read_runs(path)] == ["long:0"]
    assert "leases_expired=1" not in dispatch_command.output()


def test_a_killed_workers_job_is_retried_within_the_lease_and_a_tick(
    e2e_env, worker, dispatch_command, tmp_path
):
    path = str(tmp_path / "runs")
    job = schedule_at("testapp.sleep_first", timezone.now(), [path, "killed", 60])
    assert wait_until(lambda: len(read_runs(path)) == 1, timeout=20), worker.output()[-4000:]

    _kill(worker)
    killed_at = time.monotonic()
    assert wait_until(lambda: _job(job.pk).status != "running", timeout=LEASE + TICK + 5)
    assert time.monotonic() - killed_at <= LEASE + TICK + 1.5

    with celery_worker(e2e_env, "second") as second:
        assert wait_until(lambda: _job(job.pk).status == "succeeded", timeout=30), second.output()[
            -4000:
        ]
    job = _job(job.pk)
    assert job.attempts == 2
    assert [a.outcome for a in job.history.order_by("number")] == ["lease_expired", "succeeded"]
    assert [label for label, _ in read_runs(path)] == ["killed:0", "killed:1"]


def test_an_atomic_job_killed_before_its_commit_leaves_nothing_and_its_retry_runs_once(
    e2e_env, worker, dispatch_command, tmp_path
):
    marker = tmp_path / "written"
    job = schedule_at(
        "testapp.atomic_write", timezone.now(), ["capture"], {"marker": str(marker), "hold": 60}
    )
    assert wait_until(marker.exists, timeout=20), worker.output()[-4000:]
    assert Effect.objects.count() == 0  # written, not committed

    _kill(worker)
    assert Effect.objects.count() == 0  # and rolled back with the process
    Path(marker).unlink()

    with celery_worker(e2e_env, "second") as second:
        assert wait_until(lambda: _job(job.pk).status == "succeeded", timeout=30), (
            vars(_job(job.pk)),
            second.output()[-3000:],
            dispatch_command.output()[-3000:],
        )
    job = _job(job.pk)
    assert job.attempts == 2
    [effect] = Effect.objects.all()
    assert (effect.label, job.result) == ("capture", effect.pk)
