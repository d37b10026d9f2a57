"""The worker's Request: a job's message reaches the pool a moment before its eta, and
the loss of its pool process is no failure of the call while the job goes on.

Celery's worker holds a message with an eta in its timer and hands it to the pool at
the eta; the claim then costs round trips to PostgreSQL after the instant. A job's
message is handed over ``HANDOFF_AHEAD`` earlier instead: the claim takes the row then
and holds it until the eta (the job's ``run_at``), committing at that instant (see
:func:`scheduler.services.running.claim`), so the body starts on time and never early.
The message's own eta, which the task sees, is unchanged; the worker's view of the
request (``celery inspect scheduled``, the ``task-received`` event) shows the hand-over
time. Other messages keep Celery's eta.

When a job's pool process is lost (killed, out of memory, a hard ``time_limit``),
the worker ends the attempt it started at once
(:func:`scheduler.services.running.end_lost_delivery`): the job is retried, or fails out
of attempts, without waiting out its lease; a process that held a copy of the job's
message ends nothing. Celery's
worker stores ``FAILURE`` for the call and sends ``task_failure``; while the job goes
on (or may: left to its lease when PostgreSQL cannot tell), the loss is handled as a
retry (or, for a job that had succeeded, a success) instead: the message is settled as
Celery settles those, and nothing is stored or sent that says the call failed.

:class:`~scheduler.worker.task.SchedulerTask` names this class as its ``Request``.
"""

import contextlib
import logging
import os
import signal
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from billiard.einfo import ExceptionInfo
from celery.exceptions import Retry, TimeLimitExceeded, WorkerLostError
from celery.worker import state
from celery.worker.request import Request as CeleryRequest
from celery.worker.state import task_ready
from django.db import connection
from typing_extensions import override

from scheduler import protocol
from scheduler.services import running
from scheduler.worker.task import delivery_process

logger = logging.getLogger(__name__)

#: How long before a job's eta the worker hands its message to the pool. It covers
#: the pool's hand-over and the claim's round trips; a process holds the job's row for
#: that long, idle, before the instant.
HANDOFF_AHEAD = timedelta(milliseconds=50)


