"""Pure retry back-off: exponential growth, a cap, and jitter."""

import os
import random

_RNG = random.Random()  # noqa: S311 - jitter, not cryptography
# Python reseeds only the random module's own generator in a forked child: a prefork
# worker's processes would otherwise draw the same jitter, and retries of jobs that
# failed together would come back together.
os.register_at_fork(after_in_child=_RNG.seed)


def exponential_backoff(
    attempt: int, *, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    The delay doubles with each attempt up to ``cap``; "equal jitter" then keeps it in
    ``[delay / 2, delay]``, so retries of many jobs that failed together spread out
    while none comes back sooner than half the nominal delay.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be at least 1, got {attempt}")
    # Cap the exponent first: 2 ** attempt overflows a float for large attempts.
    nominal = min(cap, base * 2.0 ** min(attempt - 1, 64))
    half = nominal / 2
    return half + (rng or _RNG).uniform(0, half)
