"""A job is a row in PostgreSQL first and an SQS message only in its last minutes."""

import math
import operator
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import reduce
from typing import Any

from django.db import connection, models, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.db.models.expressions import RawSQL
from django.db.models.functions import Upper
from django.utils import timezone

from scheduler import states
from scheduler.conf import DEFAULT_QUEUE_NAME
from scheduler.sqs import PEEKS_AT_ONCE
from scheduler.states import Status

#: A job still pending this long after its run_at should have started: it is overdue.
OVERDUE_AFTER = timedelta(minutes=1)


class ScheduledJobQuerySet(models.QuerySet["ScheduledJob"]):
    """The vocabulary of the dispatcher and the admin."""

    def active(self) -> "ScheduledJobQuerySet":
        """Jobs that hold their unique_key: scheduled, enqueued or running."""
        return self.filter(status__in=states.ACTIVE)

    def finished(self) -> "ScheduledJobQuerySet":
        """Jobs that ended: succeeded, failed, cancelled or expired."""
        return self.filter(status__in=states.FINISHED)

    def due(self, *, within: timedelta, now: datetime | None = None) -> "ScheduledJobQuerySet":
        """Scheduled jobs to send: run_at at most ``within`` from now, not past their
        deadline, not held, not of a paused kind (served by the due index)."""
        now = now or timezone.now()
        paused = covered_by_pause()
        # "No pause at all, or none covering the job": PostgreSQL checks the first once
        # per query, and estimates it sanely. The correlated check alone makes it expect
        # almost no row to pass, so it plans a batch as if it had to scan every due row.
        # Not held: due jobs of a paused kind that recovery has marked held are out of
        # the due index, so that neither the tick's probe nor a claim steps over them.
        # The check of the pauses stays for those not marked yet (paused since the last
        # recovery, or put back by a worker).
        return (
            self.filter(status=Status.SCHEDULED, held=False, run_at__lte=now + within)
            .exclude(deadline__lte=now)
            .filter(~Exists(Pause.objects.all()) | ~paused)
        )

    def missed_deadline(self, *, now: datetime | None = None) -> "ScheduledJobQuerySet":
        """Jobs not started whose deadline has passed: they must expire."""
        return self.filter(status__in=states.EXPIRE.sources, deadline__lte=now or timezone.now())

    def resend_due(self, *, now: datetime | None = None) -> "ScheduledJobQuerySet":
        """Enqueued jobs nobody claimed by their ``resend_at``: send them again."""
        return self.filter(status=Status.ENQUEUED, resend_at__lte=now or timezone.now())

    def lease_expired(
        self, *, lease: timedelta, now: datetime | None = None
    ) -> "ScheduledJobQuerySet":
        """Running jobs whose worker sent no heartbeat for ``lease``: presumed dead.

        The lease counts from the last heartbeat (the claim is the first), so a live
        job keeps it however long it runs. Served by the (status, run_at) index:
        ``heartbeat_at`` itself is in no index, which keeps each heartbeat a HOT update.
        """
        cutoff = (now or timezone.now()) - lease
        return self.filter(
            Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff),
            status=Status.RUNNING,
        )

    def overdue(self, *, now: datetime | None = None) -> "ScheduledJobQuerySet":
        """Pending jobs more than OVERDUE_AFTER past their run_at (should be none)."""
        return self.filter(_pending(run_at__lt=(now or timezone.now()) - OVERDUE_AFTER))


def _pending(**lookups: Any) -> Q:
    """Pending jobs matching ``lookups``, one condition per status.

    Scheduled and enqueued jobs are in different partial indexes; ``status IN (…)``
    would match neither index's predicate and scan the table, while an OR of one
    condition per index reads each index (a BitmapOr): scheduled jobs not held (the due
    index), held ones (the held index), enqueued ones.
    """
    return reduce(operator.or_, (Q(**branch, **lookups) for branch in PENDING_BRANCHES))


def _index_parts(status: str) -> tuple[dict[str, bool], ...]:
    """The parts of ``status``'s jobs that partial indexes hold apart: scheduled jobs not
    held (the due index) and held (the held index); any other status whole.
    ``status = 'scheduled'`` alone matches no index's predicate since held jobs left the
    due index."""
    return ({"held": False}, {"held": True}) if status == Status.SCHEDULED else ({},)


def status_parts(statuses: "tuple[Status, ...]", *, held: bool = True) -> list[tuple[Status, str]]:
    """Each of ``statuses`` with the SQL to add to ``status = %s`` so that each part
    matches one partial index's predicate (:func:`_index_parts`). Raw SQL that counts or
    reads one status, one subquery each, uses them. Without the held jobs' part if not
    ``held``: a range of run_at reads those by kind (:func:`held_jobs_sql`)."""
    column = connection.ops.quote_name(ScheduledJob._meta.get_field("held").column)
    return [
        (status, "" if not part else f" AND {'' if part['held'] else 'NOT '}{column}")
        for status in statuses
        for part in _index_parts(status)
        if held or not part.get("held")
    ]


