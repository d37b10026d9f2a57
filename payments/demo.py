"""The demo: a few payments whose captures fall on either side of SQS's 15-minute limit."""

import logging
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.db import transaction

from payments.models import Payment
from payments.services import authorize_payment

logger = logging.getLogger(__name__)

#: Soon enough to watch, just under and over SQS's 15-minute DelaySeconds cap, and the
#: real two-week capture that can never be an SQS message.
DEMO_CAPTURES: tuple[tuple[Decimal, str, timedelta], ...] = (
    (Decimal("12.50"), "EUR", timedelta(seconds=10)),
    (Decimal("40.00"), "EUR", timedelta(minutes=2)),
    (Decimal("99.90"), "USD", timedelta(minutes=20)),
    (Decimal("250.00"), "GBP", timedelta(days=14)),
)


@dataclass(frozen=True)
class DemoPayment:
    """One authorized demo payment and when its capture is due."""

    payment: Payment
    capture_in: timedelta


def create_demo_payments() -> list[DemoPayment]:
    """Authorize the demo payments, scheduling their captures, in one transaction."""
    with transaction.atomic():
        created = [
            DemoPayment(
                authorize_payment(amount=amount, currency=currency, capture_in=capture_in),
                capture_in,
            )
            for amount, currency, capture_in in DEMO_CAPTURES
        ]
    logger.info("demo payments created count=%s", len(created))
    return created
