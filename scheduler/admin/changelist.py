"""What keeps the admin's job list cheap with millions of rows.

No filter reads the table to build its choices, and the paginator never counts more
than ``COUNT_LIMIT`` rows.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, cast
from urllib.parse import urlencode

import django
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import (
    ERROR_FLAG,
    IGNORED_PARAMS,
    ORDER_VAR,
    PAGE_VAR,
    SEARCH_VAR,
    ChangeList,
)
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import BooleanField, Expression, F, Q, QuerySet
from django.db.models.expressions import RawSQL
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils import timezone
from django.utils.functional import cached_property
from typing_extensions import override

from scheduler import states, validation
from scheduler.conf import scheduler_settings
from scheduler.models import OVERDUE_AFTER, ScheduledJob, status_parts
from scheduler.registry import schedulable_task_names

#: Beyond this many matching rows the list says "more than" instead of counting.
COUNT_LIMIT = 10_000
#: A job starts at its run time, not before, so it finishes after it: by more than the
#: clocks of the web servers and workers disagree, and far less than this.
CLOCK_MARGIN = timedelta(days=1)

# The admin classes are generic only in django-stubs.
if TYPE_CHECKING:
    ListAdminBase = admin.ModelAdmin[Any]
else:
    ListAdminBase = object


@dataclass(frozen=True)
class Truncation:
    """Why a narrowed list's rows are drawn from a bounded set, so that others may match
    too: its count says ``among`` after the number, and "select all", refused, says
    ``refused``."""

    among: str
    refused: str


class CappedCountPaginator(Paginator):  # type: ignore[type-arg]
    """A paginator that counts at most ``COUNT_LIMIT + 1`` rows (one bounded query).

    ``truncated`` says the rows are drawn from a bounded set (:func:`list_truncation`).
    """

    def __init__(self, *args: Any, truncated: Truncation | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.truncated = truncated

    @cached_property
    def count(self) -> int:
        """The number of rows, or ``COUNT_LIMIT + 1`` when there are more."""
        rows = cast("QuerySet[Any]", self.object_list)
        # Unordered: the planner may count from whichever index serves the filter.
        return rows.order_by()[: COUNT_LIMIT + 1].count()

    @property
    def is_capped(self) -> bool:
        """Whether more rows match than the list counts (or than it could draw from)."""
        return self.truncated is not None or self.count > COUNT_LIMIT

    @property
    def limit(self) -> int:
        """The most rows the list counts."""
        return COUNT_LIMIT


class OfferedChangeList(ChangeList):
    """Django's list, sorted only by the columns it offers to sort by (``sortable_by``),
    whose date drill-down is a period or nothing.

    Django applies any column number in ``?o=`` (``?o=3``: by status), whatever
    ``sortable_by`` says: a hand-edited URL sorted millions of rows. Such numbers are
    dropped, from the order and from the page's links.
    """

    #: Whether Django lays the pagination and the search bar out as landmarks (6.0
    #: does), which the templates of the capped count follow.
    landmarks = django.VERSION >= (6, 0)

    @cached_property
    def older_rows_url(self) -> str | None:
        """The list of the rows older than this page's, for a list that offers
        :class:`OlderThanFilter` and counts more rows than its pages reach; else None."""
        if OlderThanFilter not in self.list_filter or not self.paginator.is_capped:
            return None
        # The page's rows, read already for the page: no query.
        oldest = min((row.pk for row in self.result_list), default=None)
        if oldest is None:
            return None
        return str(self.get_query_string({OlderThanFilter.parameter_name: str(oldest)}))

    @override
    def get_filters_params(self, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """The list's lookups; a drill-down to a period that ends past year 9999 (a job
        at a "never" time) becomes "from its start": Django's bounds overflow there.

        A drill-down that is no period (a month or day without the year and month above
        it, which Django filters on as ``EXTRACT`` over every row; a year past Python's,
        a 500 in Django) raises IncorrectLookupParameters: the list without filters.
        """
        lookups: dict[str, Any] = super().get_filters_params(params)
        names = self._drill_down_names()
        if not names:
            return lookups
        year, month, day = (lookups[name][-1] if lookups.get(name) else None for name in names)
        if year is None and month is None and day is None:
            return lookups
        start = _drill_down_start(year, month, day)
        if start is None:
            raise IncorrectLookupParameters(f"no period: {year}-{month}-{day}")
        if period_end(start, month=bool(month), day=bool(day)) is None:
            for name in names:
                lookups.pop(name, None)
            lookups[f"{self.date_hierarchy}__gte"] = [start]
        return lookups

    @override
    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet[Any]:
        rows: QuerySet[Any] = super().get_queryset(request, exclude_parameters)
        # Django's "Clear all filters" keeps the drill-down as the bounds it filters on
        # (``__gte``, ``__lt``), which the list does not take from the query string:
        # as the page's own year, month and day instead, with the search and order.
        drill_down = self._drill_down_names()
        kept = {
            name: values
            for name, values in self.filter_params.items()
            if name in IGNORED_PARAMS or name in drill_down
        }
        self.clear_all_filters_qs = f"?{urlencode(sorted(kept.items()), doseq=True)}"
        return rows

    def _drill_down_names(self) -> list[str]:
        """The query parameters of the date drill-down's year, month and day, if any."""
        if not self.date_hierarchy:
            return []
        return [f"{self.date_hierarchy}__{part}" for part in ("year", "month", "day")]

    @override
    def get_ordering(self, request: HttpRequest, queryset: QuerySet[Any]) -> list[Any]:
        self._keep_offered_order()
        ordering: list[Any] = super().get_ordering(request, queryset)
        return ordering

    @override
    def get_ordering_field_columns(self) -> dict[int, Literal["desc", "asc"]]:
        self._keep_offered_order()
        return super().get_ordering_field_columns()

    def _keep_offered_order(self) -> None:
        value = self.params.get(ORDER_VAR)
        if value is None:
            return
        offered = [part for part in str(value).split(".") if self._sorts_by(part)]
        # params for the order, filter_params for the page's links.
        if offered:
            self.params[ORDER_VAR] = ".".join(offered)
            self.filter_params[ORDER_VAR] = [self.params[ORDER_VAR]]
        else:
            del self.params[ORDER_VAR]
            self.filter_params.pop(ORDER_VAR, None)

    def _sorts_by(self, part: str) -> bool:
        """Whether ``part`` of ``?o=`` (a column number, "-" first for descending) names
        a column the list sorts by."""
        number = part.removeprefix("-")
        if not (number.isascii() and number.isdigit() and len(number) <= 4):
            return False
        columns: Sequence[Any] = self.list_display
        sortable = self.sortable_by or ()
        return int(number) < len(columns) and columns[int(number)] in sortable


