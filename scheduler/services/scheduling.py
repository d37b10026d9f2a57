"""Scheduling jobs: the public entry points that insert them."""

import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import KW_ONLY, dataclass
from datetime import datetime, timedelta
from functools import cache, partial
from operator import attrgetter
from typing import Any, TypedDict, TypeVar, cast

from celery import Task
from django.db import IntegrityError, OperationalError, connections, router, transaction
from django.db.models import DateField, DateTimeField, Field
from django.utils import timezone
from typing_extensions import Unpack

from scheduler import validation
from scheduler.conf import scheduler_settings
from scheduler.exceptions import (
    DuplicateJobError,
    InvalidArgumentsError,
    SchedulerError,
    UnknownTaskError,
)
from scheduler.models import ScheduledJob
from scheduler.registry import (
    check_arguments,
    get_task,
    routed_queue,
    sqs_queue_of,
    task_name_of,
)
from scheduler.services import audit, refusals

logger = logging.getLogger(__name__)

UNIQUE_KEY_CONSTRAINT = "scheduler_job_unique_active_key"
_CONFLICT_DETAIL = re.compile(r"Key \(unique_key\)=\((.*)\) already exists\.", re.DOTALL)

E = TypeVar("E", bound=Exception)

#: How a field's value is written into the JSON that carries a batch's rows; other
#: fields' values (strings, numbers, JSON fields' own values) go in as they are.
_JSON_ENCODERS: dict[str, Callable[[Any], Any]] = {
    "DateTimeField": datetime.isoformat,
    "UUIDField": str,
}
#: The ``pre_save`` methods that return the field's attribute as it is, unless the field
#: has ``auto_now`` or ``auto_now_add``.
_READING_PRE_SAVES = {Field.pre_save, DateField.pre_save, DateTimeField.pre_save}


class JobOptions(TypedDict, total=False):
    """The keyword options of :func:`schedule_at`, shared by its variants."""

    queue: str | None
    max_attempts: int | None
    unique_key: str | None
    deadline: datetime | None
    reason: str
    actor: str | None


@dataclass(frozen=True)
class JobSpec:
    """One job for :func:`schedule_many`: the arguments :func:`schedule_at` takes."""

    task: Task[Any, Any] | str
    run_at: datetime
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] | None = None
    _: KW_ONLY
    queue: str | None = None
    max_attempts: int | None = None
    unique_key: str | None = None
    deadline: datetime | None = None


def schedule_at(
    task: Task[Any, Any] | str,
    run_at: datetime,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    queue: str | None = None,
    max_attempts: int | None = None,
    unique_key: str | None = None,
    deadline: datetime | None = None,
    reason: str = "",
    actor: str | None = None,
) -> ScheduledJob:
    """Schedule ``task(*args, **kwargs)`` to run at ``run_at``.

    The job is inserted in the caller's transaction: if that rolls back, there is no
    job. ``run_at`` must be timezone-aware; a past ``run_at`` means as soon as
    possible. Without a ``queue``, the job goes where Celery routes the task (its
    ``queue`` option or ``task_routes``), else to ``SCHEDULER_QUEUE_NAME``. A job not
    started by its ``deadline`` (aware, after ``run_at``) never starts: it ends
    ``expired``. Invalid input raises and writes nothing. With an ``actor`` (an
    operator's username), the audit trail records who scheduled it and why.
    """
    reason, actor = validation.reason(reason), validation.actor(actor)
    return _save(
        _new_job(
            JobSpec(
                task,
                run_at,
                args,
                kwargs,
                queue=queue,
                max_attempts=max_attempts,
                unique_key=unique_key,
                deadline=deadline,
            )
        ),
        reason=reason,
        actor=actor,
    )


