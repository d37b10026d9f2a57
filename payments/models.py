"""A payment whose capture is a long-delay job."""

from django.db import models
from django.db.models import Q
from django.utils import timezone

from scheduler.models import ScheduledJob


class Payment(models.Model):
    """An authorized card payment, captured later by a scheduled job."""

    class Status(models.TextChoices):
        AUTHORIZED = "authorized", "Authorized"
        CAPTURED = "captured", "Captured"

    amount = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.AUTHORIZED)
    authorization_id = models.CharField(max_length=64, unique=True)
    capture_id = models.CharField(max_length=64, blank=True, default="")
    capture_job = models.OneToOneField(
        ScheduledJob, on_delete=models.SET_NULL, null=True, blank=True, related_name="payment"
    )
    authorized_at = models.DateTimeField(default=timezone.now)
    captured_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-authorized_at"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="payments_amount_positive"),
            models.CheckConstraint(
                condition=Q(status__in=["authorized", "captured"]), name="payments_status_valid"
            ),
            models.CheckConstraint(
                condition=~Q(status="captured")
                | (Q(captured_at__isnull=False) & ~Q(capture_id="")),
                name="payments_captured_has_capture",
            ),
        ]

    def __str__(self) -> str:
        return f"Payment #{self.pk} {self.amount} {self.currency} ({self.status})"
