"""The operator's interface: schedule, find and act on jobs, and watch the scheduler.

Every change goes through :mod:`scheduler.services` (one job) or
:mod:`scheduler.admin.bulk` (the actions); the monitoring figures come from
:mod:`scheduler.admin.monitoring`.
"""

import json
import logging
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.views.decorators.http import require_safe
from typing_extensions import override

from scheduler.admin import bulk, monitoring
from scheduler.admin.changelist import (
    CappedCountPaginator,
    QueueFilter,
    RunAtFilter,
    TaskFilter,
    search_filter,
)
from scheduler.admin.display import duration, status_label
from scheduler.admin.forms import BulkRescheduleForm, RescheduleJobForm, ScheduleJobForm, WhenForm
from scheduler.admin.readonly import ReadOnlyAdminMixin
from scheduler.exceptions import SchedulerError
from scheduler.models import JobAttempt, ScheduledJob

logger = logging.getLogger(__name__)

#: Seconds between reloads of the monitoring page.
MONITORING_REFRESH_SECONDS = 30
_SHORT_ERROR_LENGTH = 80

ADMIN_CSS = {"all": ("scheduler/admin.css",)}

# The admin classes are generic only in django-stubs.
if TYPE_CHECKING:
    from django.contrib.admin.options import _FieldsetSpec

    AttemptInlineBase = admin.TabularInline[JobAttempt, ScheduledJob]
    JobAdminBase = admin.ModelAdmin[ScheduledJob]
else:
    AttemptInlineBase = admin.TabularInline
    JobAdminBase = admin.ModelAdmin


class JobAttemptInline(ReadOnlyAdminMixin, AttemptInlineBase):
    """Every attempt of a job, with its traceback (read-only history)."""

    model = JobAttempt
    verbose_name_plural = "attempts"
    fields = readonly_fields = (
        "number",
        "outcome",
        "scheduled_for",
        "started_at",
        "attempt_lateness",
        "finished_at",
        "worker",
        "traceback",
    )
    extra = 0
    can_delete = False
    show_change_link = False

    @override
    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Attempts belong to the job: whoever may view the job may view them.
        return request.user.has_perm("scheduler.view_scheduledjob") or request.user.has_perm(
            "scheduler.change_scheduledjob"
        )

    @admin.display(description="late by")
    def attempt_lateness(self, attempt: JobAttempt) -> str:
        return duration(attempt.started_at - attempt.scheduled_for)

    @admin.display(description="traceback")
    def traceback(self, attempt: JobAttempt) -> SafeString | str:
        if not attempt.error:
            return "-"
        last_line = attempt.error.strip().splitlines()[-1]
        return format_html(
            '<details class="job-traceback"><summary>{}</summary><pre>{}</pre></details>',
            last_line,
            attempt.error,
        )


