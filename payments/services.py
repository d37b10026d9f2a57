"""Payment services: authorize now, capture later through the scheduler."""

import contextlib
import logging
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

from django.db import connection, transaction
from django.db.models import CharField, Exists, OuterRef, QuerySet, Value
from django.db.models.functions import Cast, Concat
from django.utils import timezone

from payments.gateway import Capture, gateway
from payments.models import Payment
from scheduler import JobSpec, cancel, schedule_at, schedule_many, states
from scheduler.exceptions import DuplicateJobError, InvalidTransitionError
from scheduler.models import ScheduledJob

logger = logging.getLogger(__name__)

DEFAULT_CAPTURE_DELAY = timedelta(days=14)
#: How long the demo's authorizations hold the money. A card-not-present authorization
#: usually lasts about 7 days; capturing 14 days out needs an extended authorization,
#: which card networks keep for about 30 days (some merchant categories only).
STANDARD_AUTHORIZATION_VALIDITY = timedelta(days=7)
EXTENDED_AUTHORIZATION_VALIDITY = timedelta(days=30)
CAPTURE_TASK_NAME = "payments.capture_payment"
MISSED_CAPTURE_TASK_NAME = "payments.record_missed_capture"
#: A capture's attempts. Its deadline (the authorization's expiry), not a count, should
#: end its retries: at the scheduler's back-off (doubling, capped at 6 hours by
#: default) a thousand attempts outlast any authorization, so a gateway outage on the
#: capture day delays the capture and does not lose it.
CAPTURE_MAX_ATTEMPTS = 1000
SWEEP_TASK_NAME = "payments.record_missed_captures"
#: The start of the unique key of a capture job's missed-capture job: one at a time.
MISSED_CAPTURE_KEY_PREFIX = "payments:missed-capture:"
#: How far back the sweep looks for capture jobs that ended badly: run every 5 minutes,
#: it finds what a day's stop of beat or the workers left; further by hand.
MISSED_CAPTURE_SWEEP_LOOKBACK = timedelta(days=1)
#: Ends this recent are left to their receivers' jobs, on their way.
MISSED_CAPTURE_SWEEP_GRACE = timedelta(minutes=1)
#: Missed-capture jobs a sweep schedules at most, in one INSERT; the next sweep goes on.
MISSED_CAPTURE_SWEEP_BATCH = 1000


def authorize_payment(
    *,
    amount: Decimal | str | int,
    currency: str,
    capture_in: timedelta | None = None,
    valid_for: timedelta = EXTENDED_AUTHORIZATION_VALIDITY,
) -> Payment:
    """Authorize a payment and, in the same transaction, schedule its capture.

    The authorization holds the money for ``valid_for`` (an extended authorization, 30
    days, by default). The capture runs ``capture_in`` from now (14 days by default),
    with the authorization's expiry as its deadline, and is retried until then: a
    capture that could not be made by then never runs, and the payment becomes
    ``capture_missed`` (as when its job fails or is cancelled). If the caller's
    transaction rolls back, neither the payment nor its capture job exists; the
    gateway's hold on the card stays until it lapses (a real integration voids it).
    """
    amount = _amount(amount)
    currency = _currency(currency)
    capture_in = DEFAULT_CAPTURE_DELAY if capture_in is None else capture_in
    for name, value in (("capture_in", capture_in), ("valid_for", valid_for)):
        if not isinstance(value, timedelta):
            raise TypeError(f"{name} must be a timedelta, got {value!r}")
    if not timedelta(0) <= capture_in < valid_for:
        raise ValueError(
            f"capture_in ({capture_in}) must be at least 0 and less than the authorization's "
            f"validity ({valid_for}), or the capture could never run"
        )
    now = timezone.now()
    try:
        expires_at = now + valid_for
    except OverflowError:
        raise ValueError(f"valid_for ({valid_for}) ends past the last date") from None
    with transaction.atomic():
        payment = Payment.objects.create(
            amount=amount,
            currency=currency,
            authorization_id=gateway.authorize(amount=amount, currency=currency),
            authorized_at=now,
            authorization_expires_at=expires_at,
        )
        payment.capture_job = schedule_at(
            CAPTURE_TASK_NAME,
            now + capture_in,
            kwargs={"payment_id": payment.pk},
            unique_key=f"payments:capture:{payment.pk}",
            deadline=payment.authorization_expires_at,
            max_attempts=CAPTURE_MAX_ATTEMPTS,
        )
        payment.save(update_fields=["capture_job"])
    logger.info(
        "payment authorized payment_id=%s amount=%s currency=%s capture_job_id=%s "
        "authorization_expires_at=%s",
        payment.pk,
        amount,
        currency,
        payment.capture_job.pk,
        payment.authorization_expires_at.isoformat(),
    )
    return payment


