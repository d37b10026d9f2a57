"""The live benchmarks' Django settings: the test suite's (the probe task's app), with
DEBUG off as in production, where a worker keeps no log of every query it runs."""

from tests.settings import *  # noqa: F403

DEBUG = False
