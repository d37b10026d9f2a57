"""The one way a job changes status: a compare-and-set UPDATE of a transition.

Every service applies the transitions of :mod:`scheduler.states` through :func:`apply`,
so none can bypass the table.
"""

import functools
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any
from uuid import UUID

from django.db import connection, transaction
from django.db.models import Field, QuerySet, UUIDField
from django.db.models.expressions import RawSQL
from django.utils import timezone

from scheduler.backoff import exponential_backoff
from scheduler.conf import scheduler_settings
from scheduler.exceptions import InvalidTransitionError, JobNotFoundError
from scheduler.models import ScheduledJob
from scheduler.states import Transition

JobOrId = ScheduledJob | int


def _lazy(idle_limit: timedelta | None = None) -> str:
    """A CTE ``lazy`` that turns ``synchronous_commit`` off for the current transaction,
    from within the statement that joins it (its commit returns without waiting for the
    disk), and sets the transaction's ``idle_limit``, if any."""
    settings = ["set_config('synchronous_commit', 'off', true)"]
    if idle_limit is not None:
        idle = round(idle_limit.total_seconds() * 1000)
        settings.append(f"set_config('idle_in_transaction_session_timeout', '{idle}', true)")
    return f"WITH lazy AS MATERIALIZED (SELECT {', '.join(settings)}) "


#: :func:`_lazy` without an idle limit: for the statements that join it themselves.
LAZY_COMMIT = _lazy()


#: What every change of status sets besides: a job held back by a pause (see
#: :func:`scheduler.services.dispatching.hold_paused`) that is cancelled, retried,
#: rescheduled, put back… is held no more; one whose kind is still paused is held again
#: by the next recovery. An unchanged value keeps a HOT update HOT.
NOT_HELD: dict[str, Any] = {"held": False}


def apply(transition: Transition, jobs: QuerySet[ScheduledJob], **changes: Any) -> int:
    """The compare-and-set of ``transition``: move those of ``jobs`` still in its sources.

    Returns how many jobs moved. Like every change of status, it clears ``held``
    (see :data:`NOT_HELD`).
    """
    return jobs.filter(status__in=transition.sources).update(
        status=transition.target, **{**NOT_HELD, **changes}
    )


def apply_each(
    transition: Transition,
    job_ids: Sequence[int],
    per_job: Mapping[str, Sequence[Any]],
    *,
    matching: Mapping[str, Sequence[Any]] | None = None,
    durable: bool = True,
    **changes: Any,
) -> int:
    """The compare-and-set of ``transition`` for many jobs, each with values of its own.

    ``per_job`` maps a field to one value per job of ``job_ids``; ``changes`` are the
    same for all (a value, or a ``RawSQL`` of the row's columns). ``matching`` maps a
    field to the value, one per job, that a job must still hold to move, besides its
    status. One ``UPDATE … FROM unnest(…)`` whatever the number of jobs: the values
    travel as arrays, not as one SQL expression per job. Returns how many moved.

    ``durable=False`` lets the transaction's commit return before its record reaches
    the disk (``synchronous_commit`` off for this transaction only), for changes a
    database crash may undo without harm.
    """
    if not job_ids:
        return 0
    matching = matching or {}
    fields = [_field(name) for name in ("id", *per_job)]
    matched = [_field(name) for name in matching]
    quote = connection.ops.quote_name
    table = quote(ScheduledJob._meta.db_table)
    per_job_set = [f"{quote(field.column)} = v.{quote(field.column)}" for field in fields[1:]]
    # Under names of their own: a field may be both matched and set.
    match_columns = [quote(f"was_{field.column}") for field in matched]
    conditions = "".join(
        f"AND {table}.{quote(field.column)} IS NOT DISTINCT FROM v.{column} "
        for field, column in zip(matched, match_columns, strict=True)
    )
    changed, params = _set_clause(transition, changes)
    arrays = ", ".join(f"%s::{field.db_type(connection)}[]" for field in [*fields, *matched])
    columns = ", ".join([*(quote(field.column) for field in fields), *match_columns])
    # Every name comes from the model's meta and every value is a parameter.
    sql = LAZY_COMMIT if not durable else ""
    sql += f"UPDATE {table} SET {', '.join([*per_job_set, changed])} "  # noqa: S608
    sql += f"FROM unnest({arrays}) AS v({columns}) "
    sql += "" if durable else "CROSS JOIN lazy "
    # The ids again, as a condition on the table's own key: the join alone gives the
    # planner no estimate of how few rows match, and on a table of some thousands of
    # rows it read them all rather than look up each id (4.6 ms against 1.5 for 100).
    sql += f"WHERE {table}.{quote('id')} = ANY(%s::{fields[0].db_type(connection)}[]) "
    sql += f"AND {table}.{quote('id')} = v.{quote('id')} {conditions}"
    sql += f"AND {table}.{quote('status')} = ANY(%s)"
    ids, *values = map(array_literal, [job_ids, *per_job.values(), *matching.values()])
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, ids, *values, ids, list(transition.sources)])
        moved: int = cursor.rowcount
        return moved


