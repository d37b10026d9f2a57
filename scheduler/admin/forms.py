"""Admin forms: schedule a job, or move a scheduled one, through the services.

The forms parse what the operator typed (JSON text, a local date-time); every rule about
the job itself is the service's. A form validates by calling the service in a savepoint
and showing its exceptions on the fields they name: the form can never accept what the
service refuses, and a unique key taken meanwhile is refused by the database, not by a
check that could race.
"""

import functools
import json
import sys
import uuid
import zoneinfo
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

from django import forms
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import QueryDict
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.html import escape, format_html
from django.utils.safestring import mark_safe
from typing_extensions import override

from scheduler import services
from scheduler.conf import scheduler_settings
from scheduler.exceptions import (
    DuplicateJobError,
    InvalidArgumentsError,
    SchedulerError,
    UnknownTaskError,
)
from scheduler.models import ScheduledJob
from scheduler.registry import schedulable_task_names
from scheduler.services.submissions import submit_once
from scheduler.states import Status

UNITS = {"minutes": 60, "hours": 3600, "days": 86400}
#: Far enough for any business delay, near enough that datetime arithmetic cannot overflow.
MAX_DELAY_AMOUNT = 100_000
#: A time typed for "now" is a little in the past by the time the form is sent.
PAST_TOLERANCE = timedelta(minutes=1)
REASON_MAX_LENGTH = 1000


#: Names the time zone database may hold that are no place's zone: the server's own
#: (``localtime``, from the system's copy) and tzdata's placeholder.
_NOT_A_PLACE = frozenset({"Factory", "localtime"})


@cache
def time_zone_choices() -> list[tuple[str, str]]:
    """Every IANA time zone of a place, sorted, as form choices."""
    return [(name, name) for name in sorted(zoneinfo.available_timezones() - _NOT_A_PLACE)]


class TimeZoneSelect(forms.Select):
    """Django's select for one value, its options (flat or in groups, of hashable values)
    written once per process: for some 600 time zones, Django builds a context per
    option for a template to loop over, 10 ms a field."""

    template_name = "scheduler/widgets/time_zone_select.html"

    @override
    def get_context(self, name: str, value: Any, attrs: dict[str, Any] | None) -> dict[str, Any]:
        context = forms.Widget.get_context(self, name, value, attrs)
        options = _options_html(_frozen(self.choices))
        # As Django's select: the first option of the value's, once.
        for selected in context["widget"]["value"][:1]:
            option = f'<option value="{escape(selected)}">'
            options = options.replace(option, f"{option[:-1]} selected>", 1)
        context["widget"]["options"] = mark_safe(options)  # noqa: S308 - escaped when built
        return context


_Choices = tuple[tuple[Any, Any], ...]


def _frozen(choices: Iterable[tuple[Any, Any]]) -> _Choices:
    """``choices`` as a key for :func:`_options_html`: a group's options as a tuple."""
    return tuple(
        (value, tuple(map(tuple, label)) if isinstance(label, list | tuple) else label)
        for value, label in choices
    )


@lru_cache(maxsize=8)
def _options_html(choices: _Choices) -> str:
    """The ``<option>`` elements of ``choices`` (``<optgroup>`` for a group), as Django's
    select writes them, none selected."""
    html: list[str] = []
    for value, label in choices:
        if isinstance(label, tuple):
            html.append(format_html('\n  <optgroup label="{}">', value))
            html.extend(_option_html(*option) for option in label)
            html.append("\n  </optgroup>")
        else:
            html.append(_option_html(value, label))
    return "".join(html)


def _option_html(value: Any, label: Any) -> str:
    # As Django's select, None is the empty value.
    return format_html('\n  <option value="{}">{}</option>', "" if value is None else value, label)


def admin_task_choices() -> list[tuple[str, str]]:
    """The allow-listed tasks that are registered, in the setting's order."""
    registered = set(schedulable_task_names())
    return [(name, name) for name in scheduler_settings.ADMIN_TASKS if name in registered]


