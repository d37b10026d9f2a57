"""Arguments past PostgreSQL's limits: refused clearly, without being quoted."""

import traceback
from datetime import UTC, datetime

import pytest
from django.db import transaction

from scheduler import JobSpec, schedule_at, schedule_many
from scheduler.exceptions import InvalidArgumentsError
from scheduler.models import ScheduledJob

pytestmark = pytest.mark.django_db

NOON = datetime(2030, 1, 1, 12, tzinfo=UTC)
SECRET = "SECRET-card-4242"

CALLS = {
    "schedule_at": lambda huge: schedule_at("testapp.noop", NOON, [huge]),
    "schedule_many": lambda huge: schedule_many(
        [JobSpec("testapp.noop", NOON), JobSpec("testapp.noop", NOON, [], {"k": huge})]
    ),
}


@pytest.mark.parametrize("call", list(CALLS))
def test_arguments_past_postgresqls_limit_are_refused_without_being_quoted(call):
    # PostgreSQL's error quoted the start of the arguments: a secret there reached the
    # error tracker. One JSON string past the longest that jsonb holds (2**28 - 1 bytes):
    huge = SECRET + "x" * 2**28
    with transaction.atomic():
        with pytest.raises(InvalidArgumentsError) as refused:
            CALLS[call](huge)
        assert not ScheduledJob.objects.exists()  # the caller's transaction goes on
    error = refused.value
    assert "too large for PostgreSQL to store" in str(error)
    # Nothing carries the database's error, not even as a suppressed context.
    assert error.__cause__ is None
    assert error.__context__ is None
    assert SECRET not in "".join(traceback.format_exception(error))