def apply_next(
    transition: Transition,
    jobs: QuerySet[ScheduledJob],
    *,
    order_by: str,
    limit: int,
    returning: Sequence[str],
    **changes: Any,
) -> list[tuple[Any, ...]]:
    """The compare-and-set of ``transition`` for the first ``limit`` of ``jobs``.

    Jobs another transaction holds are skipped. One statement (see :func:`apply_chosen`),
    committed at once: no lock outlives it. Returns the ``returning`` fields of each job
    moved, as they are after the change.
    """
    with transaction.atomic():  # Django compiles FOR UPDATE only inside a transaction
        chosen = (
            jobs.filter(status__in=transition.sources)
            .order_by(order_by)
            .select_for_update(skip_locked=True)
            .values_list("pk")[:limit]
        )
        return apply_chosen(
            transition, chosen.query.sql_with_params(), returning=returning, **changes
        )


def apply_chosen(
    transition: Transition,
    chosen: tuple[str, Sequence[Any]],
    *,
    returning: Sequence[str],
    returning_was: Sequence[str] = (),
    order_by: Sequence[str] = (),
    durable: bool = True,
    idle_limit: timedelta | None = None,
    **changes: Any,
) -> list[tuple[Any, ...]]:
    """The compare-and-set of ``transition`` for the jobs a locking SELECT chooses.

    ``chosen`` is that SELECT's SQL and parameters: the jobs' ids, then their
    ``returning_was`` fields. One ``WITH chosen AS (…) UPDATE … RETURNING``, in the
    caller's transaction. Returns, for each job moved, its ``returning`` fields as they
    are after the change (a UUID as its text), then its ``returning_was`` fields as they
    were before it, as text, which :func:`apply_each` takes to put them back (the id
    must be among the ``returning`` fields then); in the order of the ``order_by``
    fields (of ``returning``), if any. ``durable`` as there. ``idle_limit`` (with
    ``durable=False``) has PostgreSQL end the session should the transaction sit idle
    that long, for one that holds the rows while it waits on the network.
    """
    changed, params = _set_clause(transition, changes)
    sql = _chosen_statement(
        chosen[0],
        changed,
        tuple(returning),
        tuple(returning_was),
        tuple(order_by),
        durable=durable,
        idle_limit=idle_limit,
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*chosen[1], *params, list(transition.sources)])
        moved: list[tuple[Any, ...]] = cursor.fetchall()
        return moved


@functools.lru_cache(maxsize=64)
def _chosen_statement(
    chosen: str,
    changed: str,
    returning: tuple[str, ...],
    returning_was: tuple[str, ...],
    order_by: tuple[str, ...],
    *,
    durable: bool,
    idle_limit: timedelta | None,
) -> str:
    """The SQL of :func:`apply_chosen`, built once per shape: the dispatcher runs the
    same one for every batch, and building it cost a twentieth of a batch of 100."""
    quote = connection.ops.quote_name
    table = quote(ScheduledJob._meta.db_table)
    was = [quote(f"was_{_field(name).column}") for name in returning_was]
    after = [_returned(table, name) for name in returning]
    # Every name comes from the model's meta and every value is a parameter. The ids
    # as an array on the table's own key, as in apply_each: joined to the table, the
    # chosen rows gave the planner no estimate, and it read the whole of a table of some
    # thousands of rows.
    update = f"UPDATE {table} SET {changed} "  # noqa: S608
    update += "" if durable else "FROM lazy "
    update += f"WHERE {table}.{quote('id')} = ANY(ARRAY(SELECT chosen_id FROM chosen)) "  # noqa: S608
    update += f"AND {table}.{quote('status')} = ANY(%s) "
    update += f"RETURNING {', '.join(after)}"
    sql = f"{_lazy(idle_limit)}, " if not durable else "WITH "
    sql += f"chosen ({', '.join(['chosen_id', *was])}) AS ({chosen}) "
    if not was and not order_by:
        return sql + update
    sql += f", moved AS ({update}) SELECT moved.*"
    if was:
        # The values before, as the chosen rows hold them, joined once the rows moved:
        # joined in the UPDATE, they cost the dispatcher's claim of 100 jobs a tenth
        # more of the server's time.
        sql += "".join(f", chosen.{column}::text" for column in was)
        sql += f" FROM moved JOIN chosen ON chosen.chosen_id = moved.{quote('id')}"
    else:
        sql += " FROM moved"
    if order_by:
        # An UPDATE returns its rows in the order its plan met them.
        ordering = ", ".join(f"moved.{quote(_field(name).column)}" for name in order_by)
        sql += f" ORDER BY {ordering}"
    return sql


