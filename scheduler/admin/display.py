"""How the admin shows durations and statuses; used by its pages and template filters."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib import admin
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import lazy
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import format_lazy

from scheduler.tracebacks import exception_summary

#: Characters of an error's last line a list or a summary shows.
_ERROR_LINE_LENGTH = 80


def duration(value: timedelta | float | None) -> str:
    """A duration (timedelta or seconds) as operators read it: "0.250 s", "3 min 5 s"."""
    if value is None:
        return "-"
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    if seconds < 60:
        return f"{sign}{seconds:.3f} s"
    minutes, whole_seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{sign}{minutes} min {whole_seconds} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{sign}{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{sign}{days} d {hours} h"


def error_line(error: str) -> str:
    """The line of an error's traceback that names its exception, short enough for a
    list or a summary."""
    return exception_summary(error, length=_ERROR_LINE_LENGTH)


def status_label(status: str, label: str) -> SafeString:
    """A job status as a coloured label (colours in scheduler/admin.css)."""
    return format_html('<span class="job-status job-status-{}">{}</span>', status, label)


def local(value: datetime) -> datetime:
    """``value`` in the current time zone, or in UTC where that zone is past year 9999
    (a "never" time, east of UTC), which Python cannot hold."""
    try:
        return timezone.localtime(value)
    except OverflowError:
        return value.astimezone(UTC)


def timestamp(value: datetime | None) -> str:
    """A date and time to the second, in the current time zone: "2026-11-24 12:00:05"
    (its zone named when it is UTC in its stead, see :func:`local`; its offset in an hour
    the zone lives twice)."""
    if value is None:
        return "-"
    shown = local(value)
    said = shown.strftime("%Y-%m-%d %H:%M:%S")
    if shown.tzinfo != timezone.get_current_timezone():
        return f"{said} UTC"
    if shown.replace(fold=1 - shown.fold).utcoffset() != shown.utcoffset():
        # An hour the zone lives twice (its clocks going back): which of the two.
        return f"{said} {_offset(shown)}"
    return said


def _offset(moment: datetime) -> str:
    """``moment``'s offset from UTC, "+01:00" (and its seconds, if any: "-00:25:21")."""
    offset = moment.utcoffset() or timedelta()
    sign, seconds = ("-", -offset) if offset < timedelta() else ("+", offset)
    hours, rest = divmod(int(seconds.total_seconds()), 3600)
    minutes, seconds_left = divmod(rest, 60)
    return f"{sign}{hours:02d}:{minutes:02d}" + (f":{seconds_left:02d}" if seconds_left else "")


#: The time zone the admin shows times in, named when a page is rendered.
_current_zone = lazy(timezone.get_current_timezone_name, str)


def timestamp_column(field: str, description: str) -> Callable[[Any, Any], str]:
    """An admin column or read-only field showing the date-time ``field`` to the second,
    its heading naming the time zone: "run at (UTC)".

    The admin's own rendering of a DateTimeField drops the seconds, and the zone.
    """

    def show(model_admin: Any, obj: Any) -> str:  # noqa: ARG001 - the admin passes itself
        return timestamp(getattr(obj, field))

    heading = format_lazy("{} ({})", description, _current_zone())
    return admin.display(description=heading, ordering=field)(show)


def audit_details(details: dict[str, Any]) -> str:
    """An audit entry's details as operators read them: "run at 2026-11-24 12:00:05"."""
    parts = []
    for key, value in details.items():
        shown = value
        if isinstance(value, str):
            try:
                shown = timestamp(datetime.fromisoformat(value))
            except ValueError:
                shown = value or "any"
        parts.append(f"{key.replace('_', ' ')} {shown}")
    return "; ".join(parts) or "-"


def link_to_job(job_id: int | None) -> SafeString | str:
    """A link to the job's page, "#42"; "-" for a row without a job."""
    if job_id is None:
        return "-"
    url = reverse("admin:scheduler_scheduledjob_change", args=[job_id])
    return format_html('<a href="{}">#{}</a>', url, job_id)
