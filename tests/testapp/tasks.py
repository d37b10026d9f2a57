"""Tasks the tests schedule. Each run leaves evidence: a line in a file, or an Effect row."""

import os
import time
from pathlib import Path

from celery import shared_task
from django.utils import timezone

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


# celery-types does not know the scheduler's atomic option.
@shared_task(name="testapp.atomic_effect", atomic=True)  # type: ignore[call-overload, untyped-decorator]
def atomic_effect(label: str, seconds: float = 0.0) -> None:
    """An atomic task: its effect row is written in the job's transaction."""
    Effect.objects.create(label=label, atomic=True, at=timezone.now(), pid=os.getpid())
    time.sleep(seconds)


@shared_task(name="testapp.boom")
def boom(*args: object, **kwargs: object) -> None:
    """Fails without repeating its arguments."""
    raise RuntimeError("boom")
