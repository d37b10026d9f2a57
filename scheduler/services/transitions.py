"""The one way a job changes status: a compare-and-set UPDATE of a transition.

Every service applies the transitions of :mod:`scheduler.states` through :func:`apply`,
so none can bypass the table.
"""

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from django.db import connection
from django.db.models import Field, QuerySet
from django.db.models.expressions import RawSQL
from django.utils import timezone

from scheduler.backoff import exponential_backoff
from scheduler.conf import scheduler_settings
from scheduler.exceptions import InvalidTransitionError, JobNotFoundError
from scheduler.models import ScheduledJob
from scheduler.states import Transition

JobOrId = ScheduledJob | int


def apply(transition: Transition, jobs: QuerySet[ScheduledJob], **changes: Any) -> int:
    """The compare-and-set of ``transition``: move those of ``jobs`` still in its sources.

    Returns how many jobs moved.
    """
    return jobs.filter(status__in=transition.sources).update(status=transition.target, **changes)


def apply_each(
    transition: Transition,
    job_ids: Sequence[int],
    per_job: Mapping[str, Sequence[Any]],
    **changes: Any,
) -> int:
    """The compare-and-set of ``transition`` for many jobs, each with values of its own.

    ``per_job`` maps a field to one value per job of ``job_ids``; ``changes`` are the
    same for all (a value, or a ``RawSQL`` of the row's columns). One ``UPDATE … FROM
    unnest(…)`` whatever the number of jobs: the values travel as arrays, not as one SQL
    expression per job. Returns how many moved.
    """
    if not job_ids:
        return 0
    meta = ScheduledJob._meta
    quote = connection.ops.quote_name
    names = ["id", *per_job]
    fields = [_concrete(meta.get_field(name)) for name in names]
    assignments = [f"{quote(field.column)} = v.{quote(field.column)}" for field in fields[1:]]
    params: list[Any] = []
    for name, value in {"status": transition.target, **changes}.items():
        field = _concrete(meta.get_field(name))
        if isinstance(value, RawSQL):  # computed from the row's own columns
            assignments.append(f"{quote(field.column)} = {value.sql}")
            params.extend(value.params)
        else:
            assignments.append(f"{quote(field.column)} = %s")
            params.append(field.get_db_prep_save(value, connection))
    arrays = ", ".join(f"%s::{field.db_type(connection)}[]" for field in fields)
    columns = ", ".join(quote(field.column) for field in fields)
    table = quote(meta.db_table)
    changed = ", ".join(assignments)
    # Every name comes from the model's meta and every value is a parameter.
    sql = f"UPDATE {table} SET {changed} FROM unnest({arrays}) AS v({columns}) WHERE "  # noqa: S608
    sql += f"{table}.{quote('id')} = v.{quote('id')} AND {table}.{quote('status')} = ANY(%s)"
    with connection.cursor() as cursor:
        cursor.execute(
            sql, [*params, list(job_ids), *map(list, per_job.values()), list(transition.sources)]
        )
        moved: int = cursor.rowcount
        return moved


def _concrete(field: object) -> "Field[Any, Any]":
    """A field stored in a column of its own (not a relation's reverse side)."""
    if not isinstance(field, Field) or not field.column:
        raise TypeError(f"{field!r} is not a column of the job table")
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


def waiting_until(run_at: Any) -> dict[str, Any]:
    """The fields of a job that goes back to waiting in PostgreSQL for ``run_at``."""
    return {
        "run_at": run_at,
        "dispatch_token": None,
        "enqueued_at": None,
        "started_at": None,
        "sends": 0,
        "resend_at": None,
    }


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
        return int(job_or_id.pk)
    if isinstance(job_or_id, bool) or not isinstance(job_or_id, int):
        raise TypeError(f"expected a ScheduledJob or its id, got {job_or_id!r}")
    return job_or_id