def local_run_at(
    local: datetime | None,
    zone_name: str,
    *,
    soonest: str = "use “in 0 minutes” or the “Run now” action",
) -> datetime:
    """The wall-clock time ``local`` read in ``zone_name``, as an aware datetime.

    Raises ValidationError when it is missing, for a time that the zone skips or
    repeats at a daylight saving change, and for a time in the past (its message ends
    with ``soonest``, how the form runs a job as soon as possible).
    """
    run_at = local_datetime(local, zone_name)
    if run_at < timezone.now() - PAST_TOLERANCE:
        raise ValidationError(
            f"{run_at:%Y-%m-%d %H:%M} in {zone_name} is in the past; to run as soon as "
            f"possible, {soonest}.",
            code="past",
        )
    return run_at


def local_datetime(local: datetime | None, zone_name: str) -> datetime:
    """The wall-clock time ``local`` read in ``zone_name``, as an aware datetime.

    Raises ValidationError when it is missing, and for a time that the zone skips or
    repeats at a daylight saving change.
    """
    if local is None:
        raise ValidationError("Enter a date and time.", code="required")
    zone = zoneinfo.ZoneInfo(zone_name)
    wall = local.replace(tzinfo=None)
    run_at = wall.replace(tzinfo=zone)
    if run_at.utcoffset() != wall.replace(tzinfo=zone, fold=1).utcoffset():
        exists = run_at.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall
        raise ValidationError(
            f"{wall:%Y-%m-%d %H:%M} {'happens twice' if exists else 'does not exist'} in "
            f"{zone_name} (a daylight saving change); choose another time.",
            code="ambiguous_time",
        )
    return run_at


def _json_text(label: str, initial: str, help_text: str) -> forms.CharField:
    return forms.CharField(
        label=label,
        initial=initial,
        widget=forms.Textarea(attrs={"rows": 3, "class": "vLargeTextField"}),
        help_text=help_text,
    )


def _optional_text(label: str, max_length: int, help_text: str) -> forms.CharField:
    return forms.CharField(label=label, required=False, max_length=max_length, help_text=help_text)


def reason_field(*, required: bool = False) -> forms.CharField:
    """Why the operator acts; kept in the audit trail."""
    return forms.CharField(
        label="Reason",
        required=required,
        max_length=REASON_MAX_LENGTH,
        help_text="Why you do this; kept in the audit trail with your name.",
    )


def submission_field() -> forms.UUIDField:
    """A one-time form's token, new on each page (``services.submissions``): the form
    acts once, however often the page is submitted."""
    return forms.UUIDField(widget=forms.HiddenInput, initial=uuid.uuid4)


class WallClockField(forms.DateTimeField):
    """A date and time as typed, to be read in the zone the form names (see
    :func:`local_datetime`), not in the server's: a time the server's zone skips or
    repeats at a daylight saving change may well exist in the chosen one."""

    @override
    def to_python(self, value: Any) -> datetime | None:
        if isinstance(value, str) and _has_offset(value):
            # Read in the zone below, its own offset dropped, it was another instant.
            raise ValidationError(
                "Give the date and time without a UTC offset: it is read in the time zone below.",
                code="offset",
            )
        # Django makes the value aware in the current zone, refusing such times there.
        with timezone.override(UTC):
            return super().to_python(value)


def _has_offset(text: str) -> bool:
    """Whether ``text`` is an ISO date and time with a UTC offset ("Z", "+09:00")."""
    try:
        parsed = parse_datetime(text.strip())
    except ValueError:  # a day or hour out of range: the field's own error
        return False
    return parsed is not None and parsed.tzinfo is not None


def _local_datetime_field(label: str, help_text: str) -> forms.DateTimeField:
    return WallClockField(
        label=label,
        required=False,
        widget=forms.DateTimeInput(
            attrs={"type": "datetime-local", "step": 1}, format="%Y-%m-%dT%H:%M:%S"
        ),
        input_formats=["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"],
        help_text=help_text,
    )


# ModelForm is generic only in django-stubs.
if TYPE_CHECKING:
    JobModelForm = forms.ModelForm[ScheduledJob]
else:
    JobModelForm = forms.ModelForm


