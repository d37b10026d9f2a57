"""django.tasks tasks the tests enqueue, on TASKS["default"] (the scheduler's backend).

In an installed app's tasks.py, so that a Celery worker imports them (autodiscovery).
"""

import asyncio
import functools
import threading
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import django
from asgiref.sync import sync_to_async

from tests.testapp.tasks import record_run

if TYPE_CHECKING or django.VERSION < (6, 0):
    from django_tasks import TaskContext, task
else:
    from django.tasks import TaskContext, task


@task
def add(a: int, b: int) -> int:
    return a + b


@task
def explode(message: str) -> None:
    raise ValueError(message)


@task
def record(path: str, label: str) -> dict[str, Any]:
    record_run(path, label)
    return {"label": label, "values": (1, 2)}


#: Return values a job's result cannot hold, by name: django.tasks' normalize_json refuses
#: the first five, PostgreSQL's jsonb the others.
UNSTORABLE: dict[str, Any] = {
    "uuid": uuid.UUID(int=1),
    "decimal": Decimal("1.5"),
    "datetime": datetime(2030, 1, 1, tzinfo=UTC),
    "set": {1, 2},
    "bytes": b"\xff",
    "nan": float("nan"),
    "infinity": [float("inf")],
    "nul": {"text": "a\x00b"},
    "surrogate": "\ud800",
    # Deeper than Python's stack lets the JSON encoder go.
    "deep": functools.reduce(lambda inner, _: [inner], range(100_000), list[Any]()),
}


@task
def record_unstorable(path: str, kind: str) -> Any:
    record_run(path, kind)
    return UNSTORABLE[kind]


@task(takes_context=True)
def whoami(context: TaskContext, label: str) -> dict[str, Any]:
    return {"id": context.task_result.id, "attempt": context.attempt, "label": label}


@task
async def add_later(a: int, b: int) -> int:
    return a + b


def _record_thread(path: str, label: str) -> None:
    record_run(path, f"{label}:{threading.get_ident()}")


@task
async def record_slowly(path: str, seconds: float) -> None:
    """Records its start, and its end ``seconds`` later; cancelled, records so through
    a thread-sensitive sync call, with the thread that ran it."""
    record_run(path, "start")
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        await sync_to_async(_record_thread)(path, "cancelled")
        raise
    record_run(path, "end")


@task
def takes_the_wrappers_name(celery_task: int = 0, args: int = 0) -> list[int]:
    return [celery_task, args]


class Namespace:
    """Tasks declared in a class body: their path is no module's attribute."""

    @task
    def nested(value: int) -> int:  # noqa: N805 - a function, not a method
        return value
