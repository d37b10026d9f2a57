"""The demo app: a payment authorized now is captured 14 days later."""

from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "payments"
    verbose_name = "Payments (demo)"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Connect the demo's receivers of the scheduler's signals."""
        from payments.receivers import on_job_ended
        from scheduler.signals import job_cancelled, job_expired, job_failed

        for signal in (job_expired, job_failed, job_cancelled):
            signal.connect(on_job_ended, dispatch_uid="payments.capture_missed")
