"""The operator's interface: schedule, find and act on jobs, and watch the scheduler.

Every change goes through :mod:`scheduler.services` (one job) or
:mod:`scheduler.admin.bulk` (the actions); the monitoring figures come from
:mod:`scheduler.admin.monitoring`.
"""

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Count, F, QuerySet, Window
from django.db.models.functions import RowNumber
from django.forms import BaseInlineFormSet, ModelForm
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.safestring import SafeString
from django.views.decorators.http import require_POST, require_safe
from typing_extensions import override

from scheduler import services, states, validation
from scheduler.admin import bulk, changelist, monitoring
from scheduler.admin.attempts import AttemptColumns
from scheduler.admin.changelist import (
    CappedCountPaginator,
    OfferedListMixin,
    QueueFilter,
    RunAtFilter,
    TaskFilter,
    search_filter,
)
from scheduler.admin.display import (
    audit_details,
    duration,
    error_line,
    status_label,
    timestamp_column,
)
from scheduler.admin.forms import (
    BulkConfirmForm,
    BulkRescheduleForm,
    BulkRetryForm,
    PauseForm,
    ReasonForm,
    RescheduleJobForm,
    RetryJobForm,
    ScheduleJobForm,
    WhenForm,
    reason_field,
)
from scheduler.admin.readonly import ONE_JOB, JobHistoryAdminMixin
from scheduler.conf import scheduler_settings
from scheduler.exceptions import (
    AlreadySubmittedError,
    InvalidArgumentsError,
    InvalidTransitionError,
    KeyContentionError,
    SchedulerError,
)
from scheduler.models import (
    WATCHED_QUEUES,
    AuditEntry,
    JobAttempt,
    Pause,
    ScheduledJob,
    covered_by_pause,
    watched_queues,
)
from scheduler.services.submissions import submit_once

logger = logging.getLogger(__name__)

#: The most of a job's arguments, as indented JSON, its page shows: they may run to
#: 256 MB, which no browser shows.
_SHOWN_JSON_LENGTH = 65_536
#: Seconds between reloads of the monitoring page.
MONITORING_REFRESH_SECONDS = 30
#: How jobs past their deadline get a new one, unless the action says otherwise.
_NEW_DEADLINE_ON_ITS_PAGE = "give each a new one on its page"
#: How ended jobs past their deadline get a new one.
_RETRY_THEM = "retry them with a new one"
#: Run now finds ended and pending jobs past their deadline; the new action takes the
#: first, a job's page the others.
_RETRY_OR_RESCHEDULE_THEM = "retry ended ones with a new one; give pending ones one on their page"
#: Why the list's actions skip jobs, in their messages (the state's reason is the action's).
_SKIPPED_BECAUSE = {
    bulk.Skip.UNIQUE_KEY: "whose unique key an active job holds",
    bulk.Skip.OUT_OF_RANGE: "that would move beyond the years 1-9999",
    bulk.Skip.CHANGED: "that an operator acted on after the list was loaded (look at them again)",
}


def _deadline_refused(error: InvalidArgumentsError, deadline: datetime | None) -> str:
    """What the deadline field says of the service's refusal of ``deadline``."""
    if deadline is not None and deadline <= timezone.now():
        return "The deadline must be in the future."  # it has passed since it was checked
    return f"Deadline {error.reason}."  # beyond the year 9999 in UTC, say


ADMIN_CSS = {"all": ("scheduler/admin.css",)}

# The admin classes are generic only in django-stubs.
if TYPE_CHECKING:
    from django.contrib.admin.options import _FieldsetSpec

    HistoryInlineBase = admin.TabularInline[Any, ScheduledJob]
    HistoryFormSetBase = BaseInlineFormSet[Any, ScheduledJob, Any]
    JobAdminBase = admin.ModelAdmin[ScheduledJob]
else:
    HistoryInlineBase = admin.TabularInline
    HistoryFormSetBase = BaseInlineFormSet
    JobAdminBase = admin.ModelAdmin


class ReasonActionForm(helpers.ActionForm):
    """The action bar, with the reason the audit trail keeps for each changed job."""

    reason = reason_field()


