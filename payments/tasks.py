"""Celery tasks of the payments demo."""

from celery import shared_task

from payments import services


@shared_task(name="payments.capture_payment")
def capture_payment(payment_id: int) -> str:
    """Capture the payment (scheduled 14 days after authorization)."""
    return services.capture_payment(payment_id=payment_id).status
