"""Per-job values travel to PostgreSQL as one array literal each: they must arrive unchanged."""

import uuid
from datetime import UTC, datetime

import pytest
from django.db import connection

from scheduler.services.transitions import array_literal

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
