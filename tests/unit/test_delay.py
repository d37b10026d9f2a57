from datetime import UTC, datetime, timedelta

import pytest

from scheduler.dispatch.dispatcher import delay_seconds

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("ahead", "expected"),
    [
        (timedelta(seconds=-3600), 0),
        (timedelta(0), 0),
        (timedelta(seconds=0.999), 0),
        (timedelta(seconds=1), 1),
        (timedelta(seconds=299.6), 299),  # rounded down: SQS must not release it late
        (timedelta(seconds=900), 900),
        (timedelta(seconds=901), 900),
        (timedelta(days=14), 900),
    ],
)
def test_delay_is_run_at_minus_now_rounded_down_and_clamped(ahead, expected):
    assert delay_seconds(NOW + ahead, NOW, 900) == expected


def test_a_lower_limit_is_respected():
    assert delay_seconds(NOW + timedelta(seconds=10), NOW, 4) == 4
