"""The test settings with a delivery lead of 10 s: `bench.burst --settings tests.settings_lead`
shows how a burst drains when every message reaches the worker before its instant,
whatever moto's receive rate."""

from tests.settings import *  # noqa: F403

SCHEDULER_DELIVERY_LEAD_SECONDS = 10
