"""The demo app: a payment authorized now is captured 14 days later."""

from typing import Any

from django.apps import AppConfig
from django.db import DEFAULT_DB_ALIAS, router
from django.db.models.signals import post_migrate


def after_migrate(
    *, using: str = DEFAULT_DB_ALIAS, plan: list[tuple[Any, bool]] | None = None, **kwargs: Any
) -> None:
    """``post_migrate``: create the beat entry of the sweep of missed captures, once its
    database is migrated (``migrate --database=<another>`` leaves it alone, and so does
    a migration back: to 0.1.0, whose workers have no such task)."""
    from django_celery_beat.models import PeriodicTask

    from payments.periodic import ensure_missed_capture_sweep

    backwards = bool(plan) and all(backward for _, backward in plan or ())
    if router.db_for_write(PeriodicTask) == using and not backwards:
        ensure_missed_capture_sweep()


class PaymentsConfig(AppConfig):
    name = "payments"
    verbose_name = "Payments (demo)"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Connect the demo's receivers of the scheduler's signals, and what writes the
        beat entry of its sweep after migrate."""
        from payments.receivers import on_job_ended
        from scheduler.signals import job_cancelled, job_expired, job_failed

        for signal in (job_expired, job_failed, job_cancelled):
            signal.connect(on_job_ended, dispatch_uid="payments.capture_missed")
        post_migrate.connect(after_migrate, sender=self)
