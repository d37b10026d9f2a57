"""``python manage.py scheduler_demo``: authorize demo payments with captures due soon and late."""

from typing import Any

from django.core.management.base import BaseCommand

from payments.demo import create_demo_payments


class Command(BaseCommand):
    help = (
        "Authorize a few demo payments whose captures are scheduled +10 s, +2 min, +20 min "
        "(beyond SQS's 15-minute limit) and +14 days from now; watch them in the admin."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        for demo in create_demo_payments():
            payment, job = demo.payment, demo.payment.capture_job
            assert job is not None  # authorize_payment always schedules the capture
            self.stdout.write(
                f"payment {payment.pk} {payment.amount} {payment.currency}: capture job "
                f"{job.pk} in {demo.capture_in} at {job.run_at:%Y-%m-%d %H:%M:%S} UTC"
            )
