"""The payments demo: authorize now, capture 14 days later, never twice."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from freezegun import freeze_time

from payments.gateway import gateway
from payments.models import Payment
from payments.services import authorize_payment, capture_payment
from scheduler.models import ScheduledJob

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@freeze_time(T0)
def test_authorizing_schedules_the_capture_fourteen_days_out():
    payment = authorize_payment(amount="49.90", currency="eur")
    payment.refresh_from_db()
    assert (payment.amount, payment.currency, payment.status) == (
        Decimal("49.90"),
        "EUR",
        Payment.Status.AUTHORIZED,
    )
    job = payment.capture_job
    assert job.task_name == "payments.capture_payment"
    assert job.kwargs == {"payment_id": payment.pk}
    assert job.run_at == T0 + timedelta(days=14)
    assert job.unique_key == f"payments:capture:{payment.pk}"
    assert job.status == ScheduledJob.Status.SCHEDULED


@freeze_time(T0)
def test_the_capture_delay_is_configurable():
    payment = authorize_payment(amount=10, currency="USD", capture_in=timedelta(hours=2))
    assert payment.capture_job.run_at == T0 + timedelta(hours=2)


def test_a_rolled_back_authorization_leaves_no_payment_and_no_job():
    with pytest.raises(RuntimeError), transaction.atomic():
        authorize_payment(amount="5.00", currency="EUR")
        raise RuntimeError("order creation failed afterwards")
    assert not Payment.objects.exists()
    assert not ScheduledJob.objects.exists()


@pytest.mark.parametrize(
    ("amount", "currency", "error"),
    [
        ("0", "EUR", ValueError),
        ("-1", "EUR", ValueError),
        ("1.001", "EUR", ValueError),
        ("abc", "EUR", ValueError),
        (1.5, "EUR", TypeError),
        ("1.00", "EURO", ValueError),
        ("1.00", "E1R", ValueError),
    ],
)
def test_bad_payments_are_rejected_and_write_nothing(amount, currency, error):
    with pytest.raises(error):
        authorize_payment(amount=amount, currency=currency)
    assert not Payment.objects.exists()
    assert not ScheduledJob.objects.exists()


def test_capturing_twice_charges_once():
    payment = authorize_payment(amount="12.00", currency="EUR")
    before = len(gateway.captures)
    first = capture_payment(payment_id=payment.pk)
    second = capture_payment(payment_id=payment.pk)
    assert first.status == second.status == Payment.Status.CAPTURED
    assert first.capture_id == second.capture_id
    assert len(gateway.captures) == before + 1
    assert gateway.captures[-1].authorization_id == payment.authorization_id


def test_the_gateway_honours_idempotency_keys():
    first = gateway.capture(
        authorization_id="a", amount=Decimal(1), currency="EUR", idempotency_key="k-1"
    )
    again = gateway.capture(
        authorization_id="a", amount=Decimal(1), currency="EUR", idempotency_key="k-1"
    )
    assert first == again
