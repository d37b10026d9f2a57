import os
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


def test_each_forked_process_draws_its_own_jitter():
    # A prefork worker's processes are forks of one parent: with the parent's generator
    # state they drew the same jitter, and retries of jobs that failed together came
    # back together.
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child process
        os.write(writer, repr(exponential_backoff(10, base=1, cap=1000)).encode())
        os._exit(0)
    os.close(writer)
    os.waitpid(child, 0)
    with os.fdopen(reader) as answer:
        in_child = float(answer.read())
    assert in_child != exponential_backoff(10, base=1, cap=1000)
