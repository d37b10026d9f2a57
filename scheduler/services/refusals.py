"""What PostgreSQL's refusals say, for the services and the worker to act on them."""

from collections.abc import Callable
from typing import TypeVar

from django.db import Error, InterfaceError, OperationalError

from scheduler.exceptions import InvalidArgumentsError, ResultRefusedError

T = TypeVar("T")

#: PostgreSQL's SQLSTATE class for what is past its limits: a JSON string or document
#: over 256 MB (54000), JSON nested deeper than its stack allows (54001).
_PROGRAM_LIMIT_EXCEEDED = "54"

#: PostgreSQL's SQLSTATE classes for refusing what a statement writes, as it would again:
#: its data (22), a constraint (23), its limits (54), a trigger's exception (P0), or an
#: allocation past its limit (XX).
_REFUSING_CLASSES = frozenset({"22", "23", _PROGRAM_LIMIT_EXCEEDED, "P0", "XX"})

#: PostgreSQL's SQLSTATE classes for a server no connection can write to for now:
#: connection exceptions (08) and insufficient resources (53).
_UNAVAILABLE_CLASSES = frozenset({"08", "53"})

#: PostgreSQL's SQLSTATE for a write on a server that takes none: in a failover
#: (Aurora's), the old primary, a reader now, keeps the connections it had.
_READ_ONLY_SQL_TRANSACTION = "25006"


#: PostgreSQL's SQLSTATE for a deadlock it broke by failing this transaction.
_DEADLOCK_DETECTED = "40P01"

#: PostgreSQL's SQLSTATE for a lock not taken within ``lock_timeout``.
_LOCK_NOT_AVAILABLE = "55P03"


def sqlstate(error: Error) -> str | None:
    """PostgreSQL's SQLSTATE for Django's ``error``, from psycopg2 or psycopg 3."""
    cause = error.__cause__
    return getattr(cause, "pgcode", None) or getattr(cause, "sqlstate", None)


def deadlocked(error: Error) -> bool:
    """Whether PostgreSQL broke a deadlock by failing this transaction (or savepoint)."""
    return sqlstate(error) == _DEADLOCK_DETECTED


def lock_timed_out(error: Error) -> bool:
    """Whether the statement waited for a lock longer than its ``lock_timeout``."""
    return sqlstate(error) == _LOCK_NOT_AVAILABLE


def past_limits(error: Error) -> bool:
    """Whether PostgreSQL refused a value past its limits: it would refuse it again."""
    return (sqlstate(error) or "").startswith(_PROGRAM_LIMIT_EXCEEDED)


def refused_statement(error: Error) -> bool:
    """Whether PostgreSQL refused what the statement writes (a value past its limits, a
    trigger's exception): it would refuse it again."""
    return (sqlstate(error) or "")[:2] in _REFUSING_CLASSES


def on_a_reader(error: Error) -> bool:
    """Whether the connection reaches a server that takes no writes (a failover's old
    primary): a new connection reaches the new one."""
    return sqlstate(error) == _READ_ONLY_SQL_TRANSACTION


def unavailable(error: Error) -> bool:
    """Whether PostgreSQL takes nobody's writes for now, workers' heartbeats included: a
    connection refused or dropped (08, or none said), resources exhausted (53: disk
    full, too many connections), a server shutting down or starting (57P), a failover's
    old primary (25006). Not one statement's trouble (a timeout, a lock, a deadlock)."""
    if isinstance(error, InterfaceError) or on_a_reader(error):
        return True
    if not isinstance(error, OperationalError):
        return False
    state = sqlstate(error)
    return state is None or state[:2] in _UNAVAILABLE_CLASSES or state.startswith("57P")


def out_of_reach(error: Error) -> bool:
    """Whether PostgreSQL could not take the statement for now, and may later: a
    connection lost or refused, a timeout, a deadlock, a failover under way."""
    if isinstance(error, OperationalError):
        return not past_limits(error)
    return isinstance(error, InterfaceError) or on_a_reader(error)


def first_line(error: BaseException) -> str:
    """The first line of what ``error`` says (empty if nothing), for a log line: not the
    DETAIL, HINT or CONTEXT lines PostgreSQL adds."""
    return next(iter(str(error).strip().splitlines()), "")


def reason(error: Error) -> str:
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