class JobChangeList(OfferedChangeList):
    """The job list, which reads the succeeded jobs of a period still going on from its
    start."""

    @override
    def get_queryset(
        self, request: HttpRequest, exclude_parameters: Any = None
    ) -> QuerySet[ScheduledJob]:
        # The list shows neither arguments nor results (up to 256 MB each): not read.
        rows: QuerySet[ScheduledJob] = (
            super().get_queryset(request, exclude_parameters).defer(*_NOT_LISTED)
        )
        if "-finished_at" not in rows.query.order_by:
            return rows
        # Succeeded jobs, latest finished first: from the period's start, if it has one.
        since = succeeded_listing(request.GET, now=timezone.now()).finished_since
        return rows if since is None else rows.filter(finished_at__gte=since)


#: The job fields the list shows nothing of, which may be large.
_NOT_LISTED = ("args", "kwargs", "result")


def _drill_down_start(year: object, month: object, day: object) -> datetime | None:
    """Where the drill-down's year, month or day begins, in the current time zone; None
    for one that is no period (a day without its month, a month without its year, no
    date of Python's)."""
    if not year or (day and not month):
        return None
    zone = timezone.get_current_timezone() if scheduler_settings.uses_time_zones() else None
    try:
        return datetime(int(str(year)), int(str(month or 1)), int(str(day or 1)), tzinfo=zone)
    except (ValueError, OverflowError):
        return None


