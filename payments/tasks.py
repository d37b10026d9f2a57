"""Celery tasks of the payments demo."""

from celery import shared_task

from payments import services
from scheduler.worker.task import SchedulerTask


@shared_task(name="payments.capture_payment", base=SchedulerTask, atomic=True)
def capture_payment(payment_id: int) -> str:
    """Capture the payment (scheduled 14 days after authorization).

    Atomic: the payment's update commits with the job's success, or not at all.
    """
    return services.capture_payment(payment_id=payment_id).status
