"""Per-job values travel to PostgreSQL as one array literal each: they must arrive unchanged."""

import uuid
from datetime import UTC, datetime
from functools import partial

import pytest
from django.db import connection

from scheduler import schedule_at, states
from scheduler.services.transitions import apply_each, array_literal

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("values", "cast"),
    [
        ([1, 2**62, -3], "bigint[]"),
        ([uuid.UUID(int=7), uuid.uuid4()], "uuid[]"),
        ([datetime(2026, 12, 8, 12, 0, 0, 250000, tzinfo=UTC), None], "timestamptz[]"),
        (['a "quoted", comma', "back\\slash", "{braces}", "NULL", "", " spaced ", None], "text[]"),
    ],
)
def test_an_array_literal_arrives_as_the_values_it_was_made_of(values, cast):
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT %s::{cast}", [array_literal(values)])
        (arrived,) = cursor.fetchone()
    assert arrived == values


def test_a_job_moves_only_if_it_holds_each_matched_value_null_included():
    # Compared with "=", a job whose matched token is NULL never moved.
    at = datetime(2026, 12, 8, 12, tzinfo=UTC)
    scheduled = schedule_at("testapp.noop", at)
    cancel = partial(apply_each, states.CANCEL, [scheduled.pk], {}, finished_at=at, updated_at=at)
    assert cancel(matching={"dispatch_token": [uuid.uuid4()]}) == 0
    assert cancel(matching={"dispatch_token": [None], "sends": [0]}) == 1
