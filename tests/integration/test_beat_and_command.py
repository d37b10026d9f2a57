"""The dispatch schedule in django-celery-beat, and the scheduler_dispatch command."""

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from scheduler import schedule_at
from scheduler.dispatch.beat import DISPATCH_PERIODIC_TASK_NAME, ensure_dispatch_schedule
from scheduler.models import ScheduledJob

pytestmark = pytest.mark.django_db


def test_migrate_creates_the_dispatch_periodic_task():
    task = PeriodicTask.objects.get(name=DISPATCH_PERIODIC_TASK_NAME)
    assert task.task == "scheduler.dispatch"
    assert task.enabled
    assert (task.interval.every, task.interval.period) == (5, "seconds")
    assert task.expire_seconds == 5


def test_the_schedule_follows_the_interval_setting_and_stays_unique(settings):
    settings.SCHEDULER_DISPATCH_INTERVAL_SECONDS = 2
    settings.SCHEDULER_QUEUE_NAME = "other-queue"
    ensure_dispatch_schedule()
    ensure_dispatch_schedule()
    task = PeriodicTask.objects.get(name=DISPATCH_PERIODIC_TASK_NAME)
    assert task.interval.every == 2
    assert task.queue == "other-queue"
    assert PeriodicTask.objects.filter(task="scheduler.dispatch").count() == 1


def test_dispatch_command_once_sends_due_jobs(sqs_queue):
    due = schedule_at("testapp.noop", timezone.now() + timedelta(seconds=2))
    later = schedule_at("testapp.noop", timezone.now() + timedelta(days=1))
    out = StringIO()
    call_command("scheduler_dispatch", "--once", stdout=out)
    assert json.loads(out.getvalue())["sent"] == 1
    statuses = dict(ScheduledJob.objects.values_list("pk", "status"))
    assert statuses == {due.pk: "enqueued", later.pk: "scheduled"}


def test_dispatch_command_once_fails_when_sqs_is_down(sqs_queue, settings):
    schedule_at("testapp.noop", timezone.now())
    settings.SCHEDULER_SQS_ENDPOINT_URL = "http://127.0.0.1:9"
    with pytest.raises(SystemExit) as exit_info:
        call_command("scheduler_dispatch", "--once", stdout=StringIO())
    assert exit_info.value.code == 1
    assert ScheduledJob.objects.get().status == "scheduled"
