"""Tasks the tests schedule. Each run leaves evidence: a line in a file, or an Effect row."""

import contextlib
import os
import sys
import time
import uuid
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from celery import shared_task
from celery.exceptions import Ignore, Reject
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from scheduler.models import JobAttempt
from scheduler.worker.connections import RECENTLY_USED_SECONDS
from scheduler.worker.task import SchedulerTask
from tests.testapp.models import Effect


def record_run(path: str, label: str) -> None:
    with Path(path).open("a") as file:
        file.write(f"{label} {time.time():.6f}\n")


def read_runs(path: str | Path) -> list[tuple[str, float]]:
    file = Path(path)
    if not file.exists():
        return []
    lines = [line.split() for line in file.read_text().splitlines() if line.strip()]
    return [(label, float(at)) for label, at in lines]


@shared_task(name="testapp.record")
def record(path: str, label: str) -> None:
    record_run(path, label)


def _record_query(path: str, label: str, query: str) -> None:
    """Records ``label:<value>``, what ``query`` gives on its process's connection."""
    with connection.cursor() as cursor:
        cursor.execute(query)
        (value,) = cursor.fetchone()
    record_run(path, f"{label}:{value}")


@shared_task(name="testapp.backend_pid")
def backend_pid(path: str, label: str) -> None:
    """Records ``label:<pid>``, the PostgreSQL backend of its process's connection."""
    _record_query(path, label, "SELECT pg_backend_pid()")


@shared_task(name="testapp.keepalive_idle")
def keepalive_idle(path: str, label: str) -> None:
    """Records ``label:<seconds>``, PostgreSQL's keepalive idle time on its session."""
    _record_query(path, label, "SELECT current_setting('tcp_keepalives_idle')")


def terminate_backend() -> int:
    """Has PostgreSQL drop this thread's connection, as a failover does, from another
    connection; returns the pid of the backend it ended."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    other = connection.copy()
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    finally:
        other.close()
    return int(pid)


@shared_task(name="testapp.lose_connection")
def lose_connection(fail: bool = False) -> None:
    """Has PostgreSQL drop its process's connection, as a failover during a long body
    does, then works on without it a while and returns (or raises, if ``fail``)."""
    terminate_backend()
    time.sleep(RECENTLY_USED_SECONDS + 0.1)
    if fail:
        raise RuntimeError("failed on purpose")


@shared_task(name="testapp.fail")
def fail(path: str, label: str) -> None:
    record_run(path, label)
    raise RuntimeError(f"task {label} failed on purpose")


@shared_task(name="testapp.noop")
def noop(*args: object, **kwargs: object) -> None:
    """Does nothing."""


@shared_task(name="testapp.effect")
def effect(label: str, seconds: float = 0.0) -> None:
    """A plain task: commits an effect row per run, then works ``seconds``."""
    Effect.objects.create(label=label, atomic=False, at=timezone.now(), pid=os.getpid())
    time.sleep(seconds)


@shared_task(name="testapp.atomic_effect", base=SchedulerTask, atomic=True)
def atomic_effect(label: str, seconds: float = 0.0) -> None:
    """An atomic task: its effect row is written in the job's transaction."""
    Effect.objects.create(label=label, atomic=True, at=timezone.now(), pid=os.getpid())
    time.sleep(seconds)


@shared_task(name="testapp.atomic_retry_later", base=SchedulerTask, atomic=True, bind=True)
def atomic_retry_later(self: SchedulerTask, label: str, countdown: float) -> None:
    """An atomic task that writes an effect, then asks to run again in ``countdown``
    seconds: the effect is rolled back, the retry must not be."""
    Effect.objects.create(label=label, atomic=True, at=timezone.now(), pid=os.getpid())
    raise self.retry(countdown=countdown)


@shared_task(name="testapp.retry_later_in_a_transaction", base=SchedulerTask, bind=True)
def retry_later_in_a_transaction(self: SchedulerTask, label: str, countdown: float) -> None:
    """A task that is not atomic but opens its own transaction, as Django code does, and
    asks to run again from inside it: the effect is rolled back, the retry must not be."""
    with transaction.atomic():
        Effect.objects.create(label=label, atomic=False, at=timezone.now(), pid=os.getpid())
        raise self.retry(countdown=countdown)


