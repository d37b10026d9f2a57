"""Tasks the tests schedule. Each run appends a line to a file, as evidence."""

import time
from pathlib import Path

from celery import shared_task


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


@shared_task(name="testapp.sleep")
def sleep(seconds: float) -> None:
    """Keeps its worker process busy."""
    time.sleep(seconds)
