"""Dispatch never waits behind jobs: beat dispatches in its own process."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from scheduler import schedule_at
from scheduler.models import ScheduledJob
from tests.e2e.conftest import celery_beat, celery_worker
from tests.processes import wait_until
from tests.testapp.tasks import read_runs

pytestmark = pytest.mark.timeout(120)


def test_due_jobs_reach_sqs_on_time_while_every_worker_process_is_busy(e2e_env, beat, tmp_path):
    path = str(tmp_path / "runs")
    with celery_worker(e2e_env, concurrency=1) as worker:
        long_job = schedule_at("testapp.sleep", timezone.now(), [25])
        assert wait_until(
            lambda: ScheduledJob.objects.get(pk=long_job.pk).status == "running", timeout=20
        ), worker.output()[-3000:]
        # Beyond the 3 s lookahead: only a tick taken while the worker is busy sends it.
        due = schedule_at("testapp.record", timezone.now() + timedelta(seconds=8), [path, "due"])
        assert wait_until(
            lambda: ScheduledJob.objects.get(pk=due.pk).status == "enqueued", timeout=15
        ), beat.output()[-3000:]
        due.refresh_from_db()
        assert due.enqueued_at < due.run_at
        assert ScheduledJob.objects.get(pk=long_job.pk).status == "running"
        assert read_runs(path) == []


def test_other_periodic_tasks_still_go_through_the_queue(e2e_env, worker, tmp_path):
    path = str(tmp_path / "runs")
    every_second, _ = IntervalSchedule.objects.get_or_create(every=1, period="seconds")
    PeriodicTask.objects.create(
        name="record every second",
        task="testapp.record",
        interval=every_second,
        args=json.dumps([path, "periodic"]),
        queue=e2e_env["SCHEDULER_QUEUE_NAME"],
    )
    with celery_beat(e2e_env, pidfile=tmp_path / "beat.pid"):
        assert wait_until(lambda: len(read_runs(path)) >= 2, timeout=30), worker.output()[-3000:]
    assert {label for label, _ in read_runs(path)} == {"periodic"}
