"""Template tags of the scheduler's admin pages (the helpers are in admin.display)."""

import datetime
from typing import Any, cast

from django import template
from django.contrib.admin.views.main import ChangeList
from django.db import connection
from django.db.models import Field, Max, Min
from django.utils import formats, timezone
from django.utils.text import capfirst

from scheduler.admin import changelist, display

register = template.Library()
register.filter("duration", display.duration)
register.simple_tag(display.status_label, name="status_label")


@register.inclusion_tag("admin/date_hierarchy.html")
def bounded_date_hierarchy(cl: ChangeList) -> dict[str, Any]:
    """Django's date drill-down, without its DISTINCT over every matching row.

    It offers the years the whole table has dates in (one probe of the date's index per
    year), then every month or day between the first and the last date within the chosen
    year or month (two probes), so it stays instant over millions of rows, whatever the
    other filters; a period it offers may hold no matching row.
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
    if not bounds:
        return {"show": False}
    first, last = (display.local(bound).date() for bound in (bounds[0], bounds[-1]))
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
            for number in sorted({display.local(bound).year for bound in bounds[:-1]})
        ],
    }


def _calendar_bounds(cl: ChangeList, *, year: object, month: object) -> list[datetime.datetime]:
    """The first and last date in the table within the chosen year or month; with none
    chosen, the first date of each year the table has dates in, then the last date.
    Empty for an empty table.

    Other filters are left out on purpose: the smallest or largest date among, say,
    pending jobs has no index to probe, and would be found by reading the history.
    """
    field = cl.date_hierarchy
    rows = cl.model._default_manager.all()
    if not year:
        column = cast("Field[Any, Any]", cl.model._meta.get_field(field)).column
        return _years_and_last(cl.model._meta.db_table, str(column))
    zone = timezone.get_current_timezone()
    start = datetime.datetime(int(str(year)), int(str(month or 1)), 1, tzinfo=zone)
    end = changelist.period_end(start, month=bool(month), day=False)
    rows = rows.filter(**{f"{field}__gte": start})
    if end is not None:
        rows = rows.filter(**{f"{field}__lt": end})
    bounds = rows.aggregate(first=Min(field), last=Max(field))
    return [] if bounds["first"] is None else [bounds["first"], bounds["last"]]


def _years_and_last(table: str, column: str) -> list[datetime.datetime]:
    """The first date of each year in ``table`` (a skip scan: one index probe per year,
    not a DISTINCT over every row), then its last date; one statement."""
    quote = connection.ops.quote_name
    table, column = quote(table), quote(column)
    zone = timezone.get_current_timezone_name()
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH RECURSIVE years(first) AS ((SELECT min({column}) FROM {table}) "  # noqa: S608 - names
            f"UNION ALL SELECT (SELECT min({column}) FROM {table} WHERE {column} >= "
            "(date_trunc('year', years.first AT TIME ZONE %s) + interval '1 year') "
            "AT TIME ZONE %s) FROM years WHERE years.first IS NOT NULL) "
            f"SELECT first, (SELECT max({column}) FROM {table}) FROM years "
            "WHERE first IS NOT NULL ORDER BY first",
            [zone, zone],
        )
        rows = cursor.fetchall()
    return [*(first for first, _ in rows), rows[-1][1]] if rows else []
