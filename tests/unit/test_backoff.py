import random

import pytest

from scheduler.backoff import exponential_backoff


def test_grows_exponentially_within_jitter_bounds():
    rng = random.Random(7)
    for attempt, nominal in [(1, 30), (2, 60), (3, 120), (4, 240)]:
        delays = [exponential_backoff(attempt, base=30, cap=10_000, rng=rng) for _ in range(200)]
        assert min(delays) >= nominal / 2
        assert max(delays) <= nominal
        assert max(delays) - min(delays) > nominal / 4  # really jittered


def test_is_capped_even_for_huge_attempt_numbers():
    for attempt in (20, 1000, 10**6):
        assert 3600 <= exponential_backoff(attempt, base=30, cap=7200) <= 7200


def test_rejects_attempt_zero():
    with pytest.raises(ValueError, match="at least 1"):
        exponential_backoff(0, base=1, cap=1)
