"""Helpers shared by the admin tests: jobs in any state, and staff users."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from scheduler import states
from scheduler.models import ScheduledJob

Status = ScheduledJob.Status
T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)

CHANGELIST = reverse("admin:scheduler_scheduledjob_changelist")
ADD = reverse("admin:scheduler_scheduledjob_add")
MONITORING = reverse("admin:scheduler_scheduledjob_monitoring")


def change_url(job: ScheduledJob) -> str:
    return reverse("admin:scheduler_scheduledjob_change", args=[job.pk])


def job(status: str = Status.SCHEDULED, *, run_at: datetime = T0, **fields: Any) -> ScheduledJob:
    """A job row in ``status``, with whatever that status requires set."""
    return ScheduledJob.objects.create(**job_fields(status, run_at=run_at, **fields))


def job_fields(status: str, *, run_at: datetime, **fields: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "task_name": "testapp.noop",
        "queue": "scheduler-jobs",
        "run_at": run_at,
        "status": status,
        "max_attempts": 3,
    }
    if status in (Status.ENQUEUED, Status.RUNNING):
        values["dispatch_token"] = uuid.uuid4()
        values["enqueued_at"] = run_at - timedelta(minutes=5)
    if status == Status.ENQUEUED:
        values["resend_at"] = run_at + timedelta(minutes=5)
    if status in (Status.RUNNING, Status.SUCCEEDED, Status.FAILED):
        values["started_at"] = run_at + timedelta(seconds=1)
        values["attempts"] = 1
    if status in states.FINISHED:
        values["finished_at"] = run_at + timedelta(seconds=2)
    values.update(fields)
    return values


def staff_client(username: str, *codenames: str) -> Client:
    """A logged-in client for a staff user holding the scheduler permissions named."""
    user = User.objects.create_user(username, password="x", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="scheduler", codename__in=codenames)
    )
    client = Client()
    client.force_login(user)
    return client


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]