def schedule_call(
    task: Task[Any, Any],
    run_at: datetime,
    args: Sequence[Any],
    kwargs: Mapping[str, Any] | None,
    *,
    celery_task_id: str,
    queue: str | None,
    deadline: datetime | None,
    retries: int,
) -> ScheduledJob:
    """A Celery call delayed beyond SQS's reach, as a job run once at ``run_at``.

    ``apply_async`` of a :class:`~scheduler.worker.task.SchedulerTask` calls this, in
    the caller's transaction. The job keeps Celery's rules: it records the call's
    ``celery_task_id``, it has the attempts the task's ``max_retries`` (or, when larger,
    the one its ``autoretry_for`` retries with: ``retry_kwargs``') leaves after
    ``retries`` (Celery's count so far), and an error fails it unless the task retries
    itself (``self.retry()``, ``autoretry_for``). Without a ``queue``, the job goes
    where Celery sends the call's message: its task's route, else the app's
    ``task_default_queue``. Invalid input raises and writes nothing.
    """
    if not queue and not routed_queue(task, args, kwargs or {}):
        # The workers of a project that only gave its app this task class consume that
        # queue, not SCHEDULER_QUEUE_NAME.
        queue = sqs_queue_of(task.app.conf.task_default_queue)
    allowed_retries = max(
        _allowed_retries(task.max_retries, retries=retries),
        _allowed_retries(_autoretry_max_retries(task), retries=0),
    )
    spec = JobSpec(
        task,
        run_at,
        args,
        kwargs,
        queue=queue,
        max_attempts=min(max(retries, allowed_retries) + 1, validation.MAX_ATTEMPTS_LIMIT),
        deadline=deadline,
    )
    return _save(
        _new_job(
            spec,
            attempts=retries,
            retry_on_error=False,
            celery_task_id=validation.task_id(celery_task_id),
        )
    )


def schedule_many(jobs: Iterable[JobSpec | Mapping[str, Any]]) -> list[ScheduledJob]:
    """Schedule many jobs in one INSERT (one per 64 MB of JSON), all or none: the bulk form
    of :func:`schedule_at`.

    Each item is a :class:`JobSpec` or a dict of its fields (``{"task": …, "run_at": …}``).
    Every item is validated as ``schedule_at`` validates its arguments; a bad one raises
    that same error, its message and ``index`` naming the item (``jobs[3]: …``). A
    ``unique_key`` repeated within the batch, or held by an active job, raises
    :class:`~scheduler.exceptions.DuplicateJobError`. On any error nothing is written and
    the caller's transaction stays usable. Returns the jobs, saved, in the given order.
    """
    # A batch names few tasks: each is looked up once.
    find_task, defaults = cache(_find_task), _Defaults.read()
    new_jobs = [_new_job_at(index, item, find_task, defaults) for index, item in enumerate(jobs)]
    if not new_jobs:
        return []
    keys = [job.unique_key for job in new_jobs]
    _refuse_repeated_keys(keys)
    # Keys taken in one order by every batch: two batches sharing keys in opposite orders
    # each waited for the other's key, and PostgreSQL failed one with "deadlock detected"
    # instead of a held key.
    _write(lambda: _insert(sorted(new_jobs, key=_key_order)), *keys, batch=True)
    ids = [job.pk for job in new_jobs]
    logger.info(
        "jobs scheduled count=%s first_job_id=%s last_job_id=%s",
        len(new_jobs),
        min(ids),
        max(ids),
    )
    return new_jobs


def schedule_in(
    task: Task[Any, Any] | str,
    delay: timedelta | float,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    **options: Unpack[JobOptions],
) -> ScheduledJob:
    """Schedule ``task`` to run ``delay`` (a timedelta or seconds) from now.

    Takes the same keyword options as :func:`schedule_at`.
    """
    run_at = validation.run_at_in(delay, now=timezone.now())
    return schedule_at(task, run_at, args, kwargs, **options)


@contextmanager
def unique_key_guard(*unique_keys: str | None, batch: bool = False) -> Iterator[None]:
    """A savepoint that turns the active-unique-key violation into DuplicateJobError.

    ``unique_keys`` are those of the jobs written inside; for a ``batch`` (its items'
    keys, in order), the error's ``index`` says whose key is held.
    """
    try:
        with transaction.atomic():
            yield
    except IntegrityError as error:
        if not any(unique_keys) or UNIQUE_KEY_CONSTRAINT not in str(error):
            raise
        # PostgreSQL names the key; on a server whose lc_messages translates the detail,
        # which of the keys is held is asked instead.
        named = _conflicting_key(error)
        keys = [named] if named else [key for key in unique_keys if key]
        held = ScheduledJob.objects.active().filter(unique_key__in=keys).order_by("unique_key")
        found = held.values_list("unique_key", "pk").first()
        # The filter keeps non-NULL keys only; none found: the holder has ended since.
        key, holder_id = cast(tuple[str, int], found) if found else (keys[0], None)
        duplicate = DuplicateJobError(key, holder_id)
        if batch and key in unique_keys:
            raise _at_index(duplicate, unique_keys.index(key)) from error
        raise duplicate from error


