"""What a dispatched message carries, shared by the dispatcher and the worker.

A job's message is a Celery task message for the job's own task (its name, its
queue), with no arguments: they stay in PostgreSQL. Two message headers name the job
and the dispatch token that may claim it, and a third the version of this format. A
message without them is an ordinary Celery task message.
"""

import base64
import json
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

#: The job's primary key, as a decimal string.
JOB_ID_HEADER = "scheduler_job_id"
#: The job's dispatch token, as a UUID string.
DISPATCH_TOKEN_HEADER = "scheduler_dispatch_token"  # noqa: S105 - a header name
#: The version of this format. A worker drops a message of another version rather than
#: misread it (a later release's, during a rolling deploy: recovery sends its job again,
#: for a worker that reads it); a message without the header is of version 1.
PROTOCOL_HEADER = "scheduler_protocol"
PROTOCOL_VERSION = "1"


class MalformedMessageError(ValueError):
    """A message names a job but its headers cannot be read; ``reason`` says why, for
    the worker's log line."""

    def __init__(self, message: str, *, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class JobRef:
    """The job a message is for, and the token that lets it claim the job."""

    job_id: int
    dispatch_token: uuid.UUID

    def headers(self) -> dict[str, str]:
        """The message headers that carry this reference."""
        return {
            PROTOCOL_HEADER: PROTOCOL_VERSION,
            JOB_ID_HEADER: str(self.job_id),
            DISPATCH_TOKEN_HEADER: str(self.dispatch_token),
        }


#: Any of them makes a message a job's.
_JOB_HEADERS = (PROTOCOL_HEADER, JOB_ID_HEADER, DISPATCH_TOKEN_HEADER)


def job_ref(headers: Mapping[str, object] | None) -> JobRef | None:
    """The job a message's headers name; None for an ordinary task message.

    Raises MalformedMessageError when the headers are there but not readable, or are of
    another version of this format.
    """
    if not headers or not any(name in headers for name in _JOB_HEADERS):
        return None
    version = str(headers.get(PROTOCOL_HEADER, PROTOCOL_VERSION))
    if version != PROTOCOL_VERSION:
        raise MalformedMessageError(
            f"a job message of protocol {version:.20}, not {PROTOCOL_VERSION}",
            reason="unknown-protocol",
        )
    return read_job_ref(headers.get(JOB_ID_HEADER), headers.get(DISPATCH_TOKEN_HEADER))


def named_job_id(headers: Mapping[str, object] | None) -> int | None:
    """The id of the job a message's headers name, whatever the version, for a log line;
    None for an ordinary task message or an unreadable id."""
    raw_id = headers.get(JOB_ID_HEADER) if headers else None
    try:
        job_id = int(str(raw_id)) if raw_id is not None else 0
    except ValueError:
        return None
    return job_id if job_id >= 1 else None


def read_job_ref(raw_id: object, raw_token: object) -> JobRef:
    """The job a message names by its id and token; MalformedMessageError if unreadable."""
    try:
        job_id = int(str(raw_id))
        token = uuid.UUID(str(raw_token))
    except (TypeError, ValueError):
        raise MalformedMessageError(
            f"unreadable job reference job_id={raw_id!r} token={raw_token!r}"
        ) from None
    if job_id < 1:
        raise MalformedMessageError(f"unreadable job reference job_id={raw_id!r}")
    return JobRef(job_id=job_id, dispatch_token=token)


def as_token(token: uuid.UUID | str) -> uuid.UUID:
    """A dispatch token given as a UUID or as its text, as a message (and
    ``OutgoingMessage``) carries it; ValueError for text that is no UUID."""
    return token if isinstance(token, uuid.UUID) else uuid.UUID(token)


def delivery_delay_seconds(eta: datetime, *, now: datetime, max_delay: int, lead: float) -> int:
    """Whole seconds SQS should hold back a message due at ``eta``: ``eta - now - lead``.

    SQS releases it ``lead`` seconds (``SCHEDULER_DELIVERY_LEAD_SECONDS``) before the
    eta, so a worker already holds it when it is due and the message's exact eta decides
    the start, whatever SQS's release jitter (moto re-checks delayed messages only once a
    second); a worker never holds it much longer than the lead. Rounded down, so SQS
    never releases it after ``eta - lead``; between 0 and ``max_delay``.
    """
    return whole_delay(release_in(eta, now=now, max_delay=max_delay, lead=lead))


def whole_delay(release_in_seconds: float) -> int:
    """The DelaySeconds of a message SQS should release in ``release_in_seconds``:
    rounded down, so never later, and at least 0."""
    return max(0, math.floor(release_in_seconds))


def release_in(eta: datetime, *, now: datetime, max_delay: int, lead: float) -> float:
    """Seconds from ``now`` until SQS should release a message due at ``eta`` (``lead``
    before it, ``max_delay`` at most; negative once past): the exact figure
    :func:`delivery_delay_seconds` rounds down."""
    return min(max_delay, (eta - now).total_seconds() - lead)


def job_ref_from_sqs_body(body: object) -> JobRef | None:
    """The job an SQS message body is for, or None for anything else.

    The body is kombu's envelope, JSON and usually base64-encoded, with the job's
    headers in its ``headers``. Tolerant of anything: a body that is not such an
    envelope, an ordinary task message, or unreadable headers all give None.
    """
    if not isinstance(body, str | bytes):
        return None
    envelope = _json_envelope(body)
    headers = envelope.get("headers") if isinstance(envelope, dict) else None
    if not isinstance(headers, Mapping):
        return None
    try:
        return job_ref(headers)
    except MalformedMessageError:
        return None


def _json_envelope(body: str | bytes) -> object:
    # kombu base64-encodes the JSON envelope unless sqs_base64_encoding is off.
    for decode in (lambda raw: base64.b64decode(raw, validate=True), lambda raw: raw):
        try:
            return json.loads(decode(body))
        # binascii.Error, UnicodeDecodeError, JSONDecodeError and a number past Python's
        # digit limit are ValueErrors; JSON nested deeper than its stack, RecursionError.
        except (ValueError, RecursionError):
            continue
    return None