class HistoryFormSet(HistoryFormSetBase):
    """The rows of a job's history its page shows (the inline's queryset keeps only the
    latest), how many there are in all, and where to see them all."""

    #: The admin list of all of the job's rows, if the user may see it (set per request).
    all_rows_url: str | None = None

    @cached_property
    def rows_shown(self) -> int:
        return len(self.get_queryset())

    @cached_property
    def rows_in_all(self) -> int:
        # Every row shown carries the count: the rows' own query, no other.
        rows: QuerySet[Any] = self.get_queryset()
        return next((row.rows_in_all for row in rows), 0)

    # Django's hook that finds a posted row among the formset's (not in django-stubs).
    def _existing_object(self, pk: Any) -> Any:
        found = super()._existing_object(pk)  # type: ignore[misc]
        if found is None and self.is_bound:
            # Shown when the page was loaded, pushed out of the latest since: Django would
            # build a blank row in its place, which a page shown again with the form's
            # errors cannot display. A rare query, one for each such row.
            manager = self.model._default_manager
            found = manager.filter(**{self.fk.name: self.instance}, pk=pk).first()
        return found


class JobHistoryInline(JobHistoryAdminMixin, HistoryInlineBase):
    """The latest rows of a job's history on its page (read-only, in ``ordering``, which
    names fields oldest first), with how many there are in all and a link to them all."""

    # Each row shown posts its hidden id and job fields with the page's reschedule form:
    # with every row, a job retried many times passed DATA_UPLOAD_MAX_NUMBER_FIELDS
    # (1,000) and the reschedule was a 400, and the page was slow. Rendering every row
    # without its fields would have fixed the POST but not the page.
    #: How many rows of each history a job's page shows, the latest ones.
    shown_rows = 50
    extra = 0
    can_delete = False
    show_change_link = False
    formset = HistoryFormSet
    template = "admin/scheduler/scheduledjob/history_inline.html"

    @override
    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        """The latest ``shown_rows`` rows of each job, each with the job's number of rows,
        in one query."""
        latest_first = [F(name).desc() for name in self.get_ordering(request)]
        # Windows, so the count is of all the job's rows, not of those shown.
        latest: QuerySet[Any] = (
            super()
            .get_queryset(request)
            .annotate(
                from_latest=Window(RowNumber(), partition_by=F("job"), order_by=latest_first),
                rows_in_all=Window(Count("pk"), partition_by=F("job")),
            )
            .filter(from_latest__lte=self.shown_rows)
        )
        return latest

    @override
    def get_formset(
        self, request: HttpRequest, obj: ScheduledJob | None = None, **kwargs: Any
    ) -> "type[BaseInlineFormSet[Any, ScheduledJob, ModelForm[Any]]]":
        # The link depends on the user's permissions: a formset class of the request's own.
        link = {"all_rows_url": self._all_rows_url(request, obj)}
        kwargs["formset"] = type(self.formset.__name__, (self.formset,), link)
        return super().get_formset(request, obj, **kwargs)

    def _all_rows_url(self, request: HttpRequest, job: ScheduledJob | None) -> str | None:
        """The admin list of the job's rows, if the site has one the user may see (a
        project's own admin site may not register it)."""
        if job is None or not self.admin_site.is_registered(self.model):
            return None
        if not self.admin_site.get_model_admin(self.model).has_view_permission(request):
            return None
        opts = self.model._meta
        url = reverse(
            f"admin:{opts.app_label}_{opts.model_name}_changelist",
            current_app=self.admin_site.name,
        )
        return f"{url}?{urlencode({ONE_JOB: job.pk})}"


class JobAttemptInline(AttemptColumns, JobHistoryInline):
    """The latest attempts of a job, with their tracebacks (read-only history)."""

    model = JobAttempt
    verbose_name_plural = "attempts"
    fields = readonly_fields = AttemptColumns.columns
    # By start, not by number: each retry numbers its attempts from 1 again.
    ordering = ("started_at", "pk")


class AuditEntryInline(JobHistoryInline):
    """Who did what to the job, when and why (the audit trail, read-only)."""

    model = AuditEntry
    verbose_name = "audit entry"
    verbose_name_plural = "audit trail"
    fields = readonly_fields = ("when", "action", "actor", "reason", "what")
    ordering = ("at", "pk")

    when = timestamp_column("at", "when")

    @admin.display(description="details")
    def what(self, entry: AuditEntry) -> str:
        return audit_details(entry.details)


