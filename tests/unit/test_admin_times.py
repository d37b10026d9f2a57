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


def test_an_offset_in_seconds_is_said_whole():
    # Dublin's clocks went back from its summer time (+00:34:39) to GMT in 1916: the
    # offset was cut from the time's ISO text, ":34:39".
    with timezone.override("Europe/Dublin"):
        shown = timestamp(datetime(1916, 10, 1, 2, 10, tzinfo=UTC))
    assert shown == "1916-10-01 02:44:39 +00:34:39"