@shared_task(name="testapp.retry_countdown_and_eta", base=SchedulerTask, bind=True)
def retry_countdown_and_eta(self: SchedulerTask, countdown: float, eta: str) -> None:
    """Asks to run again with both a countdown and an eta (an ISO 8601 string)."""
    raise self.retry(countdown=countdown, eta=datetime.fromisoformat(eta))


@shared_task(name="testapp.retry_with_options", base=SchedulerTask, bind=True)
def retry_with_options(self: SchedulerTask, options: dict[str, Any]) -> None:
    """Asks to run again in a minute with a message's ``options`` (queue, expires…)."""
    raise self.retry(countdown=60, **options)


@shared_task(name="testapp.paginate", base=SchedulerTask, bind=True)
def paginate(self: SchedulerTask, account: str, page: int = 0, *, last: int = 2) -> int:
    """Goes through pages by retrying itself with the next one, as keyword or positional
    argument (``last`` < 0: with a keyword the signature refuses)."""
    if last < 0:
        raise self.retry(kwargs={"pages": 1}, countdown=60)
    if page < last:
        following = {"page": page + 1} if page % 2 == 0 else None
        raise self.retry(
            args=None if following else [account, page + 1], kwargs=following, countdown=60
        )
    return page


@shared_task(name="testapp.returns_nested", base=SchedulerTask)
def returns_nested(path: str, depth: int) -> list[object]:
    """Records its run, then returns a list nested ``depth`` deep."""
    record_run(path, "nested")
    return nested(depth)


@shared_task(name="testapp.boom")
def boom(*args: object, **kwargs: object) -> None:
    """Fails without repeating its arguments."""
    raise RuntimeError("boom")


@shared_task(name="testapp.bad_query")
def bad_query() -> None:
    """A plain task whose query PostgreSQL refuses."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 / 0")


@shared_task(name="testapp.duplicate_effect")
def duplicate_effect(label: str) -> None:
    """A plain task whose second row PostgreSQL refuses through the ORM (a duplicate key)."""
    first = Effect.objects.create(label=label, atomic=False, at=timezone.now(), pid=os.getpid())
    Effect.objects.create(pk=first.pk, label=label, atomic=False, at=timezone.now(), pid=0)


@shared_task(name="testapp.echo")
def echo(value: Any) -> Any:
    """Returns its argument, as the job's result."""
    return value


@shared_task(
    name="testapp.observed", bind=True, base=SchedulerTask, record_signals=True, max_retries=3
)
def observed(self: Any, path: str, label: str, countdown: float = 1.0) -> str:
    """Records ``label:retries:task id``; the first run retries itself after ``countdown``."""
    record_run(path, f"{label}:{self.request.retries}:{self.request.id}")
    if self.request.retries == 0:
        raise self.retry(countdown=countdown)
    return label


@shared_task(name="testapp.fail_observed", base=SchedulerTask, record_signals=True)
def fail_observed(path: str, label: str) -> None:
    record_run(path, label)
    raise RuntimeError(f"task {label} failed on purpose")


@shared_task(
    name="testapp.soft_limited", base=SchedulerTask, soft_time_limit=1, record_signals=True
)
def soft_limited(path: str, label: str) -> None:
    """Runs past its one-second soft time limit."""
    record_run(path, label)
    time.sleep(10)


@shared_task(
    name="testapp.autoretry",
    bind=True,
    autoretry_for=(ValueError,),
    retry_kwargs={"countdown": 30},
    max_retries=5,
)
def autoretry(self: Any, path: str, label: str) -> str:
    """Raises ValueError on its first run, which ``autoretry_for`` turns into a retry."""
    record_run(path, f"{label}:{self.request.retries}")
    if self.request.retries == 0:
        raise ValueError(f"{label} not yet")
    return label


@shared_task(
    name="testapp.autoretry_always",
    bind=True,
    autoretry_for=(ValueError,),
    retry_kwargs={"max_retries": 5, "countdown": 60},
)
def autoretry_always(self: Any, path: str, label: str) -> None:
    """Always raises ValueError: retried up to its ``retry_kwargs``' ``max_retries`` (5),
    above the task's own (Celery's default, 3)."""
    record_run(path, f"{label}:{self.request.retries}")
    raise ValueError(f"{label} failed")


