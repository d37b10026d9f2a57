"""The audit trail as a list of its own: every operator action, with or without a job."""

from typing import TYPE_CHECKING

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.safestring import SafeString
from typing_extensions import override

from scheduler.admin.changelist import CappedCountPaginator, OfferedListMixin, OlderThanFilter
from scheduler.admin.display import audit_details, link_to_job, timestamp_column
from scheduler.admin.readonly import ONE_JOB, NewestFirstAdminMixin, ReadOnlyAdminMixin
from scheduler.models import AuditEntry

# ModelAdmin is generic only in django-stubs.
if TYPE_CHECKING:
    AuditAdminBase = admin.ModelAdmin[AuditEntry]
else:
    AuditAdminBase = admin.ModelAdmin


@admin.register(AuditEntry)
class AuditEntryAdmin(OfferedListMixin, NewestFirstAdminMixin, ReadOnlyAdminMixin, AuditAdminBase):
    """Read-only: entries are written by the services, with the actions they record."""

    list_display = ("when", "action", "actor", "reason", "job_link", "what")
    # By action, newest first: the (action, id) index serves it. Older than an entry:
    # the footer's way past the entries the capped count reaches.
    list_filter = ("action", OlderThanFilter)
    # One COUNT per action over the whole trail, uncapped, on every page after it.
    show_facets = admin.ShowFacets.NEVER
    # Searched as one name (get_search_results), not word by word.
    search_fields = ("=actor",)
    sortable_by = ()
    # The filters', and a job's entries (its page's link).
    offered_lookups = ("action__exact", OlderThanFilter.parameter_name, ONE_JOB)
    paginator = CappedCountPaginator
    show_full_result_count = False
    fields = readonly_fields = ("when", "action", "actor", "reason", "job_link", "what")

    when = timestamp_column("at", "when")

    @override
    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[AuditEntry], search_term: str
    ) -> tuple[QuerySet[AuditEntry], bool]:
        """The entries of the actor named, in any case: Django would split the search into
        words, each of which had to be the whole name ("Payments Service" found none)."""
        if not search_term.strip():
            return queryset, False
        return queryset.filter(actor__iexact=search_term.strip()), False

    @admin.display(description="details")
    def what(self, entry: AuditEntry) -> str:
        return audit_details(entry.details)

    @admin.display(description="job")
    def job_link(self, entry: AuditEntry) -> SafeString | str:
        return link_to_job(entry.job_id)
