"""The chaos suite's settings, beat reloading its schedule every 2 s (tests.testapp.signals)."""

from tests.settings_chaos import *  # noqa: F403

TESTAPP_BEAT_RELOAD_SECONDS = 2