def period_end(start: datetime, *, month: bool, day: bool) -> datetime | None:
    """Where the drill-down's year, month or day that begins at ``start`` ends; None
    for the calendar's last (it would end in year 10000)."""
    try:
        if day:
            return start + timedelta(days=1)
        if month:
            # From the first of a month, 32 days is always in the next one.
            return (start + timedelta(days=32)).replace(day=1)
        return start.replace(year=start.year + 1)
    except (OverflowError, ValueError):
        return None


class _FieldEqualsFilter(admin.SimpleListFilter):
    """Jobs whose ``field`` equals the chosen value; the choices cost no query."""

    field: str

    @override
    def queryset(
        self, request: HttpRequest, queryset: QuerySet[ScheduledJob]
    ) -> QuerySet[ScheduledJob]:
        value = self.value()
        return queryset.filter(**{self.field: value}) if value else queryset


class OlderThanFilter(admin.SimpleListFilter):
    """The rows older than a row (a lower id), in a list newest first: the way past the
    rows its capped count pages through, at any depth, which its footer links to.

    A bound on the id, which ends each index such a list is read from (the primary key;
    the action or the actor, then the id): a page starts where the bound is, however
    deep. A job's rows are read by the job and sorted, as without it.
    """

    title = "older than"
    parameter_name = "older_than"

    @override
    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        # Offered only as chosen, by the footer's link: the sidebar shows it and clears it.
        chosen = self.value()
        return [(chosen, f"{model_admin.model._meta.verbose_name} #{chosen}")] if chosen else []

    @override
    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if not value:
            return queryset
        below = validation.job_id_in(value)  # any bigint id, not a job's alone
        if below is None:
            raise IncorrectLookupParameters(f"no id: {value!r}")
        return queryset.filter(pk__lt=below)


class TaskFilter(_FieldEqualsFilter):
    """Filter by task, choosing among the registered tasks (no query)."""

    title = "task"
    parameter_name = "task"
    field = "task_name"

    @override
    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(name, name) for name in sorted(_known_task_names())]


class QueueFilter(_FieldEqualsFilter):
    """Filter by queue: the default queue as a link, any other typed in (no query)."""

    title = "queue"
    parameter_name = "queue"
    field = "queue"
    template = "admin/scheduler/scheduledjob/queue_filter.html"

    def __init__(
        self, request: HttpRequest, params: dict[str, Any], model: Any, model_admin: Any
    ) -> None:
        # The typed-in form must carry the list's other filters and search along.
        self.preserved = [
            (name, value)
            for name, values in request.GET.lists()
            if name not in (self.parameter_name, "p")
            for value in values
        ]
        super().__init__(request, params, model, model_admin)

    @override
    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        queues = [scheduler_settings.QUEUE_NAME]
        chosen = self.value()
        if chosen and chosen not in queues:
            queues.append(chosen)
        return [(queue, queue) for queue in queues]


class RunAtFilter(admin.SimpleListFilter):
    """Filter by run_at relative to now, including jobs that are overdue."""

    title = "run at"
    parameter_name = "run_at"
    OVERDUE = "overdue"
    #: value: (label, start, end) relative to now.
    WINDOWS = {
        "past_week": ("Past 7 days", timedelta(days=-7), timedelta(0)),
        "past_day": ("Past 24 hours", timedelta(days=-1), timedelta(0)),
        "next_hour": ("Next hour", timedelta(0), timedelta(hours=1)),
        "next_day": ("Next 24 hours", timedelta(0), timedelta(days=1)),
        "next_week": ("Next 7 days", timedelta(0), timedelta(days=7)),
        "next_month": ("Next 30 days", timedelta(0), timedelta(days=30)),
    }

    @override
    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        windows = [(value, label) for value, (label, _, _) in self.WINDOWS.items()]
        return [(self.OVERDUE, "Overdue (not started)"), *windows]

    @override
    def queryset(
        self, request: HttpRequest, queryset: QuerySet[ScheduledJob]
    ) -> QuerySet[ScheduledJob]:
        value = self.value()
        now = timezone.now()
        if value == self.OVERDUE:
            return queryset.filter(pk__in=overdue_ids(now=now))
        if value in self.WINDOWS:
            _, start, end = self.WINDOWS[value]
            return queryset.filter(run_at__gte=now + start, run_at__lt=now + end)
        return queryset


