"""What PostgreSQL's refusals say, for the services and the worker to act on them."""

from collections.abc import Callable
from typing import TypeVar

from django.db import DatabaseError, Error, InterfaceError, OperationalError

from scheduler.exceptions import InvalidArgumentsError, ResultRefusedError

T = TypeVar("T")

#: PostgreSQL's SQLSTATE class for what is past its limits: a JSON string or document
#: over 256 MB (54000), JSON nested deeper than its stack allows (54001).
_PROGRAM_LIMIT_EXCEEDED = "54"


def sqlstate(error: Error) -> str | None:
    """PostgreSQL's SQLSTATE for Django's ``error``, from psycopg2 or psycopg 3."""
    cause = error.__cause__
    return getattr(cause, "pgcode", None) or getattr(cause, "sqlstate", None)


def past_limits(error: Error) -> bool:
    """Whether PostgreSQL refused a value past its limits: it would refuse it again."""
    return (sqlstate(error) or "").startswith(_PROGRAM_LIMIT_EXCEEDED)


def refused_statement(error: Error) -> bool:
    """Whether PostgreSQL refused the statement itself (a value past its limits, a
    trigger's exception): it would refuse it again. Not a connection lost, a timeout or
    a deadlock, which pass."""
    return past_limits(error) or not isinstance(error, OperationalError | InterfaceError)


def reason(error: DatabaseError) -> str:
    """PostgreSQL's own words for ``error``, without the detail or context that may quote
    the statement's values."""
    return (
        getattr(getattr(error.__cause__, "diag", None), "message_primary", None)
        or type(error).__name__
    )


def refusing(write: Callable[[], T], refusal: Callable[[str], Exception]) -> T:
    """``write()``; PostgreSQL's refusal of a value past its limits raises
    ``refusal(its words)`` instead.

    Raised outside the ``except`` block, without the database's error, which may quote the
    value: no traceback, error tracker or exception chain carries it.
    """
    try:
        return write()
    except OperationalError as error:
        if not past_limits(error):
            raise
        refused = refusal(reason(error))
    raise refused


def arguments_too_large(said: str) -> InvalidArgumentsError:
    """The refusal of a job's arguments, in PostgreSQL's words ``said``."""
    return InvalidArgumentsError(
        "args", f"or kwargs are too large for PostgreSQL to store ({said})"
    )


def result_refused(said: str) -> ResultRefusedError:
    """The refusal of a job's result, in PostgreSQL's words ``said``."""
    return ResultRefusedError(f"PostgreSQL refused to store the result ({said})")
