"""A payment whose capture is a long-delay job."""

from django.db import models
from django.db.models import Q
from django.utils import timezone

from scheduler.models import ScheduledJob


class PaymentStatus(models.TextChoices):
    """Where a payment is: authorized, then captured (or its capture missed), unless it
    was cancelled first."""

    AUTHORIZED = "authorized", "Authorized"
    CAPTURED = "captured", "Captured"
    #: The capture job ended without capturing (the authorization lapsed first, or the
    #: job failed or was cancelled): the money was not collected. While the
    #: authorization holds, an operator's retry of the job still captures it.
    CAPTURE_MISSED = "capture_missed", "Capture missed"
    #: The order was cancelled before its capture: the authorization was voided (the
    #: hold on the card released), and the capture job cancelled; no retry captures it.
    CANCELLED = "cancelled", "Cancelled"


class Payment(models.Model):
    """An authorized card payment, captured later by a scheduled job."""

    Status = PaymentStatus

    amount = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.AUTHORIZED)
    authorization_id = models.CharField(max_length=64, unique=True)
    capture_id = models.CharField(max_length=64, blank=True, default="")
    capture_job = models.OneToOneField(
        ScheduledJob, on_delete=models.SET_NULL, null=True, blank=True, related_name="payment"
    )
    authorized_at = models.DateTimeField(default=timezone.now)
    # The card network releases the hold then; a capture after it would be refused.
    authorization_expires_at = models.DateTimeField()
    captured_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-authorized_at"]
        indexes = [
            # The admin's list, newest first, and filtered by status.
            models.Index(fields=["authorized_at"], name="payments_authorized_at_idx"),
            models.Index(fields=["status", "authorized_at"], name="payments_status_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="payments_amount_positive"),
            models.CheckConstraint(
                condition=Q(status__in=list(PaymentStatus)),
                name="payments_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(authorization_expires_at__gt=models.F("authorized_at")),
                name="payments_authorization_expires_after_it_starts",
            ),
            models.CheckConstraint(
                condition=~Q(status="captured")
                | (Q(captured_at__isnull=False) & ~Q(capture_id="")),
                name="payments_captured_has_capture",
            ),
        ]

    def __str__(self) -> str:
        return f"Payment #{self.pk} {self.amount} {self.currency} ({self.status})"
