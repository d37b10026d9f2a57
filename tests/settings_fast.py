"""The test settings with the scheduler's limits lowered to seconds, for end-to-end runs."""

from tests.settings import *  # noqa: F403

SCHEDULER_MAX_DELAY_SECONDS = 4
SCHEDULER_LOOKAHEAD_SECONDS = 3
SCHEDULER_DISPATCH_INTERVAL_SECONDS = 1
SCHEDULER_STALE_AFTER_SECONDS = 60
SCHEDULER_LEASE_SECONDS = 60
SCHEDULER_RETRY_BACKOFF_SECONDS = 1
