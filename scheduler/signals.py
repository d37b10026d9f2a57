"""Signals about jobs' outcomes, sent once the transaction that decided them commits.

Each is sent with ``sender=ScheduledJob`` and these keyword arguments:

- ``job_succeeded``: ``job_id``, ``task_name``, ``result`` (the task's return value).
- ``job_failed``: ``job_id``, ``task_name``, ``error`` (the last attempt's traceback, or
  ``lease expired: …`` when its worker died).
- ``job_expired``: ``job_id``, ``task_name``, ``deadline``.
- ``job_cancelled``: ``job_id``, ``task_name``.

A receiver that raises is logged, not propagated: the outcome is already committed.
Nothing is sent when the transaction rolls back.
"""

import logging
from typing import Any

from django.db import transaction
from django.dispatch import Signal

from scheduler.models import ScheduledJob

logger = logging.getLogger(__name__)

job_succeeded = Signal()
job_failed = Signal()
job_expired = Signal()
job_cancelled = Signal()


def send_on_commit(signal: Signal, **kwargs: Any) -> None:
    """Send ``signal`` about a job after the current transaction commits."""

    def send() -> None:
        for receiver, response in signal.send_robust(sender=ScheduledJob, **kwargs):
            if isinstance(response, Exception):
                logger.error(
                    "signal receiver failed receiver=%s job_id=%s error=%r",
                    getattr(receiver, "__qualname__", receiver),
                    kwargs.get("job_id"),
                    response,
                )

    transaction.on_commit(send)
