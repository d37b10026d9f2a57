"""Helpers for tests of projects that use the scheduler (and for the scheduler's own)."""

from collections.abc import Sequence

from scheduler.dispatch.publisher import OutgoingMessage, PublishResult


class InMemoryPublisher:
    """A :class:`~scheduler.dispatch.publisher.Publisher` that keeps what it is given.

    Dispatcher tests use it to need no SQS server: every message is accepted and
    appended to :attr:`published`, in order.
    """

    def __init__(self) -> None:
        self.published: list[OutgoingMessage] = []

    def publish(self, messages: Sequence[OutgoingMessage]) -> PublishResult:
        """Accept every message."""
        self.published.extend(messages)
        return PublishResult(sent=[message.job_id for message in messages])
