"""The payments demo: authorize now, capture 14 days later, never twice."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from freezegun import freeze_time

from payments.gateway import gateway
from payments.models import Payment
from payments.services import (
    MISSED_CAPTURE_TASK_NAME,
    authorize_payment,
    cancel_payment,
    capture_payment,
    mark_capture_missed,
)
from scheduler import cancel, signals
from scheduler.exceptions import InvalidArgumentsError
from scheduler.models import ScheduledJob
from scheduler.services import dispatching
from scheduler.services.operations import retry
from scheduler.testing import run_due_jobs

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
    # An extended authorization holds the money 30 days: the capture's deadline.
    assert payment.authorized_at == T0
    assert payment.authorization_expires_at == T0 + timedelta(days=30)
    assert job.deadline == payment.authorization_expires_at


@freeze_time(T0)
def test_a_standard_authorization_lasts_days_and_bounds_its_capture():
    payment = authorize_payment(
        amount="20.00", currency="EUR", capture_in=timedelta(days=2), valid_for=timedelta(days=7)
    )
    assert payment.authorization_expires_at == T0 + timedelta(days=7)
    assert payment.capture_job.deadline == T0 + timedelta(days=7)


@pytest.mark.parametrize(
    ("capture_in", "valid_for", "error"),
    [
        (timedelta(days=14), timedelta(days=7), ValueError),
        (timedelta(days=7), timedelta(days=7), ValueError),
        (timedelta(seconds=-1), timedelta(days=7), ValueError),
        (timedelta(days=1), 7, TypeError),
        (3600, timedelta(days=7), TypeError),
    ],
)
def test_a_capture_that_could_never_run_in_time_is_refused(capture_in, valid_for, error):
    with pytest.raises(error):
        authorize_payment(amount="5.00", currency="EUR", capture_in=capture_in, valid_for=valid_for)
    assert not Payment.objects.exists()
    assert not ScheduledJob.objects.exists()


def two_day_authorization():
    """Authorized at T0 for two days, its capture due after one."""
    with freeze_time(T0):
        return authorize_payment(
            amount="30.00",
            currency="EUR",
            capture_in=timedelta(days=1),
            valid_for=timedelta(days=2),
        )


def test_an_expired_capture_marks_the_payment_capture_missed_after_commit(
    django_capture_on_commit_callbacks,
):
    payment = two_day_authorization()
    # The dispatcher was down past the authorization's expiry: the capture expires.
    with (
        freeze_time(T0 + timedelta(days=3)),
        django_capture_on_commit_callbacks() as callbacks,
        transaction.atomic(),
    ):
        assert dispatching.expire_missed(now=T0 + timedelta(days=3)) == 1
        payment.refresh_from_db()
        # Not before the expiry is committed.
        assert payment.status == Payment.Status.AUTHORIZED
    for callback in callbacks:
        callback()
    payment.refresh_from_db()
    # The receiver scheduled the job that records it.
    assert payment.status == Payment.Status.AUTHORIZED
    run_due_jobs()
    payment.refresh_from_db()
    assert payment.status == Payment.Status.CAPTURE_MISSED
    assert payment.capture_job.status == ScheduledJob.Status.EXPIRED
    # A second report changes nothing; a captured payment never becomes missed.
    assert mark_capture_missed(capture_job_id=payment.capture_job_id).status == (
        Payment.Status.CAPTURE_MISSED
    )
    captured = authorize_payment(amount="1.00", currency="EUR")
    capture_payment(payment_id=captured.pk)
    assert mark_capture_missed(capture_job_id=captured.capture_job_id).status == (
        Payment.Status.CAPTURED
    )
    assert mark_capture_missed(capture_job_id=10**9) is None


def test_an_expiry_that_rolls_back_leaves_the_payment_authorized(
    django_capture_on_commit_callbacks,
):
    payment = two_day_authorization()
    with (
        django_capture_on_commit_callbacks() as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        dispatching.expire_missed(now=T0 + timedelta(days=3))
        raise RuntimeError("the dispatcher's transaction fails")
    assert callbacks == []
    payment.refresh_from_db()
    assert payment.status == Payment.Status.AUTHORIZED


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
        # More than the amount column holds: authorized at the gateway, then refused by
        # PostgreSQL, the card hold left behind.
        ("10000000000.00", "EUR", ValueError),
        # Letters of other alphabets: "ß" upper-cases to two letters (the hold placed,
        # then refused by PostgreSQL), "ä" to no ISO 4217 code.
        ("1.00", "ßeu", ValueError),
        ("1.00", "äbc", ValueError),
        # Beyond the decimal context's precision: quantize raised InvalidOperation.
        ("1e30", "EUR", ValueError),
    ],
)
def test_bad_payments_are_rejected_and_write_nothing(amount, currency, error):
    authorized = len(gateway.authorizations)
    with pytest.raises(error):
        authorize_payment(amount=amount, currency=currency)
    assert not Payment.objects.exists()
    assert not ScheduledJob.objects.exists()
    assert len(gateway.authorizations) == authorized  # no hold on the card


def test_a_validity_past_the_last_date_is_refused_before_the_card_is_held():
    authorized = len(gateway.authorizations)
    with pytest.raises(ValueError, match="valid_for"):
        authorize_payment(amount="1.00", currency="EUR", valid_for=timedelta(days=2_930_000))
    assert len(gateway.authorizations) == authorized
    assert not Payment.objects.exists()


def test_a_gateway_outage_on_the_capture_day_is_retried_until_the_capture_goes_through(
    monkeypatch,
):
    with freeze_time(T0):
        payment = authorize_payment(amount="8.00", currency="EUR")
    capture = gateway.capture
    calls = []

    def down_for_a_while(**kwargs):
        calls.append(kwargs)
        if len(calls) <= 12:
            raise ConnectionError("gateway unreachable")
        return capture(**kwargs)

    monkeypatch.setattr(gateway, "capture", down_for_a_while)
    # More failures than the scheduler's default attempts: the capture goes on trying
    # while the authorization holds; its deadline, not a count, ends its retries.
    with freeze_time(T0 + timedelta(days=14)):
        run_due_jobs(until=T0 + timedelta(days=20))
    payment.refresh_from_db()
    assert payment.status == Payment.Status.CAPTURED
    assert payment.capture_job.attempts == 13
    assert len(calls) == 13


def test_a_capture_job_that_ends_without_capturing_marks_the_payment_missed_until_retried(
    django_capture_on_commit_callbacks,
):
    cancelled, failed = (authorize_payment(amount="4.00", currency="EUR") for _ in range(2))
    with django_capture_on_commit_callbacks(execute=True):
        assert cancel(cancelled.capture_job_id, reason="customer asked to wait") is True
    # A capture job that failed (its workers died mid-capture, attempt after attempt).
    ScheduledJob.objects.filter(pk=failed.capture_job_id).update(
        status=ScheduledJob.Status.FAILED, attempts=F("max_attempts"), finished_at=timezone.now()
    )
    signals.job_failed.send(
        sender=ScheduledJob,
        job_id=failed.capture_job_id,
        task_name=failed.capture_job.task_name,
        error="lease expired",
    )
    run_due_jobs()  # the jobs the receivers scheduled
    for payment in (cancelled, failed):
        payment.refresh_from_db()
        assert payment.status == Payment.Status.CAPTURE_MISSED
        # The authorization still holds: an operator's retry captures it.
        retry(payment.capture_job_id, reason="captured by hand")
    run_due_jobs()
    for payment in (cancelled, failed):
        payment.refresh_from_db()
        assert payment.status == Payment.Status.CAPTURED


def test_capturing_twice_charges_once():
    payment = authorize_payment(amount="12.00", currency="EUR")
    before = len(gateway.captures)
    first = capture_payment(payment_id=payment.pk)
    second = capture_payment(payment_id=payment.pk)
    assert first.status == second.status == Payment.Status.CAPTURED
    assert first.capture_id == second.capture_id
    assert len(gateway.captures) == before + 1
    assert gateway.captures[-1].authorization_id == payment.authorization_id


def test_a_missed_capture_is_not_made_later_on_a_lapsed_authorization():
    # An operator retries the expired capture job (with a new deadline): it charged a
    # card whose authorization had lapsed, and the payment went from missed to captured.
    missed, lapsed = (authorize_payment(amount="5.00", currency="EUR") for _ in range(2))
    Payment.objects.filter(pk=missed.pk).update(
        status=Payment.Status.CAPTURE_MISSED, authorization_expires_at=timezone.now()
    )
    # Its expiry not recorded yet: the job ran past the deadline it had.
    Payment.objects.filter(pk=lapsed.pk).update(authorization_expires_at=timezone.now())
    before = len(gateway.captures)
    for payment in (missed, lapsed):
        assert capture_payment(payment_id=payment.pk).status == Payment.Status.CAPTURE_MISSED
    assert len(gateway.captures) == before


def test_a_capture_a_0_1_worker_made_before_it_was_killed_is_not_charged_again():
    # 0.1.0 sent the payment's id as the idempotency key; a capture it made, then lost
    # its commit, was retried here with the authorization's: the gateway charged again.
    payment = authorize_payment(amount="9.00", currency="EUR")
    earlier = gateway.capture(
        authorization_id=payment.authorization_id,
        amount=payment.amount,
        currency=payment.currency,
        idempotency_key=f"capture:{payment.pk}",
    )
    captured = capture_payment(payment_id=payment.pk)
    assert (captured.status, captured.capture_id) == (Payment.Status.CAPTURED, earlier.capture_id)
    assert [c for c in gateway.captures if c.authorization_id == payment.authorization_id] == [
        earlier
    ]


def test_the_gateway_honours_idempotency_keys():
    first = gateway.capture(
        authorization_id="a", amount=Decimal(1), currency="EUR", idempotency_key="k-1"
    )
    again = gateway.capture(
        authorization_id="a", amount=Decimal(1), currency="EUR", idempotency_key="k-1"
    )
    assert first == again


def test_a_capture_whose_commit_was_lost_is_not_recorded_as_missed():
    # The gateway took the money, then the attempt's commit was lost; the retry, or the
    # expiry, came after the authorization lapsed. Saying "missed" would invite a second
    # charge: the gateway's record of the capture wins.
    by_retry, by_expiry = (two_day_authorization() for _ in range(2))
    for payment in (by_retry, by_expiry):
        with freeze_time(T0 + timedelta(days=1)), pytest.raises(RuntimeError), transaction.atomic():
            capture_payment(payment_id=payment.pk)
            raise RuntimeError("the commit is lost")
    captured = {c.authorization_id: c for c in gateway.captures}
    with freeze_time(T0 + timedelta(days=3)):
        retried = capture_payment(payment_id=by_retry.pk)
        dispatching.expire_missed(now=T0 + timedelta(days=3))
        expired = mark_capture_missed(capture_job_id=by_expiry.capture_job_id)
    for payment in (retried, expired):
        payment.refresh_from_db()
        assert payment.status == Payment.Status.CAPTURED
        assert payment.capture_id == captured[payment.authorization_id].capture_id
        assert payment.captured_at == T0 + timedelta(days=3)
    assert [c.authorization_id for c in gateway.captures].count(by_retry.authorization_id) == 1


def test_a_payment_is_captured_on_its_own_authorization_after_a_sequence_reset():
    # Payment ids come back after a restore (or from a second environment on the same
    # gateway account): a capture keyed on the id was the first payment's capture.
    first = authorize_payment(amount="10.00", currency="EUR")
    capture_payment(payment_id=first.pk)
    Payment.objects.filter(pk=first.pk).delete()
    second = authorize_payment(amount="99.00", currency="EUR")
    Payment.objects.filter(pk=second.pk).update(id=first.pk)
    second = capture_payment(payment_id=first.pk)
    capture = next(c for c in gateway.captures if c.capture_id == second.capture_id)
    assert (capture.authorization_id, capture.amount) == (second.authorization_id, Decimal("99.00"))


def test_a_gateway_outage_when_a_capture_expires_stalls_nothing_and_loses_nothing(
    monkeypatch, django_capture_on_commit_callbacks
):
    # The receiver asked the gateway in the dispatcher's recovery: a gateway out of reach
    # stalled the expiry of every job, and its error left the payment authorized for good.
    payment = two_day_authorization()
    calls = []

    def unreachable(**kwargs):
        calls.append(kwargs)
        raise ConnectionError("gateway unreachable")

    monkeypatch.setattr(gateway, "capture_of", unreachable)
    with (
        freeze_time(T0 + timedelta(days=3)),
        django_capture_on_commit_callbacks(execute=True),
    ):
        assert dispatching.expire_missed(now=T0 + timedelta(days=3)) == 1
    assert calls == []
    [check] = ScheduledJob.objects.filter(task_name=MISSED_CAPTURE_TASK_NAME)
    assert check.kwargs == {"capture_job_id": payment.capture_job_id}
    # The gateway is still out when the check runs: it is retried, the payment unchanged.
    with freeze_time(T0 + timedelta(days=3, minutes=1)):
        run_due_jobs(until=T0 + timedelta(days=3, minutes=1))
    check.refresh_from_db()
    payment.refresh_from_db()
    assert (check.status, check.attempts, payment.status) == (
        ScheduledJob.Status.SCHEDULED,
        1,
        Payment.Status.AUTHORIZED,
    )
    monkeypatch.undo()
    with freeze_time(T0 + timedelta(days=4)):
        run_due_jobs(until=T0 + timedelta(days=4))
    payment.refresh_from_db()
    check.refresh_from_db()
    assert (check.status, payment.status) == (
        ScheduledJob.Status.SUCCEEDED,
        Payment.Status.CAPTURE_MISSED,
    )


def test_a_capture_job_retried_before_its_missed_check_runs_is_left_to_its_retry():
    payment = authorize_payment(amount="3.00", currency="EUR")
    cancel(payment.capture_job_id, reason="by mistake")
    # The receiver scheduled the check after the commit (run_due_jobs runs it); the
    # operator retried the capture first.
    retry(payment.capture_job_id, reason="undo", run_at=timezone.now() + timedelta(hours=1))
    assert mark_capture_missed(capture_job_id=payment.capture_job_id).status == (
        Payment.Status.AUTHORIZED
    )


def test_a_cancelled_payment_is_voided_and_no_retry_of_its_capture_charges_it(
    django_capture_on_commit_callbacks,
):
    # The demo had no way to cancel an order: cancelling the capture job left the hold
    # on the card, marked the payment missed, and an operator's bulk retry of cancelled
    # captures after an incident charged the customer.
    payment = authorize_payment(amount="7.00", currency="EUR")
    with django_capture_on_commit_callbacks(execute=True):
        cancelled = cancel_payment(payment_id=payment.pk, reason="order cancelled", actor="ops")
    assert cancelled.status == Payment.Status.CANCELLED
    assert payment.authorization_id in gateway.voids
    job = ScheduledJob.objects.get(pk=payment.capture_job_id)
    assert job.status == ScheduledJob.Status.CANCELLED
    assert job.audit_entries.get().reason == "order cancelled"
    # No check of a missed capture was scheduled: nothing was missed.
    assert not ScheduledJob.objects.filter(task_name=MISSED_CAPTURE_TASK_NAME).exists()
    before = len(gateway.captures)
    retry(payment.capture_job_id, reason="bulk retry after the incident")
    run_due_jobs()
    payment.refresh_from_db()
    assert payment.status == Payment.Status.CANCELLED
    assert len(gateway.captures) == before
    # A second cancel changes nothing; a captured payment cannot be cancelled.
    assert cancel_payment(payment_id=payment.pk).status == Payment.Status.CANCELLED
    captured = authorize_payment(amount="2.00", currency="EUR")
    capture_payment(payment_id=captured.pk)
    with pytest.raises(ValueError, match="is captured: refund it"):
        cancel_payment(payment_id=captured.pk)
    captured.refresh_from_db()
    assert captured.status == Payment.Status.CAPTURED
    assert captured.authorization_id not in gateway.voids


def test_a_void_the_gateway_refuses_leaves_the_payment_and_its_capture_as_they_were(
    monkeypatch,
):
    payment = authorize_payment(amount="7.00", currency="EUR")

    def unreachable(**kwargs):
        raise ConnectionError("gateway unreachable")

    monkeypatch.setattr(gateway, "void", unreachable)
    with pytest.raises(ConnectionError):
        cancel_payment(payment_id=payment.pk)
    payment.refresh_from_db()
    assert payment.status == Payment.Status.AUTHORIZED
    assert payment.capture_job.status == ScheduledJob.Status.SCHEDULED


def test_a_cancel_refused_before_the_void_leaves_the_hold_on_the_card():
    # The void came first: a cancel then refused (an actor the audit trail refuses)
    # left the payment authorized with its hold released, and its capture failed at the
    # gateway until its deadline.
    payment = authorize_payment(amount="7.00", currency="EUR")
    with pytest.raises(InvalidArgumentsError):
        cancel_payment(payment_id=payment.pk, actor="")
    payment.refresh_from_db()
    assert payment.status == Payment.Status.AUTHORIZED
    assert payment.authorization_id not in gateway.voids
    assert payment.capture_job.status == ScheduledJob.Status.SCHEDULED