def capture_payment(*, payment_id: int) -> Payment:
    """Capture an authorized payment; a second call changes nothing.

    The payment row is locked and its state checked, and the gateway gets an
    idempotency key (the authorization's), so a retry after a crash cannot charge
    twice. A payment whose authorization lapsed is left uncaptured, whoever retries its
    capture job; one whose capture job failed or was cancelled while the authorization
    holds (marked missed) is captured by an operator's retry of the job.
    """
    with transaction.atomic():
        payment = Payment.objects.select_for_update().get(pk=payment_id)
        if payment.status == Payment.Status.CAPTURED:
            logger.info("payment already captured payment_id=%s", payment_id)
            return payment
        if payment.status == Payment.Status.CANCELLED:
            # Whoever retries its capture job (an operator's bulk retry after an incident).
            logger.warning("payment capture refused payment_id=%s status=cancelled", payment_id)
            return payment
        if payment.authorization_expires_at <= timezone.now():
            if payment.status == Payment.Status.AUTHORIZED:
                # Its job ran past the deadline it had (an operator's retry, or a retry
                # after an attempt whose commit was lost): the money is no longer held.
                return _capture_missed(payment)
            logger.warning(
                "payment capture refused payment_id=%s status=%s authorization_expires_at=%s",
                payment_id,
                payment.status,
                payment.authorization_expires_at.isoformat(),
            )
            return payment
        # A capture an attempt made before its commit was lost is recorded as it is: one
        # made by 0.1.0, whose key was the payment's id, the key would not find.
        capture = gateway.capture_of(authorization_id=payment.authorization_id) or gateway.capture(
            authorization_id=payment.authorization_id,
            amount=payment.amount,
            currency=payment.currency,
            # Not the payment's id, which a restored database gives out again.
            idempotency_key=f"capture:{payment.authorization_id}",
        )
        _record_capture(payment, capture)
    return payment


def cancel_payment(*, payment_id: int, reason: str = "", actor: str | None = None) -> Payment:
    """Cancel a payment before its capture: cancel the capture job and void the
    authorization (the hold on the card is released), in one transaction; a second call
    changes nothing.

    A captured payment is refused (refund it instead): ``ValueError``. The payment row is
    locked first, so a capture running now finishes before (and the cancel is refused),
    or finds the payment cancelled and captures nothing, whoever retries its job later.
    ``reason`` and ``actor`` go to the capture job's audit trail (checked by the job's
    cancel, which refuses them as it does). The void is the last step: whatever fails
    before it (a bad ``reason``, a lock) leaves the hold in place,
    and a void that fails rolls the rest back. A transaction of the caller's that rolls
    back after it would leave the hold released and the payment authorized: call it on
    its own.
    """
    with transaction.atomic():
        payment = Payment.objects.select_for_update().get(pk=payment_id)
        if payment.status == Payment.Status.CANCELLED:
            return payment
        if payment.status == Payment.Status.CAPTURED:
            raise ValueError(f"payment {payment_id} is captured: refund it, it cannot be cancelled")
        payment.status = Payment.Status.CANCELLED
        payment.save(update_fields=["status"])
        # A capture job running (it will find the payment cancelled) or ended already
        # cannot be cancelled, and need not be.
        if payment.capture_job_id is not None:
            with contextlib.suppress(InvalidTransitionError):
                cancel(payment.capture_job_id, reason=reason, actor=actor)
        gateway.void(authorization_id=payment.authorization_id)
    logger.info(
        "payment cancelled payment_id=%s capture_job_id=%s", payment.pk, payment.capture_job_id
    )
    return payment