def _write(write: Callable[[], None], *unique_keys: str | None, batch: bool = False) -> None:
    """``write()`` new jobs in :func:`unique_key_guard`; arguments past PostgreSQL's limits
    that validation cannot tell (a jsonb form over 256 MB, such as tens of millions of
    numbers, or JSON nested deeper than its stack) raise InvalidArgumentsError.

    A deadlock over the keys, which PostgreSQL broke by failing this write, is tried
    once more: a bulk retry gives keys back in the order of its jobs' ids, not of the
    keys, as a batch takes them. The second try waits for the other to commit, then
    finds each key held (DuplicateJobError) or free.
    """

    def guarded() -> None:
        for last in (False, True):
            try:
                with unique_key_guard(*unique_keys, batch=batch):
                    write()
                return
            except OperationalError as error:
                if last or not _deadlocked_on_keys(error, unique_keys):
                    raise
                logger.info(
                    "jobs written again after a deadlock on their keys error=%s",
                    refusals.reason(error),
                )

    refusals.refusing(guarded, refusals.arguments_too_large)


def _deadlocked_on_keys(error: OperationalError, unique_keys: Sequence[str | None]) -> bool:
    # The index is named in the error's context ("while inserting index tuple … in
    # relation …"), which psycopg2 also puts in its text and psycopg 3 may not.
    context = getattr(getattr(error.__cause__, "diag", None), "context", None) or str(error)
    return any(unique_keys) and refusals.deadlocked(error) and UNIQUE_KEY_CONSTRAINT in context


def _allowed_retries(max_retries: float | None, *, retries: int) -> int:
    """The retries a job with Celery's ``max_retries`` may make (``None``, no limit: those
    that ``SCHEDULER_DEFAULT_MAX_ATTEMPTS`` leaves after ``retries``)."""
    if max_retries is None:
        return retries + scheduler_settings.DEFAULT_MAX_ATTEMPTS - 1
    # Celery takes any number (sys.maxsize or NaN for "for ever", 3.0): a job has a
    # whole number of attempts, at most the column's.
    if max_retries < validation.MAX_ATTEMPTS_LIMIT:
        return int(max_retries)
    return validation.MAX_ATTEMPTS_LIMIT


def _autoretry_max_retries(task: Task[Any, Any]) -> float:
    """The ``max_retries`` Celery's ``autoretry_for`` passes to every retry of ``task``
    (its ``retry_kwargs``'), or 0; ``None`` there means the task's own."""
    if not getattr(task, "autoretry_for", ()):
        return 0
    retry_kwargs = getattr(task, "retry_kwargs", None) or {}
    limit: float | None = retry_kwargs.get("max_retries")
    return 0 if limit is None else limit


def _find_task(name: str) -> Task[Any, Any]:
    """The task a job may name ``name``; UnknownTaskError if there is none."""
    try:
        return get_task(name)
    except KeyError:
        raise UnknownTaskError(name) from None


@dataclass(frozen=True)
class _Defaults:
    """What new jobs take from the settings and from their fields' defaults, read once
    for a batch: for ten thousand jobs, reading them job by job (Django's keyword
    ``__init__`` looks up every field not given) took as long as validating the jobs."""

    queue: str
    max_attempts: int
    #: Every concrete field's attname, in the model's order, with its default (args'
    #: and kwargs', mutable, are never shared: every job gives its own).
    fields: dict[str, Any]

    @classmethod
    def read(cls) -> "_Defaults":
        """The defaults as they are now (the batch's jobs share one ``created_at``)."""
        return cls(
            scheduler_settings.QUEUE_NAME,
            scheduler_settings.DEFAULT_MAX_ATTEMPTS,
            {field.attname: field.get_default() for field in ScheduledJob._meta.concrete_fields},
        )

    def job(self, **given: Any) -> ScheduledJob:
        """An unsaved job with the ``given`` fields and the defaults of the others."""
        # By position, as Django builds the rows it reads: a third of the keyword path.
        # (django-stubs takes a starred argument for the first field's value.)
        return ScheduledJob(*(self.fields | given).values())  # type: ignore[misc]