class BrowserTimeZoneMixin(forms.BaseForm):
    """Preselects the operator's browser time zone in the ``time_zone`` field."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["time_zone"]
        field.initial = timezone.get_current_timezone_name()
        if not self.is_bound:
            # browser-time-zone.js replaces the initial zone with the browser's; a bound
            # form keeps what the operator chose.
            field.widget.attrs["data-browser-time-zone"] = "true"


class WhenForm(BrowserTimeZoneMixin, JobModelForm):
    """When a job should run: a date-time in a chosen time zone, or in N minutes/hours/days."""

    AT, IN = "at", "in"

    when = forms.ChoiceField(
        choices=[(AT, "At a date and time"), (IN, "In a number of minutes, hours or days")],
        initial=AT,
        widget=forms.RadioSelect,
    )
    run_at_local = _local_datetime_field(
        "Date and time", "Read in the time zone below; stored in UTC."
    )
    time_zone = forms.ChoiceField(
        choices=time_zone_choices,
        widget=TimeZoneSelect,
        help_text="Your browser's time zone is filled in when the page loads.",
    )
    delay_amount = forms.IntegerField(
        label="In", required=False, min_value=0, max_value=MAX_DELAY_AMOUNT
    )
    delay_unit = forms.ChoiceField(
        label="Unit", choices=[(unit, unit) for unit in UNITS], initial="minutes"
    )

    when_fields = ("when", "run_at_local", "time_zone", "delay_amount", "delay_unit")

    class Meta:
        model = ScheduledJob
        fields: tuple[str, ...] = ()

    class Media:
        js = ("scheduler/browser-time-zone.js",)

    #: The operator's username, set by the admin on the form class it builds.
    actor: str | None = None

    @override
    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        if cleaned.get("when") != self.IN:
            _clean_local_run_at(self, cleaned)
        elif (
            delta := _amount(self, cleaned, "delay", "Enter how many minutes, hours or days.")
        ) is not None:
            cleaned["run_at"] = timezone.now() + delta
        return cleaned


class ScheduleJobForm(WhenForm):
    """Schedule an allow-listed task with JSON arguments, through ``schedule_at``."""

    #: The form field (and its label) showing each of ``schedule_at``'s arguments.
    SERVICE_FIELDS = {
        "task": ("task_name", "Task"),
        "args": ("args_json", "Arguments"),
        "kwargs": ("kwargs_json", "Keyword arguments"),
        "queue": ("queue_name", "Queue"),
        "max_attempts": ("attempts_limit", "Max attempts"),
        "unique_key": ("key", "Unique key"),
        "run_at": ("run_at_local", "Run at"),
        "deadline": ("deadline_local", "Deadline"),
        "reason": ("reason", "Reason"),
    }

    task_name = forms.ChoiceField(
        label="Task",
        choices=admin_task_choices,
        help_text="Only the tasks listed in the SCHEDULER_ADMIN_TASKS setting.",
    )
    args_json = _json_text("Arguments", "[]", 'A JSON list of positional arguments, e.g. ["a", 2].')
    kwargs_json = _json_text(
        "Keyword arguments", "{}", 'A JSON object of keyword arguments, e.g. {"payment_id": 42}.'
    )
    queue_name = _optional_text("Queue", 80, "Leave empty for the default queue.")
    attempts_limit = forms.IntegerField(
        label="Max attempts",
        required=False,
        min_value=1,
        max_value=100,
        help_text="Leave empty for the default.",
    )
    key = _optional_text("Unique key", 255, "No other active job may hold the same key.")
    deadline_local = _local_datetime_field(
        "Deadline",
        "Optional, in the time zone above: a job not started by then never starts (it "
        "expires). Leave empty for none.",
    )
    reason = reason_field()
    submission = submission_field()

    job_fields = ("task_name", "args_json", "kwargs_json", "queue_name", "attempts_limit", "key")
    audit_fields = ("deadline_local", "reason", "submission")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["attempts_limit"].widget.attrs["placeholder"] = str(
            scheduler_settings.DEFAULT_MAX_ATTEMPTS
        )
        self.fields["queue_name"].widget.attrs["placeholder"] = scheduler_settings.QUEUE_NAME

    def clean_args_json(self) -> list[Any]:
        value = _json_field(self.cleaned_data["args_json"], "Arguments")
        if not isinstance(value, list):
            raise ValidationError(
                'Arguments must be a JSON list, e.g. [] or [1, "two"].', code="not_list"
            )
        return value

    def clean_kwargs_json(self) -> dict[str, Any]:
        value = _json_field(self.cleaned_data["kwargs_json"], "Keyword arguments")
        if not isinstance(value, dict):
            raise ValidationError(
                'Keyword arguments must be a JSON object, e.g. {} or {"id": 1}.',
                code="not_object",
            )
        return value

    def clean_queue_name(self) -> str:
        queue: str = self.cleaned_data["queue_name"].strip()
        return queue

    def clean_key(self) -> str | None:
        key: str = self.cleaned_data["key"].strip()
        return key or None

    def clean(self) -> dict[str, Any]:
        """Schedule the job once every field is valid, in a savepoint.

        Success leaves the job in ``instance``; a refusal rolls the savepoint back and
        is shown on its field, so an invalid form has written nothing.
        """
        data = super().clean()
        deadline = _optional_local_datetime(self, data, "deadline_local")
        if self.errors:
            return data
        try:
            with transaction.atomic():
                submit_once(token=data["submission"])
                self.instance = services.schedule_at(
                    data["task_name"],
                    data["run_at"],
                    data["args_json"],
                    data["kwargs_json"],
                    queue=data["queue_name"],
                    max_attempts=data["attempts_limit"],
                    unique_key=data["key"],
                    deadline=deadline,
                    reason=data["reason"],
                    actor=self.actor,
                )
        except SchedulerError as error:
            self._add_service_error(error)
        return data

    def _add_service_error(self, error: SchedulerError) -> None:
        """Show a refusal of ``schedule_at`` on the field it concerns."""
        if isinstance(error, InvalidArgumentsError) and error.field in self.SERVICE_FIELDS:
            field, label = self.SERVICE_FIELDS[error.field]
            self.add_error(field, ValidationError(f"{label} {error.reason}.", code="invalid"))
        elif isinstance(error, DuplicateJobError):
            holder = f"Job #{error.holder_id}" if error.holder_id else "Another job"
            held_by = ScheduledJob.objects.filter(pk=error.holder_id or 0, status=Status.RUNNING)
            # A running job cannot be cancelled: that advice led to another refusal.
            if held_by.exists():
                advice = "it is running: wait for it to end or choose another key"
            else:
                advice = "cancel it or choose another key"
            self.add_error(
                "key",
                ValidationError(
                    f"{holder} is active with this unique key; {advice}.", code="duplicate_key"
                ),
            )
        elif isinstance(error, UnknownTaskError):
            self.add_error("task_name", ValidationError(str(error), code="unknown_task"))
        else:
            self.add_error(None, ValidationError(str(error), code="refused"))

    @override
    def save(self, commit: bool = True) -> ScheduledJob:
        """The job ``clean()`` scheduled (``commit`` is ignored: the service wrote it)."""
        return self.instance


class RescheduleJobForm(WhenForm):
    """Move a scheduled or enqueued job to another time, through ``reschedule``.

    A refusal here is about the job, not the input (it started or ended meanwhile, or
    its own deadline falls before the new time): the admin reports it as a message.
    """

    deadline_local = _local_datetime_field(
        "New deadline", "Optional, in the time zone above; empty keeps the job's deadline."
    )
    reason = reason_field()
    #: The job's times as the page showed them (a post without it, a script's, is not
    #: compared).
    seen = forms.CharField(widget=forms.HiddenInput, required=False)

    #: The fields of the job page's "Reschedule" section.
    reschedule_fields = (*WhenForm.when_fields, "deadline_local", "reason", "seen")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["seen"].initial = _times_of(self.instance)

    @override
    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        cleaned["deadline"] = _optional_local_datetime(self, cleaned, "deadline_local")
        run_at = cleaned.get("run_at")
        if cleaned["deadline"] is not None and run_at is not None and cleaned["deadline"] <= run_at:
            self.add_error("deadline_local", "The deadline must be after the new run time.")
        self._require_unchanged(cleaned.get("seen"))
        return cleaned

    def _require_unchanged(self, seen: str | None) -> None:
        """Another operator's reschedule, or a retry, since the page was loaded must not
        be overwritten unseen. The row stays locked until the admin's transaction ends,
        which also reschedules: nothing changes it in between."""
        if not seen:
            return
        now = ScheduledJob.objects.select_for_update().filter(pk=self.instance.pk).first()
        if now is None or _times_of(now) == seen:
            return
        deadline = f", deadline {now.deadline:%Y-%m-%d %H:%M:%S %Z}" if now.deadline else ""
        self.add_error(
            None,
            f"The job was changed since this page was loaded: it now runs at "
            f"{now.run_at:%Y-%m-%d %H:%M:%S %Z}{deadline} ({now.status}). Nothing was "
            "changed; submit again to reschedule it all the same.",
        )
        if isinstance(self.data, QueryDict):
            # Shown again, the page carries the job's times as they are now.
            data = self.data.copy()
            data["seen"] = _times_of(now)
            self.data = data

    @override
    def save(self, commit: bool = True) -> ScheduledJob:
        """Reschedule the job (``commit`` is ignored: the service always writes)."""
        self.instance = services.reschedule(
            self.instance,
            self.cleaned_data["run_at"],
            deadline=self.cleaned_data["deadline"],
            reason=self.cleaned_data["reason"],
            actor=self.actor,
        )
        return self.instance


def _times_of(job: ScheduledJob) -> str:
    """What an operator rescheduling ``job`` decides on: its run time and deadline."""
    deadline = job.deadline.isoformat() if job.deadline else ""
    return f"{job.run_at.isoformat() if job.run_at else ''}|{deadline}"


class BulkRescheduleForm(BrowserTimeZoneMixin, forms.Form):
    """The reschedule action's choice: to a date-time, or shifted by an offset."""

    TO, BY = "to", "by"

    mode = forms.ChoiceField(
        choices=[(TO, "To a date and time"), (BY, "By an offset from each job's run_at")],
        initial=TO,
        widget=forms.RadioSelect,
    )
    run_at_local = WhenForm.base_fields["run_at_local"]
    time_zone = WhenForm.base_fields["time_zone"]
    offset_amount = forms.IntegerField(
        label="Offset",
        required=False,
        min_value=-MAX_DELAY_AMOUNT,
        max_value=MAX_DELAY_AMOUNT,
        help_text="Negative to move jobs earlier.",
    )
    offset_unit = WhenForm.base_fields["delay_unit"]
    reason = reason_field()
    submission = submission_field()
    #: When the job list was loaded: a job an operator acted on since is not shifted (a
    #: second operator's page, or the list's action posted again after Back, would
    #: shift it twice). Empty from a list page older than this field.
    listed_at = forms.DateTimeField(widget=forms.HiddenInput, required=False)

    Media = WhenForm.Media

    @override
    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        if cleaned.get("mode") != self.BY:
            _clean_local_run_at(self, cleaned)
        elif (offset := _amount(self, cleaned, "offset", "Enter a non-zero offset.")) is not None:
            cleaned["offset"] = offset
        return cleaned


