"""``python -m devtools.sqs_server -H 127.0.0.1 -p PORT``: the local SQS server.

moto's server (what ``moto_server`` runs, same options), with four changes that keep
its answers and make a send or a delete cost the same however long the queue:

- Its SQS backend reads the clock with ``time.time()``. moto computes the same number
  through two ``datetime`` objects, once per message each time it asks whether a
  message is visible or delayed. With 2,000 messages in a queue a SendMessageBatch took
  1.3 s here instead of 56 ms: a burst of due jobs and their re-sends made moto time
  out, and the clients' retries added copies.
- The messages a receive may take (visible, not delayed) are found with the clock read
  once for the queue, not twice per message: a tenth of the time.
- A queue's three message counts (``ApproximateNumberOfMessages``, ``…Delayed``,
  ``…NotVisible``) are counted only for GetQueueAttributes, the one request that
  returns them. moto builds every attribute of the queue whenever it reads one, which
  is three scans of the queue for each message sent and nine for each message received
  (its retention check reads ``MessageRetentionPeriod`` that way). With 10,000 jobs due
  at one instant, sending them took minutes and a worker drained 17 a second.
- A DeleteMessage finds its message by receipt handle in a dict. moto asked every
  message of the queue, twice, whether it ever had that handle, building a list of its
  handles each time.

Development and test tooling: a deployment talks to Amazon SQS.
"""

import functools
import sys
import threading
import time
import weakref
from collections.abc import Callable
from datetime import datetime
from typing import Any

#: The queue attributes that count messages: moto scans the queue for each.
COUNTS = (
    "approximate_number_of_messages",
    "approximate_number_of_messages_delayed",
    "approximate_number_of_messages_not_visible",
)

_request = threading.local()
#: Every receipt handle moto gave out, to its message while a queue holds it.
_received: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()


def _unix_time(dt: datetime | None = None) -> float:
    if dt is None:
        return time.time()
    from moto.core import utils

    return utils.unix_time(dt)


def _unix_time_millis(dt: datetime | None = None) -> float:
    return _unix_time(dt) * 1000.0


def _takeable(queue: Any) -> list[Any]:
    """moto's ``Queue.messages``: those visible and not delayed, in the queue's order."""
    now = _unix_time_millis()
    return [
        message
        for message in queue._messages
        if now > message.visible_at and now >= message.delayed_until
    ]


def _counted_on_request(count: property) -> property:
    """``count``, or None outside GetQueueAttributes: moto's other reads of a queue's
    attributes (a send's deduplication flag, a receive's retention period, a create's
    comparison of the attributes it was given) never look at a count."""

    def read(queue: Any) -> int | None:
        return count.fget(queue) if getattr(_request, "counts", False) else None  # type: ignore[misc]

    return property(read)


def _counting(handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """The GetQueueAttributes handler ``handler``, with the counts counted while it runs."""

    @functools.wraps(handler)
    def get_queue_attributes(response: Any) -> Any:
        _request.counts = True
        try:
            return handler(response)
        finally:
            _request.counts = False

    return get_queue_attributes


def _handing_out(mark_received: Callable[..., None]) -> Callable[..., None]:
    """moto's ``Message.mark_received``, which gives the message a new receipt handle,
    also filing the message under that handle."""

    @functools.wraps(mark_received)
    def mark(message: Any, *args: Any, **kwargs: Any) -> None:
        mark_received(message, *args, **kwargs)
        _received[message.receipt_handle] = message

    return mark


def _delete_message(queue: Any, receipt_handle: str) -> None:
    """moto's ``Queue.delete_message``, with the message looked up by its handle: a
    handle deleted before is accepted again, one this queue's messages never had is
    invalid."""
    from moto.sqs.exceptions import ReceiptHandleIsInvalid

    if receipt_handle in queue.deleted_messages:
        return
    message = _received.get(receipt_handle)
    if message is None or message not in queue._messages:
        raise ReceiptHandleIsInvalid()
    queue._messages.remove(message)
    queue.pending_messages.discard(message)
    queue.deleted_messages.update(message.all_receipt_handles)


def patches() -> list[tuple[object, str, object]]:
    """What this server changes in moto, as ``(owner, attribute name, new value)``."""
    # Imported here: the callers of command() need not load moto.
    import moto.sqs.models
    import moto.sqs.responses

    message, queue = moto.sqs.models.Message, moto.sqs.models.Queue
    response = moto.sqs.responses.SQSResponse
    return [
        # moto.sqs.models imported both helpers by name: that module's names are the ones read.
        (moto.sqs.models, "unix_time", _unix_time),
        (moto.sqs.models, "unix_time_millis", _unix_time_millis),
        (queue, "messages", property(_takeable)),
        *((queue, name, _counted_on_request(getattr(queue, name))) for name in COUNTS),
        (response, "get_queue_attributes", _counting(response.get_queue_attributes)),
        (message, "mark_received", _handing_out(message.mark_received)),
        (queue, "delete_message", _delete_message),
    ]


def command(port: int) -> list[str]:
    """The command line of a server on loopback ``port``, with this Python."""
    return [sys.executable, "-m", "devtools.sqs_server", "-H", "127.0.0.1", "-p", str(port)]


def run() -> None:
    """Patch moto's SQS backend, then run moto's server with the command line's options."""
    from moto.server import main

    for owner, name, value in patches():
        setattr(owner, name, value)
    main()


if __name__ == "__main__":
    run()
