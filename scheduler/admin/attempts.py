"""Attempts as a list of their own: a job's page shows only its latest ones, and links here."""

from typing import TYPE_CHECKING

from django.contrib import admin
from django.utils.html import format_html
from django.utils.safestring import SafeString

from scheduler.admin.changelist import CappedCountPaginator, OfferedListMixin, OlderThanFilter
from scheduler.admin.display import duration, error_line, link_to_job, timestamp_column
from scheduler.admin.readonly import ONE_JOB, JobHistoryAdminMixin, NewestFirstAdminMixin
from scheduler.models import JobAttempt

# ModelAdmin is generic only in django-stubs.
if TYPE_CHECKING:
    AttemptAdminBase = admin.ModelAdmin[JobAttempt]
else:
    AttemptAdminBase = admin.ModelAdmin


class AttemptColumns:
    """An attempt's columns, the same on a job's page and in the list of attempts."""

    columns = (
        "number",
        "outcome",
        "due",
        "started",
        "attempt_lateness",
        "finished",
        "worker",
        "traceback",
    )

    due = timestamp_column("scheduled_for", "due at")
    started = timestamp_column("started_at", "started")
    finished = timestamp_column("finished_at", "finished")

    @admin.display(description="late by")
    def attempt_lateness(self, attempt: JobAttempt) -> str:
        return duration(attempt.started_at - attempt.scheduled_for)

    @admin.display(description="traceback")
    def traceback(self, attempt: JobAttempt) -> SafeString | str:
        if not attempt.error:
            return "-"
        return format_html(
            '<details class="job-traceback"><summary>{}</summary><pre>{}</pre></details>',
            error_line(attempt.error),
            attempt.error,
        )


@admin.register(JobAttempt)
class JobAttemptAdmin(
    AttemptColumns, OfferedListMixin, NewestFirstAdminMixin, JobHistoryAdminMixin, AttemptAdminBase
):
    """Every attempt, newest first; a job's page links here filtered by its id
    (``?job__id__exact=42``) for the attempts it does not show."""

    list_display = ("job_link", *AttemptColumns.columns)
    # Not the job's column: it links to the job.
    list_display_links = ("number",)
    fields = readonly_fields = list_display
    sortable_by = ()
    # Older than an attempt: the footer's way past the attempts the capped count reaches.
    list_filter = (OlderThanFilter,)
    # That filter's, and a job's attempts (its page's link).
    offered_lookups = (OlderThanFilter.parameter_name, ONE_JOB)
    # "Show counts" would count every attempt older than the one chosen, uncapped.
    show_facets = admin.ShowFacets.NEVER
    paginator = CappedCountPaginator
    show_full_result_count = False

    @admin.display(description="job")
    def job_link(self, attempt: JobAttempt) -> SafeString | str:
        return link_to_job(attempt.job_id)