def check_missed_capture(*, capture_job_id: int) -> ScheduledJob | None:
    """Schedule, to run at once, the job that records that a payment's capture job ended
    without capturing (see :func:`mark_capture_missed`); returns it, or None when no
    authorized payment has this capture job or its job is pending already.

    The receivers of the capture job's end call this, in the process that decided it
    (a worker, the dispatcher expiring jobs by the hundred, a web request cancelling
    jobs by the thousand): it only writes a row. The gateway is asked in the job, on a
    worker, retried with back-off while the gateway is out of reach. One job per
    capture job at a time (its unique key), whoever scheduled it, a receiver or
    :func:`record_missed_captures`: the job reads the payment and the capture job as
    they are when it runs, so a second would change nothing. An end that comes while
    the job runs (an operator retried the capture job, which ended again) is left to
    the sweep.
    """
    if not Payment.objects.filter(
        capture_job_id=capture_job_id, status=Payment.Status.AUTHORIZED
    ).exists():
        return None
    on_its_own = not connection.in_atomic_block
    try:
        with transaction.atomic():
            if on_its_own:
                # Its commit does not wait for the disk: that wait was most of the
                # receiver's time, paid per job in a bulk cancel's request. A job lost in a
                # database crash is found by the sweep.
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL synchronous_commit TO off")
            return _schedule_missed_capture_jobs([capture_job_id])[0]
    except DuplicateJobError:
        return None


def record_missed_captures(
    *,
    lookback: timedelta = MISSED_CAPTURE_SWEEP_LOOKBACK,
    limit: int = MISSED_CAPTURE_SWEEP_BATCH,
) -> int:
    """The sweep: schedule the missed-capture job of each authorized payment whose capture
    job ended badly (failed, cancelled, expired) in the last ``lookback`` and has none
    pending; returns how many, ``limit`` at most.

    It finds what the receivers missed: a signal not sent (an end decided in a commit
    whose answer was lost), a receiver's job lost in a crash, the receivers of a bulk
    cancel cut short with the request that ran them. Ends of the last minute are left to
    their receivers. Reads the index of jobs that ended badly, from ``lookback`` ago,
    and a payment and a unique key per job found there. Two sweeps at once schedule a
    payment's job once: the second finds its key held, schedules nothing, and the next
    sweep goes on.
    """
    now = timezone.now()
    capture_job_ids = list(
        _captures_ended_unrecorded(since=now - lookback, until=now - MISSED_CAPTURE_SWEEP_GRACE)[
            :limit
        ]
    )
    if not capture_job_ids:
        return 0
    try:
        _schedule_missed_capture_jobs(capture_job_ids)
    except DuplicateJobError as error:
        logger.info(
            "missed capture sweep left to the next one: a job was scheduled meanwhile "
            "unique_key=%s",
            error.unique_key,
        )
        return 0
    logger.warning(
        "missed captures found by the sweep count=%s capture_job_ids=%s..%s",
        len(capture_job_ids),
        capture_job_ids[0],
        capture_job_ids[-1],
    )
    return len(capture_job_ids)


def _captures_ended_unrecorded(*, since: datetime, until: datetime) -> QuerySet[ScheduledJob, int]:
    """The ids of the capture jobs that ended badly between ``since`` and ``until``, of
    authorized payments, with no missed-capture job pending; first ended first."""
    pending = ScheduledJob.objects.active().filter(
        unique_key=Concat(Value(MISSED_CAPTURE_KEY_PREFIX), Cast(OuterRef("pk"), CharField()))
    )
    return (
        ScheduledJob.objects.filter(
            # As the index of jobs that ended badly is written, so that it is read.
            status__in=list(states.ENDED_BADLY),
            finished_at__gte=since,
            finished_at__lt=until,
            task_name=CAPTURE_TASK_NAME,
            payment__status=Payment.Status.AUTHORIZED,
        )
        .filter(~Exists(pending))
        .order_by("finished_at")
        .values_list("pk", flat=True)
    )


