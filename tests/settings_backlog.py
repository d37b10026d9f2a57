"""settings_fast with re-sends after 5 s: a backlog that outlasts several stale periods."""

from tests.settings_fast import *  # noqa: F403

SCHEDULER_STALE_AFTER_SECONDS = 5