class BulkConfirmForm(forms.Form):
    """The answer of an action that only asks to be sure (cancel, run now, retry): the
    reason, and the page's token."""

    reason = reason_field()
    submission = submission_field()


class BulkRetryForm(BrowserTimeZoneMixin, forms.Form):
    """The deadline every selected ended job gets as it is retried: what jobs that
    expired while workers were down need."""

    deadline_local = _local_datetime_field("New deadline", "In the time zone below.")
    time_zone = WhenForm.base_fields["time_zone"]
    reason = reason_field()
    submission = submission_field()

    Media = WhenForm.Media

    @override
    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        cleaned["deadline"] = _optional_local_datetime(self, cleaned, "deadline_local")
        if cleaned["deadline"] is None and not (
            self.has_error("deadline_local") or self.has_error("time_zone")
        ):
            self.add_error("deadline_local", "Enter a date and time.")
        elif cleaned["deadline"] is not None and cleaned["deadline"] <= timezone.now():
            self.add_error("deadline_local", "The deadline must be in the future.")
        return cleaned


class RetryJobForm(BrowserTimeZoneMixin, forms.Form):
    """Run an ended job (failed, cancelled, expired) again, optionally with a new deadline."""

    run_at_local = _local_datetime_field(
        "Run at", "Empty for as soon as possible; read in the time zone below."
    )
    time_zone = WhenForm.base_fields["time_zone"]
    deadline_local = _local_datetime_field(
        "New deadline", "Empty keeps the job's own: an expired job needs a later one."
    )
    reason = reason_field()

    Media = WhenForm.Media

    @override
    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        # A time in the past would run the job at once, not when it says.
        cleaned["run_at"] = _optional_local_datetime(
            self,
            cleaned,
            "run_at_local",
            functools.partial(local_run_at, soonest="leave “Run at” empty"),
        )
        cleaned["deadline"] = _optional_local_datetime(self, cleaned, "deadline_local")
        return cleaned


