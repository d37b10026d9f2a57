"""App configuration: system checks, and the dispatch schedule after migrate."""

from typing import Any

from django.apps import AppConfig
from django.db import DEFAULT_DB_ALIAS, router
from django.db.models.signals import post_migrate


def after_migrate(*, using: str = DEFAULT_DB_ALIAS, **kwargs: Any) -> None:
    """``post_migrate``: create or update the dispatch schedule, once its database is
    migrated (``migrate --database=<another>`` leaves it alone)."""
    from django_celery_beat.models import PeriodicTask

    from scheduler.dispatch.beat import ensure_dispatch_schedule

    if router.db_for_write(PeriodicTask) == using:
        ensure_dispatch_schedule()


class SchedulerConfig(AppConfig):
    name = "scheduler"
    verbose_name = "Scheduler"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from scheduler import (
            checks,  # noqa: F401 - registers the system checks
            clock,  # noqa: F401 - a worker checks its clock when ready
        )
        from scheduler.dispatch import beat  # noqa: F401 - registers the beat scheduler check
        from scheduler.worker import checks as worker_checks  # noqa: F401 - and the worker's
        from scheduler.worker import connections  # noqa: F401 - connections kept across tasks

        post_migrate.connect(after_migrate, sender=self)
