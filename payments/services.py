"""Payment services: authorize now, capture later through the scheduler."""

import logging
from datetime import timedelta
from decimal import Decimal, InvalidOperation

from django.db import transaction
from django.utils import timezone

from payments.gateway import gateway
from payments.models import Payment
from scheduler import schedule_in

logger = logging.getLogger(__name__)

DEFAULT_CAPTURE_DELAY = timedelta(days=14)
CAPTURE_TASK_NAME = "payments.capture_payment"


def authorize_payment(
    *, amount: Decimal | str | int, currency: str, capture_in: timedelta | None = None
) -> Payment:
    """Authorize a payment and, in the same transaction, schedule its capture.

    The capture runs ``capture_in`` from now (14 days by default). If the caller's
    transaction rolls back, neither the payment nor its capture job exists.
    """
    amount = _amount(amount)
    currency = _currency(currency)
    if capture_in is not None and not isinstance(capture_in, timedelta):
        raise TypeError(f"capture_in must be a timedelta, got {capture_in!r}")
    with transaction.atomic():
        payment = Payment.objects.create(
            amount=amount,
            currency=currency,
            authorization_id=gateway.authorize(amount=amount, currency=currency),
        )
        payment.capture_job = schedule_in(
            CAPTURE_TASK_NAME,
            capture_in if capture_in is not None else DEFAULT_CAPTURE_DELAY,
            kwargs={"payment_id": payment.pk},
            unique_key=f"payments:capture:{payment.pk}",
        )
        payment.save(update_fields=["capture_job"])
    logger.info(
        "payment authorized payment_id=%s amount=%s currency=%s capture_job_id=%s",
        payment.pk,
        amount,
        currency,
        payment.capture_job.pk,
    )
    return payment


def capture_payment(*, payment_id: int) -> Payment:
    """Capture an authorized payment; a second call changes nothing.

    The payment row is locked and its state checked, and the gateway gets an
    idempotency key, so a retry after a crash cannot charge twice.
    """
    with transaction.atomic():
        payment = Payment.objects.select_for_update().get(pk=payment_id)
        if payment.status == Payment.Status.CAPTURED:
            logger.info("payment already captured payment_id=%s", payment_id)
            return payment
        capture = gateway.capture(
            authorization_id=payment.authorization_id,
            amount=payment.amount,
            currency=payment.currency,
            idempotency_key=f"capture:{payment.pk}",
        )
        payment.status = Payment.Status.CAPTURED
        payment.capture_id = capture.capture_id
        payment.captured_at = timezone.now()
        payment.save(update_fields=["status", "capture_id", "captured_at"])
    logger.info("payment captured payment_id=%s capture_id=%s", payment_id, capture.capture_id)
    return payment


def _amount(amount: Decimal | str | int) -> Decimal:
    if isinstance(amount, float | bool):
        raise TypeError("amount must be a Decimal, a string or an int, not a float")
    try:
        value = Decimal(amount)
    except (InvalidOperation, TypeError, ValueError):
        raise ValueError(f"amount must be a number, got {amount!r}") from None
    if not value.is_finite() or value <= 0 or value != value.quantize(Decimal("0.01")):
        raise ValueError(f"amount must be positive with at most two decimals, got {amount!r}")
    return value


def _currency(currency: str) -> str:
    if not isinstance(currency, str) or len(currency) != 3 or not currency.isalpha():
        raise ValueError(f"currency must be a three-letter ISO 4217 code, got {currency!r}")
    return currency.upper()