@shared_task(name="testapp.sleep_first", bind=True)
def sleep_first(self: Any, path: str, label: str, seconds: float) -> None:
    """Records its start; the first attempt then runs for ``seconds``."""
    record_run(path, f"{label}:{self.request.retries}")
    if self.request.retries == 0:
        time.sleep(seconds)


@shared_task(name="testapp.atomic_write", bind=True, base=SchedulerTask, atomic=True)
def atomic_write(
    self: Any, label: str, marker: str = "", hold: float = 0, fail: bool = False
) -> int:
    """Writes an Effect row; then touches ``marker``, holds the first attempt ``hold``
    seconds, and raises if ``fail``: the write must vanish with an error or a crash."""
    effect = Effect.objects.create(label=label, atomic=True, at=timezone.now(), pid=os.getpid())
    if marker:
        Path(marker).touch()
    if hold and self.request.retries == 0:
        time.sleep(hold)
    if fail:
        raise RuntimeError(f"{label} failed after writing")
    return int(effect.pk)


@shared_task(name="testapp.on_own_queue", queue="own-queue")
def on_own_queue() -> None:
    """Declares its queue, as Celery's ``queue`` task option."""


@shared_task(name="testapp.routed")
def routed() -> None:
    """Routed by ``CELERY_TASK_ROUTES`` in the test settings."""


@shared_task(name="testapp.returns_a_set")
def returns_a_set() -> set[int]:
    """Returns what JSON cannot store."""
    return {1, 2}


@shared_task(name="testapp.returns_decimal")
def returns_decimal() -> dict[str, Any]:
    """Returns what the job's JSON cannot keep, and Celery's JSON can."""
    return {"amount": Decimal("1.50"), "id": uuid.UUID(int=1)}


@shared_task(name="testapp.returns_text")
def returns_text(code_points: list[int]) -> dict[str, str]:
    """Returns the text of ``code_points`` (NUL or a lone surrogate, say: what a gateway's
    reply may hold, and what PostgreSQL cannot store), as a key and as a value."""
    text = "".join(map(chr, code_points))
    return {text: text}


@shared_task(name="testapp.fails_with_text")
def fails_with_text(code_points: list[int]) -> None:
    """Raises an error whose message is the text of ``code_points``."""
    raise RuntimeError("".join(map(chr, code_points)))


@shared_task(name="testapp.exits_with_text", bind=True)
def exits_with_text(self: Any, path: str, label: str, code_points: list[int]) -> None:
    """Records its start; the first attempt then ends its process as a script would, with
    ``sys.exit()`` and the text of ``code_points`` (what PostgreSQL cannot store, say)."""
    record_run(path, f"{label}:{self.request.retries}")
    if self.request.retries == 0:
        sys.exit("".join(map(chr, code_points)))


@shared_task(name="testapp.rate_limited", rate_limit="30/m")
def rate_limited(path: str, label: str) -> None:
    record_run(path, label)


@shared_task(
    name="testapp.time_limited", bind=True, base=SchedulerTask, time_limit=1, record_signals=True
)
def time_limited(self: Any, path: str, label: str) -> None:
    """Runs past its one-second hard time limit on its first attempt."""
    record_run(path, f"{label}:{self.request.retries}")
    if self.request.retries == 0:
        time.sleep(30)


@shared_task(name="testapp.sleep")
def sleep(seconds: float) -> None:
    """Keeps its worker process busy."""
    time.sleep(seconds)


def _effect(label: str, *, atomic: bool = False) -> Effect:
    return Effect.objects.create(label=label, atomic=atomic, at=timezone.now(), pid=os.getpid())


@shared_task(name="testapp.ignores")
def ignores(label: str) -> None:
    """Commits an effect, then ends with Celery's Ignore."""
    _effect(label)
    raise Ignore()


@shared_task(name="testapp.atomic_ignores", base=SchedulerTask, atomic=True)
def atomic_ignores(label: str) -> None:
    """Writes an effect in the job's transaction, then ends with Celery's Ignore."""
    _effect(label, atomic=True)
    raise Ignore()


@shared_task(name="testapp.replaces", bind=True)
def replaces(self: Any, label: str) -> None:
    """Commits ``label:body``, then replaces itself with ``testapp.effect``, which
    commits ``label:replacement``."""
    _effect(f"{label}:body")
    raise self.replace(effect.si(f"{label}:replacement"))