@admin.register(ScheduledJob)
class ScheduledJobAdmin(JobAdminBase):
    """Jobs: schedule one, find any, act on many; read-only once a job left ``scheduled``."""

    list_display = (
        "id",
        "task_name",
        "status_label",
        "run_at",
        "lateness",
        "attempts_of_max",
        "queue",
        "short_error",
    )
    list_display_links = ("id", "task_name")
    list_filter = ("status", TaskFilter, QueueFilter, RunAtFilter)
    date_hierarchy = "run_at"
    # Searching is search_filter's (get_search_results); this shows the search box.
    search_fields = ("task_name", "unique_key")
    search_help_text = "A job id, or the start of a task name or of a unique key."
    # Newest first, served by the primary key; the model's -run_at would sort every row.
    ordering = ("-id",)
    list_per_page = 50
    paginator = CappedCountPaginator
    show_full_result_count = False
    # Facet counts are one COUNT per filter choice over the whole table.
    show_facets = admin.ShowFacets.NEVER
    actions = ("cancel_selected", "run_selected_now", "retry_selected", "reschedule_selected")
    inlines = (JobAttemptInline,)
    detail_fields = (
        "id",
        "task_name",
        "status_label",
        "run_at",
        "queue",
        "attempts_of_max",
        "unique_key",
        "pretty_args",
        "pretty_kwargs",
        "created_at",
        "enqueued_at",
        "started_at",
        "lateness",
        "finished_at",
        "full_error",
        "updated_at",
    )
    change_list_template = "admin/scheduler/scheduledjob/change_list.html"

    class Media:
        css = ADMIN_CSS

    # --- permissions ------------------------------------------------------------------

    def has_change_permission(self, request: HttpRequest, obj: ScheduledJob | None = None) -> bool:
        """Change permission; a job that left ``scheduled`` is read-only."""
        if obj is not None and obj.status != ScheduledJob.Status.SCHEDULED:
            return False
        return super().has_change_permission(request, obj)

    @override
    def has_delete_permission(self, request: HttpRequest, obj: ScheduledJob | None = None) -> bool:
        # Jobs are history: cancel them; retention purges finished ones.
        return False

    # --- list -------------------------------------------------------------------------

    @override
    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[ScheduledJob], search_term: str
    ) -> tuple[QuerySet[ScheduledJob], bool]:
        if not search_term.strip():
            return queryset, False
        return queryset.filter(search_filter(search_term)), False

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """The job list; posting an action needs the change permission (403 otherwise)."""
        if request.method == "POST" and not self.has_change_permission(request):
            raise PermissionDenied
        context = {
            "monitoring_url": reverse("admin:scheduler_scheduledjob_monitoring"),
            **(extra_context or {}),
        }
        return super().changelist_view(request, context)

    @admin.display(description="status", ordering="status")
    def status_label(self, job: ScheduledJob) -> SafeString:
        return status_label(job.status, job.get_status_display())

    @admin.display(description="late by")
    def lateness(self, job: ScheduledJob) -> str:
        return duration(job.lateness)

    @admin.display(description="attempts")
    def attempts_of_max(self, job: ScheduledJob) -> str:
        return f"{job.attempts}/{job.max_attempts}"

    @admin.display(description="last error")
    def short_error(self, job: ScheduledJob) -> str:
        lines = job.last_error.strip().splitlines()
        if not lines:
            return ""
        last = lines[-1]
        return last if len(last) <= _SHORT_ERROR_LENGTH else f"{last[:_SHORT_ERROR_LENGTH]}…"

    # --- detail and add ---------------------------------------------------------------

    def get_form(
        self,
        request: HttpRequest,
        obj: ScheduledJob | None = None,
        change: bool = False,
        **kwargs: Any,
    ) -> "type[ModelForm[ScheduledJob]]":
        kwargs["form"] = ScheduleJobForm if obj is None else RescheduleJobForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fieldsets(
        self, request: HttpRequest, obj: ScheduledJob | None = None
    ) -> "_FieldsetSpec":
        if obj is None:
            return [
                (None, {"fields": ScheduleJobForm.job_fields}),
                ("When", {"fields": WhenForm.when_fields}),
            ]
        details: _FieldsetSpec = [(None, {"fields": self.detail_fields})]
        if not self.has_change_permission(request, obj):
            return details
        return [*details, ("Reschedule", {"fields": WhenForm.when_fields})]

    @override
    def get_readonly_fields(
        self, request: HttpRequest, obj: ScheduledJob | None = None
    ) -> tuple[str, ...]:
        return () if obj is None else self.detail_fields

    @override
    def get_inlines(self, request: HttpRequest, obj: ScheduledJob | None) -> list[Any]:
        return [] if obj is None else list(self.inlines)

    @override
    def save_form(self, request: HttpRequest, form: Any, change: bool) -> ScheduledJob:
        """The form writes through a service (schedule_at or reschedule)."""
        job: ScheduledJob = form.save()
        return job

    def save_model(self, request: HttpRequest, obj: ScheduledJob, form: Any, change: bool) -> None:
        """Nothing left to save: ``save_form`` went through the service."""

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        """No many-to-many to save; the read-only attempts formsets save nothing."""
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """Add or view a job; a service's refusal becomes a message, not an error page."""
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except SchedulerError as error:
            # The job moved on, or its unique key was taken, after the form was checked;
            # the admin's transaction rolled back, so nothing was written.
            logger.info("admin change refused job_id=%s reason=%s", object_id, error)
            self.message_user(request, str(error), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    @admin.display(description="arguments")
    def pretty_args(self, job: ScheduledJob) -> SafeString:
        return _pretty_json(job.args)

    @admin.display(description="keyword arguments")
    def pretty_kwargs(self, job: ScheduledJob) -> SafeString:
        return _pretty_json(job.kwargs)

    @admin.display(description="last error")
    def full_error(self, job: ScheduledJob) -> SafeString | str:
        if not job.last_error:
            return "-"
        return format_html('<pre class="job-json">{}</pre>', job.last_error)

    # --- actions ----------------------------------------------------------------------

    @admin.action(description="Cancel selected jobs", permissions=["change"])
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[ScheduledJob]) -> None:
        result = bulk.cancel_jobs(queryset)
        self._report(request, "Cancelled", result, "were not scheduled or enqueued")

    @admin.action(description="Run selected jobs now", permissions=["change"])
    def run_selected_now(self, request: HttpRequest, queryset: QuerySet[ScheduledJob]) -> None:
        result = bulk.run_jobs_now(queryset)
        self._report(request, "Set to run now", result, "were running or succeeded")

    @admin.action(description="Retry selected failed or cancelled jobs", permissions=["change"])
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[ScheduledJob]) -> None:
        result = bulk.retry_jobs(queryset)
        self._report(
            request,
            "Retried",
            result,
            "were not failed or cancelled, or whose unique key an active job holds",
        )

    @admin.action(description="Reschedule selected jobs…", permissions=["change"])
    def reschedule_selected(
        self, request: HttpRequest, queryset: QuerySet[ScheduledJob]
    ) -> TemplateResponse | None:
        """Ask for the new time on an intermediate page, then move the jobs."""
        form = BulkRescheduleForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            if form.cleaned_data["mode"] == BulkRescheduleForm.BY:
                result = bulk.shift_jobs(queryset, by=form.cleaned_data["offset"])
            else:
                result = bulk.reschedule_jobs(queryset, to=form.cleaned_data["run_at"])
            self._report(request, "Rescheduled", result, "were not scheduled or enqueued")
            return None
        select_across = request.POST.get("select_across") == "1"
        context = {
            **self.admin_site.each_context(request),
            "title": "Reschedule jobs",
            "opts": self.opts,
            "form": form,
            "media": self.media + form.media,
            "action": "reschedule_selected",
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "select_across": select_across,
            # With "select all", the list's filters choose the jobs, not their ids.
            "selected_ids": []
            if select_across
            else request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "selected_count": queryset.count(),
        }
        return TemplateResponse(request, "admin/scheduler/scheduledjob/reschedule.html", context)

    def _report(
        self, request: HttpRequest, verb: str, result: bulk.BulkResult, skipped_because: str
    ) -> None:
        message = f"{verb} {result.changed} job{'s' if result.changed != 1 else ''}"
        if result.skipped:
            message += f"; skipped {result.skipped} that {skipped_because}"
        level = messages.SUCCESS if result.changed else messages.WARNING
        self.message_user(request, f"{message}.", level)

    # --- monitoring -------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        monitoring_url = path(
            "monitoring/",
            self.admin_site.admin_view(require_safe(self.monitoring_view)),
            name="scheduler_scheduledjob_monitoring",
        )
        return [monitoring_url, *super().get_urls()]

    def monitoring_view(self, request: HttpRequest) -> TemplateResponse:
        """The scheduler's health at a glance; needs the job's view permission."""
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        changelist_url = reverse("admin:scheduler_scheduledjob_changelist")
        context = {
            **self.admin_site.each_context(request),
            "title": "Scheduler monitoring",
            "opts": self.opts,
            "media": self.media,
            "snapshot": monitoring.snapshot(),
            "refresh_seconds": MONITORING_REFRESH_SECONDS,
            "overdue_url": f"{changelist_url}?run_at={RunAtFilter.OVERDUE}",
            "changelist_url": changelist_url,
        }
        return TemplateResponse(request, "admin/scheduler/scheduledjob/monitoring.html", context)


def _pretty_json(value: Any) -> SafeString:
    return format_html(
        '<pre class="job-json">{}</pre>', json.dumps(value, indent=2, ensure_ascii=False)
    )