def _new_job(
    spec: JobSpec,
    find_task: Callable[[str], Task[Any, Any]] = _find_task,
    defaults: _Defaults | None = None,
    **fields: Any,
) -> ScheduledJob:
    """The unsaved job ``spec`` describes (with ``fields``), validated and with its
    ``defaults`` (read now if not given); its task found by ``find_task``."""
    defaults = defaults or _Defaults.read()
    run_at = validation.aware_datetime(spec.run_at, "run_at")
    name = task_name_of(spec.task)
    task = find_task(name)
    args, kwargs = validation.job_args(spec.args), validation.job_kwargs(spec.kwargs)
    try:
        # As Celery's apply_async does: otherwise the job fails only at its time, weeks
        # later, on every attempt.
        check_arguments(task, args, kwargs)
    except TypeError as error:
        field = "kwargs" if "keyword" in str(error) else "args"
        raise InvalidArgumentsError(field, f"do not fit {name}: {error}") from None
    return defaults.job(
        task_name=validation.task_name(name),
        args=args,
        kwargs=kwargs,
        queue=validation.queue_name(routed_queue(task, args, kwargs, spec.queue)) or defaults.queue,
        run_at=run_at,
        max_attempts=validation.max_attempts(spec.max_attempts) or defaults.max_attempts,
        unique_key=validation.unique_key(spec.unique_key),
        deadline=validation.deadline(spec.deadline, run_at=run_at),
        **fields,
    )


def _save(job: ScheduledJob, *, reason: str = "", actor: str | None = None) -> ScheduledJob:
    """INSERT one new job, in the caller's transaction, with its audit entry if any."""

    def write() -> None:
        job.save(force_insert=True)
        audit.record(
            audit.Action.SCHEDULE,
            actor=actor,
            reason=reason,
            job_id=job.pk,
            **audit.times(job.run_at, job.deadline),
        )

    _write(write, job.unique_key)
    logger.info(
        "job scheduled job_id=%s task=%s run_at=%s queue=%s",
        job.pk,
        job.task_name,
        job.run_at.isoformat(),
        job.queue,
    )
    return job


def _new_job_at(
    index: int, item: object, find_task: Callable[[str], Task[Any, Any]], defaults: _Defaults
) -> ScheduledJob:
    """:func:`_new_job` for the ``index``-th item of a batch, whose errors name it."""
    try:
        if isinstance(item, Mapping):
            item = JobSpec(**item)
        if not isinstance(item, JobSpec):
            # Its type, not its value: the arguments in it may hold secrets.
            raise TypeError(
                f"expected a JobSpec or a dict of its fields, got {type(item).__name__}"
            )
        return _new_job(item, find_task, defaults)
    except (SchedulerError, TypeError, ValueError) as error:
        raise _at_index(error, index) from None


def _at_index(error: E, index: int) -> E:
    """``error``, its message prefixed with the batch position it is about."""
    if not isinstance(error, SchedulerError):
        # TypeError and ValueError too (README: every refusal of an item has its index);
        # a SchedulerError says it itself, its arguments left as they were.
        error.args = (f"jobs[{index}]: {error}",)
    setattr(error, "index", index)  # noqa: B010 - built-in exceptions declare none
    return error


def _refuse_repeated_keys(keys: Sequence[str | None]) -> None:
    first_use: dict[str, int] = {}
    for index, key in enumerate(keys):
        if key is None:
            continue
        if key in first_use:
            detail = (
                f"unique_key={key!r} is also the key of jobs[{first_use[key]}] of the same batch"
            )
            raise _at_index(DuplicateJobError(key, detail=detail), index)
        first_use[key] = index


def _key_order(job: ScheduledJob) -> tuple[bool, str]:
    """Jobs with a unique key first, by key (the others keep their order: a stable sort)."""
    return job.unique_key is None, job.unique_key or ""


