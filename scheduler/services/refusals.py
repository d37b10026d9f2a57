"""What PostgreSQL's refusals say, for the services and the worker to act on them."""

from collections.abc import Callable
from typing import TypeVar

from django.db import DatabaseError, OperationalError

from scheduler.exceptions import InvalidArgumentsError

T = TypeVar("T")

#: PostgreSQL's SQLSTATE class for what is past its limits: a JSON string or document
#: over 256 MB (54000), JSON nested deeper than its stack allows (54001).
_PROGRAM_LIMIT_EXCEEDED = "54"


def sqlstate(error: DatabaseError) -> str | None:
    """PostgreSQL's SQLSTATE for Django's ``error``, from psycopg2 or psycopg 3."""
    cause = error.__cause__
    return getattr(cause, "pgcode", None) or getattr(cause, "sqlstate", None)


def past_limits(error: DatabaseError) -> bool:
    """Whether PostgreSQL refused a value past its limits: it would refuse it again."""
    return (sqlstate(error) or "").startswith(_PROGRAM_LIMIT_EXCEEDED)


def reason(error: DatabaseError) -> str:
    """PostgreSQL's own words for ``error``, without the detail or context that may quote
    the statement's values."""
    return getattr(getattr(error.__cause__, "diag", None), "message_primary", None) or str(
        type(error).__name__
    )


def refusing_arguments(write: Callable[[], T]) -> T:
    """``write()``, a write of a job's arguments: PostgreSQL's refusal of them past its
    limits raises InvalidArgumentsError.

    Raised outside the ``except`` block, without the database's error, which may quote the
    arguments: no traceback, error tracker or exception chain carries it.
    """
    try:
        return write()
    except OperationalError as error:
        if not past_limits(error):
            raise
        refusal = InvalidArgumentsError(
            "args", f"or kwargs are too large for PostgreSQL to store ({reason(error)})"
        )
    raise refusal