class ReasonForm(forms.Form):
    """Only a reason: to re-send a job's message, or to resume a paused kind."""

    reason = reason_field()


class PauseForm(forms.Form):
    """Pause a task, a queue, or a task on one queue (``services.pause``)."""

    task = forms.ChoiceField(
        label="Task", required=False, choices=lambda: [("", "Any task"), *_task_choices()]
    )
    queue = forms.CharField(
        label="Queue", required=False, max_length=80, help_text="Empty for any queue."
    )
    reason = reason_field(required=True)


def _task_choices() -> list[tuple[str, str]]:
    return [(name, name) for name in schedulable_task_names()]


def _optional_local_datetime(
    form: forms.BaseForm,
    cleaned: dict[str, Any],
    field: str,
    read: Callable[[datetime | None, str], datetime] = local_datetime,
) -> datetime | None:
    """The optional date-time ``field`` read in the form's time zone by ``read``, or None
    (error added)."""
    if cleaned.get(field) is None or form.has_error("time_zone"):
        return None
    try:
        return read(cleaned[field], cleaned["time_zone"])
    except ValidationError as error:
        form.add_error(field, error)
        return None


def _amount(
    form: forms.BaseForm, cleaned: dict[str, Any], prefix: str, missing: str
) -> timedelta | None:
    """The ``<prefix>_amount`` of ``<prefix>_unit`` as a timedelta, or None with an error.

    Zero is an amount for a delay ("in 0 minutes") but not for an offset.
    """
    amount = cleaned.get(f"{prefix}_amount")
    if amount is None or (amount == 0 and prefix == "offset"):
        form.add_error(f"{prefix}_amount", missing)
        return None
    return timedelta(seconds=amount * UNITS[cleaned.get(f"{prefix}_unit", "minutes")])


def _clean_local_run_at(form: forms.BaseForm, cleaned: dict[str, Any]) -> None:
    """Set ``cleaned["run_at"]`` from the date-time and time zone fields, or add an error."""
    if form.has_error("run_at_local") or form.has_error("time_zone"):
        return  # already reported once
    try:
        cleaned["run_at"] = local_run_at(cleaned.get("run_at_local"), cleaned["time_zone"])
    except ValidationError as error:
        form.add_error("run_at_local", error)


def _json_field(text: str, label: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValidationError(
            f"{label} are not valid JSON: {error.msg} at line {error.lineno}, "
            f"column {error.colno}.",
            code="invalid_json",
        ) from None
    except RecursionError:
        # Deeper than Python's stack lets json read them: a few hundred levels.
        raise ValidationError(f"{label} are nested too deeply to read.", code="too_deep") from None
    except ValueError:
        # The one other error json.loads raises: an integer longer than Python converts.
        raise ValidationError(
            f"{label} hold a number of more than {sys.get_int_max_str_digits()} digits.",
            code="number_too_long",
        ) from None
