from datetime import UTC, datetime, timedelta

import pytest
from django.test import override_settings

from scheduler.protocol import delivery_delay_seconds

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("ahead", "expected"),
    [
        (timedelta(seconds=-60), 0),
        (timedelta(seconds=2), 0),  # within the lead: no delay, the worker waits the eta
        (timedelta(seconds=2.999), 0),
        (timedelta(seconds=3), 1),
        (timedelta(seconds=60.5), 58),  # rounded down: released before the lead, not after
        (timedelta(seconds=902), 900),
        (timedelta(days=14), 900),
    ],
)
def test_sqs_releases_a_message_the_delivery_lead_before_its_eta(ahead, expected):
    with override_settings(SCHEDULER_DELIVERY_LEAD_SECONDS=2):
        assert delivery_delay_seconds(NOW + ahead, now=NOW) == expected


def test_a_lower_max_delay_caps_it():
    with override_settings(SCHEDULER_MAX_DELAY_SECONDS=4, SCHEDULER_DELIVERY_LEAD_SECONDS=0.5):
        assert delivery_delay_seconds(NOW + timedelta(seconds=60), now=NOW) == 4