def apply_delivery(
    transition: Transition,
    *,
    job_id: int,
    token: UUID | None,
    alongside: str,
    alongside_params: Sequence[Any],
    **changes: Any,
) -> bool:
    """The compare-and-set of ``transition`` for the job that one delivery (its dispatch
    ``token``) runs, in ONE statement with ``alongside``: an INSERT, UPDATE or DELETE of
    another table that commits with it, whether the job moves or not. One round trip
    and, outside a transaction, no BEGIN or COMMIT of its own. Returns whether the job
    moved.
    """
    changed, params = _set_clause(transition, changes)
    quote = connection.ops.quote_name
    table = quote(ScheduledJob._meta.db_table)
    sql = f"WITH moved AS (UPDATE {table} SET {changed} "  # noqa: S608 - names, not input
    sql += f"WHERE {quote('id')} = %s AND {quote('dispatch_token')} = %s "
    sql += f"AND {quote('status')} = ANY(%s) RETURNING 1), alongside AS ({alongside}) "
    sql += "SELECT count(*) FROM moved"
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, job_id, token, list(transition.sources), *alongside_params])
        (moved,) = cursor.fetchone() or (0,)
        return bool(moved)


def _set_clause(transition: Transition, changes: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """``status = target``, ``held = false`` and ``changes`` as SQL assignments, with
    their parameters."""
    values = {"status": transition.target, **NOT_HELD, **changes}
    params: list[Any] = []
    shape: list[tuple[str, str | None]] = []
    for name, value in values.items():
        if isinstance(value, RawSQL):  # computed from the row's own columns
            shape.append((name, value.sql))
            params.extend(value.params)
        else:
            shape.append((name, None))
            params.append(_field(name).get_db_prep_save(value, connection))
    return _assignments(tuple(shape)), params


@functools.lru_cache(maxsize=256)
def _assignments(shape: tuple[tuple[str, str | None], ...]) -> str:
    """The assignments of :func:`_set_clause`: each field's column set to a parameter
    (None) or to its SQL."""
    quote = connection.ops.quote_name
    return ", ".join(
        f"{quote(_field(name).column)} = {'%s' if sql is None else sql}" for name, sql in shape
    )


def array_literal(values: Sequence[Any]) -> str:
    """``values`` as the text of one PostgreSQL array, cast by the statement.

    One parameter for psycopg2 to quote: a list would be adapted element by element,
    about 2 ms per 1,000 values (0.2 ms this way). Integers go as they are; anything
    else as a double-quoted string, in its ``str()`` form.
    """
    if all(type(value) is int for value in values):
        return "{" + ",".join(map(str, values)) + "}"
    return "{" + ",".join(map(_array_element, values)) + "}"


def _array_element(value: Any) -> str:
    if value is None:
        return "NULL"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _returned(table: str, name: str) -> str:
    """The job's field ``name`` in a RETURNING list; a UUID as its text, which is what a
    message carries: the driver's UUID, built for every row, cost a tenth of the
    dispatcher's claim of 100 jobs."""
    field = _field(name)
    column = f"{table}.{connection.ops.quote_name(field.column)}"
    return f"{column}::text" if isinstance(field, UUIDField) else column


def _field(name: str) -> "Field[Any, Any]":
    """The job's field ``name``, which must have a column of its own."""
    field = ScheduledJob._meta.get_field(name)
    if not isinstance(field, Field) or not field.column:
        raise TypeError(f"{name!r} is not a column of the job table")
    return field


def apply_one(job_id: int, transition: Transition, **changes: Any) -> None:
    """Apply ``transition`` to one job, or raise why it could not be applied."""
    if apply(
        transition, ScheduledJob.objects.filter(pk=job_id), updated_at=timezone.now(), **changes
    ):
        return
    status = ScheduledJob.objects.filter(pk=job_id).values_list("status", flat=True).first()
    if status is None:
        raise JobNotFoundError(job_id)
    raise InvalidTransitionError(
        job_id=job_id, action=transition.name, status=status, allowed=transition.sources
    )


#: What a job that goes back to waiting in PostgreSQL forgets of its last dispatch.
BACK_TO_WAITING: dict[str, Any] = {
    "dispatch_token": None,
    "enqueued_at": None,
    "started_at": None,
    "sends": 0,
    "resend_at": None,
}


def waiting_until(run_at: Any) -> dict[str, Any]:
    """The fields of a job that goes back to waiting in PostgreSQL for ``run_at``."""
    return {"run_at": run_at, **BACK_TO_WAITING}


def retry_delay(failed_attempts: int) -> timedelta:
    """The back-off before the next attempt, after ``failed_attempts`` failures."""
    return timedelta(
        seconds=exponential_backoff(
            failed_attempts,
            base=scheduler_settings.RETRY_BACKOFF_SECONDS,
            cap=scheduler_settings.RETRY_BACKOFF_MAX_SECONDS,
        )
    )


def job_id_of(job_or_id: JobOrId) -> int:
    """The id of a job given as itself or as its id."""
    if isinstance(job_or_id, ScheduledJob):
        if job_or_id.pk is None:
            raise ValueError("the job has not been saved: it has no id")
        return int(job_or_id.pk)
    if isinstance(job_or_id, bool) or not isinstance(job_or_id, int):
        raise TypeError(f"expected a ScheduledJob or its id, got {job_or_id!r}")
    return job_or_id
