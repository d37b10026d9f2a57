"""The worker's Consumer: a message it cannot run is dropped with one log line.

Celery's own consumer logs an unreadable or unknown message over many lines, with the
message's body (which may hold data) and a traceback, and an envelope without a body
(``{"headers": {}, "properties": {}}``) makes the worker exit. This one logs one
``message dropped … reason=…`` line per such message, without its body, and goes on.

Configure it with Celery's ``worker_consumer`` setting:
``CELERY_WORKER_CONSUMER = "scheduler.worker.consumer:Consumer"`` (``manage.py check``
warns, ``scheduler.W021``, when it is another). Messages that Celery can read but that
name a job wrongly (forged, stale, replayed) are dropped by the Task class
(:mod:`scheduler.worker.task`), also with one line.
"""

import logging
from collections.abc import Callable, Mapping
from typing import Any

from celery import signals
from celery.exceptions import NotRegistered
from celery.utils.objects import Bunch
from celery.worker.consumer import Consumer as CeleryConsumer
from kombu.message import Message
from typing_extensions import override
from vine import promise

from scheduler import protocol

logger = logging.getLogger(__name__)

#: This module's consumer, as Celery's ``worker_consumer`` names it.
CONSUMER = "scheduler.worker.consumer:Consumer"


class Consumer(CeleryConsumer):
    """Celery's consumer, dropping what it cannot run with one ``key=value`` line.

    A message no worker can ever run (not a task message, undecodable, invalid,
    disallowed content) is acknowledged: SQS deletes it. A task this worker does not
    know is rejected, as Celery does, since another worker may know it: SQS deletes it,
    or with a redrive policy receives it again until it reaches the dead-letter queue.
    So is a message Celery's handler fails on in any other way (``reason=error``).
    """

    #: The broker's connection errors, set by Celery (its stubs leave it out).
    connection_errors: tuple[type[BaseException], ...]

    @override
    def on_unknown_message(self, body: Any, message: Message) -> None:
        # No "task" header: not a Celery task message (or no envelope at all).
        _drop(message, reason="not-a-task-message")
        message.ack_log_error(logger, self.connection_errors)
        signals.task_rejected.send(sender=self, message=message, exc=None)

    @override
    def on_decode_error(self, message: Message, exc: Exception) -> None:
        _drop(message, reason="undecodable", error=exc)
        message.ack_log_error(logger, self.connection_errors)

    @override
    def on_invalid_task(self, body: Any, message: Message, exc: Exception) -> None:
        # InvalidTaskError, or ContentDisallowed (a serializer the worker refuses).
        _drop(message, reason="invalid-task", error=exc)
        message.ack_log_error(logger, self.connection_errors)
        signals.task_rejected.send(sender=self, message=message, exc=exc)

    @override
    def on_unknown_task(self, body: Any, message: Message, exc: Exception) -> None:
        headers = _headers(message)
        name, task_id = headers.get("task"), headers.get("id")
        _drop(message, reason="unregistered-task")
        message.reject_log_error(logger, self.connection_errors)
        if isinstance(task_id, str):
            # As Celery does: a caller waiting on the result learns the task is unknown.
            request = Bunch(
                name=name,
                chord=None,
                root_id=headers.get("root_id"),
                correlation_id=message.properties.get("correlation_id"),
                reply_to=message.properties.get("reply_to"),
                errbacks=None,
            )
            self.app.backend.mark_as_failure(task_id, NotRegistered(name), request=request)
        signals.task_unknown.send(sender=self, message=message, exc=exc, name=name, id=task_id)

    @override
    def create_task_handler(self, promise: Any = promise) -> Callable[[Message], Any]:
        handle = super().create_task_handler(promise)
        connection_errors = self.connection_errors

        def on_task_received(message: Message) -> Any:
            try:
                return handle(message)
            except connection_errors:
                raise  # the consumer reconnects
            except Exception as error:
                # Celery's handler lets anything but a few errors out, which stops the
                # worker ("Unrecoverable error"). Rejected, not acknowledged: the error
                # may be ours, and with a redrive policy SQS keeps the message.
                _drop(message, reason="error", error=error)
                if not message.acknowledged:
                    message.reject_log_error(logger, connection_errors)
                return None

        return on_task_received


def _headers(message: Message) -> Mapping[str, Any]:
    headers = message.headers
    return headers if isinstance(headers, Mapping) else {}


def _drop(message: Message, *, reason: str, error: BaseException | None = None) -> None:
    """Log one line for a dropped message: what it claimed to be, never its body."""
    headers = _headers(message)
    try:
        ref = protocol.job_ref(headers)
    except protocol.MalformedMessageError:
        ref = None
    sqs_message = message.delivery_info.get("sqs_message")
    logger.warning(
        # %a: whatever a forged header holds, it stays on this line.
        "message dropped reason=%s task=%.100a job_id=%s sqs_message_id=%s error=%.200a",
        reason,
        headers.get("task"),
        ref.job_id if ref else None,
        sqs_message.get("MessageId") if isinstance(sqs_message, Mapping) else None,
        f"{type(error).__name__}: {error}" if error is not None else None,
    )