#: Pending jobs as one condition per partial index that holds them: together, exactly
#: the pending jobs.
PENDING_BRANCHES: tuple[dict[str, Any], ...] = tuple(
    {"status": status, **part} for status in states.PENDING for part in _index_parts(status)
)


class ScheduledJob(models.Model):
    """A Celery task to run once at ``run_at``, stored until it is nearly due."""

    #: The statuses and their transitions are in :mod:`scheduler.states`.
    Status = Status

    task_name = models.CharField(max_length=255)
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    queue = models.CharField(max_length=80)
    run_at = models.DateTimeField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SCHEDULED)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField()
    # NULL, not "", for "no key": the partial unique constraint ignores NULLs.
    unique_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    # A fresh token per dispatch: only the message that carries it can claim the job.
    dispatch_token = models.UUIDField(null=True, blank=True, editable=False)
    # Not started by then, never started: it ends expired.
    deadline = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    # Messages sent with the current token, and when to send another if none is claimed.
    sends = models.PositiveIntegerField(default=0, db_default=0)
    resend_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    # Renewed by the worker while the task runs; the lease counts from here. In no
    # index, so that a heartbeat is a HOT update.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # The task's return value (JSON), for django.tasks' get_result().
    result = models.JSONField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    # Whether an error the task does not retry itself is retried (a job scheduled by
    # schedule_at) or fails the job (a Celery call made a job, as Celery would).
    retry_on_error = models.BooleanField(default=True, db_default=True)
    # The id apply_async returned, when a Celery call beyond the SQS delay made this job.
    celery_task_id = models.CharField(  # noqa: DJ001 - NULL: no call made this job
        max_length=255, null=True, blank=True, editable=False
    )
    # A scheduled job of a paused kind, due, set aside by the dispatcher's recovery: out
    # of the due index (a long pause's backlog no longer sits at its head) and in the
    # small index of held jobs, until recovery releases it once no pause covers it.
    # Every change of status clears it. A database default, for 0.1.0's INSERTs.
    held = models.BooleanField(default=False, db_default=False, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ScheduledJobQuerySet.as_manager()

    class Meta:
        ordering = ["-run_at"]
        # Every status change rewrites the row and adds a tuple to every index whose
        # predicate the new version matches; a heartbeat changes no indexed column, so
        # it is a HOT update (no index tuple) as long as the page has room: the
        # migration sets a fillfactor for that. So: partial indexes wherever a query
        # reads one status, and nothing indexed that the worker writes while a job
        # runs (heartbeat_at, updated_at). bench/storage.py shows the query each
        # index serves (EXPLAIN) and what a job's life writes.
        indexes = [
            # The dispatcher's due query, also the admin's list of scheduled jobs: by
            # run_at, then id. The id makes it the only index that serves that order,
            # so PostgreSQL never takes the plain run_at index instead, where every job
            # a tick has just marked enqueued stays ahead of the next batch. Held jobs
            # (of a paused kind) are left out: a long pause's due jobs would be at its
            # head, stepped over by every tick.
            models.Index(
                fields=["run_at", "id"],
                name="scheduler_job_due_idx",
                condition=Q(status=Status.SCHEDULED, held=False),
            ),
            # Held jobs, by kind (task, queue), oldest first: recovery finds the kinds
            # held (one probe each) and releases those of kinds no pause covers any
            # more. Empty unless something is paused.
            models.Index(
                fields=["task_name", "queue", "run_at", "id"],
                name="scheduler_job_held_idx",
                condition=Q(held=True),
            ),
            # Pending jobs whose deadline passes: the dispatcher expires them.
            models.Index(
                fields=["deadline"],
                name="scheduler_job_deadline_idx",
                condition=Q(status__in=list(states.PENDING), deadline__isnull=False),
            ),
            # Re-sends of enqueued jobs that nobody claimed; the admin's enqueued list.
            models.Index(
                fields=["resend_at"],
                name="scheduler_job_resend_idx",
                condition=Q(status=Status.ENQUEUED),
            ),
            # Finished jobs by when they finished, in two indexes: a tuple once per job,
            # at its end, each entry the size of one on finished_at alone. Succeeded jobs
            # (in no other index by status): their count, the admin's list of them,
            # latest finished first, and the purge of those past retention. One index for
            # every finished job made the count read every other finished job, from the
            # table, to find the succeeded ones; one on (status, finished_at) nearly
            # doubled the index's bytes.
            models.Index(
                fields=["finished_at"],
                name="scheduler_job_succeeded_idx",
                condition=Q(status=Status.SUCCEEDED),
            ),
            # The other finished jobs, those that ended badly: the purge of those past
            # retention, oldest first across the three statuses.
            models.Index(
                fields=["finished_at"],
                name="scheduler_job_ended_badly_idx",
                condition=Q(status__in=list(states.ENDED_BADLY)),
            ),
            # Every status but the two big ones, latest first: enqueued and running jobs
            # (recovery, the admin's lists, also when ordered by the default -run_at)
            # and jobs that ended badly. Scheduled jobs have due_idx (also on run_at);
            # succeeded ones, most rows, succeeded_idx (entered once, at their end).
            models.Index(
                fields=["status", "run_at"],
                name="scheduler_job_status_idx",
                condition=~Q(status__in=[Status.SCHEDULED, Status.SUCCEEDED]),
            ),
            # Monitoring: jobs that failed for good in the last day.
            models.Index(
                fields=["finished_at"],
                name="scheduler_job_failed_idx",
                condition=Q(status=Status.FAILED),
            ),
            # The admin's filter by another queue than the default one (whose jobs, most
            # rows, are read through the run_at index), ordered by run_at.
            models.Index(
                fields=["queue", "run_at"],
                name="scheduler_job_queue_idx",
                condition=~Q(queue=DEFAULT_QUEUE_NAME),
            ),
            # The admin's search by the start of a unique key (LIKE 'prefix%').
            models.Index(
                fields=["unique_key"],
                name="scheduler_job_key_prefix_idx",
                opclasses=["varchar_pattern_ops"],
                condition=Q(unique_key__isnull=False),
            ),
            # The admin's ordering and date hierarchy over all statuses.
            models.Index(fields=["run_at"], name="scheduler_job_run_at_idx"),
            # The admin's task filter, latest first.
            models.Index(fields=["task_name", "run_at"], name="scheduler_job_task_idx"),
            # AsyncResult ids of Celery calls made jobs.
            models.Index(
                fields=["celery_task_id"],
                name="scheduler_job_celery_id_idx",
                condition=Q(celery_task_id__isnull=False),
            ),
        ]
        constraints = [
            # Jobs without a key (most) have no tuple in this index.
            models.UniqueConstraint(
                fields=["unique_key"],
                condition=Q(status__in=list(states.ACTIVE), unique_key__isnull=False),
                name="scheduler_job_unique_active_key",
            ),
            models.CheckConstraint(
                condition=Q(status__in=list(states.ALL)),
                name="scheduler_job_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(max_attempts__gte=1), name="scheduler_job_max_attempts_positive"
            ),
            models.CheckConstraint(
                condition=Q(attempts__lte=models.F("max_attempts")),
                name="scheduler_job_attempts_within_max",
            ),
            models.CheckConstraint(
                condition=~Q(status__in=list(states.IN_FLIGHT)) | Q(dispatch_token__isnull=False),
                name="scheduler_job_in_flight_has_token",
            ),
            models.CheckConstraint(
                condition=~Q(status=Status.RUNNING) | Q(started_at__isnull=False),
                name="scheduler_job_running_has_start",
            ),
            # A running job has counted the attempt under way.
            models.CheckConstraint(
                condition=~Q(status=Status.RUNNING) | Q(attempts__gte=1),
                name="scheduler_job_running_has_attempt",
            ),
            # The retention purge deletes finished jobs by when they finished.
            models.CheckConstraint(
                condition=~Q(status__in=list(states.FINISHED)) | Q(finished_at__isnull=False),
                name="scheduler_job_finished_has_end",
            ),
            # An enqueued job whose message is lost is sent again: never one without a date.
            models.CheckConstraint(
                condition=~Q(status=Status.ENQUEUED) | Q(resend_at__isnull=False),
                name="scheduler_job_enqueued_has_resend",
            ),
            models.CheckConstraint(
                condition=~Q(task_name=""), name="scheduler_job_task_name_not_empty"
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.task_name} at {self.run_at:%Y-%m-%d %H:%M:%S%z} ({self.status})"

    @property
    def lateness(self) -> timedelta | None:
        """How late the latest attempt started, relative to run_at."""
        if self.started_at is None:
            return None
        return self.started_at - self.run_at


@dataclass(frozen=True)
class JobCount:
    """How many jobs are in one status; ``exact`` False for a planner estimate (never
    below the jobs counted for certain: :func:`job_counts_by_status`)."""

    value: int
    exact: bool


#: Jobs counted one by one per status at most; beyond, the count is an estimate.
EXACT_COUNT_LIMIT = 10_000


def job_counts_by_status(*, exact_up_to: int = EXACT_COUNT_LIMIT) -> dict[Status, JobCount]:
    """Jobs in each status, at a small cost however many rows the table holds: the
    figures of both the monitoring page and ``/metrics``.

    Each part of a status (:func:`status_parts`) is counted exactly up to ``exact_up_to``
    rows (an index-only scan that stops there; the active statuses stay well under it).
    A status with a part over it — the history of succeeded jobs, typically — gets
    PostgreSQL's own estimate instead: its share among the table's sampled rows
    (``pg_stats``) times the table's estimated row count (``pg_class.reltuples``), both
    kept fresh by autovacuum's ANALYZE; but never less than was counted.
    """
    counted = capped_status_counts(up_to=exact_up_to)
    if all(count.exact for count in counted.values()):
        return counted
    with connection.cursor() as cursor:
        shares = _status_shares(
            cursor,
            table=ScheduledJob._meta.db_table,
            column=ScheduledJob._meta.get_field("status").column,
        )
    # A capped count's value is what is known for certain: its exact parts, plus
    # ``exact_up_to + 1`` for each part that reached its cap. The planner estimates the
    # status as a whole, those exact parts included, so adding its estimate to them would
    # count them twice. The capped parts' own estimate (the status's less the exact
    # parts, but ``exact_up_to + 1`` each at least) added to the exact parts comes to
    # max(certain, estimate): a stale estimate (no ANALYZE since a pause held thousands)
    # never hides jobs counted.
    return {
        status: count
        if count.exact
        else JobCount(max(count.value, round(shares.get(status, 0.0))), exact=False)
        for status, count in counted.items()
    }


@dataclass(frozen=True)
class PendingFigures:
    """Pending jobs past a cut-off and due soon, each counted up to a cap plus one (more
    than the cap: at least that many), and the oldest run_at past the cut-off."""

    overdue: int
    oldest_overdue: datetime | None
    due_soon: int


def pending_figures(
    *, cutoff: datetime, soon: tuple[datetime, datetime], up_to: int
) -> PendingFigures:
    """Pending jobs due before ``cutoff``, and due in ``soon`` (from, until) but for held
    ones (paused: they do not run then), each counted up to ``up_to + 1``; the oldest
    run_at before ``cutoff``. One statement: one snapshot, so a job the dispatcher moves
    meanwhile is counted once.

    Each part reads its own partial index (:func:`status_parts`) and stops at the cap:
    a backlog of millions (workers away, a long pause) costs what ten thousand do. The
    held jobs are read by kind (:func:`held_jobs_sql`): their oldest with one probe per
    kind held.
    """
    table = connection.ops.quote_name(ScheduledJob._meta.db_table)
    ready = status_parts(states.PENDING, held=False)
    # Identifiers quoted from the model's own names; every value is a parameter.
    capped = (
        "(SELECT count(*) FROM (SELECT 1 FROM {table} WHERE status = %s{part} AND {range} "
        "LIMIT %s) AS capped)"
    )
    overdue = [capped.format(table=table, part=part, range="run_at < %s") for _, part in ready]
    overdue.append(
        f"(SELECT count(*) FROM (SELECT 1 FROM {held_jobs_sql(table, due='job.run_at < %s')} "  # noqa: S608
        "LIMIT %s) AS capped)"
    )
    due_soon = [
        capped.format(table=table, part=part, range="run_at >= %s AND run_at < %s")
        for _, part in ready
    ]
    oldest = [
        f"(SELECT min(run_at) FROM {table} WHERE status = %s{part})"  # noqa: S608
        for _, part in ready
    ]
    oldest.append(f"(SELECT min(held.run_at) FROM {held_jobs_sql(table, due='TRUE')})")  # noqa: S608
    params = [
        *(value for status, _ in ready for value in (status, cutoff, up_to + 1)),
        *(cutoff, up_to + 1, up_to + 1),
        *(value for status, _ in ready for value in (status, *soon, up_to + 1)),
        *(status for status, _ in ready),
        1,
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {' + '.join(overdue)}, {' + '.join(due_soon)}, least({', '.join(oldest)})",
            params,
        )
        overdue_count, soon_count, first = cursor.fetchone()
    return PendingFigures(
        overdue=min(overdue_count, up_to + 1),
        oldest_overdue=first if first is not None and first < cutoff else None,
        due_soon=min(soon_count, up_to + 1),
    )


def held_kinds_sql(table: str) -> str:
    """``WITH RECURSIVE kinds (task_name, queue) AS (…)``: the kinds of job held, found in
    the held jobs' index one probe each (a loose index scan), however many are held."""
    # The table's name from the model.
    return (
        "WITH RECURSIVE kinds (task_name, queue) AS ("  # noqa: S608
        f"(SELECT task_name, queue FROM {table} WHERE held ORDER BY task_name, queue LIMIT 1) "
        "UNION ALL SELECT next.task_name, next.queue FROM kinds CROSS JOIN LATERAL ("
        f"SELECT job.task_name, job.queue FROM {table} AS job WHERE job.held "
        "AND (job.task_name, job.queue) > (kinds.task_name, kinds.queue) "
        "ORDER BY job.task_name, job.queue LIMIT 1) AS next)"
    )


def held_jobs_sql(table: str, *, due: str) -> str:
    """``(…) AS held``: the held jobs (``id``, ``run_at``) that ``due`` (SQL on
    ``job.run_at``) keeps, at most a number of them per kind (task, queue), each kind's
    oldest first. Parameters: ``due``'s, then that number.

    Read kind by kind from the held jobs' index alone, whose order is (task, queue,
    run_at): with ``status`` and ``held``, once a pause held a large share of the table,
    the planner walked the run_at index through the whole history instead (1.35 s at a
    million held among 2.4 million rows). A held job is scheduled: a job is held only
    while scheduled, under its row lock, and every change of status clears ``held``
    (``transitions.NOT_HELD``).
    """
    # The table's name from the model; every value is a parameter.
    return (
        f"({held_kinds_sql(table)} SELECT first.id, first.run_at FROM kinds "  # noqa: S608
        f"CROSS JOIN LATERAL ({oldest_held_of_kind_sql(table, due=due)}) AS first) AS held"
    )


def oldest_held_of_kind_sql(table: str, *, due: str = "TRUE") -> str:
    """``SELECT job.id, job.run_at …``: the oldest held jobs of the kind of ``kinds``
    (:func:`held_kinds_sql`) that ``due`` (SQL on ``job.run_at``) keeps, for a lateral
    join. Parameters: ``due``'s, then how many at most."""
    # The table's name from the model; every value is a parameter.
    return (
        f"SELECT job.id, job.run_at FROM {table} AS job WHERE job.held "  # noqa: S608
        f"AND job.task_name = kinds.task_name AND job.queue = kinds.queue AND {due} "
        # By kind, then run_at: the same order for one kind, but one only the held
        # index serves. With run_at alone, the run_at index served it too, and the
        # planner sometimes walked it through the history, filtering for the kind.
        "ORDER BY job.task_name, job.queue, job.run_at, job.id LIMIT %s"
    )


@contextmanager
def read_from_indexes(*, timeout: timedelta | None = None) -> Iterator[datetime]:
    """A transaction whose counts the planner serves from indexes, whatever the table's
    layout, and whose statements each end within ``timeout`` (or raise a DatabaseError).
    It yields PostgreSQL's clock as the transaction starts, the instant to judge its
    figures at: the web host's own clock is checked by nothing, and one ahead by a
    minute and a half called jobs due 20 s ago overdue.

    Counting a status up to a cap, the planner assumes the rows it wants are spread
    evenly and reads the table from its first page for them; with the history at the
    head of the table and no VACUUM since a bulk load, that read most of it (0.16 s at a
    million rows, against 6 ms from the index). Nor does it start parallel workers for a
    read of a few index entries, misled by status and run_at being correlated. Inside a
    transaction of the caller's (ATOMIC_REQUESTS), the settings last until it ends.
    """
    settings = {"enable_seqscan": "off", "max_parallel_workers_per_gather": "0"}
    if timeout is not None:
        settings["statement_timeout"] = str(round(timeout.total_seconds() * 1000))
    # set_config(…, true) is SET LOCAL: the settings and the clock in one round trip.
    configs = ", ".join("set_config(%s, %s, true)" for _ in settings)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"SELECT statement_timestamp(), {configs}",
            [value for pair in settings.items() for value in pair],
        )
        now: datetime = cursor.fetchone()[0]
        yield now


#: How many consecutive attempt ids a sample reads together (the same few pages).
SAMPLE_RUN_LENGTH = 50
#: How far back from a window's start its first attempt id is looked for, and among how
#: many of its first attempts (more than ever start at one instant).
ID_ORDER_SLACK = timedelta(minutes=1)
ID_ORDER_ROWS = 1_000


@dataclass(frozen=True)
class AttemptSample:
    """Attempts to read for a window, and how many attempts each one read stands
    for: 1 when the window is read whole.

    ``attempts`` is a condition for ``filter()``: for a window read whole, its start on
    the start-time index; for a sample, ``id = ANY`` of an array, which the planner
    looks up in the primary key id by id (of ``IN (subquery)`` it may rather hash the
    whole table).
    """

    attempts: Q | RawSQL
    scale: float


def attempt_samples(
    *, starts: list[datetime], size: int, run_length: int = SAMPLE_RUN_LENGTH
) -> list[AttemptSample]:
    """For the windows from each of ``starts`` to now, the window's attempts when it
    holds at most ``size``, else ``size`` attempt ids between its first attempt id and the
    last one (attempt ids grow with their start): one statement of a few index probes,
    whatever the window holds.

    The window is to be a filter of each figure read from them, not of the rows: with it
    in the WHERE clause the planner would rather scan the start-time index than look up
    the sampled ids. The attempts read may lie a little outside the window.
    """
    attempts = JobAttempt._meta.db_table
    # The lowest id among the window's first ID_ORDER_ROWS attempts, not the first one's:
    # jobs due at one instant start together, their attempts' ids in the order their
    # claims ran, and the first by start time was not the lowest id (after a quiet
    # minute, the burst's lower ids were left out of the window, failures among them).
    # Then the window's attempts counted up to size + 1 on the start-time index: the ids
    # from that lowest one span the minute before the window too, and a quiet window
    # after a busy minute was sampled.
    probes = ", ".join(
        f"(SELECT min(id) FROM (SELECT id FROM {attempts} WHERE started_at >= %s "  # noqa: S608
        "ORDER BY started_at LIMIT %s) AS earliest), "
        f"(SELECT count(*) FROM (SELECT FROM {attempts} WHERE started_at >= %s "
        "LIMIT %s) AS capped)"
        for _ in starts
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT (SELECT max(id) FROM {attempts}), {probes}",  # noqa: S608
            # Ids follow start times only roughly (clocks of workers, commit order).
            [
                value
                for start in starts
                for value in (start - ID_ORDER_SLACK, ID_ORDER_ROWS, start, size + 1)
            ],
        )
        last, *found = cursor.fetchone()
    last = last or 0
    return [
        # At most size attempts, those the start-time index finds: every one.
        AttemptSample(Q(started_at__gte=start), 1.0)
        if count <= size
        else _attempt_runs(first, last, size, run_length)
        for start, first, count in zip(starts, found[::2], found[1::2], strict=True)
    ]


def _attempt_runs(lowest: int, highest: int, size: int, run_length: int) -> AttemptSample:
    """Attempt ids to read between ``lowest`` and ``highest``, and what each one stands for.

    Every id when there are at most ``size``; otherwise ``size`` ids in runs of
    ``run_length`` consecutive ids spread evenly over the range: consecutive attempts lie
    in the same pages, so the sample reads few pages, and the runs cover the whole
    window (an incident at any moment shows).
    """
    span = highest - lowest + 1
    if span <= size:
        spacing, length = max(span, 1), max(span, 1)
    else:
        spacing, length = math.ceil(span / (size // run_length)), run_length
    # The column's name quoted from the model's; every value is a parameter.
    column = ".".join(map(connection.ops.quote_name, (JobAttempt._meta.db_table, "id")))
    attempts = RawSQL(  # noqa: S611
        f"{column} = ANY(ARRAY(SELECT start + offset_in_run FROM generate_series(%s::bigint, "  # noqa: S608
        "%s::bigint, %s::bigint) AS start, generate_series(0, %s - 1) AS offset_in_run))",
        (lowest, highest, spacing, length),
        output_field=models.BooleanField(),
    )
    return AttemptSample(attempts, spacing / length)


def capped_status_counts(*, up_to: int) -> dict[Status, JobCount]:
    """Jobs in each status, each part of it (:func:`status_parts`) counted up to
    ``up_to + 1`` at most: one statement, an index-only scan per part that stops there.
    A count is exact unless a part reached its cap (more than ``up_to`` then: its
    value adds ``up_to + 1`` for that part, which holds at least as many); the
    parts of one status (scheduled: held or not) may add up to more, exactly."""
    table = connection.ops.quote_name(ScheduledJob._meta.db_table)
    column = connection.ops.quote_name(ScheduledJob._meta.get_field("status").column)
    parts = status_parts(states.ALL)
    # Identifiers quoted from the model's own names; every value is a parameter.
    capped = ", ".join(
        f"(SELECT count(*) FROM (SELECT 1 FROM {table} WHERE {column} = %s{part} "  # noqa: S608
        "LIMIT %s) AS capped)"
        for _, part in parts
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {capped}", [value for status, _ in parts for value in (status, up_to + 1)]
        )
        counted = {status: JobCount(0, exact=True) for status in Status}
        for (status, _), count in zip(parts, cursor.fetchone(), strict=True):
            so_far = counted[status]
            counted[status] = JobCount(so_far.value + count, so_far.exact and count <= up_to)
    return counted


def _status_shares(cursor: Any, *, table: str, column: str) -> dict[Status, float]:
    """The planner's estimated number of rows per status value."""
    cursor.execute(
        """
        SELECT greatest(c.reltuples, 0), s.most_common_vals::text::text[], s.most_common_freqs
        FROM pg_class c
        LEFT JOIN pg_stats s
            ON s.schemaname = current_schema() AND s.tablename = c.relname AND s.attname = %s
        WHERE c.oid = to_regclass(%s)
        """,
        [column, table],
    )
    row = cursor.fetchone()
    if row is None or row[1] is None:
        return {}
    rows, values, frequencies = row
    return {Status(v): rows * f for v, f in zip(values, frequencies, strict=True) if v in Status}


#: The dead-letter queues the monitoring page and the metrics look at: the default queue's
#: and those of the first others by name, one SQS call each, all at once.
WATCHED_QUEUES = PEEKS_AT_ONCE


#: How many of a queue's latest jobs (by run_at) :func:`watched_queues` reads, with
#: ``live``, for one not yet ended: a job due after an ended one normally has not ended,
#: so one is read for a queue in use; all of a retired queue's, kept for the retention
#: period, were read at every dispatcher's start.
LIVE_QUEUE_PROBE = 1000


def watched_queues(*, default: str, limit: int = WATCHED_QUEUES, live: bool = False) -> list[str]:
    """``default``, then the other queues jobs in the table name, by name: ``limit`` in all.

    A loose scan of the queue index (which holds the jobs of every queue but the built-in
    default's): one probe per queue, however many jobs each holds. So the built-in
    ``scheduler-jobs`` is missing when ``default`` is another queue, even if jobs are on
    it; and a queue stays in the list as long as jobs on it do (the retention period).
    With ``live``, only the queues of jobs not yet ended (scheduled, held, enqueued,
    running), those a dispatcher sends to: one whose :data:`LIVE_QUEUE_PROBE` latest
    jobs by run_at have all ended (a long-running or paused job's queue with more
    ended since, none due later) is left out.
    """
    table = connection.ops.quote_name(ScheduledJob._meta.db_table)
    column = connection.ops.quote_name(ScheduledJob._meta.get_field("queue").column)
    run_at = connection.ops.quote_name(ScheduledJob._meta.get_field("run_at").column)
    status = connection.ops.quote_name(ScheduledJob._meta.get_field("status").column)
    # A queue's latest jobs, backwards along the same index (ordered by its columns: by
    # run_at alone, the planner walks the run_at index, every queue's jobs, down to this
    # queue's); a few rows read for a queue in use, LIVE_QUEUE_PROBE for a retired one.
    live_only = f"""
        AND EXISTS (
            SELECT 1 FROM (SELECT {status} FROM {table}
                           WHERE {column} <> %(built_in)s AND {column} = queues.name
                           ORDER BY {column} DESC, {run_at} DESC LIMIT %(probe)s) AS latest
            WHERE latest.{status} = ANY(%(live)s)
        )
    """  # noqa: S608  (identifiers quoted from the model's own names; values are parameters)
    # The literal DEFAULT_QUEUE_NAME, as psycopg2 writes it in, lets the planner use the
    # partial index; jobs of a configured default queue of another name are in it too.
    sql = f"""
        WITH RECURSIVE queues(name) AS (
            (SELECT {column} FROM {table} WHERE {column} <> %(built_in)s
             ORDER BY {column} LIMIT 1)
            UNION ALL
            SELECT (SELECT {column} FROM {table}
                    WHERE {column} <> %(built_in)s AND {column} > queues.name
                    ORDER BY {column} LIMIT 1)
            FROM queues WHERE queues.name IS NOT NULL
        )
        SELECT name FROM queues WHERE name IS NOT NULL AND name <> %(default)s
        {live_only if live else ""}
        LIMIT %(others)s
    """  # noqa: S608  (identifiers quoted from the model's own names; values are parameters)
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            {
                "built_in": DEFAULT_QUEUE_NAME,
                "default": default,
                "others": max(0, limit - 1),
                "probe": LIVE_QUEUE_PROBE,
                "live": [str(live_status) for live_status in states.ACTIVE],
            },
        )
        return [default, *(name for (name,) in cursor.fetchall())]


class JobAttempt(models.Model):
    """One execution of a job by a worker, kept as history."""

    class Outcome(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        #: The task asked to run again (``self.retry()``, ``autoretry_for``).
        RETRIED = "retried", "Retried"
        ERROR = "error", "Error"
        LEASE_EXPIRED = "lease_expired", "Lease expired"

    # No index of its own: the unique (job, dispatch_token) index leads with job_id.
    job = models.ForeignKey(
        ScheduledJob, on_delete=models.CASCADE, related_name="history", db_index=False
    )
    # The job's task, copied: monitoring groups a day of attempts by task without a join.
    task_name = models.CharField(max_length=255, blank=True, default="", db_default="")
    number = models.PositiveIntegerField()
    dispatch_token = models.UUIDField()
    # The run_at this attempt was due at: lateness is started_at - scheduled_for.
    scheduled_for = models.DateTimeField()
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.RUNNING)
    error = models.TextField(blank=True, default="")
    worker = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        ordering = ["job_id", "number"]
        constraints = [
            models.UniqueConstraint(
                fields=["job", "dispatch_token"], name="scheduler_attempt_once"
            ),
        ]
        indexes = [
            # Monitoring: the attempts that failed recently. Partial, so the end of an
            # attempt that succeeded adds no tuple here.
            models.Index(
                fields=["finished_at"],
                name="scheduler_attempt_finished_idx",
                condition=Q(outcome__in=["error", "lease_expired"]),  # Outcome.ERROR, LEASE_EXPIRED
            ),
            # Monitoring: lateness of the attempts started in the last hour or day.
            models.Index(fields=["started_at"], name="scheduler_attempt_started_idx"),
        ]

    def __str__(self) -> str:
        return f"job #{self.job_id} attempt {self.number}: {self.outcome}"


class PauseQuerySet(models.QuerySet["Pause"]):
    """Which pauses hold a job back."""

    def covering(self, *, task_name: Any, queue: Any) -> "PauseQuerySet":
        """Pauses that cover a job of ``task_name`` on ``queue`` (values or OuterRefs)."""
        return self.filter(Q(task_name="") | Q(task_name=task_name), Q(queue="") | Q(queue=queue))


def covered_by_pause() -> Exists:
    """Whether a pause covers the job of the outer query (its task and queue), as
    :meth:`PauseQuerySet.covering` says."""
    return Exists(Pause.objects.covering(task_name=OuterRef("task_name"), queue=OuterRef("queue")))


def paused_sql(*, task_name: str, queue: str) -> str:
    """SQL that is true when a pause covers a job whose task name and queue are the SQL
    expressions ``task_name`` and ``queue``: :meth:`PauseQuerySet.covering`, for the
    statements written out by hand."""
    pause = connection.ops.quote_name(Pause._meta.db_table)
    # Names from the model and the caller's SQL; no value.
    return (
        f"EXISTS (SELECT FROM {pause} AS pause WHERE pause.task_name IN ('', {task_name}) "
        f"AND pause.queue IN ('', {queue}))"
    )


class Pause(models.Model):
    """A kind of job that must not start now: a task, a queue, or a task on one queue.

    An empty ``task_name`` or ``queue`` means any. Jobs of a paused kind stay in
    PostgreSQL (a message already in SQS is handed back by the worker), the due ones
    marked ``held`` by the dispatcher's recovery; on resume, the row is deleted, the
    held jobs are released, and each of them runs once, oldest first.
    """

    task_name = models.CharField(max_length=255, blank=True, default="")
    queue = models.CharField(max_length=80, blank=True, default="")
    reason = models.TextField(blank=True, default="")
    paused_by = models.CharField(max_length=255, blank=True, default="")
    paused_at = models.DateTimeField(default=timezone.now)

    objects = PauseQuerySet.as_manager()

    class Meta:
        ordering = ["-paused_at"]
        constraints = [
            models.UniqueConstraint(fields=["task_name", "queue"], name="scheduler_pause_once"),
            models.CheckConstraint(
                condition=~Q(task_name="") | ~Q(queue=""), name="scheduler_pause_names_a_kind"
            ),
        ]

    def __str__(self) -> str:
        kind = " on ".join(part for part in (self.task_name, self.queue) if part)
        return f"paused: {kind}"


class AuditAction(models.TextChoices):
    """What an operator did."""

    SCHEDULE = "schedule", "Schedule"
    CANCEL = "cancel", "Cancel"
    RESCHEDULE = "reschedule", "Reschedule"
    RETRY = "retry", "Retry"
    RUN_NOW = "run_now", "Run now"
    PAUSE = "pause", "Pause"
    RESUME = "resume", "Resume"
    RESEND = "resend", "Re-send"


class AuditEntry(models.Model):
    """One operator action (who, when, why, on which job), written with the action itself.

    Services write an entry only when they are given an ``actor``: code that schedules
    thousands of jobs pays nothing. The job's id is kept (without a foreign-key
    constraint) after retention purges the job, so the trail outlives it.
    """

    Action = AuditAction

    action = models.CharField(max_length=16, choices=Action.choices)
    actor = models.CharField(max_length=255)
    reason = models.TextField(blank=True, default="")
    job = models.ForeignKey(
        ScheduledJob,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        null=True,
        blank=True,
        related_name="audit_entries",
    )
    details = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-at", "-pk"]
        verbose_name_plural = "audit entries"
        indexes = [
            # The admin's search by who acted (``=actor``: case-insensitive), newest
            # first: a bulk action writes an entry per job, thousands at a click.
            models.Index(Upper("actor"), F("id"), name="scheduler_audit_actor_idx"),
            # The admin's filter by action, newest first: a rare action (a pause) among
            # millions of entries, and the capped count that never reaches its cap.
            models.Index(fields=["action", "id"], name="scheduler_audit_action_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=~Q(actor=""), name="scheduler_audit_has_actor"),
            models.CheckConstraint(
                condition=Q(action__in=list(AuditAction)),
                name="scheduler_audit_action_valid",
            ),
        ]

    def __str__(self) -> str:
        target = f" job #{self.job_id}" if self.job_id else ""
        return (
            f"{self.get_action_display()}{target} by {self.actor} at {self.at:%Y-%m-%d %H:%M:%S%z}"
        )


class FormSubmission(models.Model):
    """An admin form that acts once (scheduling a job, moving jobs by an offset), as
    submitted: a second submission of the same page, a double click, is refused.

    Kept a day (the dispatcher's purge), longer than a page is resubmitted.
    """

    token = models.UUIDField(primary_key=True)
    submitted_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.token} at {self.submitted_at:%Y-%m-%d %H:%M:%S%z}"


class DispatcherHeartbeat(models.Model):
    """The latest tick of one dispatcher process, for monitoring; one silent for
    :attr:`FORGOTTEN_AFTER` is forgotten (every process leaves a row)."""

    FORGOTTEN_AFTER = timedelta(days=1)

    dispatcher = models.CharField(max_length=255, primary_key=True)
    last_tick_at = models.DateTimeField()
    jobs_sent = models.PositiveIntegerField(default=0)
    jobs_recovered = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    # Since this dispatcher's first tick, for metrics: each row only grows.
    sent_total = models.PositiveBigIntegerField(default=0, db_default=0)
    errors_total = models.PositiveBigIntegerField(default=0, db_default=0)

    class Meta:
        ordering = ["-last_tick_at"]

    def __str__(self) -> str:
        return f"{self.dispatcher} at {self.last_tick_at:%Y-%m-%d %H:%M:%S%z}"