@admin.register(ScheduledJob)
class ScheduledJobAdmin(OfferedListMixin, JobAdminBase):
    """Jobs: schedule one, find any, act on many; read-only once a job has started."""

    list_display = (
        "id",
        "task_name",
        "status_label",
        "run_at_seconds",
        "started",
        "lateness",
        "finished",
        "attempts_of_max",
        "queue",
        "short_error",
    )
    list_display_links = ("id", "task_name")
    list_filter = ("status", TaskFilter, QueueFilter, RunAtFilter)
    date_hierarchy = "run_at"
    # The filters' and the date drill-down's: each is served by an index.
    offered_lookups = (
        "status__exact",
        TaskFilter.parameter_name,
        QueueFilter.parameter_name,
        RunAtFilter.parameter_name,
        "run_at__year",
        "run_at__month",
        "run_at__day",
    )
    # Searching is search_filter's (get_search_results); this shows the search box.
    search_fields = ("task_name", "unique_key")
    search_help_text = (
        "A job id (42 or #42), the start of a task name, or else the start of a unique key."
    )
    # Newest first, served by the primary key; a filtered list is ordered by run_at
    # instead (get_ordering), which the filters' composite indexes serve.
    ordering = ("-id",)
    # Sorting by any other column would sort millions of rows.
    sortable_by = ("id", "run_at_seconds")
    list_per_page = 50
    show_full_result_count = False
    # Facet counts are one COUNT per filter choice over the whole table.
    show_facets = admin.ShowFacets.NEVER
    actions = (
        "cancel_selected",
        "run_selected_now",
        "retry_selected",
        "retry_selected_with_deadline",
        "reschedule_selected",
    )
    action_form = ReasonActionForm
    inlines = (JobAttemptInline, AuditEntryInline)
    detail_fields = (
        "id",
        "task_name",
        "status_label",
        "run_at_seconds",
        "deadline_seconds",
        "queue",
        "attempts_of_max",
        "unique_key",
        "pretty_args",
        "pretty_kwargs",
        "created",
        "enqueued",
        "sends",
        "started",
        "lateness",
        "finished",
        "full_error",
        "updated",
    )
    change_list_template = "admin/scheduler/scheduledjob/change_list.html"
    change_form_template = "admin/scheduler/scheduledjob/change_form.html"

    run_at_seconds = timestamp_column("run_at", "run at")
    deadline_seconds = timestamp_column("deadline", "deadline")
    created = timestamp_column("created_at", "created")
    enqueued = timestamp_column("enqueued_at", "sent to SQS")
    started = timestamp_column("started_at", "started")
    finished = timestamp_column("finished_at", "finished")
    updated = timestamp_column("updated_at", "updated")

    class Media:
        css = ADMIN_CSS

    # --- permissions ------------------------------------------------------------------

    def has_change_permission(self, request: HttpRequest, obj: ScheduledJob | None = None) -> bool:
        """Change permission; a job that started or ended is read-only."""
        if obj is not None and obj.status not in states.RESCHEDULE.sources:
            return False
        return super().has_change_permission(request, obj)

    @override
    def has_delete_permission(self, request: HttpRequest, obj: ScheduledJob | None = None) -> bool:
        # Jobs are history: cancel them; retention purges finished ones.
        return False

    @override
    def history_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """A job's history is its audit trail: the services write none of Django's admin
        log, and its history page said a job operators had acted on had none. The job's
        own page, which shows the latest entries, for a user who may not see the list."""
        job = self.get_object(request, unquote(object_id))
        if job is None:  # Django's answer: back to the list, saying so
            return super().history_view(request, object_id, extra_context)
        if not self.has_view_or_change_permission(request, job):
            raise PermissionDenied
        if not self.admin_site.is_registered(AuditEntry) or not (
            self.admin_site.get_model_admin(AuditEntry).has_view_permission(request)
        ):
            return HttpResponseRedirect(
                reverse(
                    "admin:scheduler_scheduledjob_change",
                    args=[job.pk],
                    current_app=self.admin_site.name,
                )
            )
        url = reverse("admin:scheduler_auditentry_changelist", current_app=self.admin_site.name)
        return HttpResponseRedirect(f"{url}?{urlencode({ONE_JOB: job.pk})}")

    # --- list -------------------------------------------------------------------------

    @override
    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[changelist.JobChangeList]:
        return changelist.JobChangeList

    @override
    def get_ordering(self, request: HttpRequest) -> tuple[str, ...]:
        if request.GET.get("status__exact") == states.Status.SUCCEEDED:
            # The bulk of the table, in no status index: by run_at, PostgreSQL would
            # walk down past every pending job to the first one. Latest finished
            # first, or latest run first for a period that is over.
            return changelist.succeeded_listing(request.GET, now=timezone.now()).ordering
        narrowed = any(name not in ("o", "p") for name in request.GET)
        return ("-run_at", "-id") if narrowed else tuple(self.ordering or ())

    @override
    def get_paginator(
        self,
        request: HttpRequest,
        queryset: QuerySet[ScheduledJob],
        per_page: int,
        orphans: int = 0,
        allow_empty_first_page: bool = True,
    ) -> CappedCountPaginator:
        truncated = changelist.list_truncation(request.GET, now=timezone.now())
        return CappedCountPaginator(
            queryset, per_page, orphans, allow_empty_first_page, truncated=truncated
        )

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
            # Posted with an action: jobs an operator acts on after it are not shifted
            # again (BulkRescheduleForm.listed_at).
            "listed_at": timezone.now().isoformat(),
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
        return error_line(job.last_error)

    # --- detail and add ---------------------------------------------------------------

    def get_form(
        self,
        request: HttpRequest,
        obj: ScheduledJob | None = None,
        change: bool = False,
        **kwargs: Any,
    ) -> "type[ModelForm[ScheduledJob]]":
        form: type[WhenForm] = ScheduleJobForm if obj is None else RescheduleJobForm
        # The form calls the service itself, in the operator's name.
        kwargs["form"] = type(form.__name__, (form,), {"actor": _actor(request)})
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fieldsets(
        self, request: HttpRequest, obj: ScheduledJob | None = None
    ) -> "_FieldsetSpec":
        if obj is None:
            return [
                (None, {"fields": ScheduleJobForm.job_fields}),
                ("When", {"fields": WhenForm.when_fields}),
                ("Deadline and reason", {"fields": ScheduleJobForm.audit_fields}),
            ]
        details: _FieldsetSpec = [(None, {"fields": self.detail_fields})]
        if not self.has_change_permission(request, obj):
            return details
        return [*details, ("Reschedule", {"fields": RescheduleJobForm.reschedule_fields})]

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
        """Nothing written yet: the admin calls this before it validates the inlines.

        The add form has scheduled its job in ``clean()`` (a savepoint; the add page has
        no inlines); a reschedule waits for ``save_model``.
        """
        job: ScheduledJob = form.instance
        return job

    @override
    def save_model(self, request: HttpRequest, obj: ScheduledJob, form: Any, change: bool) -> None:
        """Write through the form's service, once the form and every inline are valid."""
        if form.save() is not obj:
            # The service wrote a new version; the admin's message and log describe obj.
            obj.refresh_from_db()

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        """No many-to-many to save; the read-only attempts formsets save nothing."""
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)

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
    def cancel_selected(
        self, request: HttpRequest, queryset: QuerySet[ScheduledJob]
    ) -> TemplateResponse | None:
        """Ask to be sure, then cancel the jobs."""
        return self._confirm_then(request, queryset, _CANCEL, bulk.cancel_jobs)

    @admin.action(description="Run selected jobs now", permissions=["change"])
    def run_selected_now(
        self, request: HttpRequest, queryset: QuerySet[ScheduledJob]
    ) -> TemplateResponse | None:
        """Ask to be sure, then run the jobs now: ended ones are retried too."""
        return self._confirm_then(request, queryset, _RUN_NOW, bulk.run_jobs_now)

    @admin.action(
        description="Retry selected failed, cancelled or expired jobs", permissions=["change"]
    )
    def retry_selected(
        self, request: HttpRequest, queryset: QuerySet[ScheduledJob]
    ) -> TemplateResponse | None:
        """Ask to be sure, then retry the ended jobs now."""
        return self._confirm_then(request, queryset, _RETRY, bulk.retry_jobs)

    def _confirm_then(
        self,
        request: HttpRequest,
        queryset: QuerySet[ScheduledJob],
        page: "_AskedFirst",
        act: Callable[..., bulk.BulkResult],
    ) -> TemplateResponse | None:
        """An action that asks only to be sure, on ``page``, then calls ``act``."""
        return self._ask_then_act(
            request, queryset, BulkConfirmForm, lambda _data, by: act(queryset, by=by), page
        )

    @admin.action(description="Reschedule selected jobs…", permissions=["change"])
    def reschedule_selected(
        self, request: HttpRequest, queryset: QuerySet[ScheduledJob]
    ) -> TemplateResponse | None:
        """Ask for the new time on an intermediate page, then move the jobs."""

        def move(data: dict[str, Any], by: bulk.Operator) -> bulk.BulkResult:
            if data["mode"] == BulkRescheduleForm.BY:
                return bulk.shift_jobs(
                    queryset, offset=data["offset"], by=by, unchanged_since=data["listed_at"]
                )
            return bulk.reschedule_jobs(queryset, to=data["run_at"], by=by)

        page = _AskedFirst(
            "reschedule_selected",
            "Reschedule jobs",
            "Move {}. Only scheduled and enqueued jobs move",
            "Reschedule",
            "Rescheduled",
            "not scheduled or enqueued",
            states.RESCHEDULE.sources,
        )
        return self._ask_then_act(request, queryset, BulkRescheduleForm, move, page)

    @admin.action(description="Retry selected jobs with a new deadline…", permissions=["change"])
    def retry_selected_with_deadline(
        self, request: HttpRequest, queryset: QuerySet[ScheduledJob]
    ) -> TemplateResponse | None:
        """Ask for the deadline on an intermediate page, then retry the jobs with it: jobs
        that expired while workers were down cannot be retried with their own."""

        def retry(data: dict[str, Any], by: bulk.Operator) -> bulk.BulkResult:
            return bulk.retry_jobs(queryset, deadline=data["deadline"], by=by)

        page = _AskedFirst(
            "retry_selected_with_deadline",
            "Retry jobs with a new deadline",
            "Retry {} now, each with the deadline below. Only failed, cancelled and expired "
            "jobs are retried",
            "Retry",
            "Retried",
            "not failed, cancelled or expired",
            states.RETRY.sources,
        )
        return self._ask_then_act(request, queryset, BulkRetryForm, retry, page)

    def _ask_then_act(
        self,
        request: HttpRequest,
        queryset: QuerySet[ScheduledJob],
        form_class: type[forms.Form],
        act: Callable[[dict[str, Any], bulk.Operator], bulk.BulkResult],
        page: "_AskedFirst",
    ) -> TemplateResponse | None:
        """An action that asks on an intermediate page first, then acts and reports.

        The page says how many of the selected jobs are in each status, and which the
        action takes.
        """
        form = form_class(
            request.POST if "apply" in request.POST else None,
            initial={
                "reason": request.POST.get("reason", ""),
                "listed_at": request.POST.get("listed_at"),
            },
        )
        if form.is_bound and form.is_valid():
            by = bulk.Operator(_actor(request), form.cleaned_data["reason"])
            try:
                # Moving jobs by an offset twice (a double click) moves them twice as far.
                with transaction.atomic():
                    submit_once(token=form.cleaned_data["submission"])
                    result = act(form.cleaned_data, by)
            except AlreadySubmittedError as error:
                self.message_user(request, f"No job was changed: {error}.", messages.WARNING)
                return None
            except InvalidArgumentsError as error:
                # Valid when the form was checked, not a moment later (a deadline that
                # has just passed), or beyond what the form checks (a time past year
                # 9999 in UTC): the page again, saying why.
                if error.field == "deadline":
                    deadline = form.cleaned_data.get("deadline")
                    form.add_error("deadline_local", _deadline_refused(error, deadline))
                else:
                    form.add_error(None, str(error))
            else:
                self._report(request, page.verb, result, page.not_applicable, page.new_deadline)
                return None
        selected = _selected_by_status(queryset, page.takes)
        count = sum(row.count for row in selected)
        context = {
            **self.admin_site.each_context(request),
            "title": page.title,
            "intro": page.intro.format(f"{count} selected job{'s' if count != 1 else ''}"),
            "selected": selected,
            "ended_warning": _ended_warning(selected),
            "button": page.button,
            "opts": self.opts,
            "form": form,
            "media": self.media + form.media,
            "action": page.action,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "select_across": _selects_across(request),
            # Posted back in either case: Django runs no action without one, and with
            # "select all" the list's filters choose the jobs, not these ids.
            "selected_ids": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
        }
        return TemplateResponse(request, "admin/scheduler/scheduledjob/asked_first.html", context)

    @override
    def response_action(
        self, request: HttpRequest, queryset: QuerySet[ScheduledJob]
    ) -> HttpResponse | None:
        ticked = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
        if not _selects_across(request) and any(validation.job_id_in(pk) is None for pk in ticked):
            # Only a crafted request names a job so: Django's filter by them was a 500.
            self.message_user(
                request,
                "No job was changed: the selected jobs are named by ids that are not job ids.",
                messages.ERROR,
            )
            return HttpResponseRedirect(request.get_full_path())
        refused = ReasonActionForm(request.POST).errors.get("reason")
        if refused:
            # Django would say "No action selected." for a reason its form refuses.
            self.message_user(
                request,
                f"No job was changed: reason: {' '.join(map(str, refused))}",
                messages.ERROR,
            )
            return HttpResponseRedirect(request.get_full_path())
        try:
            return self._response_action(request, queryset)
        except KeyContentionError as error:
            self.message_user(request, f"No job was changed: {error}. Try again.", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def _response_action(
        self, request: HttpRequest, queryset: QuerySet[ScheduledJob]
    ) -> HttpResponse | None:
        if not _selects_across(request):
            # Ticked jobs are acted on by id: one the dispatcher moved on since the list
            # was shown (scheduled, now enqueued) must not fall out of its filters.
            return super().response_action(request, self.get_queryset(request))
        paginator = self.get_paginator(request, queryset, self.list_per_page)
        if paginator.is_capped:
            # The list said "more than COUNT_LIMIT", or that it drew from the first keys
            # a search found: one request must not act on millions, nor on some of them.
            narrow = (
                paginator.truncated.refused
                if paginator.truncated
                else f"more than {changelist.COUNT_LIMIT} jobs match: narrow the list with "
                "its filters"
            )
            self.message_user(
                request,
                f"{narrow[0].upper()}{narrow[1:]}, or select jobs on this page. "
                "No job was changed.",
                messages.ERROR,
            )
            return HttpResponseRedirect(request.get_full_path())
        # Every job the filters match now, and every one the page showed: a shown job the
        # dispatcher moved on meanwhile (scheduled, now enqueued) was meant too.
        shown = [
            job_id
            for posted in request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
            if (job_id := validation.job_id_in(posted)) is not None
        ]
        return super().response_action(
            request, queryset | self.get_queryset(request).filter(pk__in=shown)
        )

    def _report(
        self,
        request: HttpRequest,
        verb: str,
        result: bulk.BulkResult,
        not_applicable: str,
        new_deadline: str,
    ) -> None:
        """``verb`` N jobs; skipped M, by reason (``not_applicable``: the state's;
        ``new_deadline``: how jobs past their deadline get one)."""
        message = f"{verb} {result.changed} job{'s' if result.changed != 1 else ''}"
        why = {
            **_SKIPPED_BECAUSE,
            bulk.Skip.STATE: not_applicable,
            bulk.Skip.DEADLINE: f"past their deadline ({new_deadline})",
        }
        reasons = [(result.skipped[each], why[each]) for each in bulk.Skip if result.skipped[each]]
        if len(reasons) == 1:
            message += "; skipped {} {}".format(*reasons[0])
        elif reasons:
            listed = ", ".join(f"{count} {reason}" for count, reason in reasons)
            message += f"; skipped {result.skipped.total()}: {listed}"
        level = messages.SUCCESS if result.changed else messages.WARNING
        self.message_user(request, f"{message}.", level)
        held = (
            # Those it moved: not the queryset, whose filter (failed, say) they left.
            ScheduledJob.objects.filter(
                covered_by_pause(), pk__in=result.changed_ids, status=states.Status.SCHEDULED
            ).count()
            if result.changed and Pause.objects.exists()
            else 0
        )
        if held:
            # Run now, retried, rescheduled: not while the pause lasts. Say so, not only
            # what was done.
            self.message_user(
                request,
                f"{held} of them {'is' if held == 1 else 'are'} of a paused kind and "
                f"{'starts' if held == 1 else 'start'} only once the pause is lifted "
                "(see Monitoring).",
                messages.WARNING,
            )

    # --- monitoring and operations -----------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        urls = [
            path(
                "monitoring/",
                view(require_safe(self.monitoring_view)),
                name="scheduler_scheduledjob_monitoring",
            ),
            path("pause/", view(require_POST(self.pause_view)), name="scheduler_pause"),
            path(
                "pause/<int:pause_id>/resume/",
                view(require_POST(self.resume_view)),
                name="scheduler_resume",
            ),
            path(
                "<int:job_id>/retry/",
                view(require_POST(self.retry_job_view)),
                name="scheduler_scheduledjob_retry",
            ),
            path(
                "<int:job_id>/resend/",
                view(require_POST(self.resend_job_view)),
                name="scheduler_scheduledjob_resend",
            ),
        ]
        return [*urls, *super().get_urls()]

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
            "lateness_buckets": [label for label, _ in monitoring.LATENESS_BUCKETS],
            "watched_queues": WATCHED_QUEUES,
            "refresh_seconds": MONITORING_REFRESH_SECONDS,
            "overdue_url": f"{changelist_url}?run_at={RunAtFilter.OVERDUE}",
            "changelist_url": changelist_url,
            "can_operate": self._may_operate(request),
            "pause_form": PauseForm(),
        }
        return TemplateResponse(request, "admin/scheduler/scheduledjob/monitoring.html", context)

    def pause_view(self, request: HttpRequest) -> HttpResponse:
        """Pause a kind of job (from the monitoring page)."""

        def pause(data: dict[str, Any], who: bulk.Who) -> str:
            paused = services.pause(data["task"] or None, data["queue"] or None, **who)
            queue, default = data["queue"], scheduler_settings.QUEUE_NAME
            # Pausing a queue ahead of its first job is allowed; a misspelt one pauses
            # nothing while the real queue's jobs go on.
            if queue and queue != default and not ScheduledJob.objects.filter(queue=queue).exists():
                self.message_user(
                    request,
                    f"No job has been on queue {queue}: check its name. Jobs are on queues "
                    f"{', '.join(watched_queues(default=default))}.",
                    messages.WARNING,
                )
            return f"Paused {_kind(paused)}: none of its jobs starts until it is resumed."

        return self._operate(request, PauseForm, pause, _monitoring_url())

    def resume_view(self, request: HttpRequest, pause_id: int) -> HttpResponse:
        """Lift one pause (from the monitoring page); its held jobs run, oldest first."""
        paused = Pause.objects.filter(pk=pause_id).first()
        if paused is None:
            if not self._may_operate(request):
                raise PermissionDenied
            # Another operator lifted it since this page was loaded (it reloads every
            # MONITORING_REFRESH_SECONDS): say so, not "Not Found".
            self.message_user(
                request,
                "That pause was lifted already, after the page was loaded: nothing was changed.",
                messages.WARNING,
            )
            return HttpResponseRedirect(_monitoring_url())

        def resume(_data: dict[str, Any], who: bulk.Who) -> str:
            services.resume(paused.task_name or None, paused.queue or None, **who)
            return f"Resumed {_kind(paused)}: its held jobs run once each, oldest first."

        return self._operate(request, ReasonForm, resume, _monitoring_url())

    def retry_job_view(self, request: HttpRequest, job_id: int) -> HttpResponse:
        """Run an ended job again (from its page), optionally with a new deadline."""

        def retry(data: dict[str, Any], who: bulk.Who) -> str:
            services.retry(job_id, data["run_at"], deadline=data["deadline"], **who)
            return f"Job #{job_id} is scheduled again."

        return self._operate(request, RetryJobForm, retry, _change_url(job_id))

    def resend_job_view(self, request: HttpRequest, job_id: int) -> HttpResponse:
        """Have the dispatcher re-send an enqueued job's message (same token)."""

        def resend(_data: dict[str, Any], who: bulk.Who) -> str:
            services.resend(job_id, **who)
            return (
                f"Job #{job_id}'s message will be sent again at the dispatcher's next tick, "
                "with the same token."
            )

        return self._operate(request, ReasonForm, resend, _change_url(job_id))

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """Add or view a job; a service's refusal becomes a message, not an error page.

        A job's page also offers what its status allows: retry (with a new deadline)
        for an ended job, re-sending its message for an enqueued one.
        """
        context = dict(extra_context or {})
        job_number = None if object_id is None else validation.job_id_in(object_id)
        if job_number is not None and self._may_operate(request):
            status = (
                ScheduledJob.objects.filter(pk=job_number).values_list("status", flat=True).first()
            )
            # Ids of their own: the page's main form has a reason, a run time and a
            # deadline too, and a label must name its own form's field.
            context.update(
                retry_form=(
                    RetryJobForm(auto_id="retry_%s") if status in states.RETRY.sources else None
                ),
                resend_form=(
                    ReasonForm(auto_id="resend_%s") if status in states.RESEND.sources else None
                ),
            )
        try:
            return super().changeform_view(request, object_id, form_url, context)
        except PermissionDenied:
            if request.method != "POST" or job_number is None or not self._may_operate(request):
                raise
            # The job started or ended since the page was loaded (it is read-only now):
            # a 403 page would say the operator lacks a permission.
            moved_on = ScheduledJob.objects.filter(pk=job_number).values_list("status", flat=True)
            error: SchedulerError = InvalidTransitionError(
                job_id=job_number,
                action="reschedule",
                status=str(moved_on.first()),
                allowed=states.RESCHEDULE.sources,
            )
        except SchedulerError as refusal:
            # The job moved on, or its unique key was taken, after the form was checked;
            # the admin's transaction rolled back, so nothing was written.
            error = refusal
        logger.info("admin change refused job_id=%s reason=%s", object_id, error)
        self.message_user(request, str(error), messages.ERROR)
        return HttpResponseRedirect(request.get_full_path())

    def _may_operate(self, request: HttpRequest) -> bool:
        # The model-wide permission: the job-level one is False once a job has started.
        return super().has_change_permission(request)

    def _operate(
        self,
        request: HttpRequest,
        form_class: type[forms.Form],
        operation: Callable[[dict[str, Any], bulk.Who], str],
        redirect_to: str,
    ) -> HttpResponse:
        """Run ``operation`` on the posted form's data, in the user's name and with the
        reason typed; its outcome becomes a message."""
        if not self._may_operate(request):
            raise PermissionDenied
        form = form_class(request.POST)
        if not form.is_valid():
            # A field without a label of its own (the time zone's) has its name's.
            problems = [
                f"{form[name].label if name in form.fields else ''}: "
                + " ".join(str(error) for error in errors)
                for name, errors in form.errors.items()
            ]
            self.message_user(request, " ".join(problems), messages.ERROR)
        else:
            try:
                who = bulk.Operator(_actor(request), form.cleaned_data["reason"]).who
                done = operation(form.cleaned_data, who)
            except SchedulerError as error:
                self.message_user(request, str(error), messages.ERROR)
            else:
                self.message_user(request, done, messages.SUCCESS)
        return HttpResponseRedirect(redirect_to)


