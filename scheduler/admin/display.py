"""How the admin shows durations and statuses; used by its pages and template filters."""

from datetime import timedelta

from django.utils.html import format_html
from django.utils.safestring import SafeString


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


def status_label(status: str, label: str) -> SafeString:
    """A job status as a coloured label (colours in scheduler/admin.css)."""
    return format_html('<span class="job-status job-status-{}">{}</span>', status, label)