def overdue_ids(*, now: datetime) -> RawSQL:
    """The ids of the overdue jobs (at most COUNT_LIMIT + 1 per pending status), latest first.

    One branch per status, each matching its own partial index (scheduled: due_idx;
    enqueued: status_idx): with ``status IN (…)`` and the list's ORDER BY run_at, the
    planner would walk the run_at index through the whole history to find none.
    """
    branches, params = _overdue_branches(now=now, limit=COUNT_LIMIT + 1)
    # The model's table name; values are parameters.
    return RawSQL(" UNION ALL ".join(branches), params)  # noqa: S611


def _overdue_branches(
    *, now: datetime, limit: int, statuses: tuple[states.Status, ...] = states.PENDING
) -> tuple[list[str], list[Any]]:
    """The SQL of each branch of :func:`overdue_ids` (of ``statuses``), its latest
    ``limit`` ids, and the parameters of them all."""
    parts = status_parts(statuses)  # scheduled: held or not, each its own index
    branch = (
        f"(SELECT id FROM {ScheduledJob._meta.db_table} WHERE status = %s{{held}} "  # noqa: S608
        "AND run_at < %s ORDER BY run_at DESC LIMIT %s)"
    )
    cutoff = now - OVERDUE_AFTER
    return (
        [branch.format(held=held) for _, held in parts],
        [value for status, _ in parts for value in (status, cutoff, limit)],
    )


def overdue_truncated(params: Mapping[str, Any], *, now: datetime) -> bool:
    """Whether other filters or a search narrow an *Overdue* list of which a status has
    more than its ``COUNT_LIMIT + 1`` latest overdue jobs: those alone then (one bounded
    read of each status's index). Without them, the capped count says so."""
    if params.get(RunAtFilter.parameter_name) != RunAtFilter.OVERDUE:
        return False
    filtered = RunAtFilter.parameter_name
    others = [name for name in params if name not in (*_LIST_PARAMETERS, filtered)]
    if not others and not params.get(SEARCH_VAR):
        return False
    # Filtered by status, only that status's branches are listed.
    status = params.get("status__exact")
    statuses = states.PENDING if not status else tuple(s for s in states.PENDING if s == status)
    if not statuses:
        return False
    branches, values = _overdue_branches(now=now, limit=COUNT_LIMIT + 2, statuses=statuses)
    # Each branch is ours: the table's name, and parameters.
    counts = " UNION ALL ".join(f"SELECT count(*) AS n FROM {branch} AS b" for branch in branches)  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT max(n) FROM ({counts}) AS counts", values)  # noqa: S608
        (most,) = cursor.fetchone() or (0,)
    return bool(most > COUNT_LIMIT + 1)


def list_truncation(params: Mapping[str, Any], *, now: datetime) -> Truncation | None:
    """Why the job list's rows, as ``params`` narrow them, are drawn from a bounded set,
    or None when they are not."""
    if key_search_truncated(params):
        return Truncation(
            among=f"the first {COUNT_LIMIT + 1} scheduled jobs whose unique key starts so: "
            "narrow the search",
            refused=f"more than {COUNT_LIMIT} unique keys start as the search does: "
            "narrow the search",
        )
    if overdue_truncated(params, now=now):
        return Truncation(
            among=f"the latest {COUNT_LIMIT + 1} overdue scheduled jobs of each status: "
            "filter by status, not by Overdue, to list the older ones too",
            refused=f"more than {COUNT_LIMIT} jobs of a status are overdue and the list "
            "shows the latest: filter by status, not by Overdue",
        )
    return None


