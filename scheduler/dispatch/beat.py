"""The django-celery-beat schedule that drives the dispatcher."""

import logging

from django.db import transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from scheduler.conf import scheduler_settings

logger = logging.getLogger(__name__)

DISPATCH_PERIODIC_TASK_NAME = "scheduler: dispatch due jobs"
DISPATCH_TASK_NAME = "scheduler.dispatch"


def ensure_dispatch_schedule() -> PeriodicTask:
    """Create or update the PeriodicTask that runs a dispatcher tick every interval.

    Idempotent. A tick not started within one interval expires, so a backlog of
    ticks queued while workers were down is not run all at once.
    """
    interval = scheduler_settings.DISPATCH_INTERVAL_SECONDS
    with transaction.atomic():
        schedule, _ = IntervalSchedule.objects.get_or_create(
            every=interval, period=IntervalSchedule.SECONDS
        )
        task, created = PeriodicTask.objects.update_or_create(
            name=DISPATCH_PERIODIC_TASK_NAME,
            defaults={
                "task": DISPATCH_TASK_NAME,
                "interval": schedule,
                "crontab": None,
                "solar": None,
                "clocked": None,
                "expire_seconds": interval,
                "queue": scheduler_settings.QUEUE_NAME,
                "description": "Sends jobs that are nearly due from PostgreSQL to SQS "
                "(created by the scheduler app after migrate).",
            },
        )
    logger.info(
        "dispatch schedule %s every_seconds=%s", "created" if created else "updated", interval
    )
    return task
