"""The demo app: a payment authorized now is captured 14 days later."""

from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "payments"
    verbose_name = "Payments (demo)"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Connect the demo's receivers of the scheduler's signals."""
        from payments.receivers import on_job_expired
        from scheduler.signals import job_expired

        job_expired.connect(on_job_expired, dispatch_uid="payments.capture_missed")
