"""Payments in the admin, each with its capture job's state and a link to it."""

from typing import TYPE_CHECKING

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from payments.models import Payment
from scheduler.admin.changelist import CappedCountPaginator, OfferedListMixin
from scheduler.admin.display import status_label, timestamp, timestamp_column
from scheduler.admin.readonly import ReadOnlyAdminMixin

# ModelAdmin is generic only in django-stubs.
if TYPE_CHECKING:
    PaymentAdminBase = admin.ModelAdmin[Payment]
else:
    PaymentAdminBase = admin.ModelAdmin


@admin.register(Payment)
class PaymentAdmin(OfferedListMixin, ReadOnlyAdminMixin, PaymentAdminBase):
    """Read-only: payments change through payments.services, never by hand."""

    list_display = (
        "id",
        "amount",
        "currency",
        "payment_status",
        "authorized",
        "expires",
        "capture_job_link",
        "capture_job_status",
        "capture_job_run_at",
    )
    list_filter = ("status",)
    # The filter's and the date drill-down's; any other lookup reads every payment.
    offered_lookups = (
        "status__exact",
        "authorized_at__year",
        "authorized_at__month",
        "authorized_at__day",
    )
    list_select_related = ("capture_job",)
    search_fields = ("=authorization_id", "=capture_id")
    # Newest first from an index; no count of millions of rows, no other sort.
    ordering = ("-authorized_at", "-id")
    sortable_by = ("id", "authorized")
    paginator = CappedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    date_hierarchy = "authorized_at"
    fields = readonly_fields = (
        "amount",
        "currency",
        "payment_status",
        "authorization_id",
        "authorized",
        "expires",
        "capture_id",
        "captured",
        "capture_job_link",
        "capture_job_status",
        "capture_job_run_at",
    )

    authorized = timestamp_column("authorized_at", "authorized at")
    expires = timestamp_column("authorization_expires_at", "authorization expires")
    captured = timestamp_column("captured_at", "captured at")

    class Media:
        css = {"all": ("scheduler/admin.css",)}

    def get_queryset(self, request: HttpRequest) -> QuerySet[Payment]:
        # The pages show nothing of the capture job's arguments and result (up to 256 MB).
        return (
            super()
            .get_queryset(request)
            .defer("capture_job__args", "capture_job__kwargs", "capture_job__result")
        )

    @admin.display(description="status", ordering="status")
    def payment_status(self, payment: Payment) -> SafeString:
        return status_label(payment.status, payment.get_status_display())

    @admin.display(description="capture job")
    def capture_job_link(self, payment: Payment) -> SafeString | str:
        if payment.capture_job_id is None:
            return "-"
        url = reverse("admin:scheduler_scheduledjob_change", args=[payment.capture_job_id])
        return format_html('<a href="{}">#{}</a>', url, payment.capture_job_id)

    @admin.display(description="capture status", ordering="capture_job__status")
    def capture_job_status(self, payment: Payment) -> SafeString | str:
        job = payment.capture_job
        if job is None:
            return "-"
        return status_label(job.status, job.get_status_display())

    @admin.display(description="capture at")
    def capture_job_run_at(self, payment: Payment) -> str:
        job = payment.capture_job
        return "-" if job is None else timestamp(job.run_at)