def search_filter(term: str) -> Q:
    """Jobs matching a search term: a job id, the start of a task name, or of a unique key.

    A number is a job id and nothing else: one primary-key probe. Text that starts a
    known task name finds those tasks' jobs (looked up among the registered tasks, no
    LIKE over the table); any other text is the start of a unique key: the first
    ``COUNT_LIMIT + 1`` keys it starts, in the order of their pattern index. One
    condition each, so the list's capped count reads one index.
    """
    term = _search_term(term)
    if _names_a_job_id(term):
        # Beyond a bigint, no job has that id.
        found = validation.job_id_in(term)
        return Q(pk=found) if found is not None else Q(pk__in=[])
    names = _task_names_starting(term)
    return Q(task_name__in=names) if names else Q(_IdAmong(key_prefix_ids(term)))


def key_search_truncated(params: Mapping[str, Any]) -> bool:
    """Whether the list's filters narrow a search for the start of a unique key that
    more than ``COUNT_LIMIT`` keys start: its first ``COUNT_LIMIT + 1`` alone then (one
    bounded read of the keys' index). Without filters, the capped count says so."""
    if not any(name not in _LIST_PARAMETERS for name in params):
        return False
    term = _search_term(str(params.get(SEARCH_VAR, "")))
    # No key search (and one with a NUL is refused: no key holds one).
    if not term or _holds_nul(term) or _names_a_job_id(term) or _task_names_starting(term):
        return False
    keys = key_prefix_ids(term)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM ({keys.sql}) AS keys", keys.params)  # noqa: S608 - ours
        (count,) = cursor.fetchone() or (0,)
    return bool(count > COUNT_LIMIT)


def _search_term(term: str) -> str:
    return term.strip().removeprefix("#")


def _names_a_job_id(term: str) -> bool:
    return term.isascii() and term.isdigit()


def _task_names_starting(term: str) -> list[str]:
    return sorted(name for name in _known_task_names() if name.startswith(term))


def key_prefix_ids(prefix: str) -> RawSQL:
    """The ids of the first ``COUNT_LIMIT + 1`` jobs whose unique key starts with
    ``prefix``, in the order of the keys' pattern index (key_prefix_idx).

    Bounded first, then sorted by the list: as a condition on the list's query, the
    LIKE was a filter on a walk down the run_at index, which read most of the table when
    the keys were old (690,000 rows for ``payment-30`` at a million jobs).
    """
    return RawSQL(  # noqa: S611 - the model's table name; values are parameters
        f"SELECT keyed.id FROM {ScheduledJob._meta.db_table} AS keyed "  # noqa: S608
        "WHERE keyed.unique_key LIKE %s ORDER BY keyed.unique_key USING ~<~ LIMIT %s",
        [f"{connection.ops.prep_for_like_query(prefix)}%", COUNT_LIMIT + 1],
    )


class _IdAmong(Expression):
    """``id = ANY(ARRAY(<ids>))``: the ids first, then each job by its primary key.

    Not ``id IN (<ids>)``: PostgreSQL counts on the subquery's LIMIT (10,001 rows) and,
    at a million jobs, joins them to a sequential scan of the table. An array's
    elements it does not count on: it probes the primary key for each.
    """

    output_field = BooleanField()

    def __init__(self, ids: RawSQL) -> None:
        super().__init__()
        self.column: Any = F("pk")
        self.ids: Any = ids

    @override
    def get_source_expressions(self) -> list[Any]:
        return [self.column, self.ids]

    @override
    def set_source_expressions(self, exprs: Sequence[Any]) -> None:
        self.column, self.ids = exprs

    @override
    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, Any]:
        column, column_params = compiler.compile(self.column)
        ids, ids_params = compiler.compile(self.ids)  # "(SELECT …)"
        return f"{column} = ANY(ARRAY{ids})", (*column_params, *ids_params)


@dataclass(frozen=True)
class Period:
    """The run times a list is narrowed to: from ``start`` to before ``end`` (None: open)."""

    start: datetime | None
    end: datetime | None


def listed_period(params: Mapping[str, Any], *, now: datetime) -> Period | None:
    """The run times the list's date drill-down and run-at filter narrow it to, or None
    (also for a drill-down that is no date: Django refuses it)."""
    starts: list[datetime] = []
    ends: list[datetime] = []
    drilled = _drill_down_period(params)
    if drilled is not None:
        starts.append(drilled[0])
        if drilled[1] is not None:
            ends.append(drilled[1])
    window = RunAtFilter.WINDOWS.get(str(params.get(RunAtFilter.parameter_name)))
    if window is not None:
        _, start, end = window
        starts.append(now + start)
        ends.append(now + end)
    if not starts:
        return None
    return Period(max(starts), min(ends) if ends else None)