def _selects_across(request: HttpRequest) -> bool:
    """Whether an action is for every job the list's filters match ("select all"), read
    as Django's action form reads it: any value but none, "0" or "false"."""
    return bool(forms.BooleanField(required=False).clean(request.POST.get("select_across")))


def _kind(paused: Pause) -> str:
    return services.pausing.describe(paused.task_name, paused.queue)


def _actor(request: HttpRequest) -> str:
    return request.user.get_username()


@dataclass(frozen=True)
class _AskedFirst:
    """The intermediate page of an action that asks before it acts."""

    #: The action's name, posted back with the answer.
    action: str
    title: str
    #: What the action does, "{}" standing for the selected jobs; the page goes on
    #: "; the others are skipped and counted."
    intro: str
    button: str
    #: The report's verb, and what a job it skipped for its state was not.
    verb: str
    not_applicable: str
    #: The statuses of the jobs it acts on.
    takes: tuple[str, ...]
    #: How jobs it skipped past their deadline get a new one, in the report.
    new_deadline: str = _NEW_DEADLINE_ON_ITS_PAGE


_CANCEL = _AskedFirst(
    "cancel_selected",
    "Cancel jobs",
    "Cancel {}. Only scheduled and enqueued jobs are cancelled",
    "Cancel jobs",
    "Cancelled",
    "not scheduled or enqueued",
    states.CANCEL.sources,
)
_RUN_NOW = _AskedFirst(
    "run_selected_now",
    "Run jobs now",
    "Run {} now: scheduled and enqueued jobs are moved to now, and failed, cancelled "
    "and expired ones retried",
    "Run now",
    "Set to run now",
    "running or succeeded",
    (*states.RESCHEDULE.sources, *states.RETRY.sources),
    _RETRY_OR_RESCHEDULE_THEM,
)
_RETRY = _AskedFirst(
    "retry_selected",
    "Retry jobs",
    "Retry {} now. Only failed, cancelled and expired jobs are retried",
    "Retry",
    "Retried",
    "not failed, cancelled or expired",
    states.RETRY.sources,
    _RETRY_THEM,
)


