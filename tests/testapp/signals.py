"""Celery signal receivers that record, as Effect rows, what a worker process reports.

Only tasks declared with ``record_signals=True`` are recorded (label ``"<signal>
<task name>"``), so the other tests pay nothing.
"""

import os
from collections.abc import Callable
from typing import Any

from botocore.exceptions import EndpointConnectionError
from celery import signals
from django.conf import settings
from django.utils import timezone
from django_celery_beat import schedulers

from tests.testapp.models import Effect

RECORDED = ("task_prerun", "task_postrun", "task_success", "task_failure", "task_retry")


def _recorder(signal: str) -> Callable[..., None]:
    def record(sender: Any = None, **kwargs: Any) -> None:
        if getattr(sender, "record_signals", False):
            Effect.objects.create(
                label=f"{signal} {sender.name}", atomic=False, at=timezone.now(), pid=os.getpid()
            )

    return record


for _signal in RECORDED:
    getattr(signals, _signal).connect(_recorder(_signal), weak=False)


@signals.worker_ready.connect(weak=False)
def _break_the_event_loop(sender: Any = None, **kwargs: Any) -> None:
    """With ``TESTAPP_BROKER_ERROR_AFTER_SECONDS``, a broker connection error in the loop.

    Raised from the worker's event loop once, that long after the worker is ready, as a
    failed credential refresh or any other broker error would: the consumer reconnects.
    """
    delay = getattr(settings, "TESTAPP_BROKER_ERROR_AFTER_SECONDS", None)
    if delay is not None:
        sender.hub.call_later(delay, _raise_broker_error)


def _raise_broker_error() -> None:
    raise EndpointConnectionError(endpoint_url="https://sqs.test.invalid")


@signals.beat_init.connect(weak=False)
def _reload_the_schedule_sooner(sender: Any = None, **kwargs: Any) -> None:
    """With ``TESTAPP_BEAT_RELOAD_SECONDS``, beat reloads its schedule that often, not
    every 5 minutes: an outage of seconds spans a reload."""
    seconds = getattr(settings, "TESTAPP_BEAT_RELOAD_SECONDS", None)
    if seconds is not None:
        schedulers.SCHEDULE_SYNC_MAX_INTERVAL = seconds
