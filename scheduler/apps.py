"""App configuration: system checks, and the dispatch schedule after migrate."""

import contextlib
from typing import Any

from django.apps import AppConfig
from django.db import DEFAULT_DB_ALIAS, router
from django.db.models.signals import post_migrate
from django.utils.module_loading import import_string


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
        _import_task_backends()


def _import_task_backends() -> None:
    """Import the project's ``django.tasks`` backends (``TASKS``): a SchedulerBackend's
    module connects the receivers that send ``task_finished`` as its jobs end, in any
    process that ends one (a web process that cancels one, before anything there used
    the backend, included). One that cannot be imported is Django's to report."""
    from scheduler.conf import scheduler_settings

    for path in scheduler_settings.task_backend_paths():
        with contextlib.suppress(ImportError):
            import_string(path)
