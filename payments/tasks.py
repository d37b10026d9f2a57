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


@shared_task(name=services.MISSED_CAPTURE_TASK_NAME, base=SchedulerTask, atomic=True)
def record_missed_capture(capture_job_id: int) -> str | None:
    """Mark the payment of a capture job that ended without capturing ``capture_missed``,
    unless the gateway holds its capture (scheduled by the payments' receivers).

    Retried while the gateway is out of reach; atomic, as the capture.
    """
    payment = services.mark_capture_missed(capture_job_id=capture_job_id)
    return None if payment is None else payment.status


@shared_task(name=services.SWEEP_TASK_NAME, base=SchedulerTask)
def record_missed_captures() -> int:
    """The sweep (beat sends it every 5 minutes): schedule the missed-capture job of the
    payments whose capture job ended badly with none recorded; returns how many."""
    return services.record_missed_captures()
