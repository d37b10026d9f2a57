"""The worker's Request: a job's message reaches the pool a moment before its eta.

Celery's worker holds a message with an eta in its timer and hands it to the pool at
the eta; the claim then costs round trips to PostgreSQL after the instant. A job's
message is handed over ``HANDOFF_AHEAD`` earlier instead: the claim takes the row then
and holds it until the eta (the job's ``run_at``), committing at that instant (see
:func:`scheduler.services.running.claim`), so the body starts on time and never early.
The message's own eta, which the task sees, is unchanged; the worker's view of the
request (``celery inspect scheduled``, the ``task-received`` event) shows the hand-over
time. Other messages keep Celery's eta.

:class:`~scheduler.worker.task.SchedulerTask` names this class as its ``Request``.
"""

from datetime import datetime, timedelta

from celery.worker.request import Request as CeleryRequest
from typing_extensions import override

from scheduler import protocol

#: How long before a job's eta the worker hands its message to the pool. It covers
#: the pool's hand-over and the claim's round trips; a process holds the job's row for
#: that long, idle, before the instant.
HANDOFF_AHEAD = timedelta(milliseconds=50)


class Request(CeleryRequest):
    """Celery's request; a job's message is due in the worker ``HANDOFF_AHEAD`` early."""

    @property
    @override
    def eta(self) -> datetime | None:
        eta: datetime | None = super().eta
        if eta is None or protocol.JOB_ID_HEADER not in self.request_dict:
            return eta
        return eta - HANDOFF_AHEAD
