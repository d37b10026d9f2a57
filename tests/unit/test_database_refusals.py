"""How PostgreSQL's errors are read: a refusal of what is written, an outage of the
server, or one statement's trouble that passes."""

import pytest
from django.db import (
    DataError,
    Error,
    IntegrityError,
    InterfaceError,
    InternalError,
    OperationalError,
)

from scheduler.services import refusals


class _DriverError(Exception):
    """psycopg2's error, as far as it is read: its SQLSTATE."""

    def __init__(self, pgcode: str | None) -> None:
        super().__init__("said")
        self.pgcode = pgcode


def _error(kind: type[Error], sqlstate: str | None) -> Error:
    error = kind("said")
    error.__cause__ = _DriverError(sqlstate)  # as Django raises it
    return error


@pytest.mark.parametrize(
    ("kind", "sqlstate", "refused", "out_of_reach", "unavailable"),
    [
        (OperationalError, None, False, True, True),  # connection refused or dropped
        (InterfaceError, None, False, True, True),  # connection already closed
        (OperationalError, "08006", False, True, True),  # connection failure
        (OperationalError, "57P01", False, True, True),  # administrator shutdown
        (OperationalError, "57P03", False, True, True),  # the server is starting
        (OperationalError, "53100", False, True, True),  # disk full
        (OperationalError, "53300", False, True, True),  # too many connections
        (InternalError, "25006", False, True, True),  # a failover's old primary
        (OperationalError, "57014", False, True, False),  # statement timeout
        (OperationalError, "55P03", False, True, False),  # lock timeout
        (OperationalError, "40P01", False, True, False),  # deadlock
        (OperationalError, "40001", False, True, False),  # serialization failure
        (OperationalError, "54000", True, False, False),  # a value past the limits
        (DataError, "22P05", True, False, False),  # text it cannot store
        (IntegrityError, "23514", True, False, False),  # a check constraint
        (InternalError, "P0001", True, False, False),  # a trigger's exception
        (InternalError, "XX000", True, False, False),  # an allocation past its limit
        (InternalError, "25P02", False, False, False),  # a transaction already broken
        (InternalError, None, False, False, False),  # the driver's own, unexplained
    ],
)
def test_each_error_is_read_for_what_it_says(kind, sqlstate, refused, out_of_reach, unavailable):
    error = _error(kind, sqlstate)
    assert refusals.refused_statement(error) is refused
    assert refusals.out_of_reach(error) is out_of_reach
    assert refusals.unavailable(error) is unavailable
