"""The admin's times, to the second, in the current time zone."""

from datetime import UTC, datetime

import pytest
from django.utils import timezone

from scheduler.admin.display import timestamp


@pytest.mark.parametrize(
    ("at", "shown"),
    [
        # The hour Paris lives twice as its clocks go back: two instants an hour apart.
        (datetime(2026, 10, 25, 0, 30, tzinfo=UTC), "2026-10-25 02:30:00 +02:00"),
        (datetime(2026, 10, 25, 1, 30, tzinfo=UTC), "2026-10-25 02:30:00 +01:00"),
        # Any other time says no offset: the column's heading names the zone.
        (datetime(2026, 10, 25, 12, 0, tzinfo=UTC), "2026-10-25 13:00:00"),
        (datetime(2026, 3, 29, 1, 30, tzinfo=UTC), "2026-03-29 03:30:00"),
    ],
)
def test_a_time_of_an_hour_lived_twice_says_which(at, shown):
    # Both showed "2026-10-25 02:30:00", on the job list, its page and the audit trail.
    with timezone.override("Europe/Paris"):
        assert timestamp(at) == shown