class Request(CeleryRequest):
    """Celery's request; a job's message is due in the worker ``HANDOFF_AHEAD`` early,
    and the loss of its process fails the call only when it fails the job."""

    @property
    @override
    def eta(self) -> datetime | None:
        eta: datetime | None = super().eta
        if eta is None or protocol.JOB_ID_HEADER not in self.request_dict:
            return eta
        return eta - HANDOFF_AHEAD

    @override
    def on_failure(
        self, exc_info: ExceptionInfo, send_failed_event: bool = True, return_ok: bool = False
    ) -> Any:
        failure = getattr(exc_info.exception, "exc", exc_info.exception)
        # The pool's word that the process is gone: the body's own exceptions come with
        # return_ok, and a process Celery stopped (revoked, cancelled) is Celery's.
        if return_ok or not isinstance(failure, _LOST) or self._stopped_by_celery():
            return super().on_failure(exc_info, send_failed_event, return_ok)
        if isinstance(failure, TimeLimitExceeded):
            # billiard kills the process only after this returns: its body must not
            # record an outcome once the job is retried.
            self._kill_pool_process()
            reason = f"hard time limit ({failure.args[0]}s) exceeded"
        else:
            reason = str(failure) or type(failure).__name__
        return self._lost(
            reason, lambda: super(Request, self).on_failure(exc_info, send_failed_event, return_ok)
        )

    @override
    def on_timeout(self, soft: bool, timeout: float) -> None:
        if soft:
            super().on_timeout(soft, timeout)
        elif getattr(self, "_scheduler_settled", False):
            # billiard's pool gave on_failure the TimeLimitExceeded just before.
            task_ready(self)
        else:  # gevent's pool tells only this
            self._lost(
                f"hard time limit ({timeout}s) exceeded",
                lambda: super(Request, self).on_timeout(soft, timeout),
            )

    def _lost(self, reason: str, as_celery_has_it: Callable[[], Any]) -> Any:
        """Settle the loss of this message's process (``reason``) as its job's fate says:
        ``as_celery_has_it()`` when the loss fails the job (and for any other message),
        else without a failure of the call."""
        ref, fate = self._job_fate(reason)
        if ref is None or fate is running.AfterLoss.FAILS:
            return as_celery_has_it()
        self._scheduler_settled = True
        logger.warning(
            "job process lost job_id=%s task=%s reason=%s: no failure of the call, the job %s",
            ref.job_id,
            self.task_name,
            reason,
            fate,
        )
        if fate is not running.AfterLoss.SUCCEEDED:
            # As Celery settles a retry: acknowledged (if late), task-retried.
            return super().on_failure(_as_retry(reason))
        # As Celery settles a success its process stored before it was lost.
        task_ready(self, successful=True)
        if self.task.acks_late:
            self.acknowledge()
        self.send_event("task-succeeded", result=None, runtime=None)
        return None

    def _stopped_by_celery(self) -> bool:
        # Celery's own marks, which its stubs do not declare.
        return bool(
            getattr(self, "_already_cancelled", False) or getattr(self, "_already_revoked", False)
        )

    def _kill_pool_process(self) -> None:
        pid = self._pool_pid()
        if pid is not None and pid != os.getpid():  # not the solo or threads pool's
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _pool_pid(self) -> int | None:
        """The pool process running this request; None while it is not accepted yet."""
        return None if self.worker_pid is None else int(self.worker_pid)  # typed str

    def _job_fate(self, reason: str) -> tuple[protocol.JobRef | None, running.AfterLoss]:
        """This message's job, its attempt ended for ``reason``, and what becomes of it
        now that its process is lost; no job for any other message, and in a cold
        shutdown (Celery's own handling). Once: billiard's pool tells a hard time limit
        twice."""
        if not hasattr(self, "_scheduler_fate"):
            self._scheduler_fate = self._end_attempt(reason)
        fate: tuple[protocol.JobRef | None, running.AfterLoss] = self._scheduler_fate
        return fate

    def _end_attempt(self, reason: str) -> tuple[protocol.JobRef | None, running.AfterLoss]:
        try:
            ref = protocol.job_ref(self.request_dict)
        except protocol.MalformedMessageError:
            return None, running.AfterLoss.FAILS
        if ref is None or state.should_terminate:
            return None, running.AfterLoss.FAILS
        # Which process was lost: the job's own delivery's, or one a copy of its message
        # (a re-send, SQS's second delivery) reached.
        pid = self._pool_pid()
        process = None if pid is None else delivery_process(self.hostname, pid)
        try:
            fate = running.end_lost_delivery(
                job_id=ref.job_id, token=ref.dispatch_token, process=process, reason=reason
            )
        except Exception as error:
            # Raised out of the pool's callback, it would skip Celery's handling: the
            # worker would count the process busy for ever, and take no job in its place.
            # The job's row is as it was (the transaction rolled back): its lease's.
            logger.exception(
                "job lost delivery not judged job_id=%s error=%s", ref.job_id, type(error).__name__
            )
            fate = running.AfterLoss.LEFT_TO_LEASE
        finally:
            # This is the worker's main process: a pool process forked from it would
            # inherit an open connection, and one the server dropped would fail every
            # later read.
            connection.close()
        return ref, fate


#: What the pool says of a process lost under a job: killed (or exited), or past its
#: hard time limit.
_LOST = (WorkerLostError, TimeLimitExceeded, SystemExit, KeyboardInterrupt)


def _as_retry(reason: str) -> ExceptionInfo:
    """A ``Retry`` for ``reason``, as the worker's failure handler receives exceptions."""
    try:
        raise Retry(reason)
    except Retry:
        return ExceptionInfo()