@shared_task(name="testapp.atomic_replaces", base=SchedulerTask, atomic=True, bind=True)
def atomic_replaces(self: Any, label: str, dangling: bool = False) -> None:
    """Writes ``label:body`` in the job's transaction (and, if ``dangling``, a row whose
    foreign key PostgreSQL refuses at the COMMIT), then replaces itself with
    ``testapp.effect``, which commits ``label:replacement``."""
    _effect(f"{label}:body", atomic=True)
    if dangling:
        _dangling_attempt()
    raise self.replace(effect.si(f"{label}:replacement"))


def _dangling_attempt() -> None:
    now = timezone.now()
    JobAttempt.objects.create(
        job_id=2**31 - 1,  # no such job
        task_name="testapp.nowhere",
        number=1,
        dispatch_token=uuid.uuid4(),
        scheduled_for=now,
        started_at=now,
        worker="nowhere",
    )


@shared_task(name="testapp.rejects", bind=True, acks_late=True)
def rejects(self: Any, label: str, requeue: bool, times: int = 1) -> str:
    """Commits ``label:retries``; its first ``times`` attempts then reject their message
    (Celery's Reject, with ``requeue``). Acknowledged late, as tasks that reject usually
    are: a worker requeues such a message when asked."""
    _effect(f"{label}:{self.request.retries}")
    if self.request.retries < times:
        raise Reject(f"{label} rejected", requeue=requeue)
    return label


@shared_task(name="testapp.atomic_dangling_reference", base=SchedulerTask, atomic=True, bind=True)
def atomic_dangling_reference(self: Any, label: str, times: int = 1) -> str:
    """Writes an effect in the job's transaction; its first ``times`` attempts also
    write a row whose foreign key points nowhere, which PostgreSQL refuses only at the
    COMMIT (Django's foreign keys are DEFERRABLE INITIALLY DEFERRED)."""
    _effect(f"{label}:{self.request.retries}", atomic=True)
    if self.request.retries < times:
        _dangling_attempt()
    return label


@shared_task(name="testapp.atomic_swallows_an_error", base=SchedulerTask, atomic=True)
def atomic_swallows_an_error(label: str) -> str:
    """Writes an effect in the job's transaction, then an insert that fails (the same
    primary key), whose IntegrityError it catches without a savepoint: the transaction
    can only be rolled back."""
    written = _effect(label, atomic=True)
    with contextlib.suppress(IntegrityError):
        Effect.objects.create(pk=written.pk, label=label, atomic=True, at=written.at, pid=0)
    return label


@shared_task(name="testapp.atomic_fails_on_commit", base=SchedulerTask, atomic=True)
def atomic_fails_on_commit(label: str) -> str:
    """Writes an effect in the job's transaction, with an on-commit callback that raises
    once the transaction has committed."""
    _effect(label, atomic=True)

    def after_commit() -> None:
        raise RuntimeError(f"{label}: on-commit callback failed")

    transaction.on_commit(after_commit)
    return label


@shared_task(name="testapp.retries_nested", base=SchedulerTask, bind=True)
def retries_nested(self: SchedulerTask, label: str, depth: int, throw: bool = True) -> str:
    """Commits an effect, then asks to run again with a list nested ``depth`` deep after
    ``label``, raising Celery's Retry or (``throw=False``) returning."""
    _effect(label)
    self.retry(args=[label, nested(depth)], countdown=60, throw=throw)
    return "asked"


@shared_task(name="testapp.atomic_retries_nested", base=SchedulerTask, atomic=True, bind=True)
def atomic_retries_nested(self: SchedulerTask, label: str, depth: int, throw: bool = True) -> str:
    """:func:`retries_nested` in the job's transaction."""
    _effect(label, atomic=True)
    self.retry(args=[label, nested(depth)], countdown=60, throw=throw)
    return "asked"


@shared_task(name="testapp.atomic_echo", base=SchedulerTask, atomic=True)
def atomic_echo(value: Any) -> Any:
    """:func:`echo` in the job's transaction."""
    return value


def nested(depth: int) -> list[object]:
    """A list in a list … ``depth`` deep."""
    value: list[object] = []
    for _ in range(depth):
        value = [value]
    return value
