"""The end-to-end settings with a system-check error: a lookahead longer than SQS holds a
message back (``scheduler.E003``), for the tests of processes that refuse to start."""

from tests.settings_fast import *  # noqa: F403
from tests.settings_fast import SCHEDULER_MAX_DELAY_SECONDS

SCHEDULER_LOOKAHEAD_SECONDS = SCHEDULER_MAX_DELAY_SECONDS + 1
