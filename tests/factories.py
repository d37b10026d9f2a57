"""Helpers to make jobs for tests."""

from datetime import datetime
from typing import Any

from scheduler.conf import scheduler_settings
from scheduler.models import ScheduledJob


def make_jobs(run_ats: list[datetime], **fields: Any) -> list[ScheduledJob]:
    """Insert scheduled jobs directly (fast), one per run_at."""
    defaults: dict[str, Any] = {
        "task_name": "testapp.noop",
        "queue": scheduler_settings.QUEUE_NAME,
        "max_attempts": 3,
    }
    defaults.update(fields)
    return ScheduledJob.objects.bulk_create(
        [ScheduledJob(run_at=run_at, **defaults) for run_at in run_ats]
    )