def _schedule_missed_capture_jobs(capture_job_ids: list[int]) -> list[ScheduledJob]:
    """The missed-capture jobs of ``capture_job_ids``, due now, in one INSERT;
    DuplicateJobError if one is pending already."""
    now = timezone.now()
    return schedule_many(
        JobSpec(
            MISSED_CAPTURE_TASK_NAME,
            now,
            kwargs={"capture_job_id": capture_job_id},
            max_attempts=CAPTURE_MAX_ATTEMPTS,
            unique_key=f"{MISSED_CAPTURE_KEY_PREFIX}{capture_job_id}",
        )
        for capture_job_id in capture_job_ids
    )


def mark_capture_missed(*, capture_job_id: int) -> Payment | None:
    """Record that the capture job of a payment ended without capturing: it expired (the
    authorization lapsed), failed or was cancelled.

    Only an authorized payment whose capture job is still ended changes (a second call,
    a payment captured some other way, or one whose job an operator retried meanwhile
    is left as it is); returns the payment, or None if no payment has this job.
    """
    with transaction.atomic():
        payment = (
            Payment.objects.select_for_update(of=("self",))
            .select_related("capture_job")
            .filter(capture_job_id=capture_job_id)
            .first()
        )
        if payment is None or payment.status != Payment.Status.AUTHORIZED:
            return payment
        job = payment.capture_job
        # Ended without capturing: failed, cancelled or expired, as a retry takes it.
        if job is not None and job.status not in states.RETRY.sources:
            return payment
        return _capture_missed(payment)


def _capture_missed(payment: Payment) -> Payment:
    """Mark a locked, authorized payment missed, unless the gateway holds its capture.

    An attempt may have captured at the gateway and then lost its commit: "missed" would
    then invite a second charge, so the gateway's record is asked first.
    """
    capture = gateway.capture_of(authorization_id=payment.authorization_id)
    if capture is not None:
        _record_capture(payment, capture)
        return payment
    payment.status = Payment.Status.CAPTURE_MISSED
    payment.save(update_fields=["status"])
    logger.warning(
        "payment capture missed payment_id=%s capture_job_id=%s authorization_expires_at=%s",
        payment.pk,
        payment.capture_job_id,
        payment.authorization_expires_at.isoformat(),
    )
    return payment


def _record_capture(payment: Payment, capture: Capture) -> None:
    """Record the gateway's capture on the locked payment."""
    payment.status = Payment.Status.CAPTURED
    payment.capture_id = capture.capture_id
    payment.captured_at = timezone.now()
    payment.save(update_fields=["status", "capture_id", "captured_at"])
    logger.info("payment captured payment_id=%s capture_id=%s", payment.pk, capture.capture_id)


def _amount(amount: Decimal | str | int) -> Decimal:
    if isinstance(amount, float | bool):
        raise TypeError("amount must be a Decimal, a string or an int, not a float")
    try:
        value = Decimal(amount)
    except (InvalidOperation, TypeError, ValueError):
        raise ValueError(f"amount must be a number, got {amount!r}") from None
    if not value.is_finite() or value <= 0:
        raise ValueError(f"amount must be positive, got {amount!r}")
    # Checked before the gateway holds the money: PostgreSQL would refuse it after. And
    # before quantize, which past the decimal context's precision raises.
    column = Payment._meta.get_field("amount")
    if value >= Decimal(10) ** (column.max_digits - column.decimal_places):
        raise ValueError(f"amount must have at most {column.max_digits} digits, got {amount!r}")
    if value != value.quantize(Decimal("0.01")):
        raise ValueError(f"amount must have at most two decimals, got {amount!r}")
    return value


def _currency(currency: str) -> str:
    # ASCII letters only: "ß" upper-cases to two, "ä" to no ISO 4217 code.
    if (
        not isinstance(currency, str)
        or len(currency) != 3
        or not (currency.isascii() and currency.isalpha())
    ):
        raise ValueError(f"currency must be a three-letter ISO 4217 code, got {currency!r}")
    return currency.upper()