@dataclass(frozen=True)
class _SelectedStatus:
    """How many of the selected jobs are in a status, and whether the action takes them."""

    status: str
    label: str
    count: int
    taken: bool


def _selected_by_status(
    jobs: QuerySet[ScheduledJob], takes: tuple[str, ...]
) -> list[_SelectedStatus]:
    """How many of ``jobs`` are in each status, in the statuses' order (one GROUP BY)."""
    counts = dict(jobs.order_by().values_list("status").annotate(Count("pk")))
    return [
        _SelectedStatus(status.value, status.label, counts[status.value], status in takes)
        for status in states.Status
        if counts.get(status.value)
    ]


def _ended_warning(selected: list[_SelectedStatus]) -> str:
    """The warning of an action that runs ended jobs again, if any are selected: run now
    takes them as well as the pending ones."""
    ended = [row for row in selected if row.taken and row.status in states.RETRY.sources]
    count = sum(row.count for row in ended)
    if not count:
        return ""
    kinds = ", ".join(f"{row.count} {row.label.lower()}" for row in ended)
    if count == 1:
        return f"1 of the selected jobs has ended ({kinds}): it runs again, from its first attempt."
    return (
        f"{count} of the selected jobs have ended ({kinds}): they run again, from their "
        "first attempt."
    )


def _monitoring_url() -> str:
    return reverse("admin:scheduler_scheduledjob_monitoring")


def _change_url(job_id: int) -> str:
    return reverse("admin:scheduler_scheduledjob_change", args=[job_id])


def _pretty_json(value: Any) -> SafeString:
    """``value`` as indented JSON, its start only past :data:`_SHOWN_JSON_LENGTH`."""
    text = json.dumps(value, indent=2, ensure_ascii=False)
    if len(text) > _SHOWN_JSON_LENGTH:
        more = len(text) - _SHOWN_JSON_LENGTH
        text = f"{text[:_SHOWN_JSON_LENGTH]}\n… and {more:,} more characters"
    return format_html('<pre class="job-json">{}</pre>', text)