def _insert(jobs: list[ScheduledJob]) -> None:
    """INSERT ``jobs`` in one statement with one parameter for the rows (one per
    :data:`MAX_INSERT_JSON` of it, for a batch larger), and set their pks.

    The rows travel as one JSON array that PostgreSQL unpacks (``json_to_recordset``):
    one parameter for ten thousand jobs as for one (``bulk_create`` splits a batch
    into statements of at most 65,535 parameters, and has every value adapted one by
    one), encoded by the json module in C. A row's keys are its fields' positions, not
    their names, and it leaves its NULLs out (a missing key reads as NULL); a field
    the same in every job (most are: the defaults, often the task and the queue) goes
    once, in a record of its own, not in each row: a third of the bytes to encode, send
    and parse. ``json``, not ``jsonb``: PostgreSQL reads it through once, without
    building a jsonb value of the whole batch first.
    """
    meta = ScheduledJob._meta
    connection = connections[router.db_for_write(ScheduledJob)]
    quote = connection.ops.quote_name
    fields = [field for field in meta.concrete_fields if not field.primary_key]
    varying: list[tuple[str, list[Any]]] = []
    varying_columns, varying_types, shared_types = [], [], []
    shared: dict[str, Any] = {}
    for position, field in enumerate(fields):
        values = _values_to_insert(field, jobs)
        column, db_type = quote(field.column), field.db_type(connection)
        # Not JSON values, which Python finds equal across types ([1] == [True] == [1.0]):
        # one job's arguments would be stored for another's.
        comparable = values[0] is None or field.get_internal_type() != "JSONField"
        same = comparable and values.count(values[0]) == len(values)
        # One column at least in the rows, which say how many jobs there are.
        if same and (varying or position < len(fields) - 1):
            if values[0] is not None:
                shared[field.column] = values[0]
            shared_types.append(f"{column} {db_type}")
            continue
        varying.append((str(position), values))
        varying_columns.append(column)
        varying_types.append(f"{quote(str(position))} {db_type}")
    keys = [key for key, _ in varying]
    rows = [
        {key: value for key, value in zip(keys, row, strict=True) if value is not None}
        for row in zip(*(values for _, values in varying), strict=True)
    ]
    shared_record = (
        f"CROSS JOIN json_to_record(%s::json) AS shared ({', '.join(shared_types)}) "
        if shared_types
        else ""
    )
    columns = ", ".join(quote(field.column) for field in fields)
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({columns}) "  # noqa: S608 - names, not input
        f"SELECT {columns} FROM ROWS FROM (json_to_recordset(%s::json) AS "
        f"({', '.join(varying_types)})) WITH ORDINALITY AS batch "
        f"({', '.join(varying_columns)}, position) {shared_record}"
        f"ORDER BY position RETURNING {quote(meta.pk.column)}"
    )
    shared_json = [json.dumps(shared, allow_nan=False)] if shared_types else []
    pks: list[int] = []
    with connection.cursor() as cursor:
        for part in _json_parts(rows):
            cursor.execute(sql, [part, *shared_json])
            pks.extend(pk for (pk,) in cursor.fetchall())
    for job, pk in zip(jobs, pks, strict=True):
        job.pk = pk
        job._state.adding = False
        job._state.db = connection.alias


#: The most characters of JSON one INSERT of :func:`_insert` sends. PostgreSQL refuses a
#: parameter past 1 GB, and unpacking JSON of some hundreds of megabytes fails first: a
#: batch of 6,000 jobs with 100 KB of arguments each raised "invalid memory alloc
#: request size", one of 11,000 lost the connection, and the caller's transaction with it.
MAX_INSERT_JSON = 64 * 1024 * 1024


def _json_parts(rows: list[dict[str, Any]]) -> Iterator[str]:
    """``rows`` as JSON arrays, in order, each within :data:`MAX_INSERT_JSON` (a row
    larger than that alone); one array, encoded in one call, when the batch fits."""
    whole = json.dumps(rows, allow_nan=False)
    if len(whole) <= MAX_INSERT_JSON:
        yield whole
        return
    del whole
    part: list[str] = []
    size = 2  # the brackets
    for row in map(partial(json.dumps, allow_nan=False), rows):
        if part and size + len(row) + 1 > MAX_INSERT_JSON:
            yield f"[{','.join(part)}]"
            part, size = [], 2
        part.append(row)
        size += len(row) + 1
    yield f"[{','.join(part)}]"


def _values_to_insert(field: "Field[Any, Any]", jobs: list[ScheduledJob]) -> list[Any]:
    """What ``field.pre_save`` returns for each of the new ``jobs``, as JSON encodes it:
    the attribute, read in C, when that is all it does; for a field that sets itself on
    save (``auto_now``), the value it sets on the first job, set on every job, as the
    batch is one statement."""
    sets_on_save = getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False)
    if sets_on_save:
        value = field.pre_save(jobs[0], add=True)
        for job in jobs:
            setattr(job, field.attname, value)
        values = [value] * len(jobs)
    elif type(field).pre_save in _READING_PRE_SAVES:
        values = list(map(attrgetter(field.attname), jobs))
    else:
        values = [field.pre_save(job, add=True) for job in jobs]
    encode = _JSON_ENCODERS.get(field.get_internal_type())
    if encode is None:
        return values
    return [None if value is None else encode(value) for value in values]


def _conflicting_key(error: IntegrityError) -> str | None:
    # PostgreSQL names the key: 'Key (unique_key)=(payment:7) already exists.'
    diag = getattr(error.__cause__, "diag", None)
    match = _CONFLICT_DETAIL.fullmatch(getattr(diag, "message_detail", None) or "")
    return match.group(1) if match else None
