from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.protocol import delivery_delay_seconds

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("ahead", "lead", "expected"),
    [
        (timedelta(seconds=-3600), 2, 0),
        (timedelta(0), 2, 0),
        # Within the lead: no delay; the worker waits out the eta.
        (timedelta(seconds=2), 2, 0),
        (timedelta(seconds=2.999), 2, 0),
        (timedelta(seconds=3), 2, 1),
        # Rounded down: SQS must not release it after run_at - lead.
        (timedelta(seconds=301.6), 2, 299),
        (timedelta(seconds=10.4), 0.5, 9),
        (timedelta(seconds=902), 2, 900),
        (timedelta(seconds=1000), 2, 900),
        (timedelta(days=14), 2, 900),
    ],
)
def test_delay_is_run_at_minus_now_minus_the_lead_rounded_down_and_clamped(ahead, lead, expected):
    assert delivery_delay_seconds(NOW + ahead, now=NOW, max_delay=900, lead=lead) == expected


def test_a_lower_limit_is_respected():
    assert delivery_delay_seconds(NOW + timedelta(seconds=10), now=NOW, max_delay=4, lead=2) == 4


@given(
    ahead=st.floats(min_value=-1e5, max_value=1e5, allow_nan=False),
    lead=st.floats(min_value=0.001, max_value=60, allow_nan=False),
    max_delay=st.integers(min_value=1, max_value=900),
)
def test_a_message_is_never_released_after_run_at_minus_the_lead(ahead, lead, max_delay):
    run_at = NOW + timedelta(seconds=ahead)
    delay = delivery_delay_seconds(run_at, now=NOW, max_delay=max_delay, lead=lead)
    assert 0 <= delay <= max_delay
    released = NOW + timedelta(seconds=delay)
    if delay:
        assert released <= run_at - timedelta(seconds=lead)
    # And as late as allowed: a second more would be past run_at - lead or the limit.
    assert delay == max_delay or released + timedelta(seconds=1) > run_at - timedelta(seconds=lead)
