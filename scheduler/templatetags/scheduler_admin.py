"""Template tags of the scheduler's admin pages (the helpers are in admin.display)."""

import datetime
from typing import Any

from django import template
from django.contrib.admin.views.main import ChangeList
from django.db.models import Max, Min
from django.utils import formats, timezone
from django.utils.text import capfirst

from scheduler.admin import display

register = template.Library()
register.filter("duration", display.duration)
register.simple_tag(display.status_label, name="status_label")


@register.inclusion_tag("admin/date_hierarchy.html")
def bounded_date_hierarchy(cl: ChangeList) -> dict[str, Any]:
    """Django's date drill-down, without its DISTINCT over every matching row.

    It offers every year, month or day between the first and the last date of the
    whole table within the chosen year or month (two probes of the date's index), so
    it stays instant over millions of rows, whatever the other filters; a period it
    offers may hold no matching row.
    """
    field = cl.date_hierarchy
    names = {part: f"{field}__{part}" for part in ("year", "month", "day")}
    year, month, day = (cl.params.get(names[part]) for part in ("year", "month", "day"))

    def link(filters: dict[str, Any]) -> str:
        return str(cl.get_query_string(filters, [f"{field}__"]))

    if year and month and day:
        chosen = datetime.date(int(str(year)), int(str(month)), int(str(day)))
        return {
            "show": True,
            "back": {
                "link": link({names["year"]: year, names["month"]: month}),
                "title": capfirst(formats.date_format(chosen, "YEAR_MONTH_FORMAT")),
            },
            "choices": [{"title": capfirst(formats.date_format(chosen, "MONTH_DAY_FORMAT"))}],
        }
    bounds = _calendar_bounds(cl, year=year, month=month)
    if bounds["first"] is None:
        return {"show": False}
    first, last = (timezone.localtime(bounds[end]).date() for end in ("first", "last"))
    if not year and first.year == last.year:
        year = first.year
        if first.month == last.month:
            month = first.month
    if year and month:
        dates = [first + datetime.timedelta(days=n) for n in range((last - first).days + 1)]
        return {
            "show": True,
            "back": {"link": link({names["year"]: year}), "title": str(year)},
            "choices": [
                {
                    "link": link(
                        {names["year"]: year, names["month"]: month, names["day"]: date.day}
                    ),
                    "title": capfirst(formats.date_format(date, "MONTH_DAY_FORMAT")),
                }
                for date in dates
            ],
        }
    if year:
        return {
            "show": True,
            "back": {"link": link({}), "title": "All dates"},
            "choices": [
                {
                    "link": link({names["year"]: year, names["month"]: number}),
                    "title": capfirst(
                        formats.date_format(
                            datetime.date(first.year, number, 1), "YEAR_MONTH_FORMAT"
                        )
                    ),
                }
                for number in range(first.month, last.month + 1)
            ],
        }
    return {
        "show": True,
        "back": None,
        "choices": [
            {"link": link({names["year"]: str(number)}), "title": str(number)}
            for number in range(first.year, last.year + 1)
        ],
    }


def _calendar_bounds(cl: ChangeList, *, year: object, month: object) -> dict[str, Any]:
    """The first and last date in the table, within the chosen year or month if any.

    Other filters are left out on purpose: the smallest or largest date among, say,
    pending jobs has no index to probe, and would be found by reading the history.
    """
    field = cl.date_hierarchy
    rows = cl.model._default_manager.all()
    if year:
        zone = timezone.get_current_timezone()
        start = datetime.datetime(int(str(year)), int(str(month or 1)), 1, tzinfo=zone)
        end = (
            start.replace(year=start.year + 1)
            if not month
            else (start + datetime.timedelta(days=32)).replace(day=1)
        )
        rows = rows.filter(**{f"{field}__gte": start, f"{field}__lt": end})
    return rows.aggregate(first=Min(field), last=Max(field))