def _drill_down_period(params: Mapping[str, Any]) -> tuple[datetime, datetime | None] | None:
    year, month, day = (params.get(f"run_at__{part}") for part in ("year", "month", "day"))
    start = _drill_down_start(year, month, day)
    if start is None:
        return None
    return start, period_end(start, month=bool(month), day=bool(day))


@dataclass(frozen=True)
class SucceededListing:
    """How the list reads succeeded jobs: in ``ordering``, and, if not None, only those
    that finished since ``finished_since`` (every one of them did: a bound, no filter)."""

    ordering: tuple[str, ...]
    finished_since: datetime | None = None


def succeeded_listing(params: Mapping[str, Any], *, now: datetime) -> SucceededListing:
    """How to list succeeded jobs, the bulk of the table, which the (status, run_at)
    index leaves out.

    Latest finished first, from their own index on finished_at (succeeded_idx); but for
    a period over (a month long past, the past 24 hours), latest run time first, from the
    run_at index: by when they finished, PostgreSQL read every job that finished since
    (760,000 rows for a month at a million jobs), and a period over holds no pending job
    to step over but the overdue. A period still going on, or to come, is read from
    succeeded_idx from its start on (its jobs, if any, finished after it began).
    """
    if params.get("status__exact") != states.Status.SUCCEEDED:
        return SucceededListing(())
    period = listed_period(params, now=now)
    if period is not None and period.end is not None and period.end <= now:
        return SucceededListing(("-run_at", "-id"))
    since = None if period is None or period.start is None else period.start - CLOCK_MARGIN
    return SucceededListing(("-finished_at", "-id"), since)


class OfferedListMixin(ListAdminBase):
    """A list sorted and filtered only as its page offers: by the columns it sorts by
    (:class:`OfferedChangeList`), its filters and its date drill-down.

    Django's admin filters by any field named in the query string
    (``?last_error__icontains=``: a sequential scan of millions of rows). Such a
    parameter, or a value no row can hold (a NUL character: PostgreSQL refuses the
    query), is dropped, and the list shown without it says so.
    """

    #: The query parameters of the list's filters and date drill-down.
    offered_lookups: tuple[str, ...] = ()

    @override
    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[OfferedChangeList]:
        return OfferedChangeList

    @override
    def lookup_allowed(self, lookup: str, value: Any, request: HttpRequest | None = None) -> bool:
        # A drill-down to the calendar's last year, month or day is "from its start"
        # (OfferedChangeList): a date-time, never text from the query string.
        if self.date_hierarchy and lookup == f"{self.date_hierarchy}__gte":
            return isinstance(value, datetime)
        return lookup in self.offered_lookups and not _holds_nul(value)

    @override
    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """The list; shown without the parameters it does not take, with a message."""
        refused = [
            name
            for name, values in request.GET.lists()
            if name not in _LIST_PARAMETERS
            and not all(self.lookup_allowed(name, value, request) for value in values)
        ]
        if not refused:
            return super().changelist_view(request, extra_context)
        reasons = [
            f"“{name}” cannot hold a NUL character"
            if name in self.offered_lookups
            else f"“{name}” is not a filter of this list"
            for name in refused
        ]
        self.message_user(request, f"Shown without {'; '.join(reasons)}.", messages.ERROR)
        kept = request.GET.copy()
        for name in refused:
            del kept[name]
        query = kept.urlencode()
        return HttpResponseRedirect(f"{request.path}?{query}" if query else request.path)


#: The list's own parameters, no lookup: search, order, page, "show all", popups…
_LIST_PARAMETERS = frozenset((*IGNORED_PARAMS, PAGE_VAR, ERROR_FLAG))


def _holds_nul(value: Any) -> bool:
    return isinstance(value, str) and "\x00" in value


def _known_task_names() -> set[str]:
    return set(schedulable_task_names()) | set(scheduler_settings.ADMIN_TASKS)
